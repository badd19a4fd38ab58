"""The host side of the transfer driver against a fake Kubo node: real files, real locks, real qemu-img."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from one_ipfs.errors import ContentNotFound, InvalidInput, StorageError, StreamBroken
from one_ipfs.host import __main__ as cli
from one_ipfs.host import cache as cache_module
from one_ipfs.host import commands, disks, inputs, protocol
from one_ipfs.host.cache import HostCache
from one_ipfs.ipfs import fleet
from one_ipfs.ipfs.paths import DAG_PB, Cid
from one_ipfs.ipfs.rpc import DagLink, ImportSettings, KuboClient
from one_ipfs.ipfs.transport import Call
from tests.hostile.harness import CID
from tests.support.host_requests import request_line
from tests.support.kubo_wire import Answer, FakeNode

MIB = 1 << 20
RAW_CODEC = 0x55
SHA2_256 = 0x12
needs_qemu_img = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img is not installed")


class Silence(Answer):
    """A pubsub subscription nobody else publishes on (this host fetches alone): empty until closed."""

    def __init__(self) -> None:
        super().__init__()
        self.closed = threading.Event()

    def events(self) -> Iterator[dict[str, Any]]:
        self.closed.wait()
        yield from ()

    def interrupt(self) -> None:
        self.closed.set()

    def close(self) -> None:
        self.closed.set()


class FakeKubo(KuboClient):
    """The real client on a fake node that 'fetches' from a dict of published content and records what it
    was asked.

    Content is published as Kubo imports it: raw leaves of 1 MiB under a dag-pb root (one raw block
    when it fits in one), or with ``leaves_inside`` as dag-pb leaves whose bytes only ``cat`` can read.
    A command the node does not answer fails loudly instead of reaching any node.
    """

    def __init__(self) -> None:
        super().__init__(
            transport=FakeNode(
                {
                    "files/stat": self._files_stat,
                    "block/stat": lambda call: {"Size": len(self.network[call.args[0]])},
                    "dag/get": self._dag_get,
                    "id": {"ID": "12D3KooWFakeHost", "Addresses": [], "AgentVersion": "fake"},
                    "pubsub/sub": lambda call: Silence(),
                    "pubsub/pub": self._pubsub_pub,
                    "config": {"Value": []},  # no gateway: blocks are read through ``block get``
                    "swarm/peers": {"Peers": []},
                    "swarm/peering/ls": {"Peers": []},  # the content is "in the network": no peer to dial
                    "bitswap/stat": {"BlocksReceived": 0, "BlocksSent": 0},
                    "block/get": self._block_get,
                    "pin/ls": self._pin_ls,
                    "pin/add": lambda call: Answer.streamed(self._pin_add(call)),
                    "pin/rm": self._pin_rm,
                    "cat": self._cat,
                    "add": self._add,
                    "repo/gc": self._repo_gc,
                }
            )
        )
        self.network: dict[str, bytes] = {}
        self.links: dict[str, list[DagLink]] = {}
        self.pins: dict[str, str] = {}
        self.pin_adds: list[str] = []
        self.gc_runs = 0
        self.break_reads_after: int | None = None
        self.cats = 0
        self.block_reads = 0
        self.pin_delay = 0.0
        self.reports: list[bytes] = []
        self.lock = threading.Lock()

    def publish(self, data: bytes, *, leaves_inside: bool = False) -> str:
        if len(data) <= MIB and not leaves_inside:
            return self._block(RAW_CODEC, data)
        pieces = [data[start : start + MIB] for start in range(0, len(data), MIB)]
        codec = DAG_PB if leaves_inside else RAW_CODEC
        leaves = [DagLink(self._block(codec, piece), len(piece)) for piece in pieces]
        if leaves_inside:
            for leaf in leaves:
                self.links[leaf.cid] = []
        root = self._block(DAG_PB, data + b"root")
        self.network[root] = data
        self.links[root] = leaves
        return root

    def _block(self, codec: int, data: bytes) -> str:
        cid = Cid(1, codec, SHA2_256, hashlib.sha256(data).digest()).v1_base32()
        self.network[cid] = data
        return cid

    def _files_stat(self, call: Call) -> dict[str, Any]:
        cid = call.args[0].removeprefix("/ipfs/")
        size = len(self.network[cid])
        return {
            "Hash": cid,
            "Size": size,
            "CumulativeSize": size,
            "Blocks": 1,
            "Type": "file",
            "Local": cid in self.pins,
        }

    def _dag_get(self, call: Call) -> dict[str, Any]:
        return {"Links": [{"Hash": {"/": link.cid}, "Tsize": link.size} for link in self.links[call.args[0]]]}

    def _pubsub_pub(self, call: Call) -> dict[str, Any]:
        assert call.upload is not None and isinstance(call.upload.reader, bytes)
        self.reports.append(call.upload.reader)
        return {}

    def _block_get(self, call: Call) -> Answer:
        cid = call.args[0]
        self.block_reads += 1
        data = self.network[cid]
        if self.break_reads_after is not None:
            offset = next(
                index * MIB
                for links in self.links.values()
                for index, link in enumerate(links)
                if link.cid == cid
            )
            if offset >= self.break_reads_after:
                raise StreamBroken("ipfs block get: the stream broke")
        return Answer(data=data)

    def _pin_ls(self, call: Call) -> dict[str, Any]:
        with self.lock:
            pinned = {c: n for c, n in self.pins.items() if c in call.args or not call.args}
        return {"Keys": {c: {"Type": "recursive", "Name": n} for c, n in pinned.items()}}

    def _pin_add(self, call: Call) -> Iterator[dict[str, Any]]:
        cid = call.args[0]
        with self.lock:
            self.pin_adds.append(cid)
        time.sleep(self.pin_delay)
        if call.params.get("progress") == "true":
            yield {"Progress": 1, "Bytes": len(self.network[cid])}
        with self.lock:
            self.pins[cid] = call.params.get("name", "")
        yield {"Pins": [cid]}

    def _pin_rm(self, call: Call) -> dict[str, Any]:
        with self.lock:
            del self.pins[call.args[0]]
        return {}

    def _cat(self, call: Call) -> Answer:
        data = self.network[call.args[0].removeprefix("/ipfs/")]
        self.cats += 1
        if self.break_reads_after is None:
            return Answer(data=data)
        return Answer(data=self._broken_after(data, self.break_reads_after))

    def _broken_after(self, data: bytes, length: int) -> Iterator[bytes]:
        yield data[:length]
        raise StreamBroken("ipfs cat: the stream broke")

    def _add(self, call: Call) -> dict[str, Any]:
        assert call.upload is not None
        source = call.upload.reader
        data = source if isinstance(source, bytes) else source.read()
        call.upload.sent = len(data)  # as the HTTP wire counts what it sent
        cid = self.publish(data)
        if call.params.get("pin") == "true":
            self.pins[cid] = call.params.get("pin-name", "")
        return {"Hash": cid, "Size": str(len(data))}

    def _repo_gc(self, call: Call) -> Answer:
        self.gc_runs += 1
        return Answer()


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ONE_IPFS_HOST_ROOT", str(tmp_path))
    return tmp_path


@pytest.fixture
def kubo() -> FakeKubo:
    return FakeKubo()


@pytest.fixture
def cache(root: Path) -> HostCache:
    return HostCache(root / "datastores" / ".one-ipfs-cache")


def base_of(cache: HostCache, cid: str) -> Path:
    """The one base file of ``cid``: synced, or left to the kernel by a copy deploy of this boot."""
    (base,) = cache.bases_dir.glob(f"{cid}*")
    return base


def disk_of_vm(root: Path, vm: int, disk_id: int = 0) -> Path:
    return root / "datastores" / "0" / str(vm) / f"disk.{disk_id}"


def half_zero_image() -> bytes:
    """Data and zero runs, some of the zero runs inside 1 MiB chunks, some spanning whole chunks."""
    pieces = []
    for index in range(8):
        pieces.append(os.urandom(128 << 10))
        pieces.append(bytes((384 << 10) if index % 2 else (2 << 20)))
    return b"".join(pieces)


def deploy(
    kubo: FakeKubo,
    cache: HostCache,
    cid: str,
    disk: Path,
    *,
    mode: str = "copy",
    size_mb: int = 0,
    vm: int | None = None,
    cache_max_mb: int = 1 << 20,
) -> protocol.Deployed:
    request = protocol.Fetch(
        cid=cid, disk=disk, mode=mode, size_mb=size_mb, vm=vm, stall_timeout=10.0, cache=room(cache_max_mb)
    )
    return commands.fetch(kubo, cache, request)


def room(cache_max_mb: int) -> protocol.Cache:
    """The host cache's settings in a request: its size (the folder is the test's own cache)."""
    return protocol.Cache(max_mb=cache_max_mb)


@dataclass(frozen=True)
class CliRun:
    code: int
    out: str
    err: str

    @property
    def plain(self) -> list[str]:
        """The stderr lines that are not log lines: a failure's reason."""
        return [line for line in self.err.splitlines() if not line.startswith(("INFO:", "ERROR:"))]


