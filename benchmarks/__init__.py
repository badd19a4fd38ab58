"""Benchmarks of the drivers against their baselines on a test bed of their own (``testbed``), under genuine
oned or the simulator, reported into ``docs/benchmarks.md`` (``report``): ``python -m benchmarks [--quick]``.

Never part of ``make test`` and never a timed assertion: each suite reports ratios against a baseline
measured in the same run, and the report says which targets (``common.Check``) the medians meet.
"""
