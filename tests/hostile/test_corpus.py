"""Every case of the hostile-input corpus, through the entry point OpenNebula (or the admin) uses:
one plain failure line naming the problem, a non-zero exit that is not a crash, and nothing done:
no process, no shell, no write, no Kubo request, no file changed."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from one_ipfs.errors import IpfsError
from one_ipfs.ipfs.rpc import KuboClient
from tests.hostile.corpus import ALL_CASES, Case
from tests.hostile.harness import CID, Outcome, Tripwire, World, new_world, placed


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with new_world(tmp_path_factory.mktemp("hostile")) as running:
        yield running


def run_case(world: World, case: Case) -> Outcome:
    """The case through its entry point, as OpenNebula, the transfer driver or the admin calls it."""
    kind, _, name = case.entry.partition(" ")
    args, stdin = placed(world, case.args, case.stdin)
    if kind in ("datastore", "tm"):
        return world.driver(kind, name, args, stdin)
    if kind == "host":
        return world.host(args)
    return world.admin(args)


def test_the_watch_sees_a_shell_a_write_outside_and_a_kubo_request(world: World) -> None:
    """What every case must not do is caught when done, and stopped before it happens."""

    def misbehave() -> int:
        with contextlib.suppress(Tripwire):
            subprocess.run(["sh", "-c", "touch /tmp/pwned"], check=False)
        with contextlib.suppress(Tripwire):
            open(world.root / "canary", "a").close()
        with contextlib.suppress(IpfsError):
            KuboClient(f"http://127.0.0.1:{world.port}", timeout=5).pin_rm(CID)
        return 0

    outcome = world._run(misbehave, b"")

    assert outcome.watch.processes and "touch /tmp/pwned" in outcome.watch.processes[0]
    assert any(str(world.root / "canary") in blocked for blocked in outcome.watch.blocked)
    assert outcome.kubo_requests and outcome.kubo_requests[0].startswith("/api/v0/pin/rm")
    assert not Path("/tmp/pwned").exists()


def test_the_corpus_holds_at_least_200_cases_with_unique_names() -> None:
    assert len(ALL_CASES) >= 200
    assert len({case.id for case in ALL_CASES}) == len(ALL_CASES)


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda case: case.id)
def test_hostile_input_is_refused_with_one_line_and_nothing_done(world: World, case: Case) -> None:
    outcome = run_case(world, case)

    assert outcome.problems(case.reason) == [], outcome.err[-2000:]