def run_cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *words: str) -> CliRun:
    """The host side given the request ``words`` write (``host_requests``) on its stdin."""
    monkeypatch.setattr("sys.stdin", io.StringIO(request_line(list(words))))
    code = cli.main()
    captured = capsys.readouterr()
    return CliRun(code, captured.out, captured.err)


def test_deployed_disk_is_an_exact_sparse_copy(root: Path, kubo: FakeKubo, cache: HostCache) -> None:
    image = half_zero_image()
    cid = kubo.publish(image)
    disk = disk_of_vm(root, 7)

    result = deploy(kubo, cache, cid, disk)

    assert disk.read_bytes() == image
    assert disk.stat().st_blocks * 512 < len(image) // 3
    assert not disk.with_name("disk.0.part").exists()
    assert result == protocol.Deployed(cid, "copy", "raw")
    assert kubo.pins == {cid: f"one-cache-{cid}"}


def test_a_deploy_run_again_answers_as_the_first_did_and_keeps_the_disk(
    root: Path, kubo: FakeKubo, cache: HostCache
) -> None:
    cid = kubo.publish(half_zero_image())
    disk = disk_of_vm(root, 7)
    first = deploy(kubo, cache, cid, disk)
    disk.write_bytes(b"the guest wrote this")

    again = deploy(kubo, cache, cid, disk)

    assert again == first
    assert disk.read_bytes() == b"the guest wrote this"
    assert kubo.cats == 0  # written from the leaf blocks as they came, never read back


def deployed_to_vm_7(root: Path, kubo: FakeKubo, cache: HostCache) -> tuple[bytes, str]:
    """A half-zero image, deployed once to VM 7 on this host: the image and its CID."""
    image = half_zero_image()
    cid = kubo.publish(image)
    deploy(kubo, cache, cid, disk_of_vm(root, 7))
    return image, cid


