"""The benchmark page's generator (``benchmarks.report``), fed a made-up run: no bed, no timing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks import __main__ as bench_main
from benchmarks import report, sizes
from benchmarks.baselines import CHANGED, END_TO_END
from benchmarks.common import Figure, Params

COUNTS = [1, 2]
PARAMS: dict[str, Any] = {
    "quick": True,
    "fleet_mib": 64,
    "fleet_hosts": COUNTS,
    "fleet_rate_mbit": 100.0,
    "image_mib": 128,
    "import_mib": 256,
    "repetitions": 1,
    "latency_runs": 10,
}


def measure(name: str, value: float) -> dict[str, Any]:
    return {"name": name, "unit": "s", "samples": [value], "median": value, "min": value, "max": value}


def run_of(figure: dict[str, Any], started: str) -> dict[str, Any]:
    return {
        "mode": "quick",
        "started": started,
        "finished": started,
        "argv": ["--quick"],
        "params": PARAMS,
        "machine": {"cpus": 2, "load_average": [1.0, 1.0, 1.0], "kubo": ""},
        "figures": [figure],
    }


def test_a_baselines_run_merged_over_an_earlier_page_keeps_its_figures_and_plots_every_system(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report, "DOCS", tmp_path)
    monkeypatch.setattr(report, "PLOTS", tmp_path / "benchmarks")
    quantities = ("makespan", END_TO_END, "frontend sent / image", "per host / image")
    baselines = {
        "id": "baselines",
        "title": "Baselines",
        "method": f"warm: {CHANGED:.0%} changed",
        "command": "python -m benchmarks --only baselines",
        "measures": [
            measure(f"{quantity}: {system}, {phase}, N={n}", 1.0 + n)
            for quantity in quantities
            for system in report.BASELINE_STYLES
            for phase in ("cold", "warm")
            for n in COUNTS
        ],
        "checks": [],
        "notes": [],
    }
    latency = {**baselines, "id": "latency", "title": "Latency", "measures": [measure("stat", 0.1)]}
    earlier = tmp_path / "earlier.json"
    merged = bench_main.merge(run_of(baselines, "later"), (earlier, run_of(latency, "earlier")))
    report.write(merged)
    page = (tmp_path / "benchmarks.md").read_text()
    assert "**Latency.**" in page and "**Baselines.**" in page and "kept from the earlier results" in page
    for plot in ("quick-baselines.png", "quick-baselines-bytes.png"):
        assert f"(benchmarks/{plot})" in page
        assert (tmp_path / "benchmarks" / plot).stat().st_size > 0


def test_a_backups_figure_plots_each_datastore_day_by_day_beside_the_other_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report, "DOCS", tmp_path)
    monkeypatch.setattr(report, "PLOTS", tmp_path / "benchmarks")
    backups = {
        "id": "backups",
        "title": "Backups",
        "method": "a week",
        "command": "python -m benchmarks --only backups",
        "measures": [
            measure(f"stored after day {day}, {kind}: {system}", 64.0 * day)
            for kind in ("full", "increments")
            for system in report.BACKUP_STYLES
            for day in range(1, 8)
        ]
        + [measure("stored after day 7, full: rsync, allocated blocks", 400.0)],
        "checks": [],
        "notes": [],
    }
    report.write(run_of(backups, "now"))
    page = (tmp_path / "benchmarks.md").read_text()
    assert "**Backups.**" in page and "| stored after day 7, increments: restic | 448 |" in page
    assert "(benchmarks/quick-backups.png)" in page
    assert (tmp_path / "benchmarks" / "quick-backups.png").stat().st_size > 0


def test_a_sizes_figure_plots_time_and_peak_memory_against_the_image_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report, "DOCS", tmp_path)
    monkeypatch.setattr(report, "PLOTS", tmp_path / "benchmarks")
    labels = {64: "64 MiB", 256: "256 MiB", 1024: "1 GiB"}
    sizes = {
        "id": "sizes",
        "title": "Sizes",
        "method": "each size",
        "command": "python -m benchmarks --only sizes",
        "measures": [
            measure(f"{action}, {label}", mib / 100)
            for action in ("ds cp", "tm clone")
            for mib, label in labels.items()
        ]
        + [
            {**measure(f"{role} peak, {label}", 40.0), "unit": "MiB"}
            for role in ("ds cp", "host side", "frontend kubo")
            for label in labels.values()
        ],
        "checks": [],
        "notes": ["tm clone: 0.20 s + 10.2 s per GiB"],
    }
    report.write(run_of(sizes, "now"))
    page = (tmp_path / "benchmarks.md").read_text()
    assert "**Sizes.**" in page and "tm clone: 0.20 s + 10.2 s per GiB" in page
    assert "(benchmarks/quick-sizes.png)" in page
    assert (tmp_path / "benchmarks" / "quick-sizes.png").stat().st_size > 0


def test_the_size_law_is_the_line_through_the_medians_with_the_least_relative_error() -> None:
    figure = Figure("sizes", "Sizes", "")
    for mib, seconds in ((64, 1.5), (256, 3.0), (1024, 9.0)):
        figure.measure(f"tm clone, {sizes._size(mib)}", "s").samples.append(seconds)
    law = sizes._law(figure, "tm clone", (64, 256, 1024))
    assert law.startswith("tm clone: 1.00 s + 8.0 s per GiB"), law


def test_a_figure_kept_after_a_repetition_is_a_results_file_the_report_reads_and_later_runs_do_not_merge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench_main, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(report, "DOCS", tmp_path)
    monkeypatch.setattr(report, "PLOTS", tmp_path / "benchmarks")
    params = Params.choose(quick=True, repetitions=3, hosts=[1, 8])
    save = bench_main.partial_saver(["--quick", "--only", "latency"], params, "2026-12-07T23:00:00")
    figure = Figure("latency", "Latency", "so far")
    figure.measure("stat", "ms").samples.append(50.0)

    save(figure)

    kept = next((tmp_path / "results").glob("partial-quick-*.json"))
    report.write(json.loads(kept.read_text()))
    assert "| stat | 50 | 50 | 50 | ms | 1 |" in (tmp_path / "benchmarks.md").read_text()
    assert bench_main.latest_results("quick") is None
