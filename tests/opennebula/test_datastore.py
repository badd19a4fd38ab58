"""The datastore driver under genuine oned, on real Kubo nodes.

Each test is an OpenNebula operation (``oneimage create``, ``oneimage clone``, ``oneimage delete``,
datastore monitoring) run the way oned runs it, and checks what a user relies on: the READY image's
content is the original bytes, and a failure is one clear line that leaves no pin or file behind.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import secrets
import subprocess
from pathlib import Path

import pytest

from testbed.bed import Bed
from testbed.genuine import GenuineOne
from testbed.one import Datastore, Image, OneFailure
from tests.support.images import disk_bytes, sha256
from tests.support.vms import SETTINGS, add_on

pytestmark = [pytest.mark.bed, pytest.mark.opennebula]


def image_content(bed: Bed, image: Image) -> bytes:
    """What a deploy of the image gets: its recorded CID, read from the datastore's node."""
    return b"".join(bed.frontend.client().cat(f"/ipfs/{image.template['IPFS_CID']}"))


def frontend_pins(bed: Bed) -> set[str]:
    return {pin.cid for pin in bed.frontend.client().pin_ls()}


def local_file(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    path.chmod(0o644)
    return path


def test_oneimage_create_from_an_ipfs_cid_fetches_it_from_a_host_and_keeps_the_bytes(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore
) -> None:
    data = disk_bytes(6 << 20, seed=1)
    cid = add_on(bed, "h2", data)

    image = one.image_create(ipfs_ds, name="from-cid", path=f"/ipfs/{cid}")

    assert image.state == "READY"
    assert image.source == f"one-ipfs/ds{ipfs_ds.id}/img{image.id}"
    assert (image.format, image.size_mb) == ("raw", 6)
    assert image.template["IPFS_CID"] == cid
    assert image.template["IPFS_VERSIONS"] == f"1:{cid}"
    assert sha256(image_content(bed, image)) == sha256(data)
    assert cid in frontend_pins(bed)


@pytest.mark.current_version
@pytest.mark.parametrize("form", ["fs:/ipfs/{cid}", "ipfs://{cid}", "/ipfs/{dir}/disk.img"])
def test_oneimage_create_accepts_every_ipfs_path_form(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore, form: str
) -> None:
    data = disk_bytes(1 << 20, seed=hash(form) & 0xFFFF)
    node = bed.host("h3").node.client()
    cid = node.add(io.BytesIO(data), settings=SETTINGS).cid
    mfs = f"/form-{abs(hash(form))}"
    node.files_cp(f"/ipfs/{cid}", f"{mfs}/disk.img")
    folder = node.files_stat(mfs).cid

    image = one.image_create(ipfs_ds, name=f"form-{abs(hash(form))}", path=form.format(cid=cid, dir=folder))

    assert image.template["IPFS_CID"] == cid
    assert image_content(bed, image) == data


@pytest.mark.current_version
def test_an_ipns_image_records_the_cid_it_resolved_to(bed: Bed, one: GenuineOne, ipfs_ds: Datastore) -> None:
    data = disk_bytes(1 << 20, seed=7)
    h1 = bed.host("h1").node.client()
    cid = h1.add(io.BytesIO(data), settings=SETTINGS).cid
    name = h1.name_publish(f"/ipfs/{cid}")

    image = one.image_create(ipfs_ds, name="from-ipns", path=f"ipns://{name}")

    assert image.template["IPFS_CID"] == cid
    assert image.template["IPFS_ORIGIN"] == f"/ipns/{name}"
    assert image_content(bed, image) == data


def test_oneimage_create_from_a_frontend_file_in_safe_dirs(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore, local_dir: Path
) -> None:
    data = disk_bytes(3 << 20, seed=3)
    path = local_file(local_dir, "plain.img", data)

    image = one.image_create(
        ipfs_ds,
        name="local",
        path=str(path),
        template={"MD5": hashlib.md5(data).hexdigest(), "SHA1": hashlib.sha1(data).hexdigest()},
    )

    assert image.state == "READY"
    assert image_content(bed, image) == data
    expected = bed.frontend.client().add(io.BytesIO(data), settings=SETTINGS, only_hash=True).cid
    assert image.template["IPFS_CID"] == expected


@pytest.mark.current_version
@pytest.mark.parametrize(
    ("suffix", "compress"),
    [(".gz", gzip.compress), (".bz2", bz2.compress), (".xz", lzma.compress)],
)
def test_compressed_images_are_decompressed_on_the_fly(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore, web: tuple[str, Path], suffix: str, compress: object
) -> None:
    data = disk_bytes(2 << 20, seed=len(suffix))
    url, folder = web
    published = compress(data)  # type: ignore[operator]
    (folder / f"disk{suffix}").write_bytes(published)

    image = one.image_create(
        ipfs_ds,
        name=f"web{suffix}",
        path=f"{url}/disk{suffix}",
        template={"MD5": hashlib.md5(published).hexdigest()},
    )

    assert image_content(bed, image) == data


@pytest.mark.current_version
def test_a_qcow2_image_is_sized_by_its_virtual_size(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore, local_dir: Path
) -> None:
    path = local_dir / "big.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "10G"], check=True)
    path.chmod(0o644)

    image = one.image_create(ipfs_ds, name="qcow2", path=str(path))

    assert (image.format, image.size_mb) == ("qcow2", 10240)
    assert image_content(bed, image) == path.read_bytes()


def test_oneimage_clone_copies_nothing_and_deleting_either_keeps_the_other(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore
) -> None:
    data = disk_bytes(2 << 20, seed=11)
    original = one.image_create(ipfs_ds, name="original", path=f"/ipfs/{add_on(bed, 'h1', data)}")
    repo_before = bed.frontend.client().repo_stat().repo_size

    clone = one.image_clone(original, "clone")

    assert clone.source != original.source
    assert clone.template["IPFS_CID"] == original.template["IPFS_CID"]
    assert bed.frontend.client().repo_stat().repo_size - repo_before < 64 << 10
    one.image_delete(original)
    assert original.template["IPFS_CID"] in frontend_pins(bed)
    assert image_content(bed, one.image(clone)) == data
    one.image_delete(clone)
    assert original.template["IPFS_CID"] not in frontend_pins(bed)


def test_a_datablock_is_created_sparse_and_formatted(bed: Bed, one: GenuineOne, ipfs_ds: Datastore) -> None:
    repo_before = bed.frontend.client().repo_stat().repo_size

    image = one.image_create(ipfs_ds, name="data", type="DATABLOCK", size_mb=256, fs="ext4")

    content = image_content(bed, image)
    assert len(content) == 256 << 20
    assert content[1080:1082] == b"\x53\xef"  # the ext4 superblock magic
    assert bed.frontend.client().repo_stat().repo_size - repo_before < 16 << 20


def failed_create(one: GenuineOne, ipfs_ds: Datastore, **kwargs: object) -> str:
    """Create an image that must fail; return the one line oned got. Each has a name of its own: oned keeps
    an image whose copy failed, in ERROR, under its name."""
    with pytest.raises(OneFailure) as failure:
        one.image_create(ipfs_ds, name=f"bad-{secrets.token_hex(4)}", **kwargs)  # type: ignore[arg-type]
    return failure.value.info


@pytest.mark.current_version
@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/ipfs/not-a-cid", "not a valid IPFS path"),
        ("/ipfs/bafy; rm -rf /", "not a valid IPFS path"),
        ("/var/tmp/one-ipfs-tests-missing/disk.img", "does not exist"),
        ("/etc/passwd", "restricted folder"),
        ("/var/tmp/../../etc/shadow", "restricted folder"),
        ("ftp://example.org/disk.img", "absolute frontend path"),
    ],
)
def test_a_bad_path_fails_with_one_clear_line_and_leaves_nothing(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore, local_dir: Path, path: str, reason: str
) -> None:
    pins = frontend_pins(bed)

    info = failed_create(one, ipfs_ds, path=path)

    assert reason in info
    assert "\n" not in info
    assert frontend_pins(bed) == pins