def test_second_disk_of_an_image_on_a_host_is_a_copy_of_its_base_file(
    root: Path, kubo: FakeKubo, cache: HostCache
) -> None:
    image, cid = deployed_to_vm_7(root, kubo, cache)
    reads = kubo.block_reads

    deploy(kubo, cache, cid, disk_of_vm(root, 8))

    assert disk_of_vm(root, 8).read_bytes() == image
    assert disk_of_vm(root, 8).stat().st_blocks * 512 < len(image) // 3
    assert (kubo.pin_adds, kubo.cats, kubo.block_reads) == ([cid], 0, reads)


def test_a_host_fetching_an_image_tells_the_other_hosts_until_it_holds_every_block(
    root: Path, kubo: FakeKubo, cache: HostCache
) -> None:
    _, cid = deployed_to_vm_7(root, kubo, cache)

    leaves = len({link.cid for link in kubo.links[cid]})  # a run of zeros is one leaf
    assert kubo.reports, "no progress report was published"
    held = [fleet._decode_held(report, leaves) for report in kubo.reports]
    assert all(
        now is not None and before is not None and now & before == before for before, now in pairwise(held)
    )
    assert held[-1] == (1 << leaves) - 1


def test_a_base_file_that_went_missing_is_written_again_from_the_nodes_blocks(
    root: Path, kubo: FakeKubo, cache: HostCache
) -> None:
    image, cid = deployed_to_vm_7(root, kubo, cache)
    base_of(cache, cid).unlink()

    deploy(kubo, cache, cid, disk_of_vm(root, 8))

    assert disk_of_vm(root, 8).read_bytes() == base_of(cache, cid).read_bytes() == image
    assert (kubo.pin_adds, kubo.cats) == ([cid], 0)


