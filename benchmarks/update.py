"""Update: version 2 of an image, 5% of its blocks changed, deployed to a host that holds version 1.

Content addressing makes the unchanged blocks of v2 the very blocks of v1, so the host's node only
fetches the changed ones (plus the DAG's root node).
"""

from __future__ import annotations

import json
import random

from benchmarks.common import Bench, Check, Figure, Params, write_image

HOST = "h1"
CHANGED = 0.05


def run(bench: Bench, params: Params) -> Figure:
    figure = Figure(
        "update",
        f"Update: v2 of a {params.image_mib} MiB image ({CHANGED:.0%} of its 1 MiB blocks changed) "
        f"to a host holding v1",
        f"v1 deployed to {HOST} with `onevm deploy` (VM terminated; the host cache keeps v1), then v2 "
        "imported as its own image (`oneimage create --path`, same settings) and deployed to "
        f"{HOST}. Bytes received: delta of DataReceived in `ipfs bitswap stat` on {HOST} across the v2 "
        "deploy (duplicates included); stored: delta of RepoSize (`ipfs repo stat`).",
    )
    size = params.image_mib << 20
    host = bench.bed.host(HOST)
    client = host.node.client(timeout=600)
    for _ in range(params.repetitions):
        seed = bench.next_seed()
        rng = random.Random(seed)
        blocks = rng.sample(range(params.image_mib), max(1, round(CHANGED * params.image_mib)))
        later = bench.next_seed()
        v1 = bench.image(params.image_mib, seed=seed)
        vm = bench.deploy(v1, HOST)
        bench.one.vm_terminate(vm)
        path = write_image(bench.workdir / "v2.img", params.image_mib, seed, dict.fromkeys(blocks, later))
        try:
            v2 = bench.one.image_create(bench.copy_ds, name=f"bench-{seed}-v2", path=str(path))
        finally:
            path.unlink()
        received, stored = _received(bench), client.repo_stat().repo_size
        with bench.runner.recording("clone") as durations:
            vm = bench.deploy(v2, HOST)
        received, stored = _received(bench) - received, client.repo_stat().repo_size - stored
        bench.one.vm_terminate(vm)
        figure.measure("bytes received / size", "%").samples.append(100 * received / size)
        figure.measure("repo growth / size", "%").samples.append(100 * stored / size)
        figure.measure("v2 clone", "s").samples.append(durations[0])
        for image in (v1, v2):
            bench.forget_on_hosts(bench.cid(image), [HOST])
            bench.drop(image)
    figure.checks.append(Check("bytes received <= 10% of the image size", "bytes received / size", 10.0))
    return figure


def _received(bench: Bench) -> int:
    answer = json.loads(bench.ipfs(bench.bed.host(HOST), ["bitswap", "stat", "--enc=json"]))
    return int(answer["DataReceived"])
