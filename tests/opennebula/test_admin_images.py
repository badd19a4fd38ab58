"""``one-ipfs images`` and ``one-ipfs prefetch`` on the bed, run by oneadmin on the frontend.

OpenNebula is genuine oned (asked over XML-RPC for its image, datastore and host pools); what a node
holds is asked of the node itself, and prefetch goes through each host's own ``one-ipfs-host warm``.
"""

from __future__ import annotations

import io
import json
import secrets
from typing import Any

import pytest

from one_ipfs.ipfs.rpc import ImportSettings
from testbed.bed import Bed, Host
from testbed.genuine import GenuineOne
from testbed.one import Datastore, Image
from tests.support.datastores import ipfs_datastore_template
from tests.support.images import disk_bytes, sha256
from tests.support.nodes import SECRET_FILE, bitswap_stat, locked_apis

pytestmark = [pytest.mark.bed, pytest.mark.opennebula]

HOSTS = "h1,h2,h3"


def one_ipfs(one: GenuineOne, *args: str) -> tuple[int, str, str]:
    """``one-ipfs ARGS`` as oneadmin on the frontend, the admin tool of the venv the drivers run from, with
    OpenNebula's commands on PATH (in a wide terminal, so that table rows stay on one line)."""
    result = one.frontend.run(["one-ipfs", *args], env={"COLUMNS": "250"}, check=False)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def image_on_h3(
    bed: Bed, one: GenuineOne, ds: Datastore, data: bytes, name: str, *, persistent: bool = False
) -> Image:
    """An image whose content was added on h3's node; importing it pins it on the frontend's."""
    cid = bed.host("h3").node.client().add(io.BytesIO(data), settings=ImportSettings()).cid
    return one.image_create(ds, name=name, path=f"/ipfs/{cid}", persistent=persistent)


def listed(bed: Bed, one: GenuineOne) -> dict[int, dict[str, Any]]:
    code, out, err = one_ipfs(one, "images", "--hosts", HOSTS, "--json")
    assert code == 0, err
    return {row["id"]: row for row in json.loads(out)["images"]}


def cache_entry(host: Host, cid: str) -> dict[str, Any]:
    """The host cache's record of ``cid`` (see one_ipfs.host.cache)."""
    entry = host.var_lib_one / "datastores" / ".one-ipfs-cache" / "entries" / f"{cid}.json"
    return dict(json.loads(entry.read_text()))


def test_images_lists_an_imported_image_with_its_cid_versions_and_holders(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore
) -> None:
    image = image_on_h3(bed, one, ipfs_ds, disk_bytes(2 << 20, seed=51), "listed")
    cid = one.image(image).template["IPFS_CID"]

    row = listed(bed, one)[image.id]

    assert row["name"] == "listed"
    assert row["datastore_id"] == ipfs_ds.id
    assert row["source"] == f"one-ipfs/ds{ipfs_ds.id}/img{image.id}"
    assert row["cid"] == cid
    assert row["versions"] == [{"version": 1, "cid": cid}]
    assert row["size_mb"] == 2
    assert sorted(row["held_by"]) == ["frontend", "h3"]
    assert row["unknown"] == {}


def test_images_lists_every_saved_version_of_a_persistent_image(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore
) -> None:
    image = image_on_h3(bed, one, ipfs_ds, disk_bytes(2 << 20, seed=56), "kept", persistent=True)
    first = one.image(image).template["IPFS_CID"]
    vm = one.vm_deploy([image], "h1")
    disk = bed.host("h1").var_lib_one / "datastores" / "0" / str(vm.id) / "disk.0"
    with open(disk, "r+b") as guest:
        guest.write(b"changed by the guest" * 100)
    one.vm_terminate(vm)

    row = listed(bed, one)[image.id]

    second = one.image(image).template["IPFS_CID"]
    assert second != first
    assert row["versions"] == [{"version": 1, "cid": first}, {"version": 2, "cid": second}]
    assert row["cid"] == second
    assert "frontend" in row["held_by"]


@pytest.mark.current_version
def test_images_table_names_the_image_and_its_holders(bed: Bed, one: GenuineOne, ipfs_ds: Datastore) -> None:
    image = image_on_h3(bed, one, ipfs_ds, disk_bytes(1 << 20, seed=52), "tabled")

    code, out, err = one_ipfs(one, "images", "--hosts", HOSTS)

    assert code == 0, err
    line = next(line for line in out.splitlines() if "tabled" in line)
    assert str(image.id) in line
    assert "frontend, h3" in line


def test_prefetch_makes_a_host_hold_the_image_so_its_deploy_fetches_nothing(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore
) -> None:
    data = disk_bytes(8 << 20, seed=53)
    image = image_on_h3(bed, one, ipfs_ds, data, "warmed")

    code, out, err = one_ipfs(one, "prefetch", "warmed", "--hosts", "h1", "--json")

    assert code == 0, err
    result = json.loads(out)
    assert result["hosts"]["h1"]["ok"] is True
    assert result["cid"] == one.image(image).template["IPFS_CID"]
    assert "h1" in listed(bed, one)[image.id]["held_by"]
    h1 = bed.host("h1")
    assert cache_entry(h1, result["cid"])["refs"] == {}
    before = bitswap_stat(h1.node)["DataReceived"]
    vm = one.vm_deploy([image], "h1")
    disk = h1.var_lib_one / "datastores" / "0" / str(vm.id) / "disk.0"
    assert sha256(disk.read_bytes()) == sha256(data)
    assert bitswap_stat(h1.node)["DataReceived"] - before < len(data) // 100
    one.vm_terminate(vm)


