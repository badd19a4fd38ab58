"""How cost grows with the image: import and deploy time, and the peak memory of every process that
handles the bytes (the datastore's ``cp``, the host side of ``clone``, the frontend's and the host's Kubo
daemons), from 64 MiB up.

The drivers stream: no process should hold more of an image than a few blocks, so each peak must stay flat
while the size grows 16- or 64-fold. Time should grow linearly; the fit's intercept is the fixed cost of
an action, its slope the cost of a GiB.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from benchmarks.common import MIB, Bench, Check, Figure, Params
from one_ipfs.hosts.bundle import HOST_LAUNCHER
from testbed.kubo import Node

HOST = "h1"
SAMPLE_EVERY = 0.05
"""Seconds between two looks at /proc: VmHWM is a high-water mark, so only growth in a process's last
SAMPLE_EVERY before it ends can go unseen."""
ROLES: Mapping[str, str] = {"ds cp": " one_ipfs.driver datastore cp ", "host side": f"/{HOST_LAUNCHER} "}
"""The driver processes whose peak is sampled: the Python process whose command line holds this (the
launchers exec ``python -m one_ipfs.driver <kind> <action>``; not the ssh client that carries the host
side's name)."""
FLAT = 1.25
"""Largest over smallest size's peak memory allowed: what "stays flat" means here."""


def run(bench: Bench, params: Params) -> Figure:
    sizes = params.size_mibs
    figure = Figure(
        "sizes",
        f"Cost against image size: {', '.join(_size(s) for s in sizes)}",
        "Per size, a fresh image (half random data, half zero runs): `oneimage create --path FILE` (the "
        f"datastore's `cp`), then `onevm deploy` on {HOST} (the `clone` script; the host cold). Peak memory: "
        "the highest VmHWM of the `cp` process and of the host side of `clone` (the host bundle's Python), "
        f"read from /proc every {SAMPLE_EVERY * 1000:.0f} ms; of the frontend's and {HOST}'s Kubo daemons, "
        "their VmHWM reset (`clear_refs`) before the import and read after the deploy. Sizes in "
        "increasing order in each repetition; the ratios pair the largest and smallest of one repetition.",
    )
    nodes = {"frontend kubo": bench.bed.frontend, f"{HOST} kubo": bench.bed.host(HOST).node}
    growth = f"{_size(sizes[-1])} / {_size(sizes[0])}"
    for _ in range(params.repetitions):
        peaks = {size: _deploy_one(bench, figure, size, nodes) for size in sizes}
        for role in [*ROLES, *nodes]:
            ratio = peaks[sizes[-1]][role] / peaks[sizes[0]][role]
            figure.measure(f"{role} peak, {growth}", "x").samples.append(ratio)
    for action in ("ds cp", "tm clone"):
        figure.notes.append(_law(figure, action, sizes))
    figure.checks += [
        Check(f"{role} peak memory flat ({growth} <= {FLAT}x)", f"{role} peak, {growth}", FLAT)
        for role in [*ROLES, *nodes]
    ]
    return figure


def _deploy_one(bench: Bench, figure: Figure, size: int, nodes: Mapping[str, Node]) -> dict[str, int]:
    """Import and deploy one fresh image of ``size`` MiB; the peak resident bytes of each role."""
    pids = {role: _kubo_pid(bench, node) for role, node in nodes.items()}
    for pid in pids.values():
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    with _sampled(ROLES) as peaks:
        with bench.runner.recording("cp") as cp:
            image = bench.image(size)
        with bench.runner.recording("clone") as clone:
            vm = bench.deploy(image, HOST)
    peaks.update({role: _high_water(pid) for role, pid in pids.items()})
    unseen = [role for role, peak in peaks.items() if peak == 0]
    if unseen:
        raise RuntimeError(f"no process of {', '.join(unseen)} was seen during the deploy of {_size(size)}")
    bench.one.vm_terminate(vm)
    bench.forget_on_hosts(bench.cid(image), [HOST])
    bench.drop(image)
    figure.measure(f"ds cp, {_size(size)}", "s").samples.append(cp[0])
    figure.measure(f"tm clone, {_size(size)}", "s").samples.append(clone[0])
    for role, peak in peaks.items():
        figure.measure(f"{role} peak, {_size(size)}", "MiB").samples.append(peak / MIB)
    return peaks


@contextmanager
def _sampled(roles: Mapping[str, str]) -> Iterator[dict[str, int]]:
    """The highest VmHWM seen for each role's Python processes while the block runs."""
    peaks = dict.fromkeys(roles, 0)
    done = threading.Event()

    def sample() -> None:
        while not done.wait(SAMPLE_EVERY):
            for proc in Path("/proc").iterdir():
                try:
                    for role in _roles_of(proc, roles):
                        peaks[role] = max(peaks[role], _high_water(int(proc.name)))
                except (OSError, ValueError):
                    continue  # the process ended between the listing and the read

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peaks
    finally:
        done.set()
        sampler.join()


def _roles_of(proc: Path, roles: Mapping[str, str]) -> list[str]:
    """The roles a /proc entry plays: a Python process running one of the roles' scripts."""
    if not proc.name.isdigit():
        return []
    words = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
    if not Path(words[0]).name.startswith("python"):
        return []
    command = " ".join(words)
    return [role for role, part in roles.items() if part in command]


def _high_water(pid: int) -> int:
    """A process's peak resident bytes (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) << 10
    raise ValueError(f"no VmHWM for process {pid}")


def _kubo_pid(bench: Bench, node: Node) -> int:
    """The Kubo daemon's own process: the bed starts it behind nsenter, which may stay its parent."""
    pid = bench.bed.daemon_pid(node)
    if pid is None:
        raise RuntimeError(f"{node.name}'s Kubo daemon is not running")
    while (Path(f"/proc/{pid}/comm").read_text().strip()) != "ipfs":
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if len(children) != 1:
            raise RuntimeError(f"cannot find {node.name}'s Kubo daemon under process {pid}")
        pid = int(children[0])
    return pid


def _law(figure: Figure, action: str, sizes: tuple[int, ...]) -> str:
    """The line through the medians of ``action``'s time against the size that is off by the least relative
    error (least squares weighted by 1/time²: a plain fit would serve the largest size and miss the fixed
    cost that rules the smallest)."""
    points = [(size / 1024, figure.measure(f"{action}, {_size(size)}", "s").median) for size in sizes]
    weights = [1 / y**2 for _, y in points]
    total = sum(weights)
    mean_x = sum(w * x for w, (x, _) in zip(weights, points, strict=True)) / total
    mean_y = sum(w * y for w, (_, y) in zip(weights, points, strict=True)) / total
    slope = sum(w * (x - mean_x) * (y - mean_y) for w, (x, y) in zip(weights, points, strict=True)) / sum(
        w * (x - mean_x) ** 2 for w, (x, _) in zip(weights, points, strict=True)
    )
    fixed = mean_y - slope * mean_x
    worst = max(abs(y - (fixed + slope * x)) / y for x, y in points)
    return (
        f"{action}: {fixed:.2f} s + {slope:.1f} s per GiB (the line off the medians by the least relative "
        f"error; the farthest is {100 * worst:.0f}% off)"
    )


def _size(mib: int) -> str:
    return f"{mib // 1024} GiB" if mib >= 1024 and mib % 1024 == 0 else f"{mib} MiB"
