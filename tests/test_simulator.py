"""The OpenNebula simulator behaves as oned and its driver managers do.

The first half reproduces, one test each, the observations of ../shared/docs/opennebula-driver-protocol.md §3
(made with the genuine Ruby driver managers and recording drivers); the second half checks the image and VM
life cycles: which actions oned sends, in which transfer files, with which arguments, and the states it leaves
behind. Everything runs locally with recording drivers: no bed, no Kubo."""

from __future__ import annotations

import base64
import os
import shutil
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from one_ipfs.errors import ObjectMissing
from one_ipfs.opennebula import oned
from testbed.bed import Bed
from testbed.one import LocalRunner, OnedConf, OneFailure, OneSim
from testbed.one import template as tmpl
from testbed.one.bedrunner import BedRunner
from testbed.one.documents import parse_xml, text
from testbed.one.recorder import Behaviour, RecordingDrivers

CID = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"
MONITOR = "USED_MB=9720\nTOTAL_MB=20480\nFREE_MB=20480\n"
TM_ACTIONS = (
    *("clone", "ln", "delete", "mv", "mvds", "cpds", "premigrate", "postmigrate", "failmigrate"),
    *("snap_create", "snap_revert", "snap_delete", "resize"),
)


@dataclass
class Sim:
    one: OneSim
    drivers: RecordingDrivers
    runner: LocalRunner
    tmp: Path

    def calls(self, kind: str | None = None, action: str | None = None) -> list[object]:
        return list(self.drivers.calls(kind=kind, action=action))


STARTED: list[OneSim] = []


def make_sim(tmp_path: Path, conf: OnedConf | None = None) -> Sim:
    runner = LocalRunner(tmp_path / "machines")
    one = OneSim(runner, state=tmp_path / "state", conf=conf)
    STARTED.append(one)
    return Sim(one, RecordingDrivers(one.remotes, tmp_path / "calls.jsonl"), runner, tmp_path)


@pytest.fixture(autouse=True)
def stop_simulators() -> Iterator[None]:
    """Every simulator a test started stops serving its API with the test."""
    yield
    while STARTED:
        STARTED.pop().close()


@pytest.fixture
def sim(tmp_path: Path) -> Sim:
    return make_sim(tmp_path)


def ipfs_drivers(sim: Sim, **behaviours: Behaviour) -> None:
    """Recording ipfs DS and TM drivers answering like working ones, ``behaviours`` overriding."""
    answers = {
        "monitor": Behaviour(stdout=MONITOR),
        "stat": Behaviour(stdout="10\n"),
        "cp": Behaviour(stdout=f"/ipfs/{CID} raw\n"),
        "clone": Behaviour(stdout="/one-ipfs/100/8 raw\n"),
        "mkfs": Behaviour(stdout="/one-ipfs/100/9\n"),
        "rm": Behaviour(),
    }
    for action, behaviour in answers.items():
        sim.drivers.install("datastore", "ipfs", action, behaviours.get(f"ds_{action}", behaviour))
    for action in TM_ACTIONS:
        sim.drivers.install("tm", "ipfs", action, behaviours.get(f"tm_{action}", Behaviour()))


def ipfs_datastore(sim: Sim) -> int:
    return sim.one.datastore_create({"NAME": "ipfs", "DS_MAD": "ipfs", "TM_MAD": "ipfs"}).id


def payload(image: str = "<IMAGE><ID>7</ID></IMAGE>", ds_mad: str = "ipfs", ds_type: int = 0) -> str:
    fields = f"<ID>100</ID><DS_MAD>{ds_mad}</DS_MAD><TM_MAD>ipfs</TM_MAD><TYPE>{ds_type}</TYPE>"
    datastore = f"<DATASTORE>{fields}</DATASTORE>"
    return base64.b64encode(
        f"<DS_DRIVER_ACTION_DATA>{image}{datastore}</DS_DRIVER_ACTION_DATA>".encode()
    ).decode()


# --------------------------------------------------------------------------------------------------
# §3: the datastore driver manager
# --------------------------------------------------------------------------------------------------


def test_datastore_script_gets_the_id_as_argument_and_the_action_on_stdin(sim: Sim) -> None:
    sim.drivers.install("datastore", "ipfs", "stat", Behaviour(stdout="10\n"))
    message = payload()

    result = sim.one.datastore_manager.request("STAT", 7, message)

    (call,) = sim.drivers.calls(action="stat")
    assert call.args == ["7"]
    assert call.stdin == message
    assert call.cwd == str(sim.runner.var_lib_one)
    assert call.env["ONE_XMLRPC"] == sim.one.api.url
    assert call.env["ONE_AUTH"] == str(sim.tmp / "state" / "one_auth")
    assert result.request == f"STAT  7 {message}"
    assert result.wire == ("STAT SUCCESS 7 10",)


def test_pre_6_8_convention_passes_the_action_as_first_argument(tmp_path: Path) -> None:
    sim = make_sim(tmp_path, OnedConf(convention="pre-6.8"))
    sim.drivers.install("datastore", "ipfs", "rm")
    message = payload()

    sim.one.datastore_manager.request("RM", 7, message, convention="pre-6.8")

    (call,) = sim.drivers.calls(action="rm")
    assert (call.args, call.stdin) == ([message, "7"], "")


