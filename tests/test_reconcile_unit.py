"""Settling a host's references for disks that never arrived, against oned's word, without a bed."""

from __future__ import annotations

from typing import Any

import pytest

from one_ipfs.config import load_config
from one_ipfs.errors import OpenNebulaError
from one_ipfs.opennebula import cli
from one_ipfs.opennebula.action import VmHistory, VmTemplate
from one_ipfs.transfer import actions

CONFIG = load_config({}, defaults={})
ACTIVE, POWEROFF, DONE = 3, 8, 6


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, list[str]]]:
    """Every host command run; a fetch reports VMs 7 (the action's own) to 11 awaiting; oned knows no 11."""
    made: list[tuple[str, str, list[str]]] = []

    def run_on_host(host: str, command: str, args: list[str], *, timeout: float) -> dict[str, Any]:
        made.append((host, command, args))
        return {"awaiting": [7, 8, 9, 10, 11]} if command == "fetch" else {}

    def show_vm(vm_id: int) -> VmTemplate:
        placed = {8: ("h2", ACTIVE), 9: ("h1", ACTIVE), 10: ("h2", DONE)}
        if vm_id not in placed:
            raise OpenNebulaError(f"onevm show -x {vm_id} failed: no such VM")
        host, state = placed[vm_id]
        return VmTemplate(vm_id, state, 0, [], VmHistory(host, 0))

    monkeypatch.setattr(actions, "run_on_host", run_on_host)
    monkeypatch.setattr(cli, "show_vm", show_vm)
    return made


def test_references_are_released_only_for_vms_oned_places_elsewhere_or_that_are_gone(
    calls: list[tuple[str, str, list[str]]],
) -> None:
    result = actions._on_host("h2", "fetch", [], CONFIG, 7)

    assert result == {"awaiting": [7, 8, 9, 10, 11]}
    released = [args[args.index("--vm") + 1] for host, command, args in calls if command == "release"]
    assert released == ["9", "10"]
    assert all(host == "h2" for host, _, _ in calls)
