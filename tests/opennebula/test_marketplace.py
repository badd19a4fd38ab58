"""Marketplaces under genuine oned. The driver of ours (MARKET_MAD ``ipfs``): an admin creates the
marketplace with ``onemarket create``, publishes an image with ``onemarketapp create``, exports the app into
a datastore and deploys it, and deletes it, each through OpenNebula's own CLI and one_market. And
OpenNebula's ``http`` marketplace publishing an image of an ``ipfs`` datastore, which reads what our
datastore driver's ``export`` hands it with OpenNebula's own ``downloader.sh``. And two clouds sharing a
catalogue over a marketplace network they both join, as docs/marketplace.md sets them up.
"""

from __future__ import annotations

import hashlib
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from one_ipfs.market.catalogue import Catalogue, parse_catalogue
from testbed.bed import Bed
from testbed.genuine import GenuineOne, start_cloud
from testbed.kubo import KUBO, Node
from testbed.market import ipns_name, join_market_network
from testbed.one import Datastore
from tests.support.beds import fresh_layout
from tests.support.datastores import ipfs_datastore_template
from tests.support.images import disk_bytes, sha256
from tests.support.vms import add_on, disk_path

pytestmark = [pytest.mark.bed, pytest.mark.opennebula]


def catalogue_key(node: Node) -> str:
    """A key of a frontend's Kubo node, made as an admin makes it: ``ipfs key gen``."""
    name = f"market-{secrets.token_hex(4)}"
    env = {"IPFS_PATH": str(node.repo), "PATH": "/usr/bin:/bin"}
    subprocess.run([str(KUBO), "key", "gen", name], env=env, check=True, capture_output=True, timeout=60)
    return name


@pytest.fixture(scope="module")
def fs_ds(one: GenuineOne) -> Datastore:
    """OpenNebula's own ``fs`` image datastore, which reads an app's SOURCE with its ``downloader.sh``."""
    return one.datastore_create({"NAME": "fs-images", "DS_MAD": "fs", "TM_MAD": "ssh"})


def test_an_app_published_from_an_ipfs_image_copies_nothing_lists_exports_deploys_and_unpins(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore, fs_ds: Datastore
) -> None:
    data = disk_bytes(4 << 20, seed=181)
    image = one.image_create(ipfs_ds, name="to-publish", path=f"/ipfs/{add_on(bed, 'h1', data)}")
    cid = image.template["IPFS_CID"]
    node = bed.frontend.client()
    key = catalogue_key(bed.frontend)
    market = one.market_create(
        {"NAME": f"ipfs-{key}", "MARKET_MAD": "ipfs", "IPFS_API": bed.frontend.api, "IPFS_CATALOGUE_KEY": key}
    )
    repo_before = node.repo_stat().repo_size
    pins_before = {pin.cid for pin in node.pin_ls()}

    app = one.market_app_create(market, image, "alpine-ipfs")

    assert (app.state, app.format, app.size_mb) == ("READY", "raw", 4)
    assert app.source == f"{bed.frontend.gateway}/ipfs/{cid}"
    assert app.md5 == hashlib.md5(data).hexdigest()
    catalogue_cid, catalogue = _published(bed, key)
    assert {pin.cid for pin in node.pin_ls()} - pins_before == {catalogue_cid}, "new content pinned"
    assert node.repo_stat().repo_size - repo_before < 1 << 20, "publishing stored a second copy"
    assert [(entry.name, entry.cid, entry.md5) for entry in catalogue.apps] == [("alpine-ipfs", cid, app.md5)]

    exported = one.market_app_export(app.id, ipfs_ds, "from-market")
    vm = one.vm_deploy([exported], "h2")
    copied = one.market_app_export(app.id, fs_ds, "from-market-to-fs")

    assert exported.template["IPFS_CID"] == cid
    assert sha256(disk_path(bed, one, vm).read_bytes()) == sha256(data)
    assert node.repo_stat().repo_size - repo_before < 1 << 20, "an export into ipfs stored a second copy"
    assert sha256(in_frontend(bed, copied.source).read_bytes()) == sha256(data), "the fs datastore's copy"
    one._wait(lambda: _monitored(one, market), bool, f"marketplace {market} to be monitored")
    listed = [(entry.id, entry.name, entry.state) for entry in one.market_apps(market)]
    assert listed == [(app.id, "alpine-ipfs", "READY")], "the monitor did not keep the app as it was"

    one.market_app_delete(app.id)

    assert _published(bed, key)[1].apps == ()
    assert f"one-market{market}-app{app.id}" not in dict(node.files_ls(f"/one-ipfs/refs/{cid}"))
    one.vm_terminate(vm, hard=True)
    for each in (copied, exported, image):
        one.image_delete(each)
    assert cid not in {pin.cid for pin in node.pin_ls()}, "a pin outlived the app and its images"
    one.market_delete(market)