def test_cp_that_parses_its_action_answers_source_and_format(sim: Sim) -> None:
    script = sim.one.remotes / "datastore" / "ipfs" / "cp"
    script.parent.mkdir(parents=True)
    script.write_text(
        f"#!{sys.executable}\n"
        "import base64, sys, xml.etree.ElementTree as ET\n"
        "action = ET.fromstring(base64.b64decode(sys.stdin.read()))\n"
        "sys.stderr.write('INFO: cp called for image ' + sys.argv[1] + '\\n')\n"
        "print(action.findtext('IMAGE/PATH') + ' raw')\n"
    )
    script.chmod(0o755)

    result = sim.one.datastore_manager.request("CP", 7, payload(f"<IMAGE><PATH>/ipfs/{CID}</PATH></IMAGE>"))

    assert result.wire == ("LOG I -1 cp called for image 7", f"CP SUCCESS 7 /ipfs/{CID} raw")
    assert result.info == f"/ipfs/{CID} raw"


def test_failing_script_reports_its_plain_stderr_line(sim: Sim) -> None:
    sim.drivers.install(
        "datastore", "ipfs", "cp", Behaviour(stderr="Unsupported PATH http://x/y.img\n", exit_code=1)
    )

    result = sim.one.datastore_manager.request("CP", 8, payload())

    command = f"{sim.one.driver_remotes}/datastore/ipfs/cp 8"
    assert result.wire[0] == f"LOG I 8 Command execution failed (exit code: 1): {command}"
    assert result.wire[-1] == "CP FAILURE 8 Unsupported PATH http://x/y.img"
    assert (result.success, result.info) == (False, "Unsupported PATH http://x/y.img")


def test_plain_stderr_lines_are_glued_without_separator_and_prefixed_ones_logged(sim: Sim) -> None:
    stderr = (
        "ERROR: rm: something bad happened\nINFO: 7 rm: info line with id\n"
        "plain stderr line one\nplain stderr line two\n"
    )
    sim.drivers.install("datastore", "ipfs", "rm", Behaviour(stderr=stderr, exit_code=3))

    result = sim.one.datastore_manager.request("RM", 7, payload())

    assert result.wire[-1] == "RM FAILURE 7 plain stderr line oneplain stderr line two"
    assert "LOG E -1 rm: something bad happened" in result.wire
    assert "LOG I 7 rm: info line with id" in result.wire
    assert "LOG I 7 plain stderr line one" in result.wire  # CommandManager logs every stderr line on failure


def test_script_running_past_the_timeout_is_killed(tmp_path: Path) -> None:
    sim = make_sim(tmp_path, OnedConf(datastore_timeout=0.5))
    sim.drivers.install("datastore", "ipfs", "clone", Behaviour(sleep=30))

    result = sim.one.datastore_manager.request("CLONE", 7, payload())

    assert (
        result.wire[-1]
        == f"CLONE FAILURE 7 Timeout executing {sim.one.driver_remotes}/datastore/ipfs/clone 7"
    )


def test_datastore_driver_left_out_of_the_enabled_list_is_refused(tmp_path: Path) -> None:
    sim = make_sim(tmp_path, OnedConf(datastore_mads=("fs", "ipfs")))

    result = sim.one.datastore_manager.request("CP", 8, payload(ds_mad="nosuch"))

    assert result.wire == ("CP FAILURE 8 Datastore driver 'nosuch' not available",)
    assert sim.drivers.calls() == []


def test_system_datastore_monitor_runs_the_tm_monitor_if_allowed(sim: Sim) -> None:
    sim.drivers.install("tm", "ipfs", "monitor", Behaviour(stdout=MONITOR))
    message = payload(image="", ds_type=1)

    refused = sim.one.datastore_manager.request("MONITOR", 101, message)
    sim.one.datastore_manager.system_tms = ("ssh", "ipfs")
    answered = sim.one.datastore_manager.request("MONITOR", 101, message)

    assert refused.wire == ("MONITOR FAILURE 101 System datastore driver 'ipfs' not available",)
    (call,) = sim.drivers.calls(kind="tm", action="monitor")
    assert (call.args, call.stdin) == (["101"], message)
    assert answered.wire == ("MONITOR SUCCESS 101 VVNFRF9NQj05NzIwClRPVEFMX01CPTIwNDgwCkZSRUVfTUI9MjA0ODAK",)


def test_monitor_reply_is_base64_of_stdout_and_sets_the_datastore_capacity(sim: Sim) -> None:
    ipfs_drivers(sim)

    datastore = sim.one.datastore_create({"NAME": "ipfs", "DS_MAD": "ipfs", "TM_MAD": "ipfs"})

    (monitor,) = sim.one.results("MONITOR")
    assert base64.b64decode(monitor.info).decode() == MONITOR
    assert (datastore.total_mb, datastore.free_mb, datastore.used_mb) == (20480, 20480, 9720)


# --------------------------------------------------------------------------------------------------
# §3: the transfer driver manager
# --------------------------------------------------------------------------------------------------


