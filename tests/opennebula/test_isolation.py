"""Isolation under genuine oned: no node outside the private network gets bytes from the drivers, and with
Kubo's ``API.Authorizations`` on every node the drivers send the secret from the file the admin named, while
no log of oned, of a VM, of Kubo or of sshd ever shows it or the swarm key.

Run on the current version only (docs/testing.md): what is proven here lies between the drivers and Kubo,
the same under every oned that orders the actions.
"""

from __future__ import annotations

import io
import os
import pwd
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from one_ipfs.errors import IpfsError
from one_ipfs.ipfs.rpc import ImportSettings, authorization
from testbed.bed import Bed
from testbed.genuine import GenuineOne
from testbed.kubo import Node
from testbed.one import Datastore, OneFailure
from testbed.system import ONEADMIN
from tests.support.datastores import ipfs_datastore_template
from tests.support.images import disk_bytes, sha256
from tests.support.nodes import SECRET_FILE, bitswap_stat, locked_apis, pins

pytestmark = [pytest.mark.bed, pytest.mark.opennebula, pytest.mark.current_version]

SETTINGS = ImportSettings()
MIB = 1 << 20


def write_image(folder: Path, name: str, data: bytes) -> str:
    path = folder / name
    path.write_bytes(data)
    path.chmod(0o644)
    return str(path)


def untouched(stat: dict[str, int]) -> bool:
    """No block and no byte went either way over bitswap."""
    return all(stat[key] == 0 for key in ("BlocksReceived", "DataReceived", "BlocksSent", "DataSent"))


def test_oneimage_create_of_content_only_an_outsider_holds_fails_and_nothing_flows_to_or_from_it(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore, outsider: Node
) -> None:
    data = disk_bytes(1 * MIB, seed=901)
    cid = outsider.client().add(io.BytesIO(data), settings=SETTINGS).cid
    frontend_pins = pins(bed.frontend)

    with pytest.raises(OneFailure) as failure:
        one.image_create(ipfs_ds, name="outsider-only", path=f"/ipfs/{cid}")

    assert "\n" not in failure.value.info
    assert pins(bed.frontend) == frontend_pins
    assert untouched(bitswap_stat(outsider))
    assert outsider.client().swarm_peers() == []


def test_imports_and_deploys_never_send_an_image_to_a_node_outside_the_private_network(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore, outsider: Node, local_dir: Path
) -> None:
    data = disk_bytes(2 * MIB, seed=902)
    # The outsider holds the very same content, and asks for content only the bed holds: a deploy must
    # neither fetch from it nor send to it.
    outsider.client().add(io.BytesIO(data), settings=SETTINGS)
    image = one.image_create(ipfs_ds, name="insiders", path=write_image(local_dir, "insiders.raw", data))
    only_inside = one.image_create(
        ipfs_ds, name="insiders-only", path=write_image(local_dir, "only.raw", disk_bytes(MIB, seed=905))
    )
    with pytest.raises(IpfsError):
        b"".join(outsider.client().cat(f"/ipfs/{only_inside.template['IPFS_CID']}", timeout=5))

    with ThreadPoolExecutor(len(bed.hosts)) as pool:
        vms = list(pool.map(lambda host: one.vm_deploy([image], host.name, context=False), bed.hosts))

    for vm, host in zip(vms, bed.hosts, strict=True):
        disk = host.var_lib_one / "datastores" / "0" / str(vm.id) / "disk.0"
        assert sha256(disk.read_bytes()) == sha256(data)
    with ThreadPoolExecutor(len(vms)) as pool:
        list(pool.map(one.vm_terminate, vms))
    assert untouched(bitswap_stat(outsider))
    assert outsider.client().swarm_peers() == []
    for node in bed.nodes:
        assert outsider.peer_id not in {peer for peer, _ in node.client().swarm_peers()}, node.name
    one.image_delete(image)
    one.image_delete(only_inside)


