"""Benchmarks of the drivers on the test bed (design.md section 9): ``python -m benchmarks [--quick]``.

Never part of ``make test`` and never a timed assertion: each suite reports ratios against a baseline
measured in the same run, and the report says which targets of issue 6 the medians meet.
"""
