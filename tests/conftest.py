"""Fixtures shared by every test file.

``bed``: one test bed (frontend + 3 hosts, see ``testbed.bed``) for the whole session, brought up on first use
and torn down at the end. Tests that take it are marked ``@pytest.mark.bed``. It replaces any bed left at
the default root (``.bed/``), including one started with ``python -m testbed up``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from testbed.bed import Bed


@pytest.fixture(scope="session")
def bed() -> Iterator[Bed]:
    if os.geteuid() != 0:
        pytest.skip("the test bed needs root (network namespaces, mounts, sshd); run the tests as root")
    with Bed.up(hosts=3) as running:
        yield running
