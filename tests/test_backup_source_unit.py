"""A backup disk as an image source (``oneimage restore`` into an ``ipfs`` datastore): read through the
downloader of the remotes tree, its failure told in one line, without oned or Kubo."""

from __future__ import annotations

from pathlib import Path

import pytest

from one_ipfs.datastore import sources
from one_ipfs.errors import InvalidInput, StorageError

URL = "rsync://100//0:6da1c7,1:06132a/var/lib/one//datastores/100/13/06132a/disk.0.1"
QCOW2 = b"QFI\xfb" + bytes(4096)


def downloader(remotes: Path, script: str) -> Path:
    """A stand-in for OpenNebula's ``datastore/downloader.sh`` in a remotes tree of its own; it records
    its arguments beside itself."""
    path = remotes / "datastore" / "downloader.sh"
    path.parent.mkdir(parents=True)
    path.write_text(f'#!/bin/sh\necho "$@" > "$(dirname "$0")/args"\n{script}\n')
    path.chmod(0o755)
    return path


@pytest.fixture
def remotes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ONE_IPFS_REMOTES", str(tmp_path))
    return tmp_path


def test_a_backup_disk_streams_through_opennebulas_downloader_undecompressed(remotes: Path) -> None:
    (remotes / "disk").write_bytes(QCOW2)
    script = downloader(remotes, f'cat "{remotes / "disk"}"')

    with sources.open_image(URL, [], [], 10) as image:
        assert (image.format, image.reader.read()) == ("qcow2", QCOW2)

    assert (script.parent / "args").read_text().split() == ["--nodecomp", URL, "-"]


def test_a_failed_backup_download_is_its_last_line(remotes: Path) -> None:
    downloader(
        remotes, 'echo "ssh: connect to host backup port 22: refused" >&2\necho "Error copying" >&2\nexit 255'
    )

    with (
        pytest.raises(InvalidInput, match=r"cannot read the backup disk rsync://.*: Error copying$"),
        sources.open_image(URL, [], [], 10) as image,
    ):
        image.reader.read()


def test_a_backup_download_that_outlasts_its_bound_is_stopped(remotes: Path) -> None:
    downloader(remotes, "sleep 30")

    with (
        pytest.raises(StorageError, match=r"took more than 1 s: stopped$"),
        sources.open_image(URL, [], [], 1) as image,
    ):
        image.reader.read()
