"""Driver overhead: the latency of datastore ``stat`` and ``monitor`` through the simulator.

Both are small RPC calls to the frontend's node; what they cost is mostly the driver's start-up
(Python, imports), which oned pays for every image creation and every monitoring cycle.
"""

from __future__ import annotations

import base64

from benchmarks.common import Bench, Check, Figure, Params, stopwatch
from one_ipfs.errors import OpenNebulaError


def run(bench: Bench, params: Params) -> Figure:
    figure = Figure(
        "latency",
        "Driver overhead: datastore stat and monitor",
        "Wall time of one request through the simulator's datastore driver manager (nsenter + setpriv "
        "to oneadmin, the driver script, its Python start-up, the RPC to the frontend's node): STAT of "
        "`/ipfs/CID` of an image the node holds, and MONITOR of the datastore. One warm-up call each, "
        f"then {params.latency_runs} calls.",
    )
    image = bench.image(1)
    datastore = bench.one.datastore(bench.copy_ds)
    document = bench.one.store.read_text("datastore", datastore.id) or ""
    image_xml = f"<IMAGE><PATH>/ipfs/{bench.cid(image)}</PATH></IMAGE>"
    payload = base64.b64encode(
        f"<DS_DRIVER_ACTION_DATA>{image_xml}{document}</DS_DRIVER_ACTION_DATA>".encode()
    ).decode()
    stat = figure.measure("stat", "ms")
    monitor = figure.measure("monitor", "ms")
    for run_index in range(params.latency_runs + 1):
        elapsed = stopwatch()
        result = bench.one.datastore_manager.request("STAT", 0, payload)
        seconds = elapsed()
        if not result.success:
            raise OpenNebulaError(f"stat failed: {result.info}")
        elapsed = stopwatch()
        monitored = bench.one.datastore_monitor(datastore)
        monitor_seconds = elapsed()
        if monitored is None or not monitored.success:
            raise OpenNebulaError(f"monitor failed: {monitored.info if monitored else 'not monitored'}")
        if run_index:
            stat.samples.append(1000 * seconds)
            monitor.samples.append(1000 * monitor_seconds)
    bench.drop(image)
    figure.checks += [
        Check("stat median < 100 ms", "stat", 100.0, strict=True),
        Check("monitor median < 100 ms", "monitor", 100.0, strict=True),
    ]
    return figure
