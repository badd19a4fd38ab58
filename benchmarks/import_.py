"""Import: ``ds cp`` of a local image file vs the ``ipfs add`` CLI with the same settings.

Both put the file into the frontend's node and pin it; ``ds cp`` adds the driver's Python start-up,
the stat of the path, and the RPC upload of the file from another process.
"""

from __future__ import annotations

from benchmarks.common import ADD_FLAGS, WORKDIR, Bench, Check, Figure, Params, stopwatch, write_image


def run(bench: Bench, params: Params) -> Figure:
    flags = " ".join(ADD_FLAGS)
    figure = Figure(
        "import",
        f"Import of a local {params.import_mib} MiB file: ds cp vs ipfs add",
        "ds cp: run time of the datastore's `cp` script in `oneimage create --path FILE` (the file under "
        f"{WORKDIR}, in the page cache). ipfs add: `ipfs add -Q {flags} FILE` against the frontend's "
        "node. Between the two the content is unpinned and the repo collected, so both start "
        "without the blocks; the order alternates.",
    )
    for repetition in range(params.repetitions):
        path = write_image(bench.workdir / "import.img", params.import_mib, bench.next_seed())
        try:
            if repetition % 2 == 0:
                add = _add(bench, str(path))
                cp = _cp(bench, str(path))
            else:
                cp = _cp(bench, str(path))
                add = _add(bench, str(path))
        finally:
            path.unlink()
        figure.measure("ds cp", "s").samples.append(cp)
        figure.measure("ipfs add", "s").samples.append(add)
        figure.measure("ds cp / ipfs add", "x").samples.append(cp / add)
    figure.checks.append(Check("ds cp <= 1.10x ipfs add", "ds cp / ipfs add", 1.10))
    return figure


def _add(bench: Bench, path: str) -> float:
    elapsed = stopwatch()
    cid = bench.ipfs(None, ["add", "-Q", *ADD_FLAGS, path]).strip()
    seconds = elapsed()
    frontend = bench.bed.frontend.client(timeout=600)
    frontend.pin_rm(cid)
    frontend.repo_gc(timeout=600)
    return seconds


def _cp(bench: Bench, path: str) -> float:
    with bench.runner.recording("cp") as durations:
        image = bench.one.image_create(bench.copy_ds, name="bench-import", path=path)
    bench.drop(image)
    return durations[0]