def write_transfer(sim: Sim, vmid: int, lines: list[str]) -> tuple[Path, str]:
    local = sim.runner.var_lib_one / "vms" / str(vmid) / "transfer.0.prolog"
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_text("".join(line + "\n" for line in lines))
    return local, f"{sim.runner.driver_var_lib_one}/vms/{vmid}/transfer.0.prolog"


def test_transfer_file_commands_get_oneds_arguments_and_suffix_falls_back(sim: Sim) -> None:
    for action in ("clone", "ln", "mkimage", "mkswap", "context"):
        sim.drivers.install("tm", "rec", action)
    disk = "host1:/var/lib/one//datastores/0/42/disk.{}"
    lines = [
        "# a comment, then a blank line",
        "",
        f"CLONE rec fe.example:/ipfs/{CID} {disk.format(0)} 42 100",
        f"LN rec fe.example:/ipfs/{CID} {disk.format(1)} 42 100",
        f"CLONE.SSH rec fe.example:/ipfs/{CID} {disk.format(2)} 42 100",
        f"MKIMAGE rec 1024 raw {disk.format(3)} 42 0",
        f"MKSWAP rec 512 {disk.format(4)} 42 0",
        f"CONTEXT rec /var/lib/one/vms/42/context.sh {disk.format(5)} 42 0",
    ]
    local, driver_path = write_transfer(sim, 42, lines)

    result = sim.one.transfer_manager.transfer(42, local, driver_path)

    calls = sim.drivers.calls(kind="tm")
    assert [(c.action, c.args) for c in calls] == [
        ("clone", [f"fe.example:/ipfs/{CID}", disk.format(0), "42", "100"]),
        ("ln", [f"fe.example:/ipfs/{CID}", disk.format(1), "42", "100"]),
        ("clone", [f"fe.example:/ipfs/{CID}", disk.format(2), "42", "100"]),
        ("mkimage", ["1024", "raw", disk.format(3), "42", "0"]),
        ("mkswap", ["512", disk.format(4), "42", "0"]),
        ("context", ["/var/lib/one/vms/42/context.sh", disk.format(5), "42", "0"]),
    ]
    assert all(call.stdin == "" for call in calls)
    assert result.request == f"TRANSFER  42 {driver_path}"
    assert result.wire == ("TRANSFER SUCCESS 42 -",)


def test_epilog_stops_at_the_first_failure_with_its_plain_line(sim: Sim) -> None:
    stderr = "ERROR: mvds: could not upload\nError moving disk back to datastore\n"
    sim.drivers.install("tm", "rec", "mvds", Behaviour(stderr=stderr, exit_code=1))
    sim.drivers.install("tm", "rec", "delete")
    lines = [
        "MVDS rec h1:/var/lib/one//datastores/0/42/disk.0 /one-ipfs/100/7 42 100",
        "DELETE rec h1:/var/lib/one//datastores/0/42 42 0",
    ]
    local, driver_path = write_transfer(sim, 42, lines)

    result = sim.one.transfer_manager.transfer(42, local, driver_path)

    assert [c.action for c in sim.drivers.calls()] == ["mvds"]
    assert result.wire[-1] == "TRANSFER FAILURE 42 Error moving disk back to datastore"
    assert "LOG E -1 mvds: could not upload" in result.wire


def test_missing_transfer_file_fails_the_transfer(sim: Sim) -> None:
    missing = sim.runner.var_lib_one / "vms" / "43" / "transfer.0.prolog"

    result = sim.one.transfer_manager.transfer(43, missing, "/var/lib/one/vms/43/transfer.0.prolog")

    assert result.wire == (
        "TRANSFER FAILURE 43 Transfer file '/var/lib/one/vms/43/transfer.0.prolog' does not exist",
    )


def test_transfer_commands_have_no_timeout(tmp_path: Path) -> None:
    sim = make_sim(tmp_path, OnedConf(datastore_timeout=0.2))
    sim.drivers.install("tm", "rec", "delete", Behaviour(sleep=1.0))
    local, driver_path = write_transfer(sim, 42, ["DELETE rec h1:/var/lib/one//datastores/0/42 42 0"])

    result = sim.one.transfer_manager.transfer(42, local, driver_path)

    assert result.wire == ("TRANSFER SUCCESS 42 -",)


def test_vmm_driven_steps_pass_arguments_and_stdin_verbatim(sim: Sim) -> None:
    for action in ("premigrate", "prebackup", "snap_create_live", "resize"):
        sim.drivers.install("tm", "rec", action)
    vm64 = base64.b64encode(b"<VM><ID>42</ID></VM>").decode()
    folder = "/var/lib/one//datastores/0/42"
    manager = sim.one.transfer_manager

    manager.command(42, ["PREMIGRATE", "rec", "h1", "h2", folder, "42", "0"], vm64.encode())
    manager.command(42, ["PREBACKUP", "rec", f"h1:{folder}", "0:1", "one-42", "-", "42", "0"], b"<VM/>")
    manager.command(42, ["SNAP_CREATE_LIVE", "rec", f"h1:{folder}/disk.0", "0", "42", "100"])
    manager.command(42, ["RESIZE", "rec", f"h1:{folder}/disk.0", "2048", "42", "100"])
    unknown = manager.command(42, ["NOSUCH", "rec", "x"])

    assert [(c.action, c.args, c.stdin) for c in sim.drivers.calls()] == [
        ("premigrate", ["h1", "h2", folder, "42", "0"], vm64),
        ("prebackup", [f"h1:{folder}", "0:1", "one-42", "-", "42", "0"], "<VM/>"),
        ("snap_create_live", [f"h1:{folder}/disk.0", "0", "42", "100"], ""),
        ("resize", [f"h1:{folder}/disk.0", "2048", "42", "100"], ""),
    ]
    assert unknown.info == f"Driver path '{sim.one.driver_remotes}/tm/rec/nosuch' does not exists"


