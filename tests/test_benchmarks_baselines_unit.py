"""The baselines figure's profile of a fleet deploy, read from oned's VM history: no bed, no oned."""

from __future__ import annotations

from benchmarks.baselines import Deploy
from testbed.one import VirtualMachine


def running_vm(oid: int, prolog_start: int, prolog_end: int) -> VirtualMachine:
    """A VM as genuine oned's ``one.vm.info`` answers it once RUNNING, with one history record."""
    return VirtualMachine.from_xml(
        f"<VM><ID>{oid}</ID><NAME>one-{oid}</NAME><STATE>3</STATE><LCM_STATE>3</LCM_STATE>"
        "<TEMPLATE/><USER_TEMPLATE/><HISTORY_RECORDS><HISTORY><SEQ>0</SEQ><HOSTNAME>h1</HOSTNAME>"
        f"<DS_ID>0</DS_ID><TM_MAD>ssh</TM_MAD><STIME>{prolog_start}</STIME><PSTIME>{prolog_start}</PSTIME>"
        f"<PETIME>{prolog_end}</PETIME><RSTIME>{prolog_end}</RSTIME></HISTORY></HISTORY_RECORDS></VM>"
    )


def test_a_fleet_deploy_splits_into_dispatch_prologs_and_boot_from_each_vms_history() -> None:
    vms = [running_vm(1, 1000, 1010), running_vm(2, 1001, 1013), running_vm(3, 1004, 1020)]
    deploy = Deploy(999.5, tuple(vm.history[-1] for vm in vms), 1022.0)
    assert deploy.makespan == 22.5
    assert deploy.profile() == {
        "deploy to first prolog start": 0.5,
        "prolog starts spread": 4,
        "prolog median": 12,
        "prolog max": 16,
        "last prolog end to RUNNING": 2.0,
    }
