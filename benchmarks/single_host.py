"""One host, no rate limit: TM ``clone`` vs the raw ``ipfs pin add`` + ``ipfs cat > file`` on that host.

The raw baseline is the least any IPFS deploy must do (fetch every block, write every byte); what the
driver adds is its ssh hop, the Python start-ups, the sparse write and the fsync. The sparseness of the
result is the driver's alone: ``ipfs cat > file`` writes every zero.
"""

from __future__ import annotations

from benchmarks.common import Bench, Check, Figure, Params, allocated, stopwatch
from testbed.kubo import KUBO
from testbed.one import Image

RAW_TARGET = "/var/lib/one/bench-raw.img"
HOST = "h1"


def run(bench: Bench, params: Params) -> Figure:
    figure = Figure(
        "single_host",
        f"One host, no rate limit: TM clone of a {params.image_mib} MiB image vs ipfs pin add + cat",
        f"clone: run time of the `clone` script in `onevm deploy` on {HOST} (ssh, host bundle, pin, "
        f"sparse write, fsync). raw: `ipfs pin add CID` then `ipfs cat CID > {RAW_TARGET}` with the CLI "
        f"on {HOST} (IPFS_PATH of its repo; no fsync). The image is only on the frontend's node; the host "
        "is made cold (pin removed, repo GC) before each side; the order of the two sides alternates.",
    )
    size = params.image_mib << 20
    for repetition in range(params.repetitions):
        image = bench.image(params.image_mib)
        cid = bench.cid(image)
        if repetition % 2 == 0:
            raw = _raw(bench, cid)
            clone, sparse = _clone(bench, image, cid)
        else:
            clone, sparse = _clone(bench, image, cid)
            raw = _raw(bench, cid)
        figure.measure("tm clone", "s").samples.append(clone)
        figure.measure("ipfs pin add + cat", "s").samples.append(raw)
        figure.measure("clone / raw", "x").samples.append(clone / raw)
        figure.measure("allocated / size", "%").samples.append(100 * sparse / size)
        bench.drop(image)
    figure.checks += [
        Check("tm clone <= 1.05x ipfs pin add + cat", "clone / raw", 1.05),
        Check("allocated bytes <= 55% of the size (half-zero image)", "allocated / size", 55.0),
    ]
    return figure


def _raw(bench: Bench, cid: str) -> float:
    host = bench.bed.host(HOST)
    elapsed = stopwatch()
    bench.ipfs(host, ["pin", "add", "--progress=false", cid])
    bench.bed.host_run(
        host,
        ["sh", "-c", 'exec "$0" cat "$1" > "$2"', str(KUBO), cid, RAW_TARGET],
        env={"IPFS_PATH": str(host.node.repo)},
    )
    seconds = elapsed()
    (host.var_lib_one / "bench-raw.img").unlink()
    bench.forget_on_hosts(cid, [HOST])
    return seconds


def _clone(bench: Bench, image: Image, cid: str) -> tuple[float, int]:
    """The clone script's time and the disk's allocated bytes."""
    with bench.runner.recording("clone") as durations:
        vm = bench.deploy(image, HOST)
    sparse = allocated(bench.disk(vm, HOST))
    bench.one.vm_terminate(vm)
    bench.forget_on_hosts(cid, [HOST])
    return durations[0], sparse