def test_transfer_driver_left_out_of_the_enabled_list_is_refused(tmp_path: Path) -> None:
    sim = make_sim(tmp_path, OnedConf(tm_mads=("ssh",)))
    sim.drivers.install("tm", "rec", "clone")

    result = sim.one.transfer_manager.command(42, ["CLONE", "rec", "a", "b", "42", "100"])

    assert result.info == "Transfer Driver 'rec' not available"


# --------------------------------------------------------------------------------------------------
# oned's API as the simulator serves it, and template syntax
# --------------------------------------------------------------------------------------------------


def as_driver(sim: Sim) -> oned.Endpoint:
    """The endpoint and session a driver of ``sim`` reads from its environment."""
    return oned.endpoint(sim.one.environment())


def test_api_shows_documents_and_fails_like_oned(sim: Sim) -> None:
    ipfs_drivers(sim)
    ds = ipfs_datastore(sim)
    image = sim.one.image_create(ds, name="alpine", path=f"/ipfs/{CID}")
    at = as_driver(sim)

    shown = oned.call("one.image.info", image.id, False, at=at)
    listed = oned.call("one.datastorepool.info", at=at)
    hosts = oned.call("one.hostpool.info", at=at)
    with pytest.raises(ObjectMissing) as missing:
        oned.call("one.image.info", 77, False, at=at)

    assert text(parse_xml(str(shown)), "SOURCE") == f"/ipfs/{CID}"
    assert [d.findtext("NAME") for d in parse_xml(str(listed)).findall("DATASTORE")] == ["system", "ipfs"]
    assert str(missing.value) == "[one.image.info] Error getting image [77]."
    assert [h.findtext("NAME") for h in parse_xml(str(hosts)).findall("HOST")] == ["h1", "h2", "h3"]


def test_image_update_replaces_or_appends_with_oned_quoting(sim: Sim) -> None:
    ipfs_drivers(sim)
    image = sim.one.image_create(ipfs_datastore(sim), name="alpine", path=f"/ipfs/{CID}", template={"A": "1"})
    at = as_driver(sim)

    quoted = 'IPFS_CID = "bafy\\"quoted\\" and \\\\backslash"\nB=2\n'
    oned.call("one.image.update", image.id, quoted, 1, at=at)
    after_append = sim.one.image(image).template
    oned.call("one.image.update", image.id, "C = 3\n", 0, at=at)

    assert after_append == {"A": "1", "B": "2", "IPFS_CID": 'bafy"quoted" and \\\\backslash'}
    assert sim.one.image(image).template == {"C": "3"}


def test_template_parser_follows_oned_rules() -> None:
    parsed = tmpl.parse(
        '# comment\nname = "multi\nline"\nEMPTY =\nDISK = [ image = "a", size=10 ]\nname=again\n'
    )

    assert parsed == [
        ("NAME", "multi\nline"),
        ("EMPTY", ""),
        ("DISK", {"IMAGE": "a", "SIZE": "10"}),
        ("NAME", "again"),
    ]
    with pytest.raises(tmpl.TemplateSyntaxError):
        tmpl.parse('A = "x]]>y"\n')


def test_driver_can_record_an_attribute_during_cp(sim: Sim) -> None:
    update = f"from one_ipfs.opennebula import oned; oned.update_image({{1}}, dict(IPFS_CID='{CID}'))"
    record = Behaviour(stdout="/one-ipfs/100/0 raw\n", run=((sys.executable, "-c", update),))
    ipfs_drivers(sim, ds_cp=record)

    image = sim.one.image_create(ipfs_datastore(sim), name="alpine", path=f"/ipfs/{CID}")

    (call,) = sim.drivers.calls(action="cp")
    assert call.runs[0]["code"] == 0
    assert (image.state, image.source, image.template["IPFS_CID"]) == ("READY", "/one-ipfs/100/0", CID)


# --------------------------------------------------------------------------------------------------
# Image life cycle
# --------------------------------------------------------------------------------------------------