def test_the_base_of_copies_serves_only_the_boot_that_wrote_it(
    root: Path, kubo: FakeKubo, cache: HostCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = half_zero_image()
    cid = kubo.publish(image)
    boot = root / "boot_id"
    monkeypatch.setattr(cache_module, "BOOT_ID", boot)
    boot.write_text("1b6d1d7c-0000-4000-8000-000000000001\n")
    deploy(kubo, cache, cid, disk_of_vm(root, 7))
    unsynced = base_of(cache, cid)
    reads = kubo.block_reads

    boot.write_text("1b6d1d7c-0000-4000-8000-000000000002\n")  # the host rebooted
    deploy(kubo, cache, cid, disk_of_vm(root, 8))

    assert unsynced.name == f"{cid}.boot-1b6d1d7c-0000-4000-8000-000000000001"
    assert not unsynced.exists()
    assert base_of(cache, cid).name == f"{cid}.boot-1b6d1d7c-0000-4000-8000-000000000002"
    assert kubo.block_reads > reads
    assert disk_of_vm(root, 8).read_bytes() == image


@needs_qemu_img
def test_an_overlay_on_the_base_of_copies_syncs_it_first(
    root: Path, kubo: FakeKubo, cache: HostCache
) -> None:
    _, cid = deployed_to_vm_7(root, kubo, cache)
    reads = kubo.block_reads

    deploy(kubo, cache, cid, disk_of_vm(root, 8), mode="overlay")

    assert base_of(cache, cid) == cache.base_path(cid)
    assert sorted(path.name for path in cache.bases_dir.iterdir()) == [cid]
    assert kubo.block_reads == reads


def test_image_whose_leaves_are_not_raw_is_written_through_kubos_reader(
    root: Path, kubo: FakeKubo, cache: HostCache
) -> None:
    image = half_zero_image()
    cid = kubo.publish(image, leaves_inside=True)
    disk = disk_of_vm(root, 7)

    deploy(kubo, cache, cid, disk)

    assert disk.read_bytes() == image
    assert disk.stat().st_blocks * 512 < len(image) // 3
    assert kubo.cats == 1


def test_deployed_disk_grows_to_the_disk_size(root: Path, kubo: FakeKubo, cache: HostCache) -> None:
    image = os.urandom(3 * MIB)
    cid = kubo.publish(image)
    disk = disk_of_vm(root, 7)

    deploy(kubo, cache, cid, disk, size_mb=32)

    assert disk.stat().st_size == 32 * MIB
    with open(disk, "rb") as handle:
        assert handle.read(len(image)) == image
        assert handle.read() == bytes(29 * MIB)


def test_deployed_disk_never_shrinks_below_its_content(root: Path, kubo: FakeKubo, cache: HostCache) -> None:
    image = os.urandom(3 * MIB + 5)
    cid = kubo.publish(image)
    disk = disk_of_vm(root, 7)

    deploy(kubo, cache, cid, disk, size_mb=1)

    assert disk.read_bytes() == image


def test_broken_transfer_leaves_no_disk_no_part_and_no_pin(
    root: Path, kubo: FakeKubo, cache: HostCache
) -> None:
    cid = kubo.publish(os.urandom(5 * MIB))
    kubo.break_reads_after = 2 * MIB
    disk = disk_of_vm(root, 7)

    with pytest.raises(StreamBroken):
        deploy(kubo, cache, cid, disk)

    assert sorted(p.name for p in disk.parent.iterdir()) == []
    assert kubo.pins == {}
    assert cache.entry(cid) is None


def test_retried_deploy_after_a_broken_transfer_succeeds(
    root: Path, kubo: FakeKubo, cache: HostCache
) -> None:
    image = os.urandom(5 * MIB)
    cid = kubo.publish(image)
    kubo.break_reads_after = 2 * MIB
    disk = disk_of_vm(root, 7)
    with pytest.raises(StreamBroken):
        deploy(kubo, cache, cid, disk)

    kubo.break_reads_after = None
    deploy(kubo, cache, cid, disk)

    assert disk.read_bytes() == image


def test_failed_deploy_keeps_content_other_disks_still_use(
    root: Path, kubo: FakeKubo, cache: HostCache
) -> None:
    cid = kubo.publish(os.urandom(3 * MIB))
    deploy(kubo, cache, cid, disk_of_vm(root, 7))
    base_of(cache, cid).unlink()  # written again from the node, whose reads now break
    kubo.break_reads_after = MIB

    with pytest.raises(StreamBroken):
        deploy(kubo, cache, cid, disk_of_vm(root, 8))

    assert cid in kubo.pins
    assert cache.entry(cid) is not None
    assert not disk_of_vm(root, 8).exists()


def test_concurrent_deploys_of_one_image_fetch_it_once(root: Path, kubo: FakeKubo, cache: HostCache) -> None:
    image = os.urandom(2 * MIB)
    cid = kubo.publish(image)
    kubo.pin_delay = 0.3
    errors: list[BaseException] = []

    def deploy_vm(vm: int) -> None:
        try:
            deploy(kubo, HostCache(cache.folder), cid, disk_of_vm(root, vm), vm=vm)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=deploy_vm, args=(vm,)) for vm in (7, 8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert kubo.pin_adds == [cid]
    assert disk_of_vm(root, 7).read_bytes() == image
    assert disk_of_vm(root, 8).read_bytes() == image


def test_an_eviction_during_a_fetch_leaves_the_collection_to_a_later_one(
    root: Path, kubo: FakeKubo, cache: HostCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache_module, "GC_LOCK_WAIT", 0.2)
    unused = kubo.publish(os.urandom(MIB))
    deploy(kubo, cache, unused, disk_of_vm(root, 7), vm=7)
    commands.delete_disk(kubo, cache, protocol.DeleteDisk(disk=disk_of_vm(root, 7), vm=7))
    fetching = kubo.publish(os.urandom(2 * MIB))
    kubo.pin_delay = 2.0
    deploying = threading.Thread(
        target=deploy, args=(kubo, HostCache(cache.folder), fetching, disk_of_vm(root, 8)), kwargs={"vm": 8}
    )
    deploying.start()
    while fetching not in kubo.pin_adds:  # its blocks are in the node, not pinned yet
        assert deploying.is_alive()
        time.sleep(0.02)

    evicted = cache.evict(kubo, 0, gc_timeout=10)

    assert evicted == [unused]
    assert kubo.gc_runs == 0
    deploying.join()
    assert disk_of_vm(root, 8).is_file()
    assert fetching in kubo.pins


def test_content_pinned_by_the_datastore_is_used_but_never_unpinned(
    root: Path, kubo: FakeKubo, cache: HostCache
) -> None:
    cid = kubo.publish(os.urandom(MIB))
    kubo.pins[cid] = "one-ds100-img7-v3"

    deploy(kubo, cache, cid, disk_of_vm(root, 7))
    cache.evict(kubo, 0, gc_timeout=10)

    assert kubo.pin_adds == []
    assert kubo.pins == {cid: "one-ds100-img7-v3"}
    assert cache.entry(cid) is None


@needs_qemu_img
def test_eviction_keeps_the_base_of_a_running_overlay_disk(
    root: Path, kubo: FakeKubo, cache: HostCache
) -> None:
    used, old, recent = (kubo.publish(os.urandom(2 * MIB)) for _ in range(3))
    deploy(kubo, cache, used, disk_of_vm(root, 7), mode="overlay")
    deploy(kubo, cache, old, disk_of_vm(root, 8))
    deploy(kubo, cache, recent, disk_of_vm(root, 9))
    total = commands.cache_status(cache).total_bytes

    evicted = cache.evict(kubo, total - 1, gc_timeout=10)

    assert evicted == [old]
    assert set(kubo.pins) == {used, recent}
    assert kubo.gc_runs == 1
    assert cache.base_path(used).exists()

    evicted = cache.evict(kubo, 0, gc_timeout=10)

    assert evicted == [recent]
    assert set(kubo.pins) == {used}
    assert cache.base_path(used).exists()


@needs_qemu_img
def test_overlay_disk_reads_the_image_through_its_base(root: Path, kubo: FakeKubo, cache: HostCache) -> None:
    image = half_zero_image()
    cid = kubo.publish(image)
    disk = disk_of_vm(root, 7)

    deploy(kubo, cache, cid, disk, mode="overlay", size_mb=64)

    raw = disk.with_name("flat.raw")
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", disk, raw], check=True)
    assert raw.stat().st_size == 64 * MIB
    with open(raw, "rb") as handle:
        assert handle.read(len(image)) == image
    assert cache.base_path(cid).stat().st_mode & 0o222 == 0
    assert disks.read_record(disk) == disks.DiskRecord(cid, "qcow2", "overlay")


@needs_qemu_img
def test_image_that_points_at_host_files_is_refused(root: Path, kubo: FakeKubo, cache: HostCache) -> None:
    crafted = root / "crafted.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", "/etc/hostname", crafted, "1M"],
        check=True,
    )
    cid = kubo.publish(crafted.read_bytes())
    disk = disk_of_vm(root, 7)

    with pytest.raises(InvalidInput, match="refers to other files"):
        deploy(kubo, cache, cid, disk, mode="overlay")

    assert not disk.exists()
    assert not cache.base_path(cid).exists()
    assert kubo.pins == {}


