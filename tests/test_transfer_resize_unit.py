"""``resize`` against oned's word on the VM's state, without a bed: QEMU holds a running VM's disk, so
only its hypervisor may grow it (``virsh blockresize``, the VMM's step after ours), as OpenNebula's own
TMs leave it."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from one_ipfs.config import load_config
from one_ipfs.host import protocol
from one_ipfs.hosts import calls as host_calls
from one_ipfs.opennebula import oned
from one_ipfs.opennebula.documents import VmHistory, VmTemplate
from one_ipfs.transfer import actions

DISK = "h1:/var/lib/one//datastores/0/7/disk.0"
RUNNING, POWEROFF = 3, 8
LCM_RUNNING, LCM_HOTPLUG_RESIZE, LCM_NONE = 3, 62, 0


Call = tuple[str, protocol.Request[object]]


def resize_on(monkeypatch: pytest.MonkeyPatch, state: int, lcm_state: int) -> list[Call]:
    """Run ``resize`` of VM 7's disk.0 to 2048 MiB while oned shows the VM in ``state``/``lcm_state``."""
    made: list[Call] = []
    vm = VmTemplate(7, state, lcm_state, [], VmHistory("h1", 0))

    def call(host: str, request: protocol.Request[object], *, timeout: float) -> object:
        made.append((host, request))
        return request.result()

    monkeypatch.setattr(host_calls, "call", call)
    monkeypatch.setattr(actions, "datastore_config", lambda datastore_id: load_config({}, defaults={}))
    monkeypatch.setattr(oned, "show_vm", lambda vm_id: vm)
    actions.ACTIONS["resize"](actions.TmCall([DISK, "2048", "7", "100"], io.BytesIO()))
    return made


def test_the_disk_of_a_powered_off_vm_grows_on_its_host(monkeypatch: pytest.MonkeyPatch) -> None:
    made = resize_on(monkeypatch, POWEROFF, LCM_NONE)

    assert made == [("h1", protocol.Resize(disk=Path("/var/lib/one/datastores/0/7/disk.0"), size_mb=2048))]


def test_the_disk_of_a_running_vm_is_left_to_its_hypervisor(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resize_on(monkeypatch, RUNNING, LCM_HOTPLUG_RESIZE) == []
