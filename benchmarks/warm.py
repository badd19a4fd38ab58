"""Warm host: deploying an image the host already holds, as a full copy and as a qcow2 overlay.

A copy still writes the whole disk from the host's node (no network); an overlay only creates a small
qcow2 file on the base the host keeps once per image, so its time should not depend on the size.
"""

from __future__ import annotations

from benchmarks.common import Bench, Check, Figure, Params
from testbed.one import Image, VirtualMachine

HOST = "h1"
SMALL_MIB = 16


def run(bench: Bench, params: Params) -> Figure:
    figure = Figure(
        "warm",
        f"Warm host: copy and overlay deploys of images {HOST} already holds",
        "Run time of the `clone` script. cold: the first deploy of a fresh image (fetched from the "
        "frontend). warm copy: a second VM with the same image on the same host (the first VM terminated; "
        "the host cache keeps the content). overlay: an IPFS_DEPLOY_MODE=OVERLAY datastore; first: the "
        "host holds nothing yet; warm: a second VM on the host that made the base; at "
        f"{params.image_mib} MiB and {SMALL_MIB} MiB, to show it does not depend on the size.",
    )
    for _ in range(params.repetitions):
        image = bench.image(params.image_mib)
        cold, vm = _deploy(bench, image)
        bench.one.vm_terminate(vm)
        warm, vm = _deploy(bench, image)
        bench.one.vm_terminate(vm)
        figure.measure("cold copy", "s").samples.append(cold)
        figure.measure("warm copy", "s").samples.append(warm)
        figure.measure("warm copy / cold", "%").samples.append(100 * warm / cold)
        bench.forget_on_hosts(bench.cid(image), [HOST])
        bench.drop(image)
        for size in (params.image_mib, SMALL_MIB):
            overlay = bench.image(size, datastore=bench.overlay_ds)
            first, base_holder = _deploy(bench, overlay)
            second, vm = _deploy(bench, overlay)
            figure.measure(f"first overlay, {size} MiB", "s").samples.append(first)
            figure.measure(f"warm overlay, {size} MiB", "s").samples.append(second)
            for done in (vm, base_holder):
                bench.one.vm_terminate(done)
            bench.forget_on_hosts(bench.cid(overlay), [HOST])
            bench.drop(overlay)
    figure.checks += [
        Check("warm copy <= 10% of the cold time", "warm copy / cold", 10.0),
        Check(
            f"warm overlay < 1 s ({params.image_mib} MiB)",
            f"warm overlay, {params.image_mib} MiB",
            1.0,
            strict=True,
        ),
        Check(f"warm overlay < 1 s ({SMALL_MIB} MiB)", f"warm overlay, {SMALL_MIB} MiB", 1.0, strict=True),
    ]
    return figure


def _deploy(bench: Bench, image: Image) -> tuple[float, VirtualMachine]:
    with bench.runner.recording("clone") as durations:
        vm = bench.deploy(image, HOST)
    return durations[0], vm