@needs_qemu_img
def test_unchanged_overlay_disk_saves_back_to_its_image_cid(
    root: Path, kubo: FakeKubo, cache: HostCache
) -> None:
    image = os.urandom(2 * MIB + 100)
    cid = kubo.publish(image)
    disk = disk_of_vm(root, 7)
    deploy(kubo, cache, cid, disk, mode="overlay")

    saved = commands.save(kubo, cache, protocol.Save(disk=disk, format="raw", vm=7))

    assert saved == protocol.Stored(cid, len(image))


@needs_qemu_img
def test_a_copy_asked_as_qcow2_of_raw_content_is_converted_and_saves_back_as_raw(
    root: Path, kubo: FakeKubo, cache: HostCache
) -> None:
    image = half_zero_image()
    cid = kubo.publish(image)
    disk = disk_of_vm(root, 7)

    commands.fetch(
        kubo, cache, protocol.Fetch(cid=cid, disk=disk, size_mb=16, format="raw", disk_format="qcow2", vm=7)
    )

    assert disk.read_bytes()[:4] == b"QFI\xfb"
    assert disks.qcow2_size(disk) == 16 * MIB
    assert disks.read_record(disk) == disks.DiskRecord(cid, "qcow2", "copy")
    assert not disk.with_name("disk.0.part").exists()
    saved = commands.save(kubo, cache, protocol.Save(disk=disk, format="raw", vm=7))
    assert kubo.network[saved.cid] == image + bytes(16 * MIB - len(image))


@needs_qemu_img
def test_a_qcow2_disk_a_live_migration_brought_without_its_record_saves_back_as_raw(
    root: Path, kubo: FakeKubo, cache: HostCache
) -> None:
    image = os.urandom(MIB)
    disk = disk_of_vm(root, 7)
    disk.parent.mkdir(parents=True)
    flat = disk.with_name("flat.raw")
    flat.write_bytes(image)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", flat, disk], check=True)
    flat.unlink()

    saved = commands.save(kubo, cache, protocol.Save(disk=disk, format="raw", disk_format="qcow2", vm=7))

    assert disks.read_record(disk) is None
    assert kubo.network[saved.cid] == image


def test_an_overlay_asked_as_raw_is_refused_before_anything_is_fetched(
    root: Path, kubo: FakeKubo, cache: HostCache
) -> None:
    cid = kubo.publish(half_zero_image())

    with pytest.raises(InvalidInput, match="overlay is a qcow2 file"):
        request = protocol.Fetch(
            cid=cid, disk=disk_of_vm(root, 7), mode="overlay", format="raw", disk_format="raw"
        )
        commands.fetch(kubo, cache, request)

    assert kubo.pins == {}


@pytest.mark.skipif(shutil.which("qemu-io") is None, reason="qemu-io is not installed")
def test_overlay_disk_the_guest_wrote_to_saves_as_a_whole_raw_image(
    root: Path, kubo: FakeKubo, cache: HostCache
) -> None:
    image = os.urandom(2 * MIB)
    cid = kubo.publish(image)
    disk = disk_of_vm(root, 7)
    deploy(kubo, cache, cid, disk, mode="overlay", size_mb=4)
    guest_write = ["qemu-io", "-f", "qcow2", "-c", "write -P 0xab 1M 64k", str(disk)]
    subprocess.run(guest_write, check=True, capture_output=True)

    saved = commands.save(kubo, cache, protocol.Save(disk=disk, format="raw", vm=7))

    expected = image[:MIB] + b"\xab" * (64 << 10) + image[MIB + (64 << 10) :] + bytes(2 * MIB)
    assert kubo.network[saved.cid] == expected
    assert not disk.with_name("disk.0.saving").exists()
    assert set(kubo.pins) == {cid, saved.cid}


def test_saved_disk_stays_pinned_until_the_disk_is_deleted(
    root: Path, kubo: FakeKubo, cache: HostCache
) -> None:
    disk = disk_of_vm(root, 7)
    disk.parent.mkdir(parents=True)
    disk.write_bytes(os.urandom(MIB))

    saved = commands.save(kubo, cache, protocol.Save(disk=disk, format="raw", vm=7))
    cache.evict(kubo, 0, gc_timeout=10)

    assert kubo.pins == {saved.cid: f"one-cache-{saved.cid}"}

    commands.delete_disk(kubo, cache, protocol.DeleteDisk(disk=disk, vm=7, cache=room(0)))

    assert kubo.pins == {}


@needs_qemu_img
def test_deleting_a_disk_twice_succeeds_and_releases_it(root: Path, kubo: FakeKubo, cache: HostCache) -> None:
    cid = kubo.publish(os.urandom(MIB))
    disk = disk_of_vm(root, 7)
    deploy(kubo, cache, cid, disk, mode="overlay")
    commands.snapshot_create(protocol.SnapshotCreate(disk=disk, snap_id=0))

    commands.delete_disk(kubo, cache, protocol.DeleteDisk(disk=disk, vm=7))
    commands.delete_disk(kubo, cache, protocol.DeleteDisk(disk=disk, vm=7))

    assert list(disk.parent.iterdir()) == []
    entry = cache.entry(cid)
    assert entry is not None and entry.uses == {}


