"""docs/benchmarks.md and its plots, regenerated from one results JSON and ``explanation.md``.

The explanation is written by hand; its ``{{name}}`` markers are replaced: ``{{run}}`` (when, what,
which machine), ``{{summary}}`` (every target, met or not), ``{{figure:<id>}}`` (a figure's method,
command and table), ``{{plot:<name>}}`` (a plot's image link).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from benchmarks.baselines import END_TO_END

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
PLOTS = DOCS / "benchmarks"
TEMPLATE = Path(__file__).resolve().parent / "explanation.md"
MARKER = re.compile(r"\{\{(\w+)(?::([\w-]+))?\}\}")


def _number(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def figure_table(figure: dict[str, Any]) -> str:
    """A markdown table of a figure's measures (median, min, max) and one of its targets."""
    lines = ["| measure | median | min | max | unit | runs |", "|---|---:|---:|---:|---|---:|"]
    for m in figure["measures"]:
        cells = [m["name"], _number(m["median"]), _number(m["min"]), _number(m["max"]), m["unit"]]
        lines.append("| " + " | ".join([*cells, str(m.get("runs", len(m["samples"])))]) + " |")
    if figure["checks"]:
        lines += ["", "| target | median | met |", "|---|---:|---|"]
        for check in figure["checks"]:
            value = "-" if check["value"] is None else _number(check["value"])
            met = {True: "yes", False: "**no**", None: "not measured"}[check["met"]]
            lines.append(f"| {check['target']} | {value} | {met} |")
    return "\n".join(lines)


def summary_table(results: dict[str, Any]) -> str:
    lines = ["| figure | target | median | met |", "|---|---|---:|---|"]
    for figure in results["figures"]:
        for check in figure["checks"]:
            value = "-" if check["value"] is None else _number(check["value"])
            met = {True: "yes", False: "**no**", None: "not measured"}[check["met"]]
            lines.append(f"| {figure['id']} | {check['target']} | {value} | {met} |")
    return "\n".join(lines)


def _run_text(results: dict[str, Any]) -> str:
    machine = results["machine"]
    load = ", ".join(f"{x:.2f}" for x in machine["load_average"])
    params = results["params"]
    text = (
        f"Mode **{results['mode']}**, {results['started']} to {results['finished']}, "
        f"{machine['cpus']} CPUs, load average at the end {load}; images of {params['image_mib']} MiB "
        f"(fleet {params['fleet_mib']} MiB to N = {', '.join(map(str, params['fleet_hosts']))}, import "
        f"{params['import_mib']} MiB), {params['repetitions']} repetitions, {params['latency_runs']} "
        f"latency calls. Command: `.venv/bin/python -m benchmarks {' '.join(results['argv'])}`."
    )
    if results.get("merged_from"):
        text += (
            f" The figures this command did not run are kept from the earlier results "
            f"`{results['merged_from']}`; each figure says when it was measured."
        )
    return text


def _measured_text(figure: dict[str, Any]) -> str:
    run = figure.get("run")
    if run is None:
        return ""
    load = ", ".join(f"{x:.2f}" for x in run["load_average"])
    return f"Measured {run['started']} to {run['finished']}, load average at the end {load}."


def _figure_text(results: dict[str, Any], figure_id: str) -> str:
    for figure in results["figures"]:
        if figure["id"] == figure_id:
            parts = [
                f"**{figure['title']}.** {figure['method']}",
                f"Command: `{figure['command']}`. {_measured_text(figure)}".rstrip(),
                figure_table(figure),
                *figure["notes"],
            ]
            return "\n\n".join(parts)
    return f"*Not part of the {results['mode']} run of {results['started']}.*"


def _params(results: dict[str, Any], figure: dict[str, Any]) -> dict[str, Any]:
    """The sizes a figure was measured with: its own run's, which a merged page may take from another run."""
    params: dict[str, Any] = figure.get("run", {}).get("params") or results["params"]
    return params


