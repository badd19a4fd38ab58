"""Settling a host's cache uses by disks that never arrived, against oned's word, without a bed."""

from __future__ import annotations

from pathlib import Path

import pytest

from one_ipfs.config import load_config
from one_ipfs.errors import OpenNebulaError
from one_ipfs.host import protocol
from one_ipfs.hosts import calls as host_calls
from one_ipfs.opennebula import oned
from one_ipfs.opennebula.documents import VmHistory, VmTemplate
from one_ipfs.transfer import actions

CONFIG = load_config({}, defaults={})
ACTIVE, POWEROFF, DONE = 3, 8, 6
CID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
FETCH = protocol.Fetch(cid=CID, disk=Path("/var/lib/one/datastores/0/7/disk.0"), vm=7)
DEPLOYED = protocol.Deployed(CID, "copy", "raw", awaiting=(7, 8, 9, 10, 11))


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, protocol.Request[object]]]:
    """Every host command run; a fetch reports VMs 7 (the action's own) to 11 awaiting; oned knows no 11."""
    made: list[tuple[str, protocol.Request[object]]] = []

    def call(host: str, request: protocol.Request[object], *, timeout: float) -> object:
        made.append((host, request))
        return DEPLOYED if isinstance(request, protocol.Fetch) else request.result()

    def show_vm(vm_id: int) -> VmTemplate:
        placed = {8: ("h2", ACTIVE), 9: ("h1", ACTIVE), 10: ("h2", DONE)}
        if vm_id not in placed:
            raise OpenNebulaError(f"[one.vm.info] Error getting virtual machine [{vm_id}].")
        host, state = placed[vm_id]
        return VmTemplate(vm_id, state, 0, [], VmHistory(host, 0))

    monkeypatch.setattr(host_calls, "call", call)
    monkeypatch.setattr(oned, "show_vm", show_vm)
    return made


def test_cache_uses_are_released_only_for_vms_oned_places_elsewhere_or_that_are_gone(
    calls: list[tuple[str, protocol.Request[object]]],
) -> None:
    result = actions._on_host("h2", FETCH, CONFIG, 7)

    assert result == DEPLOYED
    released = [request.vm for _, request in calls if isinstance(request, protocol.Release)]
    assert released == [9, 10]
    assert all(host == "h2" for host, _ in calls)