def test_image_with_path_is_stat_then_copied_then_ready(sim: Sim) -> None:
    ipfs_drivers(sim)
    ds = ipfs_datastore(sim)

    image = sim.one.image_create(ds, name="alpine", path=f"/ipfs/{CID}")

    stat, cp = sim.drivers.calls(action="stat")[0], sim.drivers.calls(action="cp")[0]
    stat_action = parse_xml(base64.b64decode(stat.stdin))
    cp_action = parse_xml(base64.b64decode(cp.stdin))
    assert [child.tag for child in stat_action.findall("IMAGE/*")] == ["PATH"]
    assert stat.args == ["0"]  # a sync-request id, not the image id
    assert (cp.args, text(cp_action, "IMAGE/SIZE"), text(cp_action, "DATASTORE/ID")) == (["0"], "10", str(ds))
    assert (image.state, image.source, image.format, image.size_mb) == ("READY", f"/ipfs/{CID}", "raw", 10)
    assert [r.action for r in sim.one.results()] == ["MONITOR", "STAT", "CP", "MONITOR"]


def test_cp_without_format_leaves_the_image_in_error(sim: Sim) -> None:
    ipfs_drivers(sim, ds_cp=Behaviour(stdout=f"/ipfs/{CID}\n"))

    with pytest.raises(OneFailure) as failure:
        sim.one.image_create(ipfs_datastore(sim), name="alpine", path=f"/ipfs/{CID}")

    image = sim.one.image(failure.value.oid or 0)
    assert failure.value.info == "CP operation succeeded but image FORMAT was not returned."
    assert (image.state, image.source) == ("ERROR", f"/ipfs/{CID}")
    assert image.error.endswith(": CP operation succeeded but image FORMAT was not returned.")


def test_failed_cp_leaves_the_image_in_error_with_the_driver_reason(sim: Sim) -> None:
    ipfs_drivers(sim, ds_cp=Behaviour(stderr="no provider found for the CID\n", exit_code=1))

    with pytest.raises(OneFailure) as failure:
        sim.one.image_create(ipfs_datastore(sim), name="alpine", path=f"/ipfs/{CID}")

    assert (failure.value.action, failure.value.info) == ("CP", "no provider found for the CID")
    image = sim.one.image(failure.value.oid or 0)
    assert image.state == "ERROR"
    assert image.error.endswith("Error copying image in the datastore: no provider found for the CID")


def test_failed_stat_refuses_the_image(sim: Sim) -> None:
    ipfs_drivers(sim, ds_stat=Behaviour(stderr="cannot resolve /ipns/x\n", exit_code=1))

    with pytest.raises(OneFailure, match="cannot resolve"):
        sim.one.image_create(ipfs_datastore(sim), name="alpine", path="/ipns/x")

    assert sim.one.images() == []


def test_image_with_source_is_ready_without_any_script(sim: Sim) -> None:
    ipfs_drivers(sim)
    ds = ipfs_datastore(sim)

    image = sim.one.image_create(ds, name="alpine", source=f"/ipfs/{CID}", size_mb=40)

    assert (image.state, image.size_mb) == ("READY", 40)
    assert sim.drivers.calls(kind="datastore") == sim.drivers.calls(action="monitor")


def test_empty_datablock_is_made_by_mkfs(sim: Sim) -> None:
    ipfs_drivers(sim)

    image = sim.one.image_create(ipfs_datastore(sim), name="data", type="DATABLOCK", size_mb=1024, fs="ext4")

    (mkfs,) = sim.drivers.calls(action="mkfs")
    action = parse_xml(base64.b64decode(mkfs.stdin))
    assert (text(action, "IMAGE/SIZE"), text(action, "IMAGE/FS")) == ("1024", "ext4")
    assert (image.state, image.source) == ("READY", "/one-ipfs/100/9")


def test_not_enough_space_refuses_the_image(sim: Sim) -> None:
    ipfs_drivers(sim, ds_stat=Behaviour(stdout="30000\n"))

    with pytest.raises(OneFailure, match="Not enough space in datastore"):
        sim.one.image_create(ipfs_datastore(sim), name="big", path=f"/ipfs/{CID}")


def test_clone_passes_the_original_source_as_path(sim: Sim) -> None:
    ipfs_drivers(sim)
    ds = ipfs_datastore(sim)
    original = sim.one.image_create(ds, name="alpine", path=f"/ipfs/{CID}")

    clone = sim.one.image_clone(original, "alpine-copy")

    (call,) = sim.drivers.calls(action="clone")
    action = parse_xml(base64.b64decode(call.stdin))
    assert (text(action, "IMAGE/PATH"), text(action, "IMAGE/CLONING_ID")) == (
        f"/ipfs/{CID}",
        str(original.id),
    )
    assert (clone.state, clone.source) == ("READY", "/one-ipfs/100/8")
    assert sim.one.image(original).state == "READY"


def test_delete_runs_rm_and_a_failed_rm_leaves_the_image_in_error(sim: Sim) -> None:
    ipfs_drivers(sim)
    ds = ipfs_datastore(sim)
    gone = sim.one.image_create(ds, name="gone", path=f"/ipfs/{CID}")
    sim.one.image_delete(gone)
    sim.drivers.install("datastore", "ipfs", "rm", Behaviour(stderr="pin is still in use\n", exit_code=1))
    kept = sim.one.image_create(ds, name="kept", path=f"/ipfs/{CID}")

    with pytest.raises(OneFailure, match="pin is still in use"):
        sim.one.image_delete(kept)

    assert [i.name for i in sim.one.images()] == ["kept"]
    assert sim.one.image(kept).state == "ERROR"
    assert sim.one.datastore(ds).images == (kept.id,)