@pytest.mark.current_version
def test_prefetch_warms_every_host_of_onehost_list_by_default(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore
) -> None:
    image = image_on_h3(bed, one, ipfs_ds, disk_bytes(1 << 20, seed=54), "everywhere")

    code, out, err = one_ipfs(one, "prefetch", str(image.id))

    assert code == 0, err
    for host in ("h1", "h2", "h3"):
        assert f"{host}: holds" in out
    assert sorted(listed(bed, one)[image.id]["held_by"]) == ["frontend", "h1", "h2", "h3"]


@pytest.mark.current_version
def test_prefetch_of_an_unknown_image_fails_with_one_line_and_touches_no_host(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore
) -> None:
    code, out, err = one_ipfs(one, "prefetch", "no-such-image", "--hosts", HOSTS)

    assert code == 1
    assert out == ""
    assert err.strip().splitlines() == [
        "Error: no image 'no-such-image' in an IPFS datastore (see `one-ipfs images`)"
    ]


@pytest.mark.current_version
def test_prefetch_to_an_unknown_host_fails_for_that_host_only(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore
) -> None:
    image = image_on_h3(bed, one, ipfs_ds, disk_bytes(1 << 20, seed=55), "partly")

    code, out, _ = one_ipfs(one, "prefetch", "partly", "--hosts", "h2,nohost", "--json")

    assert code == 1
    hosts = json.loads(out)["hosts"]
    assert hosts["h2"]["ok"] is True
    assert hosts["nohost"]["ok"] is False
    assert "Could not resolve hostname nohost" in hosts["nohost"]["error"]
    assert sorted(listed(bed, one)[image.id]["held_by"]) == ["frontend", "h2", "h3"]


@pytest.mark.current_version
def test_images_shows_a_hand_edited_history_as_that_image_s_problem_only(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore
) -> None:
    image = image_on_h3(bed, one, ipfs_ds, disk_bytes(1 << 20, seed=57), "edited")
    sound = image_on_h3(bed, one, ipfs_ds, disk_bytes(1 << 20, seed=58), "sound")
    history = one.image(image).template["IPFS_VERSIONS"]
    one.image_update(image, {"IPFS_VERSIONS": "1:not-a-cid"}, append=True)
    try:
        rows = listed(bed, one)
    finally:
        one.image_update(image, {"IPFS_VERSIONS": history}, append=True)

    assert rows[image.id]["cid"] is None
    assert "IPFS_VERSIONS holds a malformed entry" in rows[image.id]["error"]
    assert rows[sound.id]["error"] is None
    assert sorted(rows[sound.id]["held_by"]) == ["frontend", "h3"]


@pytest.mark.current_version
def test_prefetch_of_an_image_larger_than_the_host_cache_fails_and_fetches_nothing(
    bed: Bed, one: GenuineOne
) -> None:
    small = one.datastore_create(ipfs_datastore_template(bed, "small-cache", IPFS_HOST_CACHE_MB="1"))
    image = image_on_h3(bed, one, small, disk_bytes(2 << 20, seed=59), "too-big")
    cid = one.image(image).template["IPFS_CID"]

    code, out, _ = one_ipfs(one, "prefetch", "too-big", "--hosts", "h1", "--json")

    assert code == 1
    error = json.loads(out)["hosts"]["h1"]["error"]
    assert f"{cid} (2 MiB) is larger than the host cache (IPFS_HOST_CACHE_MB=1)" in error
    assert "h1" not in listed(bed, one)[image.id]["held_by"]


@pytest.mark.current_version
def test_images_asks_nodes_with_the_secret_of_each_datastore(bed: Bed, one: GenuineOne) -> None:
    secret = f"bearer:{secrets.token_hex(16)}"
    with locked_apis(bed, secret):
        ds = one.datastore_create(
            ipfs_datastore_template(
                bed,
                "ipfs-images-locked",
                IPFS_API_AUTH_FILE=SECRET_FILE,
                IPFS_HOST_API_AUTH_FILE=SECRET_FILE,
                DATASTORE_CAPACITY_CHECK="NO",
            ),
            monitor=False,
        )
        image = image_on_h3(bed, one, ds, disk_bytes(1 << 20, seed=59), "images-locked")

        code, out, err = one_ipfs(one, "images", "--hosts", HOSTS, "--json")

        assert code == 0, err
        row = next(row for row in json.loads(out)["images"] if row["id"] == image.id)
        assert sorted(row["held_by"]) == ["frontend", "h3"]
        assert row["unknown"] == {}
        assert secret.split(":")[1] not in out + err
        one.image_delete(image)
