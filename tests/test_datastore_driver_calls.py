"""The datastore driver's actions called the way oned's driver manager calls them, through the simulator on
the bed, where no OpenNebula command makes genuine oned send them: the pre-6.8 calling convention, and an
EXPORT read back by OpenNebula's own downloader (until a marketplace on the genuine bed orders it).
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from testbed.bed import Bed
from testbed.one import Datastore, OneSim
from tests.support.images import disk_bytes, sha256
from tests.support.vms import add_on

pytestmark = pytest.mark.bed


def test_the_pre_6_8_calling_convention_is_understood(bed: Bed, one: OneSim, ipfs_ds: Datastore) -> None:
    data = disk_bytes(3 << 20, seed=5)
    cid = add_on(bed, "h1", data)
    payload = base64.b64encode(
        (
            f"<DS_DRIVER_ACTION_DATA><IMAGE><PATH>/ipfs/{cid}</PATH></IMAGE>"
            f"{one.datastore(ipfs_ds).xml}</DS_DRIVER_ACTION_DATA>"
        ).encode()
    ).decode()

    result = one.datastore_manager.request("STAT", 42, payload, convention="pre-6.8")

    assert (result.success, result.info) == (True, "3")


VENDOR = Path(__file__).resolve().parents[2] / "shared" / "vendor" / "opennebula-7.4.0.tar.xz"


@pytest.fixture(scope="module")
def downloader(local_dir: Path) -> Path:
    """OpenNebula's own ``downloader.sh`` (what the http and s3 marketplaces read IMPORT_SOURCE with),
    extracted from the release with the ``scripts_common.sh`` it sources, laid out as under ONE_LOCATION."""
    if not VENDOR.is_file():
        pytest.skip(f"OpenNebula's release is not at {VENDOR}")
    members = ("src/datastore_mad/remotes/downloader.sh", "src/mad/sh/scripts_common.sh")
    top = "opennebula-7.4.0"
    subprocess.run(
        ["tar", "-xJf", VENDOR, "-C", local_dir, *(f"{top}/{member}" for member in members)], check=True
    )
    root = local_dir / top / "src"
    (local_dir / "lib" / "sh").mkdir(parents=True)
    (root / "mad" / "sh" / "scripts_common.sh").rename(local_dir / "lib" / "sh" / "scripts_common.sh")
    for folder, _, files in os.walk(local_dir):
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(Path(folder) / name, 0o755)
    return root / "datastore_mad" / "remotes" / "downloader.sh"


def test_export_gives_a_gateway_url_opennebulas_downloader_reads_and_an_ipfs_datastore_takes_as_its_cid(
    bed: Bed, one: OneSim, ipfs_ds: Datastore, downloader: Path
) -> None:
    local_dir = downloader.parents[3].parent
    data = disk_bytes(2 << 20, seed=19)
    image = one.image_create(ipfs_ds, name="to-market", path=f"/ipfs/{add_on(bed, 'h3', data)}")
    cid = image.template["IPFS_CID"]
    payload = base64.b64encode(
        f"<DS_DRIVER_ACTION_DATA>{image.xml}{one.datastore(ipfs_ds).xml}</DS_DRIVER_ACTION_DATA>".encode()
    ).decode()

    result = one.datastore_manager.request("EXPORT", image.id, payload)

    info = ET.fromstring(result.info)
    source = info.findtext("IMPORT_SOURCE") or ""
    assert source == f"{bed.frontend.gateway}/ipfs/{cid}"
    assert info.findtext("MD5") == hashlib.md5(data).hexdigest()
    assert (info.findtext("SIZE"), info.findtext("FORMAT")) == ("2", "raw")
    run = bed.frontend_command(
        ["bash", downloader, "--md5", info.findtext("MD5") or "", source, "-"],
        env={"ONE_LOCATION": str(local_dir)},
    )
    assert run.returncode == 0, run.stderr.decode(errors="replace")
    assert sha256(run.stdout) == sha256(data)

    added_before = bed.frontend.client().repo_stat().repo_size
    again = one.image_create(ipfs_ds, name="from-market", path=source)

    assert again.template["IPFS_CID"] == cid
    assert again.template["IPFS_ORIGIN"] == f"/ipfs/{cid}"
    assert (again.format, again.size_mb) == ("raw", 2)
    assert bed.frontend.client().repo_stat().repo_size - added_before < 256 << 10  # a reference, no copy