# --------------------------------------------------------------------------------------------------
# VM life cycle
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def deployed(sim: Sim) -> tuple[Sim, int, int]:
    ipfs_drivers(sim)
    image = sim.one.image_create(ipfs_datastore(sim), name="alpine", path=f"/ipfs/{CID}")
    vm = sim.one.vm_deploy([image], "h1")
    return sim, vm.id, image.id


def test_deploy_writes_the_prolog_as_oned_and_boots(deployed: tuple[Sim, int, int]) -> None:
    sim, vm, image = deployed

    prolog = sim.one.transfer_file(vm, "prolog", seq=0)

    folder = f"h1:/var/lib/one//datastores/0/{vm}"
    context = f"{sim.runner.driver_var_lib_one}/vms/{vm}/context.sh"
    assert prolog == (
        f"CLONE.ssh ipfs fe:/ipfs/{CID} {folder}/disk.0 {vm} 100\n"
        f"CONTEXT ssh {context} {folder}/disk.1 {vm} 0\n"
    )
    view = sim.one.vm(vm)
    assert (view.state, view.lcm_state, view.hostname) == ("ACTIVE", "RUNNING", "h1")
    disk = view.disk(0)
    assert (disk["TM_MAD"], disk["TM_MAD_SYSTEM"], disk["CLONE"], disk["TARGET"]) == (
        "ipfs",
        "ssh",
        "YES",
        "sda",
    )
    assert sim.one.image(image).state == "USED"
    host_folder = sim.runner.host_path("h1", f"/var/lib/one/datastores/0/{vm}")
    assert sorted(p.name for p in host_folder.iterdir()) == ["deployment.0", "disk.1"]


def test_deploy_is_refused_when_the_image_datastore_lacks_the_system_mode(tmp_path: Path) -> None:
    conf = OnedConf()
    for key in [k for k in conf.tm_mad_conf["ipfs"] if "SSH" in k or k == "TM_MAD_SYSTEM"]:
        del conf.tm_mad_conf["ipfs"][key]
    sim = make_sim(tmp_path, conf)
    ipfs_drivers(sim)
    image = sim.one.image_create(ipfs_datastore(sim), name="alpine", path=f"/ipfs/{CID}")

    with pytest.raises(OneFailure, match="Image Datastore does not support transfer mode: ssh"):
        sim.one.vm_deploy([image], "h1")


def test_failed_prolog_leaves_the_vm_in_prolog_failure(sim: Sim) -> None:
    ipfs_drivers(sim, tm_clone=Behaviour(stderr="host h1: no space left\n", exit_code=1))
    image = sim.one.image_create(ipfs_datastore(sim), name="alpine", path=f"/ipfs/{CID}")

    with pytest.raises(OneFailure) as failure:
        sim.one.vm_deploy([image], "h1")

    vm = sim.one.vm(failure.value.oid or 0)
    assert (vm.lcm_state, failure.value.info) == ("PROLOG_FAILURE", "host h1: no space left")
    assert vm.error.endswith("Error executing image transfer script: host h1: no space left")
    sim.one.vm_recover_delete(vm)
    assert sim.one.transfer_file(vm, "delete").startswith(
        f"DELETE.ssh ipfs h1:/var/lib/one//datastores/0/{vm.id}/disk.0"
    )
    assert sim.one.image(image).state == "READY"


def test_terminate_deletes_a_non_persistent_disk_and_the_folder(deployed: tuple[Sim, int, int]) -> None:
    sim, vm, image = deployed

    sim.one.vm_terminate(vm)

    folder = f"h1:/var/lib/one//datastores/0/{vm}"
    assert sim.one.transfer_file(vm, "epilog") == (
        f"DELETE.ssh ipfs {folder}/disk.0 {vm} 100\nDELETE ssh {folder} {vm} 0\n"
    )
    assert (sim.one.vm(vm).state, sim.one.image(image).state) == ("DONE", "READY")
    assert not sim.runner.host_path("h1", f"/var/lib/one/datastores/0/{vm}").exists()


def test_persistent_disk_is_linked_and_saved_back_with_mvds(sim: Sim) -> None:
    ipfs_drivers(sim)
    image = sim.one.image_create(ipfs_datastore(sim), name="data", path=f"/ipfs/{CID}", persistent=True)
    vm = sim.one.vm_deploy([image], "h2", context=False)
    assert sim.one.image(image).state == "USED_PERS"

    sim.one.vm_terminate(vm)

    folder = f"h2:/var/lib/one//datastores/0/{vm.id}"
    assert sim.one.transfer_file(vm, "prolog") == f"LN.ssh ipfs fe:/ipfs/{CID} {folder}/disk.0 {vm.id} 100\n"
    assert sim.one.transfer_file(vm, "epilog") == (
        f"MVDS.ssh ipfs {folder}/disk.0 /ipfs/{CID} {vm.id} 100\nDELETE ssh {folder} {vm.id} 0\n"
    )
    assert sim.one.image(image).state == "READY"


