"""What every suite shares: the bed and simulator it runs on, timing, medians, image files, cold hosts.

Each figure is a ratio against a baseline measured in the same run on the same bed, so that a slow or
busy machine moves both sides alike; each measurement is repeated and reported as median, min and max.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.bed import Bed, Host, Layout
from testbed.kubo import KUBO
from testbed.one import Datastore, Image, OneSim, VirtualMachine
from testbed.one.bedrunner import BedRunner
from testbed.one.runner import Execution

MIB = 1 << 20
BLOCK = MIB
"""The datastore's chunk size (IPFS_CHUNKER default): one IPFS block of an image."""
RUN = 64 << 10
"""Images alternate RUN bytes of random data and RUN zero bytes: half data, half zero runs."""
WORKDIR = Path("/var/tmp/one-ipfs-bench")
"""Image files to import; under /var/tmp, the datastore's default SAFE_DIRS. A bed of another layout gets
``WORKDIR-<prefix>`` (``Bench.workdir``): runs beside each other do not remove each other's files."""
ADD_FLAGS = ("--cid-version=1", "--raw-leaves", "--chunker=size-1048576")
"""The datastore's import settings (Kubo's unixfs-v1-2025 profile) as ``ipfs add`` flags."""


# Measurements ---------------------------------------------------------------------------------------------


@dataclass
class Measure:
    """Repeated samples of one quantity; reported as median, min and max."""

    name: str
    unit: str
    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": self.unit,
            "samples": self.samples,
            "median": self.median,
            "min": min(self.samples),
            "max": max(self.samples),
        }


@dataclass(frozen=True)
class Check:
    """A target of issue 6: the median of ``measure`` compared with ``limit``."""

    target: str
    measure: str
    limit: float
    at_most: bool = True
    """True: the median must be <= limit (< for ``strict``); False: it must be >= limit."""
    strict: bool = False

    def met(self, value: float) -> bool:
        if self.at_most:
            return value < self.limit if self.strict else value <= self.limit
        return value >= self.limit


@dataclass
class Figure:
    """One suite's result: what was measured, how (``method``), the targets and the exact command."""

    id: str
    title: str
    method: str
    command: str = ""
    measures: list[Measure] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def measure(self, name: str, unit: str) -> Measure:
        for existing in self.measures:
            if existing.name == name:
                return existing
        created = Measure(name, unit)
        self.measures.append(created)
        return created

    def to_json(self) -> dict[str, Any]:
        medians = {m.name: m.median for m in self.measures if m.samples}
        return {
            "id": self.id,
            "title": self.title,
            "method": self.method,
            "command": self.command,
            "measures": [m.to_json() for m in self.measures if m.samples],
            "checks": [
                {
                    "target": c.target,
                    "measure": c.measure,
                    "limit": c.limit,
                    "at_most": c.at_most,
                    "strict": c.strict,
                    "value": medians.get(c.measure),
                    "met": c.met(medians[c.measure]) if c.measure in medians else None,
                }
                for c in self.checks
            ],
            "notes": self.notes,
        }


@dataclass(frozen=True)
class Params:
    """Sizes and repetitions of one run (``--quick`` or full)."""

    quick: bool
    fleet_mib: int
    fleet_hosts: tuple[int, ...]
    fleet_rate_mbit: float
    image_mib: int
    import_mib: int
    repetitions: int
    latency_runs: int
    size_mibs: tuple[int, ...]
    """Image sizes of the sizes suite, smallest first."""

    @classmethod
    def choose(
        cls, quick: bool, repetitions: int | None = None, hosts: Sequence[int] | None = None
    ) -> Params:
        """The quick or full set; ``repetitions`` instead of its own count and ``hosts`` instead of its
        fleet sizes, if given (a run that must fit in the time there is)."""
        chosen = (
            cls(True, 64, (1, 2, 4), 100.0, 128, 256, 3, 10, (64, 256, 1024))
            if quick
            else cls(False, 256, (1, 2, 4, 8), 100.0, 256, 1024, 5, 30, (64, 256, 1024, 4096))
        )
        if repetitions:
            chosen = dataclasses.replace(chosen, repetitions=repetitions)
        return dataclasses.replace(chosen, fleet_hosts=tuple(sorted(set(hosts)))) if hosts else chosen


def stopwatch() -> Callable[[], float]:
    """Seconds since the call, read as often as needed."""
    start = time.perf_counter()
    return lambda: time.perf_counter() - start


def concurrently(calls: Sequence[Callable[[], object]]) -> float:
    """Run ``calls`` at once, one thread each; the makespan, raising the first failure if any."""
    failures: list[BaseException] = []

    def guarded(call: Callable[[], object]) -> None:
        try:
            call()
        except BaseException as exc:  # re-raised below, in the caller's thread
            failures.append(exc)

    threads = [threading.Thread(target=guarded, args=(call,)) for call in calls]
    elapsed = stopwatch()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    makespan = elapsed()
    if failures:
        raise failures[0]
    return makespan


# Image content --------------------------------------------------------------------------------------------


