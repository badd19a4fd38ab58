"""``python -m benchmarks [--quick] [--only SUITE ...] [--repetitions K] [--hosts N,...] [--bed-layout S]``:
run, save, plot, report.

Brings up its own bed (frontend + as many hosts as the fleet suite needs), runs the suites, writes
``benchmarks/results/<mode>-<time>.json``, the plots under ``docs/benchmarks/`` and ``docs/benchmarks.md``,
and prints the table. ``python -m benchmarks --report FILE.json`` only regenerates plots and docs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import (
    backups,
    baselines,
    fleet,
    import_,
    latency,
    market,
    replication,
    report,
    single_host,
    sizes,
    update,
    warm,
)
from benchmarks.common import Bench, Figure, Params, command_line, environment_note
from testbed.bed import Bed, Layout

SUITES: dict[str, Callable[[Bench, Params], Figure]] = {
    "fleet": fleet.run,
    "fleet_experimental": fleet.run_without_experimental,
    "single_host": single_host.run,
    "warm": warm.run,
    "update": update.run,
    "import": import_.run,
    "latency": latency.run,
    "baselines": baselines.run,
    "replication": replication.run,
    "backups": backups.run,
    "market": market.run,
    "sizes": sizes.run,
}
RESULTS = Path(__file__).resolve().parent / "results"
LAYOUT_ENV = "ONE_IPFS_BENCH_BED"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller images, N up to 4, fewer runs")
    parser.add_argument("--only", action="append", choices=sorted(SUITES), help="run only these suites")
    parser.add_argument(
        "--bed-layout",
        default=os.environ.get(LAYOUT_ENV, ""),
        metavar="PREFIX:ADDRESS/LEN:API:GATEWAY",
        help=f"run on a bed of its own layout beside another (default: ${LAYOUT_ENV}, else the default bed)",
    )
    parser.add_argument(
        "--repetitions", type=int, metavar="K", help="repeat each measurement K times instead"
    )
    parser.add_argument(
        "--hosts",
        type=host_counts,
        metavar="N,N,...",
        help="deploy to these fleet sizes (fleet and baselines) instead of the mode's",
    )
    parser.add_argument(
        "--report",
        type=Path,
        action="append",
        metavar="JSON",
        help="only regenerate plots and docs (several: a later file's figures replace an earlier one's)",
    )
    options = parser.parse_args(argv)
    if options.report:
        results = json.loads(options.report[0].read_text())
        for earlier, later in zip(options.report, options.report[1:], strict=False):
            results = merge(json.loads(later.read_text()), (earlier, results))
        print(report.write(results))
        return 0
    params = Params.choose(options.quick, options.repetitions, options.hosts)
    suites = options.only or list(SUITES)
    layout = Layout.parse(options.bed_layout) if options.bed_layout else Layout()
    hosts = max(
        max(params.fleet_hosts) if {"fleet", "fleet_experimental"} & set(suites) else 1,
        baselines.hosts_needed(params) if "baselines" in suites else 1,
        replication.HOSTS if "replication" in suites else 1,
        backups.HOSTS if "backups" in suites else 1,
    )
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    figures = []
    with Bed.up(hosts=hosts, root=layout.root, layout=layout) as bed:
        bench = Bench(bed, partial_saver(argv, params, started))
        try:
            for name in suites:
                print(f"== {name}", flush=True)
                figure_started = time.strftime("%Y-%m-%dT%H:%M:%S")
                figure = SUITES[name](bench, params)
                figure.command = command_line(argv, name)
                finished = time.strftime("%Y-%m-%dT%H:%M:%S")
                figures.append({**figure.to_json(), "run": _run_note(figure_started, finished, params)})
                print(report.figure_table(figures[-1]), flush=True)
        finally:
            bench.close()
    results = {
        "mode": "quick" if params.quick else "full",
        "started": started,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "argv": argv,
        "params": vars(params),
        "machine": environment_note(),
        "figures": figures,
    }
    if options.only:
        results = merge(results, latest_results(results["mode"]))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{results['mode']}-{started.replace(':', '')}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {path}")
    print(report.write(results))
    return 0


def partial_saver(argv: list[str], params: Params, started: str) -> Callable[[Figure], None]:
    """Write a figure as it stands to ``results/partial-<mode>-<time>.json`` (results of one figure, which
    ``--report`` reads like any other; the name keeps it out of the newest results a later run merges)."""
    mode = "quick" if params.quick else "full"
    path = RESULTS / f"partial-{mode}-{started.replace(':', '')}.json"

    def save(figure: Figure) -> None:
        figure.command = command_line(argv, figure.id)
        now = time.strftime("%Y-%m-%dT%H:%M:%S")
        results = {
            "mode": mode,
            "started": started,
            "finished": now,
            "argv": argv,
            "params": vars(params),
            "machine": environment_note(),
            "figures": [{**figure.to_json(), "run": _run_note(started, now, params)}],
        }
        RESULTS.mkdir(exist_ok=True)
        path.write_text(json.dumps(results, indent=2) + "\n")
        print(f"kept so far: {path}", flush=True)

    return save


def _run_note(started: str, finished: str, params: Params) -> dict[str, Any]:
    return {"started": started, "finished": finished, "load_average": os.getloadavg(), "params": vars(params)}


def host_counts(text: str) -> list[int]:
    """``1,4,8``: fleet sizes, each at least one host."""
    try:
        counts = [int(word) for word in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of host counts: {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"host counts must be at least 1: {text!r}")
    return counts


def latest_results(mode: str) -> tuple[Path, dict[str, Any]] | None:
    """The newest results file of ``mode`` (file names sort by the run's start time)."""
    for path in sorted(RESULTS.glob(f"{mode}-*.json"), reverse=True):
        try:
            return path, json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return None


def merge(results: dict[str, Any], previous: tuple[Path, dict[str, Any]] | None) -> dict[str, Any]:
    """A run of some suites (``--only``) keeps the other figures of the newest earlier run of the same
    mode, so the page and the JSON always show every figure; each figure names the run it comes from."""
    if previous is None:
        return results
    path, earlier = previous
    when = {
        "started": earlier["started"],
        "finished": earlier["finished"],
        "load_average": earlier["machine"]["load_average"],
        "params": earlier["params"],
    }
    figures = {figure["id"]: {"run": when, **figure} for figure in earlier.get("figures", [])}
    figures.update({figure["id"]: figure for figure in results["figures"]})
    return {
        **results,
        "figures": [figures[name] for name in SUITES if name in figures],
        "merged_from": path.name,
    }


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