def test_the_cache_use_of_a_disk_that_moved_away_lapses(root: Path, kubo: FakeKubo, cache: HostCache) -> None:
    disk = disk_of_vm(root, 7)
    disk.parent.mkdir(parents=True)
    disk.write_bytes(os.urandom(MIB))
    saved = commands.save(kubo, cache, protocol.Save(disk=disk, format="raw", vm=7))

    shutil.rmtree(disk.parent)
    cache.evict(kubo, 0, gc_timeout=10)

    assert cache.entry(saved.cid) is None


@needs_qemu_img
def test_migration_target_keeps_the_base_until_the_vm_is_released(
    root: Path, kubo: FakeKubo, cache: HostCache
) -> None:
    cid = kubo.publish(os.urandom(MIB))
    disk = disk_of_vm(root, 7)

    commands.prefetch(
        kubo,
        cache,
        protocol.Prefetch(cid=cid, disk=disk, mode="overlay", vm=7, stall_timeout=10.0, cache=room(0)),
    )

    assert cache.base_path(cid).exists()
    assert not disk.exists()

    commands.release(kubo, cache, protocol.Release(vm=7, cache=room(0)))

    assert not cache.base_path(cid).exists()
    assert kubo.pins == {}


@needs_qemu_img
def test_vm_that_left_the_host_releases_its_overlay_bases(
    root: Path, kubo: FakeKubo, cache: HostCache
) -> None:
    cid = kubo.publish(os.urandom(MIB))
    disk = disk_of_vm(root, 7)
    deploy(kubo, cache, cid, disk, mode="overlay", vm=7)
    commands.save(kubo, cache, protocol.Save(disk=disk, format="raw"))
    cache.evict(kubo, 0, gc_timeout=10)
    assert cache.base_path(cid).exists()

    commands.release(kubo, cache, protocol.Release(vm=7, cache=room(0)))

    assert not cache.base_path(cid).exists()
    assert kubo.pins == {}


def warm(kubo: FakeKubo, cache: HostCache, cid: str, cache_max_mb: int) -> protocol.Held:
    return commands.warm(kubo, cache, protocol.Warm(cid=cid, stall_timeout=10.0, cache=room(cache_max_mb)))


def test_warmed_images_stay_with_no_disk_until_newer_content_needs_the_room(
    root: Path, kubo: FakeKubo, cache: HostCache
) -> None:
    first, second, third = (kubo.publish(os.urandom(2 * MIB)) for _ in range(3))

    assert warm(kubo, cache, first, cache_max_mb=5) == protocol.Held(first, 2 * MIB)
    warm(kubo, cache, second, cache_max_mb=5)

    entry = cache.entry(first)
    assert entry is not None and entry.uses == {} and entry.stored == 2 * MIB
    assert kubo.pins == {first: f"one-cache-{first}", second: f"one-cache-{second}"}
    assert not (root / "datastores" / "0").exists()

    warm(kubo, cache, third, cache_max_mb=5)

    assert cache.entry(first) is None
    assert set(kubo.pins) == {second, third}

    assert cache.evict(kubo, 0, gc_timeout=10) == [second, third]
    assert kubo.pins == {}


def test_image_larger_than_the_host_cache_is_refused_before_any_fetch(
    root: Path, kubo: FakeKubo, cache: HostCache
) -> None:
    cid = kubo.publish(os.urandom(2 * MIB))

    with pytest.raises(
        StorageError, match=r"\(2 MiB\) is larger than the host cache \(IPFS_HOST_CACHE_MB=1\)"
    ):
        warm(kubo, cache, cid, cache_max_mb=1)

    assert kubo.pin_adds == []
    assert cache.entry(cid) is None


@needs_qemu_img
def test_warming_never_pushes_out_the_base_of_a_running_overlay_disk(
    root: Path, kubo: FakeKubo, cache: HostCache
) -> None:
    used, extra = kubo.publish(os.urandom(2 * MIB)), kubo.publish(os.urandom(2 * MIB))
    deploy(kubo, cache, used, disk_of_vm(root, 7), mode="overlay", vm=7)

    with pytest.raises(StorageError, match="does not fit in the host cache"):
        warm(kubo, cache, extra, cache_max_mb=5)

    assert cache.entry(extra) is None
    assert kubo.pins == {used: f"one-cache-{used}"}
    assert cache.base_path(used).exists()