def test_failed_mvds_leaves_the_vm_in_epilog_failure(sim: Sim) -> None:
    ipfs_drivers(sim, tm_mvds=Behaviour(stderr="Error moving disk back to datastore\n", exit_code=1))
    image = sim.one.image_create(ipfs_datastore(sim), name="data", path=f"/ipfs/{CID}", persistent=True)
    vm = sim.one.vm_deploy([image], "h1")

    with pytest.raises(OneFailure, match="Error moving disk back to datastore"):
        sim.one.vm_terminate(vm)

    assert sim.one.vm(vm).lcm_state == "EPILOG_FAILURE"
    assert sim.one.image(image).state == "USED_PERS"


def test_cold_migration_moves_disks_then_the_folder(deployed: tuple[Sim, int, int]) -> None:
    sim, vm, _ = deployed

    sim.one.vm_migrate(vm, "h2")

    folder = f"/var/lib/one//datastores/0/{vm}"
    assert sim.one.transfer_file(vm, "migrate", seq=1) == (
        f"MV.ssh ipfs h1:{folder}/disk.0 h2:{folder}/disk.0 {vm} 100\nMV ssh h1:{folder} h2:{folder} {vm} 0\n"
    )
    view = sim.one.vm(vm)
    assert (view.lcm_state, [h.hostname for h in view.history]) == ("RUNNING", ["h1", "h2"])


def test_live_migration_calls_our_premigrate_with_six_arguments_and_the_vm(
    deployed: tuple[Sim, int, int],
) -> None:
    sim, vm, _ = deployed

    sim.one.vm_migrate(vm, "h2", live=True)

    folder = f"/var/lib/one//datastores/0/{vm}"
    pre, post = sim.drivers.calls(action="premigrate")[0], sim.drivers.calls(action="postmigrate")[0]
    assert pre.args == post.args == ["h1", "h2", folder, str(vm), "0", "ssh"]
    assert text(parse_xml(base64.b64decode(pre.stdin)), "HISTORY_RECORDS/HISTORY[last()]/HOSTNAME") == "h2"
    assert sim.one.vm(vm).hostname == "h2"
    assert not sim.runner.host_path("h1", folder).exists()
    assert (sim.runner.host_path("h2", folder) / "disk.1").exists()


def test_live_migration_carries_disks_xml_and_snapshots_but_not_a_drivers_records(
    deployed: tuple[Sim, int, int],
) -> None:
    """As KVM's migrate: libvirt copies the disks, the driver rsyncs ``*.xml`` and ``disk.<n>.snap``."""
    sim, vm, _ = deployed
    on_h1 = sim.runner.host_path("h1", f"/var/lib/one/datastores/0/{vm}")
    for name in ("disk.0", "disk.0.snap/0", "vm.xml", ".one-ipfs/disk.0.json"):
        (on_h1 / name).parent.mkdir(parents=True, exist_ok=True)
        (on_h1 / name).write_bytes(name.encode())

    sim.one.vm_migrate(vm, "h2", live=True)

    on_h2 = sim.runner.host_path("h2", f"/var/lib/one/datastores/0/{vm}")
    assert sorted(str(p.relative_to(on_h2)) for p in on_h2.rglob("*")) == [
        "disk.0",
        "disk.0.snap",
        "disk.0.snap/0",
        "disk.1",
        "vm.xml",
    ]


def test_failed_premigrate_keeps_the_vm_on_its_host(sim: Sim) -> None:
    ipfs_drivers(sim, tm_premigrate=Behaviour(stderr="h2 cannot reach any provider\n", exit_code=1))
    image = sim.one.image_create(ipfs_datastore(sim), name="alpine", path=f"/ipfs/{CID}")
    vm = sim.one.vm_deploy([image], "h1")

    with pytest.raises(OneFailure, match="h2 cannot reach any provider"):
        sim.one.vm_migrate(vm, "h2", live=True)

    view = sim.one.vm(vm)
    assert (view.lcm_state, view.hostname) == ("RUNNING", "h1")
    assert sim.drivers.calls(action="postmigrate") == []


def test_disk_saveas_creates_a_placeholder_then_copies_into_it(deployed: tuple[Sim, int, int]) -> None:
    sim, vm, _ = deployed

    saved = sim.one.disk_saveas(vm, 0, "alpine-saved")

    (mkfs,) = sim.drivers.calls(action="mkfs")
    assert text(parse_xml(base64.b64decode(mkfs.stdin)), "IMAGE/FORMAT") == "save_as"
    assert sim.one.transfer_file(vm, "disk_saveas") == (
        f"CPDS.ssh ipfs h1:/var/lib/one//datastores/0/{vm}/disk.0 /one-ipfs/100/9 -1 {vm} 100\n"
    )
    assert (saved.state, saved.source, saved.format) == ("READY", "/one-ipfs/100/9", "raw")
    assert sim.one.vm(vm).lcm_state == "RUNNING"


def test_a_disk_snapshot_of_a_powered_off_vm_runs_snap_create(deployed: tuple[Sim, int, int]) -> None:
    sim, vm, _ = deployed
    sim.one.vm_poweroff(vm)

    first = sim.one.disk_snapshot_create(vm, 0, "before")

    disk = f"h1:/var/lib/one//datastores/0/{vm}/disk.0"
    assert sim.one.transfer_file(vm, "disk_snapshot") == f"SNAP_CREATE.ssh ipfs {disk} {first} {vm} 100\n"
    view = sim.one.vm(vm)
    assert (view.state, view.disk(0)["DISK_SNAPSHOT_ID"]) == ("POWEROFF", "0")


