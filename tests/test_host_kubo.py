"""The host commands against real Kubo: a datastore node holding images and a host node that deploys them.

Both are private loopback nodes on free ports (never 5001/8080), peered with each other only.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from one_ipfs.host import __main__ as host_cli
from one_ipfs.ipfs import network
from one_ipfs.ipfs.rpc import ImportSettings
from tests.support.host_requests import request_line
from tests.test_rpc import LocalNode

pytestmark = pytest.mark.bed

MIB = 1 << 20
SETTINGS = ImportSettings()


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalNode, LocalNode]]:
    """(datastore node, host node), connected."""
    swarm_key = network.generate_swarm_key()
    started: list[LocalNode] = []
    try:
        for name in ("datastore", "host"):
            started.append(LocalNode(tmp_path_factory.mktemp(name), swarm_key))
        datastore, host = (node.wait_ready() for node in started)
        host.client().swarm_connect(datastore.node.multiaddr)
        yield datastore, host
    finally:
        for node in started:
            node.stop()


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ONE_IPFS_HOST_ROOT", str(tmp_path))
    return tmp_path


def image_bytes() -> bytes:
    """A disk as images are: some data, long zero runs."""
    return os.urandom(3 * MIB + 4321) + bytes(12 * MIB) + os.urandom(MIB)


def host_command(
    capsys: pytest.CaptureFixture[str], host: LocalNode, *words: str
) -> tuple[int, dict[str, Any], list[str]]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdin", io.StringIO(request_line([*words, "--api", host.node.api])))
        code = host_cli.main()
    captured = capsys.readouterr()
    plain = [line for line in captured.err.splitlines() if not line.startswith(("INFO:", "ERROR:"))]
    return code, json.loads(captured.out) if captured.out.strip() else {}, plain


def test_host_deploys_an_image_its_node_fetches_from_the_datastore_node(
    root: Path, nodes: tuple[LocalNode, LocalNode], capsys: pytest.CaptureFixture[str]
) -> None:
    datastore, host = nodes
    image = image_bytes()
    cid = datastore.client().add(io.BytesIO(image), settings=SETTINGS, pin_name="one-ds100-img1-v1").cid
    disk = root / "datastores" / "0" / "7" / "disk.0"

    code, before, _ = host_command(capsys, host, "has", "--cid", cid)
    assert (code, before["local"]) == (0, False)

    code, result, plain = host_command(
        capsys, host, "fetch", "--cid", cid, "--disk", str(disk), "--size-mb", "32", "--vm", "7"
    )

    assert (code, plain) == (0, [])
    assert result["cid"] == cid
    with open(disk, "rb") as handle:
        assert handle.read(len(image)) == image
    assert disk.stat().st_size == 32 * MIB
    assert disk.stat().st_blocks * 512 < 8 * MIB
    assert [(p.cid, p.name) for p in host.client().pin_ls(cid)] == [(cid, f"one-cache-{cid}")]
    code, after, _ = host_command(capsys, host, "has", "--cid", cid)
    assert after == {"local": True, "size_local": after["size_local"], "size": len(image)}


def test_saved_disk_has_the_cid_the_datastore_would_give_it_and_can_be_pinned_from_the_host(
    root: Path, nodes: tuple[LocalNode, LocalNode], capsys: pytest.CaptureFixture[str]
) -> None:
    datastore, host = nodes
    disk = root / "datastores" / "0" / "8" / "disk.1"
    disk.parent.mkdir(parents=True)
    disk.write_bytes(image_bytes())
    expected = datastore.client().add(disk, settings=SETTINGS, only_hash=True).cid

    code, result, plain = host_command(
        capsys, host, "save", "--disk", str(disk), "--format", "raw", "--vm", "8"
    )

    assert (code, plain) == (0, [])
    assert result == {"cid": expected, "size": disk.stat().st_size, "awaiting": []}
    datastore.client().pin_add(expected, name="one-ds100-img2-v2", timeout=60)
    assert datastore.client().files_stat(f"/ipfs/{expected}", with_local=True).local is True


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img is not installed")
def test_unchanged_overlay_disk_saves_back_to_its_image_cid(
    root: Path, nodes: tuple[LocalNode, LocalNode], capsys: pytest.CaptureFixture[str]
) -> None:
    datastore, host = nodes
    image = image_bytes()
    cid = datastore.client().add(io.BytesIO(image), settings=SETTINGS, pin_name="one-ds100-img3-v1").cid
    disk = root / "datastores" / "0" / "9" / "disk.0"

    code, _, plain = host_command(
        capsys, host, "fetch", "--cid", cid, "--disk", str(disk), "--mode", "overlay"
    )
    assert (code, plain) == (0, [])
    code, saved, plain = host_command(capsys, host, "save", "--disk", str(disk), "--format", "raw")

    assert (code, plain) == (0, [])
    assert saved["cid"] == cid


def test_deploy_of_content_no_node_has_fails_cleanly(
    root: Path, nodes: tuple[LocalNode, LocalNode], capsys: pytest.CaptureFixture[str]
) -> None:
    datastore, host = nodes
    missing = datastore.client().add(io.BytesIO(os.urandom(4096)), settings=SETTINGS, only_hash=True).cid
    disk = root / "datastores" / "0" / "10" / "disk.0"

    code, result, plain = host_command(
        capsys,
        host,
        "fetch",
        "--cid",
        missing,
        "--disk",
        str(disk),
        "--stall-timeout",
        "3",
        "--timeout",
        "20",
    )

    assert (code, result) == (1, {})
    assert len(plain) == 1
    assert not disk.exists() and not disk.with_name("disk.0.part").exists()
    assert host.client().pin_ls(missing) == []