def test_warm_through_the_cli(
    root: Path, kubo: FakeKubo, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cid = kubo.publish(os.urandom(MIB))
    monkeypatch.setattr(cli, "KuboClient", lambda api, timeout, auth=None: kubo)

    run = run_cli(capsys, monkeypatch, "warm", "--cid", cid, "--cache-max-mb", "4")

    assert (run.code, run.plain) == (0, [])
    assert json.loads(run.out) == {"cid": cid, "size": MIB}
    assert f"{cid} is held in the host cache" in run.err
    assert kubo.pins == {cid: f"one-cache-{cid}"}


def test_snapshot_revert_restores_the_disk(root: Path) -> None:
    disk = disk_of_vm(root, 7)
    disk.parent.mkdir(parents=True)
    before = os.urandom(MIB) + bytes(4 * MIB)
    disk.write_bytes(before)

    snapshot = protocol.SnapshotCreate(disk=disk, snap_id=3)
    commands.snapshot_create(snapshot)
    disk.write_bytes(os.urandom(2 * MIB))
    commands.snapshot_revert(snapshot)

    assert disk.read_bytes() == before
    assert (disk.parent / "disk.0.snap" / "3").stat().st_blocks * 512 < 2 * MIB
    commands.snapshot_delete(snapshot)
    commands.snapshot_delete(snapshot)
    assert list((disk.parent / "disk.0.snap").iterdir()) == []


def test_resize_grows_a_raw_disk_and_refuses_to_shrink_it(root: Path) -> None:
    disk = disk_of_vm(root, 7)
    disk.parent.mkdir(parents=True)
    disk.write_bytes(os.urandom(2 * MIB))

    commands.resize(protocol.Resize(disk=disk, size_mb=10))

    assert disk.stat().st_size == 10 * MIB
    with pytest.raises(InvalidInput, match="cannot shrink"):
        commands.resize(protocol.Resize(disk=disk, size_mb=5))


def test_monitor_marker_names_the_monitoring_driver(
    root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = root / "datastores" / "0" / "7"

    run = run_cli(capsys, monkeypatch, "monitor-marker", "--dir", str(folder))

    assert (run.code, json.loads(run.out), run.plain) == (0, {}, [])
    assert (root / "datastores" / "0" / ".monitor").read_text() == "ssh\n"


def test_deploys_marking_one_datastore_at_once_all_succeed_and_leave_one_marker(root: Path) -> None:
    folders = [root / "datastores" / "0" / str(vm) for vm in range(16)]

    with ThreadPoolExecutor(len(folders)) as pool:
        list(
            pool.map(
                lambda folder: commands.monitor_marker(protocol.MonitorMarker(dir=folder, tm="ipfs")), folders
            )
        )

    assert (root / "datastores" / "0" / ".monitor").read_text() == "ipfs\n"
    assert sorted(path.name for path in (root / "datastores" / "0").glob(".monitor*")) == [".monitor"]


def test_has_prints_one_json_line(
    root: Path, kubo: FakeKubo, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cid = kubo.publish(os.urandom(MIB))
    monkeypatch.setattr(cli, "KuboClient", lambda api, timeout, auth=None: kubo)

    run = run_cli(capsys, monkeypatch, "has", "--cid", cid)

    assert (run.code, run.plain) == (0, [])
    assert json.loads(run.out) == {"local": False, "size_local": 0, "size": MIB}


def test_the_frontend_reads_the_answer_for_content_the_host_cannot_describe() -> None:
    cid = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"

    def not_found(call: Call) -> dict[str, object]:
        raise ContentNotFound(f"ipfs files stat: {cid}: not found")

    answer = protocol.to_json(
        commands.has(FakeNode({"files/stat": not_found}).client(), protocol.Has(cid=cid))
    )

    presence = protocol.read_result(protocol.Has(cid=cid), answer)

    assert presence == protocol.Presence(local=False, size_local=0, size=None)


def test_every_cache_command_lists_the_vms_whose_announced_disk_never_came(
    root: Path,
    kubo: FakeKubo,
    cache: HostCache,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cid = kubo.publish(os.urandom(MIB))
    announced = protocol.Prefetch(cid=cid, disk=disk_of_vm(root, 9), mode="overlay", vm=9, cache=room(0))
    commands.prefetch(kubo, cache, announced)
    monkeypatch.setattr(cli, "KuboClient", lambda api, timeout, auth=None: kubo)

    fetched = run_cli(
        capsys, monkeypatch, "fetch", "--cid", cid, "--disk", str(disk_of_vm(root, 7)), "--vm", "7"
    )
    deleted = run_cli(capsys, monkeypatch, "delete", "--disk", str(disk_of_vm(root, 7)), "--vm", "7")

    assert json.loads(fetched.out)["awaiting"] == [9]
    assert json.loads(deleted.out) == {"awaiting": [9]}
    disk_of_vm(root, 9).parent.mkdir(parents=True, exist_ok=True)
    disk_of_vm(root, 9).write_bytes(b"arrived")
    assert cache.awaiting() == []


def test_fetch_through_the_cli(
    root: Path, kubo: FakeKubo, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    image = os.urandom(MIB)
    cid = kubo.publish(image)
    monkeypatch.setattr(cli, "KuboClient", lambda api, timeout, auth=None: kubo)
    disk = disk_of_vm(root, 7)

    run = run_cli(
        capsys,
        monkeypatch,
        "fetch",
        "--cid",
        cid,
        "--disk",
        f"{root}/datastores//0/7/disk.0",
        "--size-mb",
        "2",
        "--vm",
        "7",
    )

    assert (run.code, run.plain) == (0, [])
    assert json.loads(run.out)["cid"] == cid
    assert disk.stat().st_size == 2 * MIB


@pytest.mark.parametrize(
    ("words", "reason"),
    [
        (["fetch", "--cid", "bafybad!", "--disk", "{root}/datastores/0/7/disk.0"], "not a valid CID"),
        (["fetch", "--cid", "{cid}", "--disk", "datastores/0/7/disk.0"], "absolute path"),
        (["fetch", "--cid", "{cid}", "--disk", "{root}/datastores/0/7/../../../../etc/passwd"], "'..'"),
        (["fetch", "--cid", "{cid}", "--disk", "/etc/passwd"], "not a disk in a VM folder"),
        (
            ["fetch", "--cid", "{cid}", "--disk", "{root}/datastores/0/7/disk.0", "--size-mb", "-1"],
            "whole number",
        ),
        (
            ["fetch", "--cid", "{cid}", "--disk", "{root}/datastores/0/7/disk.0", "--size-mb", "99999999999"],
            "between",
        ),
        (
            [
                "fetch",
                "--cid",
                "{cid}",
                "--disk",
                "{root}/datastores/0/7/disk.0",
                "--api",
                "http://198.51.100.7:5001",
            ],
            "loopback",
        ),
        (["fetch", "--cid", "{cid}", "--disk", "{root}/datastores/0/7/disk.0", "--timeout", "0"], "timeout"),
        (
            ["fetch", "--cid", "{cid}", "--disk", "{root}/datastores/0/7/disk.0", "--mode", "link"],
            "must be one of",
        ),
        (["fetch", "--cid", "{cid}"], "required"),
        (["warm", "--cid", "bafybad!"], "not a valid CID"),
        (["warm", "--cid", "{cid}", "--cache-max-mb", "-5"], "whole number"),
        (["delete", "--dir", "{root}/datastores"], "not a VM folder"),
        (["delete", "--dir", "{root}"], "not a VM folder"),
        (["resize", "--disk", "{root}/datastores/0/7/disk.0", "--size-mb", "0"], "between"),
        (["snapshot-create", "--disk", "{root}/datastores/0/7/.monitor", "--snap-id", "1"], "not a disk"),
        (
            ["monitor-marker", "--dir", "{root}/datastores/0/7", "--tm", "ssh; rm -rf /"],
            "transfer driver name",
        ),
        (["format-host"], "unknown host command"),
        (["delete", "--disk", "{root}/.ssh/authorized_keys"], "not a disk in a VM folder"),
        (["fetch", "--cid", "{cid}", "--disk", "{root}/datastores/.one-ipfs-cache/bases/{cid}"], "VM folder"),
        (["save", "--disk", "{root}/datastores/0/7/disk.0.part", "--format", "raw"], "not a disk file name"),
    ],
)
def test_hostile_input_is_refused_with_one_line(
    root: Path,
    kubo: FakeKubo,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    words: list[str],
    reason: str,
) -> None:
    cid = kubo.publish(b"x")
    filled = [word.format(root=root, cid=cid) for word in words]

    run = run_cli(capsys, monkeypatch, *filled)

    assert (run.code, run.out) == (1, "")
    assert len(run.plain) == 1 and reason in run.plain[0]
    assert not (root / "datastores" / "0").exists()


def test_a_vm_folder_that_is_a_link_is_refused(
    root: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    outside = tmp_path_factory.mktemp("outside")
    (root / "datastores" / "0").mkdir(parents=True)
    (root / "datastores" / "0" / "7").symlink_to(outside)

    run = run_cli(capsys, monkeypatch, "resize", "--disk", f"{root}/datastores/0/7/disk.0", "--size-mb", "1")

    assert run.code == 1 and "inside a VM folder" in run.plain[0]


def test_unexpected_error_names_its_type_in_one_line(
    root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setitem(cli.HANDLERS, protocol.Resize, broken)
    run = run_cli(capsys, monkeypatch, "resize", "--disk", f"{root}/datastores/0/7/disk.0", "--size-mb", "1")

    assert (run.code, run.out) == (1, "")
    assert run.plain == ["host resize failed: RuntimeError: boom"]
    assert run.err.startswith("ERROR: Traceback")


def test_disk_paths_follow_the_datastore_location_wherever_it_is_and_links_to_it(
    root: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    elsewhere = tmp_path_factory.mktemp("srv") / "datastores"
    (elsewhere / "0" / "42").mkdir(parents=True)
    (root / "datastores").symlink_to(elsewhere)

    for location in (root / "datastores", elsewhere):
        assert inputs.disk_path(f"{location}//0/42/disk.0") == location / "0" / "42" / "disk.0"
        assert inputs.vm_folder(f"{location}/0/42") == location / "0" / "42"


def test_disk_paths_escaping_by_dot_dot_or_by_a_link_in_the_vm_folder_are_refused(
    root: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    outside = tmp_path_factory.mktemp("outside")
    folder = root / "datastores" / "0" / "42"
    folder.mkdir(parents=True)
    (folder / "disk.1").symlink_to(outside / "file")
    (folder / "disk.2.snap").symlink_to(outside)
    (folder.parent / "43").symlink_to(outside)

    refused = {
        f"{folder}/../../../../etc/0/1/disk.0": "'..'",
        f"{folder}/disk.1": "link",
        f"{folder}/disk.2": "link",
        f"{folder}/disk.2.snap/3": "link",
        f"{folder.parent}/43/disk.0": "link",
        "/0/42/disk.0": "not a disk in a VM folder",
    }
    for text, reason in refused.items():
        with pytest.raises(InvalidInput, match=reason):
            inputs.disk_path(text)
    with pytest.raises(InvalidInput, match="link"):
        inputs.vm_folder(f"{folder.parent}/43")


def test_every_host_command_has_a_handler_and_its_request_reads_back_as_sent(root: Path) -> None:
    fetch = protocol.Fetch(
        cid=CID,
        disk=disk_of_vm(root, 7),
        size_mb=2,
        vm=7,
        node=protocol.Node("http://127.0.0.1:5001", "/etc/one/secret"),
        timeout=30.5,
    )
    save = protocol.Save(disk=disk_of_vm(root, 7), format="qcow2", settings=ImportSettings("size-262144", 0))

    assert set(cli.HANDLERS) == set(protocol.REQUESTS.values())
    assert [protocol.read_request(protocol.to_json(sent)) for sent in (fetch, save)] == [fetch, save]
    with pytest.raises(InvalidInput, match="fetch: vm must be a whole number, not a string"):
        protocol.read_request(protocol.to_json(fetch).replace('"vm": 7', '"vm": "7"'))