def test_concurrent_deploys_of_one_image_share_it(sim: Sim) -> None:
    ipfs_drivers(sim)
    image = sim.one.image_create(ipfs_datastore(sim), name="alpine", path=f"/ipfs/{CID}")

    with ThreadPoolExecutor(3) as pool:
        vms = list(pool.map(lambda host: sim.one.vm_deploy([image], host), ["h1", "h2", "h3"]))

    assert [sim.one.vm(vm).lcm_state for vm in vms] == ["RUNNING"] * 3
    shared = sim.one.image(image)
    assert (shared.state, shared.running_vms, sorted(shared.vms)) == ("USED", 3, sorted(vm.id for vm in vms))
    assert sorted(call.args[1].split(":")[0] for call in sim.drivers.calls(action="clone")) == [
        "h1",
        "h2",
        "h3",
    ]


def test_onehost_sync_copies_the_remotes_dereferencing_links(sim: Sim) -> None:
    driver = sim.drivers.install("tm", "ipfs", "clone")
    (driver.parent / "ln").symlink_to("clone")
    stale = sim.runner.host_path("h2", "/var/tmp/one/stale")
    stale.write_text("old")

    sim.one.onehost_sync()

    copied = sim.runner.host_path("h2", "/var/tmp/one/tm/ipfs/ln")
    assert copied.is_file() and not copied.is_symlink()
    assert os.access(copied, os.X_OK)
    assert not stale.exists()


def test_installed_drivers_reach_every_host_with_onehost_sync(sim: Sim) -> None:
    sim.one.install_drivers()

    sim.one.onehost_sync()

    for host in sim.runner.hosts:
        clone = sim.runner.host_path(host, "/var/tmp/one/tm/ipfs/clone")
        assert clone.is_file() and not clone.is_symlink() and os.access(clone, os.X_OK)
        assert sim.runner.host_path(host, "/var/tmp/one/tm/ipfs/lib/BUNDLE").is_file()


# --------------------------------------------------------------------------------------------------
# On the test bed: oneadmin, the frontend's mount namespace, ssh to hosts
# --------------------------------------------------------------------------------------------------


@pytest.mark.bed
def test_on_the_bed_drivers_run_as_oneadmin_and_host_files_belong_to_it(bed: Bed) -> None:
    runner = BedRunner(bed)
    state = bed.root / "simulator-test"
    shutil.rmtree(state, ignore_errors=True)
    conf = OnedConf()
    conf.tm_mad_conf["rec"] = {**conf.tm_mad_conf["ipfs"], "NAME": "rec"}
    one = OneSim(runner, state=state, conf=conf)
    log = state / "calls.jsonl"
    log.touch()
    os.chown(log, *(runner.owner or (0, 0)))
    drivers = RecordingDrivers(one.remotes, log)
    folder = "/var/lib/one/datastores/0/{3}"
    make_disk = ("ssh", "h1", f"mkdir -p {folder} && truncate -s 1M {folder}/disk.0")
    try:
        for action, behaviour in (
            ("monitor", Behaviour(stdout=MONITOR)),
            ("stat", Behaviour(stdout="1\n")),
            ("cp", Behaviour(stdout=f"/ipfs/{CID} raw\n", run=(("id", "-un"),))),
        ):
            drivers.install("datastore", "rec", action, behaviour)
        drivers.install("tm", "rec", "clone", Behaviour(run=(make_disk,)))
        for action in ("premigrate", "postmigrate", "delete"):
            drivers.install("tm", "rec", action)
        one.files.give(one.remotes)
        ds = one.datastore_create({"NAME": "rec", "DS_MAD": "rec", "TM_MAD": "rec"})
        image = one.image_create(ds, name="alpine", path=f"/ipfs/{CID}")
        vm = one.vm_deploy([image], "h1")
        on_h1 = bed.host("h1").var_lib_one / "datastores" / "0" / str(vm.id)
        owners = {path.name: path.stat().st_uid for path in [on_h1, *on_h1.iterdir()]}
        one.vm_migrate(vm, "h2", live=True)
        on_h2 = sorted(
            p.name for p in (bed.host("h2").var_lib_one / "datastores" / "0" / str(vm.id)).iterdir()
        )
        one.vm_terminate(vm)

        (cp,) = drivers.calls(action="cp")
        assert (cp.cwd, cp.runs[0]["stdout"]) == ("/var/lib/one", "oneadmin\n")
        assert set(owners.values()) == {runner.owner[0] if runner.owner else -1}
        assert sorted(owners) == [str(vm.id), "deployment.0", "disk.0", "disk.1"]
        assert on_h2 == ["disk.0", "disk.1"]  # KVM carries disks, *.xml and snapshots, nothing else
        assert not on_h1.exists()
        assert one.vm(vm).state == "DONE"
    finally:
        one.close()
        for kind in ("datastore", "tm"):
            shutil.rmtree(one.remotes / kind / "rec", ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)