def block_bytes(seed: int, index: int) -> bytes:
    """Block ``index`` of image ``seed``: RUN random bytes, RUN zeros, repeated; reproducible."""
    rng = random.Random(seed * 1_000_003 + index)
    return b"".join(rng.randbytes(RUN) + bytes(RUN) for _ in range(BLOCK // (2 * RUN)))


def write_image(path: Path, size_mib: int, seed: int, changed: Mapping[int, int] | None = None) -> Path:
    """An image file of ``size_mib`` blocks; ``changed`` maps block indexes to the seed they take instead
    (a later version of the same image), readable by oneadmin."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o755)
    with open(path, "wb") as out:
        for index in range(size_mib):
            out.write(block_bytes((changed or {}).get(index, seed), index))
    path.chmod(0o644)
    return path


def allocated(path: Path) -> int:
    return path.stat().st_blocks * 512


# The bed and the simulator --------------------------------------------------------------------------------


class TimedRunner(BedRunner):
    """The simulator's runner, also recording how long each driver script ran (by script name)."""

    def __init__(self, bed: Bed) -> None:
        super().__init__(bed)
        self.durations: list[tuple[str, float]] = []

    def run(
        self, argv: list[str], *, env: Mapping[str, str], stdin: bytes, timeout: float | None
    ) -> Execution:
        elapsed = stopwatch()
        try:
            return super().run(argv, env=env, stdin=stdin, timeout=timeout)
        finally:
            self.durations.append((Path(argv[0]).name, elapsed()))

    @contextlib.contextmanager
    def recording(self, script: str) -> Iterator[list[float]]:
        """The durations of ``script`` run inside the block, filled in as it ends."""
        start = len(self.durations)
        found: list[float] = []
        yield found
        found.extend(seconds for name, seconds in self.durations[start:] if name == script)


class Bench:
    """A bed, the simulator on it with the drivers installed, a copy and an overlay datastore."""

    def __init__(self, bed: Bed, checkpoint: Callable[[Figure], None] = lambda figure: None) -> None:
        self.bed = bed
        self.checkpoint = checkpoint
        """Keeps a figure as it stands, called by long suites after each repetition: a run stopped before
        its end keeps what it measured."""
        self.runner = TimedRunner(bed)
        state = bed.root / "one"
        shutil.rmtree(state, ignore_errors=True)
        self.one = OneSim(self.runner, state=state)
        self.one.install_drivers()
        self.one.onehost_sync()
        base = {"DS_MAD": "ipfs", "TM_MAD": "ipfs", "IPFS_API": bed.frontend.api}
        self.copy_ds: Datastore = self.one.datastore_create({"NAME": "bench", **base})
        self.overlay_ds: Datastore = self.one.datastore_create(
            {"NAME": "bench-overlay", "IPFS_DEPLOY_MODE": "OVERLAY", **base}
        )
        self._seed = 1000
        default = bed.layout.prefix == Layout.prefix
        self.workdir = WORKDIR if default else WORKDIR.with_name(f"{WORKDIR.name}-{bed.layout.prefix}")
        self.workdir.mkdir(parents=True, exist_ok=True)

    def next_seed(self) -> int:
        """A seed no image of this run had: its blocks are on no node yet."""
        self._seed += 1
        return self._seed

    def image(self, size_mib: int, *, datastore: Datastore | None = None, seed: int | None = None) -> Image:
        """``oneimage create --path`` of a new image file (fresh content unless ``seed`` is given)."""
        seed = self.next_seed() if seed is None else seed
        path = write_image(self.workdir / f"image-{seed}.img", size_mib, seed)
        try:
            return self.one.image_create(datastore or self.copy_ds, name=f"bench-{seed}", path=str(path))
        finally:
            path.unlink()

    def cid(self, image: Image) -> str:
        return self.one.image(image).template["IPFS_CID"]

    def deploy(self, image: Image, host: str) -> VirtualMachine:
        """``onevm create`` + ``deploy`` of a VM with just this disk (no context CD)."""
        return self.one.vm_deploy([image], host, context=False)

    def disk(self, vm: VirtualMachine, host: str) -> Path:
        return self.bed.host(host).var_lib_one / "datastores" / "0" / str(vm.id) / "disk.0"

    def ipfs(self, host: Host | None, args: Sequence[str], *, check: bool = True) -> str:
        """The ipfs CLI against a node (None: the frontend's), as root; its stdout."""
        if host is None:
            argv = [str(KUBO), "--api", f"/ip4/127.0.0.1/tcp/{self.bed.frontend.api_port}", *args]
            done = subprocess.run(argv, capture_output=True, check=check)
            return done.stdout.decode()
        env = {"IPFS_PATH": str(host.node.repo)}
        return self.bed.host_run(host, [str(KUBO), *args], env=env, check=check).stdout.decode()

    def forget_on_hosts(self, cid: str, hosts: Sequence[str]) -> None:
        """Make hosts cold again: drop the host cache's pin of ``cid`` and collect the blocks."""
        for name in hosts:
            client = self.bed.host(name).node.client(timeout=600)
            if client.pin_ls(cid):
                client.pin_rm(cid)
            client.repo_gc(timeout=600)

    def drop(self, image: Image) -> None:
        """``oneimage delete``, then collect the frontend's blocks so the next image starts alone."""
        self.one.image_delete(image)
        self.bed.frontend.client(timeout=600).repo_gc(timeout=600)

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)
        for node in self.bed.nodes:
            node.close()


def command_line(argv: Sequence[str], only: str) -> str:
    """The command that reproduces one figure: this run's options with ``--only`` that figure."""
    words: list[str] = []
    skip = False
    for word in argv:
        if skip:
            skip = False
            continue
        if word == "--only":
            skip = True
            continue
        if word.startswith("--only="):
            continue
        words.append(word)
    return " ".join([".venv/bin/python -m benchmarks", *words, "--only", only])


def environment_note() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "kubo": str(KUBO),
    }