# API.Authorizations on every node --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def locked(bed: Bed, one: GenuineOne) -> Iterator[str]:
    """Every bed node's RPC API requires a secret, kept in /var/lib/one/.ipfs-api-secret on the frontend
    and on each host (mode 0600, oneadmin's); yields the secret. The APIs are open again afterwards."""
    secret = f"basic:oneadmin:{secrets.token_hex(16)}"
    with locked_apis(bed, secret):
        yield secret


def locked_datastore(bed: Bed, one: GenuineOne, name: str, **attributes: str) -> Datastore:
    """``onedatastore create`` of a datastore whose drivers read the nodes' secret from SECRET_FILE
    (unless ``attributes`` say otherwise), without a capacity check, so that a refused secret shows first."""
    secret_files = {"IPFS_API_AUTH_FILE": SECRET_FILE, "IPFS_HOST_API_AUTH_FILE": SECRET_FILE}
    template = {**secret_files, "DATASTORE_CAPACITY_CHECK": "NO", **attributes}
    return one.datastore_create(ipfs_datastore_template(bed, name, **template), monitor=False)


def logged_files(bed: Bed, secret_files: set[Path]) -> Iterator[Path]:
    """Every file under the bed's root (oned's own install, logs and database included) but Kubo
    repositories (their config holds the secret and swarm.key the key, as Kubo needs; nodes added and
    removed by other tests leave theirs), the bed's state and the secret files themselves."""
    repositories = [spec.parent for spec in bed.root.rglob("datastore_spec")]
    for path in bed.root.rglob("*"):
        if path.is_symlink() or not path.is_file() or path in secret_files or path == bed.root / "state.json":
            continue
        if not any(path.is_relative_to(repo) for repo in repositories):
            yield path


def test_with_api_authorizations_on_every_node_a_life_cycle_works_and_no_log_shows_a_secret(
    bed: Bed, one: GenuineOne, locked: str, local_dir: Path
) -> None:
    # Waiting for oned's first MONITOR of the datastore proves the monitor sends the secret too.
    ds = one.datastore_create(
        ipfs_datastore_template(
            bed, "ipfs-locked", IPFS_API_AUTH_FILE=SECRET_FILE, IPFS_HOST_API_AUTH_FILE=SECRET_FILE
        )
    )
    data = disk_bytes(2 * MIB, seed=903)
    image = one.image_create(ds, name="locked", path=write_image(local_dir, "locked.raw", data))
    persistent = one.image_create(
        ds, name="locked-persistent", path=write_image(local_dir, "locked-p.raw", data), persistent=True
    )
    clone = one.image_clone(image, "locked-clone")

    vm = one.vm_deploy([image, persistent], "h1")
    folder = bed.host("h1").var_lib_one / "datastores" / "0" / str(vm.id)
    assert sha256((folder / "disk.0").read_bytes()) == sha256(data)
    with open(folder / "disk.1", "r+b") as disk:
        disk.write(b"changed under API.Authorizations")
    saved_as = one.disk_saveas(vm, 0, "locked-saveas")
    one.vm_migrate(vm, "h2")
    one.vm_terminate(vm)
    again = one.vm_deploy([persistent, saved_as], "h3", context=False)
    again_folder = bed.host("h3").var_lib_one / "datastores" / "0" / str(again.id)
    assert (again_folder / "disk.0").read_bytes().startswith(b"changed under API.Authorizations")
    assert sha256((again_folder / "disk.1").read_bytes()) == sha256(data)
    one.vm_terminate(again)
    for done in (clone, saved_as, image, persistent):
        one.image_delete(done)

    token = locked.split(":", 2)[2]
    header = authorization(locked)
    key = bed.swarm_key.decode().split()[-1]
    needles = [token.encode(), header.split()[1].encode(), key.encode(), key.upper().encode()]
    # The needles are the real ones: they are where they belong.
    assert token.encode() in (bed.frontend.repo / "config").read_bytes()
    assert key.encode() in (bed.host("h1").node.repo / "swarm.key").read_bytes()
    secret_files = {bed.frontend_var_lib_one / Path(SECRET_FILE).name} | {
        host.var_lib_one / Path(SECRET_FILE).name for host in bed.hosts
    }
    scanned = list(logged_files(bed, secret_files))
    # What the drivers told oned is in oned's log and the VMs' logs; Kubo's and sshd's are the nodes'.
    assert {path.name for path in scanned} >= {"oned.log", "vm.log", "daemon.log", "sshd.log"}
    assert one.frontend.log in scanned
    leaked = [(str(path), n.decode()[:4]) for path in scanned for n in needles if n in path.read_bytes()]
    assert leaked == []