def test_an_http_404_fails_with_one_clear_line(
    one: GenuineOne, ipfs_ds: Datastore, web: tuple[str, Path]
) -> None:
    info = failed_create(one, ipfs_ds, path=f"{web[0]}/nothing-here.img")

    assert "HTTP 404" in info


@pytest.mark.current_version
def test_a_checksum_mismatch_pins_nothing(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore, local_dir: Path
) -> None:
    data = disk_bytes(1 << 20, seed=13)
    path = local_file(local_dir, "tampered.img", data)
    cid = bed.frontend.client().add(io.BytesIO(data), settings=SETTINGS, only_hash=True).cid

    info = failed_create(one, ipfs_ds, path=str(path), template={"MD5": "0" * 32})

    assert "MD5 mismatch" in info
    assert cid not in frontend_pins(bed)


@pytest.mark.current_version
def test_content_nobody_holds_fails_after_the_stall_timeout(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore
) -> None:
    cid = bed.frontend.client().add(io.BytesIO(os.urandom(4096)), settings=SETTINGS, only_hash=True).cid

    info = failed_create(one, ipfs_ds, path=f"/ipfs/{cid}")

    assert cid in info
    assert cid not in frontend_pins(bed)


@pytest.mark.current_version
def test_a_stopped_frontend_node_fails_the_import_with_one_line(
    bed: Bed, one: GenuineOne, ipfs_ds: Datastore
) -> None:
    cid = add_on(bed, "h1", disk_bytes(1 << 20, seed=17))
    bed.stop_node(bed.frontend)
    try:
        info = failed_create(one, ipfs_ds, path=f"/ipfs/{cid}")
    finally:
        bed.start_node(bed.frontend)

    assert "daemon may be down" in info
    assert cid not in frontend_pins(bed)