def test_an_http_marketplace_publishes_an_ipfs_image_through_its_export_and_exports_it_back_as_its_cid(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore, web: tuple[str, Path]
) -> None:
    data = disk_bytes(2 << 20, seed=19)
    image = one.image_create(ipfs_ds, name="to-http-market", path=f"/ipfs/{add_on(bed, 'h3', data)}")
    cid = image.template["IPFS_CID"]
    url, public = web
    market = one.market_create(
        {"NAME": "http", "MARKET_MAD": "http", "BASE_URL": url, "PUBLIC_DIR": str(public)}
    )

    app = one.market_app_create(market, image, "via-http")

    assert (app.state, app.md5, app.size_mb, app.format) == ("READY", hashlib.md5(data).hexdigest(), 2, "raw")
    (published,) = public.iterdir()
    assert app.source == f"{url}/{published.name}"
    assert sha256(published.read_bytes()) == sha256(data)
    added_before = bed.frontend.client().repo_stat().repo_size

    exported = one.market_app_export(app.id, ipfs_ds, "from-http-market")

    assert exported.template["IPFS_CID"] == cid
    assert bed.frontend.client().repo_stat().repo_size - added_before < 256 << 10, "stored a second copy"
    one.market_app_delete(app.id)
    for each in (exported, image):
        one.image_delete(each)
    one.market_delete(market)


@pytest.fixture(scope="module")
def other_cloud(one: GenuineOne) -> Iterator[GenuineOne]:
    """A second cloud of the same version beside the version's: a bed of its own (the last /28 of the session
    bed's network) with one host, its own oned and its own private network (swarm key, nodes)."""
    layout = fresh_layout(one.frontend.bed.layout)
    with Bed.up(hosts=1, root=layout.root, layout=layout) as bed:
        cloud = start_cloud(lambda: bed, one.version, one.frontend.python)
        try:
            yield cloud
        finally:
            cloud.frontend.stop()


@pytest.mark.current_version
def test_a_cloud_lists_exports_and_deploys_the_app_another_cloud_published_over_their_market_network(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore, other_cloud: GenuineOne
) -> None:
    other_bed = other_cloud.frontend.bed
    data = disk_bytes(4 << 20, seed=187)
    image = one.image_create(ipfs_ds, name="to-share", path=f"/ipfs/{add_on(bed, 'h1', data)}")
    ours, theirs = join_market_network([bed, other_bed])
    key = catalogue_key(ours)
    market = one.market_create(
        {"NAME": "shared-apps", "MARKET_MAD": "ipfs", "IPFS_API": ours.api, "IPFS_CATALOGUE_KEY": key}
    )
    app = one.market_app_create(market, image, "shared-alpine")
    assert app.state == "READY", app

    listing = other_cloud.market_create(
        {
            "NAME": "cloud-a-apps",
            "MARKET_MAD": "ipfs",
            "IPFS_API": theirs.api,
            "IPFS_CATALOGUE": f"/ipns/{ipns_name(ours, key)}",
        }
    )
    (listed,) = other_cloud._wait(
        lambda: other_cloud.market_apps(listing), bool, f"marketplace {listing} to list cloud A's app"
    )
    ds = other_cloud.datastore_create(ipfs_datastore_template(other_bed, "ipfs"))
    exported = other_cloud.market_app_export(listed.id, ds, "from-cloud-a")
    vm = other_cloud.vm_deploy([exported], "h1")

    assert (listed.name, listed.md5, listed.size_mb) == ("shared-alpine", app.md5, 4)
    assert listed.source.startswith(f"{theirs.gateway}/ipfs/"), "not the URL on the cloud's own market node"
    assert sha256(disk_path(other_bed, other_cloud, vm).read_bytes()) == sha256(data)
    assert other_bed.swarm_key != bed.swarm_key
    own_network = {node.peer_id for node in bed.nodes}
    for node in other_bed.nodes:
        assert not own_network & {peer for peer, _ in node.client().swarm_peers()}, "private networks met"
    one.market_app_delete(app.id)
    one.market_delete(market)
    one.image_delete(image)
    bed.stop_node(ours)


def _monitored(one: GenuineOne, market: int) -> bool:
    """Whether oned has recorded a monitor of the marketplace (its TOTAL_MB, from the driver's answer)."""
    shown = one.frontend.run(["onemarket", "show", str(market), "-x"]).stdout.decode()
    return "<TOTAL_MB>0</TOTAL_MB>" not in shown


def _published(bed: Bed, key: str) -> tuple[str, Catalogue]:
    """The catalogue's CID and apps, resolved from the key's IPNS name as another cloud resolves it."""
    env = {"IPFS_PATH": str(bed.frontend.repo), "PATH": "/usr/bin:/bin"}
    name = ipns_name(bed.frontend, key)
    resolved = subprocess.run(
        [str(KUBO), "name", "resolve", "--nocache", f"/ipns/{name}"], env=env, check=True, capture_output=True
    )
    path = resolved.stdout.decode().strip()
    catalogue = parse_catalogue(b"".join(bed.frontend.client().cat(path)), pytest.fail)
    return path.removeprefix("/ipfs/"), catalogue


def in_frontend(bed: Bed, path: str) -> Path:
    """A file of the frontend's ``/var/lib/one`` as the tests reach it."""
    return bed.frontend_var_lib_one / Path(path).relative_to("/var/lib/one")