def _measure(figure: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((m for m in figure["measures"] if m["name"] == name), None)


def _fleet_plot(results: dict[str, Any]) -> str | None:
    figure = next((f for f in results["figures"] if f["id"] == "fleet"), None)
    if figure is None:
        return None
    params = _params(results, figure)
    counts = params["fleet_hosts"]
    axes = plt.figure(figsize=(6, 4)).gca()
    for method, style in (("ipfs", "o-"), ("ssh", "s--")):
        found = [(n, _measure(figure, f"{method} makespan, N={n}")) for n in counts]
        points = [(n, m) for n, m in found if m is not None]
        medians = [m["median"] for _, m in points]
        errors = [[m["median"] - m["min"] for _, m in points], [m["max"] - m["median"] for _, m in points]]
        axes.errorbar([n for n, _ in points], medians, yerr=errors, fmt=style, capsize=4, label=method)
    axes.set_xlabel("hosts deployed at once (N)")
    axes.set_ylabel("makespan (s), median, min-max")
    axes.set_xticks(counts)
    axes.set_title(f"{params['fleet_mib']} MiB image, every link at {params['fleet_rate_mbit']:g} Mbit/s")
    axes.legend()
    axes.grid(alpha=0.3)
    return _save(f"{'quick' if params['quick'] else 'full'}-fleet.png")


BASELINE_STYLES = {
    "ssh": "s--",
    "ssh cache": "^--",
    "ssh replica": "v--",
    "ipfs copy": "o-",
    "ipfs overlay": "D-",
}
"""Each system of the baselines figure, OpenNebula's dashed, ours solid."""


def _baseline_points(
    figure: dict[str, Any], quantity: str, system: str, phase: str, counts: list[int]
) -> list[tuple[int, dict[str, Any]]]:
    found = [(n, _measure(figure, f"{quantity}: {system}, {phase}, N={n}")) for n in counts]
    return [(n, m) for n, m in found if m is not None]


def _baselines_plots(results: dict[str, Any]) -> dict[str, str]:
    """Makespan against N per system (cold and warm) and the cold image's time from ``oneimage create``,
    and the bytes the frontend and each host moved."""
    figure = next((f for f in results["figures"] if f["id"] == "baselines"), None)
    if figure is None:
        return {}
    params = _params(results, figure)
    counts = params["fleet_hosts"]
    plots = {}
    titles = {
        ("makespan", "cold"): "cold: a fresh image",
        ("makespan", "warm"): "warm: its second version, 5% changed",
        (END_TO_END, "cold"): "cold, from oneimage create",
    }
    _, panes = plt.subplots(1, len(titles), figsize=(16, 4), sharey=True)
    for axes, ((quantity, phase), title) in zip(panes, titles.items(), strict=True):
        for system, style in BASELINE_STYLES.items():
            points = _baseline_points(figure, quantity, system, phase, counts)
            if not points:
                continue
            medians = [m["median"] for _, m in points]
            errors = [
                [m["median"] - m["min"] for _, m in points],
                [m["max"] - m["median"] for _, m in points],
            ]
            axes.errorbar([n for n, _ in points], medians, yerr=errors, fmt=style, capsize=3, label=system)
        axes.set_xlabel("hosts deployed at once (N)")
        axes.set_xticks(counts)
        axes.set_title(title)
        axes.grid(alpha=0.3)
    panes[0].set_ylabel("to the last VM RUNNING (s), median, min-max")
    panes[0].legend()
    plots["baselines"] = _save(f"{'quick' if params['quick'] else 'full'}-baselines.png")
    _, panes = plt.subplots(1, 2, figsize=(11, 4))
    for axes, quantity in zip(panes, ("frontend sent / image", "per host / image"), strict=True):
        for system, style in BASELINE_STYLES.items():
            points = _baseline_points(figure, quantity, system, "cold", counts)
            if points:
                axes.plot([n for n, _ in points], [m["median"] for _, m in points], style, label=system)
        axes.set_xlabel("hosts deployed at once (N), cold image")
        axes.set_xticks(counts)
        axes.set_ylabel(f"{quantity} (median)")
        axes.grid(alpha=0.3)
    panes[0].legend()
    plots["baselines-bytes"] = _save(f"{'quick' if params['quick'] else 'full'}-baselines-bytes.png")
    return plots


BACKUP_STYLES = {"rsync": "s--", "restic": "^--", "ipfs": "o-", "ipfs 1 MiB": "D:", "ipfs 64 KiB": "D-"}
"""Each backup datastore of the backups figure, OpenNebula's dashed, ours solid. Runs from before a backup
datastore's chunks were 64 KiB by default measured "ipfs" (then 1 MiB) and "ipfs 64 KiB"."""
STORED = re.compile(r"stored after day (\d+), (full|increments): (.+)")


def _backups_plot(results: dict[str, Any]) -> str | None:
    """The bytes each backup datastore keeps after each day, every backup so far included, per mode."""
    figure = next((f for f in results["figures"] if f["id"] == "backups"), None)
    if figure is None:
        return None
    found = [(STORED.fullmatch(m["name"]), m["median"]) for m in figure["measures"]]
    stored = [(match[2], match[3], int(match[1]), mib) for match, mib in found if match]
    _, panes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for axes, kind in zip(panes, ("full", "increments"), strict=True):
        for system, style in BACKUP_STYLES.items():
            points = sorted((day, mib) for k, name, day, mib in stored if (k, name) == (kind, system))
            if points:
                axes.plot([day for day, _ in points], [mib for _, mib in points], style, label=system)
        axes.set_xlabel("day (every VM backed up once a day)")
        axes.set_title("MODE=FULL, raw disks" if kind == "full" else "MODE=INCREMENT, qcow2 disks")
        axes.set_ylim(bottom=0)
        axes.grid(alpha=0.3)
    panes[0].set_ylabel("kept by the backup datastore (MiB)")
    panes[0].legend()
    return _save(f"{'quick' if _params(results, figure)['quick'] else 'full'}-backups.png")


SIZED = re.compile(r"(.+?)(?: peak)?, (\d+) (MiB|GiB)")
"""A sizes figure's measure: ``tm clone, 1 GiB`` (seconds) or ``host side peak, 64 MiB`` (MiB)."""


def _sizes_plot(results: dict[str, Any]) -> str | None:
    """Time and peak memory against the image size, one line per action and per process."""
    figure = next((f for f in results["figures"] if f["id"] == "sizes"), None)
    if figure is None:
        return None
    _, (times, memory) = plt.subplots(1, 2, figsize=(11, 4))
    lines: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for m in figure["measures"]:
        match = SIZED.fullmatch(m["name"])
        if match and m["unit"] in ("s", "MiB"):
            mib = int(match[2]) << (10 if match[3] == "GiB" else 0)
            lines.setdefault((m["unit"], match[1]), []).append((mib, m["median"]))
    for (unit, name), points in sorted(lines.items()):
        points.sort()
        axes = times if unit == "s" else memory
        axes.plot([x for x, _ in points], [y for _, y in points], "o-", label=name)
    memory.set_xscale("log", base=2)  # a line here would be memory growing with the log of the size
    for axes, label in ((times, "time (s), median"), (memory, "peak resident memory (MiB), median")):
        axes.set_xlabel("image size (MiB)")
        axes.set_ylabel(label)
        axes.set_ylim(bottom=0)
        axes.grid(alpha=0.3)
        axes.legend()
    return _save(f"{'quick' if _params(results, figure)['quick'] else 'full'}-sizes.png")


def _targets_plot(results: dict[str, Any]) -> str:
    """Each target's median as a share of its limit (inverted for 'at least' targets): < 1 is met."""
    labels, shares, colours = [], [], []
    for figure in results["figures"]:
        for check in figure["checks"]:
            if check["value"] is None:
                continue
            share = check["value"] / check["limit"] if check["at_most"] else check["limit"] / check["value"]
            labels.append(f"{figure['id']}: {check['target']}")
            shares.append(share)
            colours.append("tab:green" if check["met"] else "tab:red")
    axes = plt.figure(figsize=(8, 0.45 * len(labels) + 1.2)).gca()
    axes.barh(range(len(labels)), shares, color=colours)
    axes.axvline(1.0, color="black", linewidth=1)
    axes.set_yticks(range(len(labels)), labels, fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel("median / limit (at most), limit / median (at least): 1 = the target")
    plt.tight_layout()
    return _save(f"{results['mode']}-targets.png")


def _save(name: str) -> str:
    PLOTS.mkdir(parents=True, exist_ok=True)
    plt.savefig(PLOTS / name, dpi=100, bbox_inches="tight")
    plt.close("all")
    return f"benchmarks/{name}"


def write(results: dict[str, Any]) -> str:
    """Write the plots and docs/benchmarks.md; return the summary table."""
    plots = {"targets": _targets_plot(results)}
    fleet = _fleet_plot(results)
    if fleet is not None:
        plots["fleet"] = fleet
    plots.update(_baselines_plots(results))
    for name, plot in (("backups", _backups_plot(results)), ("sizes", _sizes_plot(results))):
        if plot is not None:
            plots[name] = plot

    def replace(match: re.Match[str]) -> str:
        kind, name = match.group(1), match.group(2)
        if kind == "run":
            return _run_text(results)
        if kind == "summary":
            return summary_table(results)
        if kind == "figure":
            return _figure_text(results, name)
        if kind == "plot":
            return f"![{name}]({plots[name]})" if name in plots else f"*No {name} plot in this run.*"
        raise ValueError(f"unknown marker {match.group(0)} in {TEMPLATE}")

    (DOCS / "benchmarks.md").write_text(MARKER.sub(replace, TEMPLATE.read_text()))
    return summary_table(results)