def test_a_wrong_missing_or_absent_secret_fails_oneimage_create_or_the_deploy_with_one_line_and_no_secret(
    bed: Bed, one: GenuineOne, locked: str, local_dir: Path
) -> None:
    account = pwd.getpwnam(ONEADMIN)
    wrong = [folder / ".ipfs-api-wrong" for folder in (bed.frontend_var_lib_one, bed.host("h1").var_lib_one)]
    for file in wrong:
        file.write_text("bearer:wr0ng-s3cret\n")
        os.chown(file, account.pw_uid, account.pw_gid)
    path = write_image(local_dir, "refused.raw", disk_bytes(1 * MIB, seed=904))
    refused = "refused access (HTTP 403): check the RPC authorization (API.Authorizations)"
    unreadable = "cannot read the Kubo RPC secret file /var/lib/one/.absent: No such file or directory"
    frontend_cases = [
        (
            refused,
            locked_datastore(bed, one, "ipfs-wrong", IPFS_API_AUTH_FILE="/var/lib/one/.ipfs-api-wrong"),
        ),
        (
            f"IPFS_API_AUTH_FILE: {unreadable}",
            locked_datastore(bed, one, "ipfs-no-file", IPFS_API_AUTH_FILE="/var/lib/one/.absent"),
        ),
        (
            refused,
            one.datastore_create(
                ipfs_datastore_template(bed, "ipfs-no-secret", DATASTORE_CAPACITY_CHECK="NO"), monitor=False
            ),
        ),
    ]
    host_cases = [
        (
            refused,
            locked_datastore(
                bed, one, "ipfs-h-wrong", IPFS_HOST_API_AUTH_FILE="/var/lib/one/.ipfs-api-wrong"
            ),
        ),
        (
            f"IPFS_HOST_API_AUTH_FILE: {unreadable}",
            locked_datastore(bed, one, "ipfs-h-no-file", IPFS_HOST_API_AUTH_FILE="/var/lib/one/.absent"),
        ),
    ]
    try:
        for expected, ds in frontend_cases:
            frontend_pins = pins(bed.frontend)
            with pytest.raises(OneFailure) as failure:
                one.image_create(ds, name=f"refused-{ds.name}", path=path)
            assert expected in failure.value.info, ds.name
            assert "\n" not in failure.value.info
            assert "s3cret" not in failure.value.info and locked not in failure.value.info
            assert pins(bed.frontend) == frontend_pins
        for expected, ds in host_cases:
            image = one.image_create(ds, name=f"refused-{ds.name}", path=path)
            host_pins = pins(bed.host("h1").node)
            with pytest.raises(OneFailure) as failure:
                one.vm_deploy([image], "h1", context=False)
            assert failure.value.info.startswith("h1: ") and expected in failure.value.info, ds.name
            assert "\n" not in failure.value.info
            assert "s3cret" not in failure.value.info and locked not in failure.value.info
            assert pins(bed.host("h1").node) == host_pins
            vm_id = failure.value.oid
            assert vm_id is not None
            assert not list((bed.host("h1").var_lib_one / "datastores" / "0").glob(f"{vm_id}/disk.*"))
            one.vm_recover_delete(vm_id)
            one.image_delete(image)
    finally:
        for file in wrong:
            file.unlink()
