"""``one-ipfs install`` / ``uninstall`` on a self-contained OpenNebula (ONE_LOCATION), stock-like oned.conf."""

# ruff: noqa: E501 - the sample oned.conf keeps OpenNebula's long lines
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from one_ipfs import __version__
from one_ipfs.admin.cli import main
from one_ipfs.errors import InvalidInput
from one_ipfs.hosts.bundle import BUNDLE_STAMP, HOST_LIB
from one_ipfs.opennebula import oned_conf, vmm_execrc

# Trimmed from OpenNebula's share/etc/oned.conf: vectors over several lines, comments inside vectors,
# a commented-out DATASTORE_MAD, quoted '#' and ']' characters, tabs and a CRLF-free mix of spacing.
ONED_CONF = """#*******************************************************************************
#                       OpenNebula Configuration file
#*******************************************************************************

#*******************************************************************************
# Daemon configuration attributes
#-------------------------------------------------------------------------------
#  MANAGER_TIMER: Time in seconds the core uses to evaluate periodical functions.
#*******************************************************************************

LOG = [
  SYSTEM      = "file",
  DEBUG_LEVEL = 3
]

#MANAGER_TIMER = 15

MONITORING_INTERVAL_HOST = 180
PORT = 2633
LISTEN_ADDRESS = "0.0.0.0"

DB = [ BACKEND = "sqlite",
       TIMEOUT = 2500 ]

VNC_PORTS = [
    START    = 5900
#   RESERVED = "6800, 6801, 6810:6820, 9869"
]

DEFAULT_CDROM_DEVICE_PREFIX = "hd"
IMAGE_RESTRICTED_ATTR = "SOURCE"
DEFAULT_UMASK = 177
HOST_ENCRYPTED_ATTR = "NSX_PASSWORD"   # a comment after a value, with "quotes" and [brackets]

#*******************************************************************************
# Datastore Driver Configuration
#*******************************************************************************
#  -t number of threads, i.e. number of repo operations at the same time
#  -d datastore mad separated by commas
#  -s system datastore tm drivers, used to monitor shared system ds.
#  -w Timeout in seconds to execute external commands (default unlimited)
#*******************************************************************************

#DATASTORE_MAD = [ EXECUTABLE = "one_datastore", ARGUMENTS = "-t 15 -d dummy" ]

DATASTORE_MAD = [
    EXECUTABLE = "one_datastore",
    ARGUMENTS  = "-t 15 -d dummy,fs,lvm,ceph,dev,iscsi_libvirt,vcenter,restic,rsync -s shared,ssh,ceph,fs_lvm,fs_lvm_ssh,qcow2,vcenter"
]

#*******************************************************************************
# Transfer Manager Driver Configuration
#*******************************************************************************

TM_MAD = [
\tEXECUTABLE = "one_tm",
\tARGUMENTS = "-t 15 -d dummy,lvm,shared,fs_lvm,fs_lvm_ssh,qcow2,ssh,ceph,dev,vcenter,iscsi_libvirt"
]

#*******************************************************************************
# Marketplace Driver Configuration
#*******************************************************************************

MARKET_MAD = [
    EXECUTABLE = "one_market",
    ARGUMENTS  = "-t 15 -m http,s3,one,linuxcontainers"
]

#*******************************************************************************
# Datastore Manager Driver Behavior Configuration
#*******************************************************************************

DS_MAD_CONF = [
    NAME = "dummy", REQUIRED_ATTRS = "", PERSISTENT_ONLY = "NO"
]

DS_MAD_CONF = [
    NAME = "fs", REQUIRED_ATTRS = "", PERSISTENT_ONLY = "NO",
    MARKETPLACE_ACTIONS = "export"
]

#*******************************************************************************
# Transfer Manager Driver Behavior Configuration
#*******************************************************************************

TM_MAD_CONF = [
    NAME = "shared", LN_TARGET = "NONE", CLONE_TARGET = "SYSTEM", SHARED = "YES",
    DS_MIGRATE = "YES", TM_MAD_SYSTEM = "ssh", LN_TARGET_SSH = "SYSTEM",
    CLONE_TARGET_SSH = "SYSTEM", DISK_TYPE_SSH = "FILE", DRIVER = "raw"
]

TM_MAD_CONF = [
    NAME = "ssh", LN_TARGET = "SYSTEM", CLONE_TARGET = "SYSTEM", SHARED = "NO",
    DS_MIGRATE = "YES", DRIVER = "raw", ALLOW_ORPHANS="FORMAT"
]

MARKET_MAD_CONF = [
    NAME = "http",
    SUNSTONE_NAME  = "HTTP server",
    REQUIRED_ATTRS = "BASE_URL,PUBLIC_DIR",
    APP_ACTIONS = "create, delete, monitor"
]

INHERIT_DATASTORE_ATTR  = "CEPH_HOST"
INHERIT_DATASTORE_ATTR  = "GLUSTER_HOST"
"""

DS_ARGUMENTS = "-t 15 -d dummy,fs,lvm,ceph,dev,iscsi_libvirt,vcenter,restic,rsync -s "
TM_ARGUMENTS = "-t 15 -d dummy,lvm,shared,fs_lvm,fs_lvm_ssh,qcow2,ssh,ceph,dev,vcenter,iscsi_libvirt"


# Shaped like OpenNebula's etc/vmm_exec/vmm_execrc: shell assignments the exec VMM driver sources.
VMM_EXECRC = """# Space separated list of VMM-TM pairs that support live disk snapshots.
LIVE_DISK_SNAPSHOTS="kvm-qcow2 kvm-shared kvm-ssh qemu-ssh"

VNMAD_LOCAL_ACTIONS="elastic-post"
"""


def self_contained_one(root: Path) -> Path:
    """A self-contained OpenNebula at ``root``: etc/oned.conf, etc/vmm_exec/vmm_execrc and a remotes tree
    holding OpenNebula's own drivers."""
    (root / "etc" / "vmm_exec").mkdir(parents=True)
    (root / "etc" / "oned.conf").write_text(ONED_CONF)
    (root / "etc" / "vmm_exec" / "vmm_execrc").write_text(VMM_EXECRC)
    remotes = root / "var" / "remotes"
    for driver in ("datastore/fs", "tm/ssh", "etc/datastore"):
        (remotes / driver).mkdir(parents=True)
    (remotes / "datastore" / "fs" / "cp").write_text("#!/bin/bash\n")
    (remotes / "tm" / "ssh" / "clone").write_text("#!/bin/bash\n")
    (remotes / "etc" / "datastore" / "fs.conf").write_text("SUPPORTED_FS=ext4\n")
    return root


def stand_in_python(folder: Path, version: str) -> Path:
    """A "python" that answers the interpreter check as an install of one_ipfs ``version`` would."""
    folder.mkdir(parents=True, exist_ok=True)
    python = folder / "python"
    python.write_text(f"#!/bin/sh\necho {version}\n")
    python.chmod(0o755)
    return python


@pytest.fixture
def one_location(tmp_path: Path) -> Path:
    return self_contained_one(tmp_path)


def one_ipfs(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), env={"ONE_LOCATION": None}, catch_exceptions=False)


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_install_adds_ipfs_to_both_driver_lists_and_registers_its_behaviour(one_location: Path) -> None:
    result = one_ipfs("install", "--one-location", str(one_location))

    assert result.exit_code == 0, result.output
    text = (one_location / "etc" / "oned.conf").read_text()
    registration = oned_conf.inspect(text)
    assert registration.listed == {"DATASTORE_MAD": True, "TM_MAD": True, "MARKET_MAD": True}
    assert registration.ds_mad_conf and registration.tm_mad_conf and registration.market_mad_conf
    assert f'ARGUMENTS  = "{DS_ARGUMENTS.replace("rsync ", "rsync,ipfs ")}' in text
    assert f'ARGUMENTS = "{TM_ARGUMENTS},ipfs"' in text
    assert 'ARGUMENTS  = "-t 15 -m http,s3,one,linuxcontainers,ipfs"' in text
    tm = next(a for a in oned_conf.parse(text) if a.name == "TM_MAD_CONF" and a.get("NAME").text == "ipfs")  # type: ignore[union-attr]
    assert tm.get("TM_MAD_SYSTEM").text == "ssh,local,shared"  # type: ignore[union-attr]
    assert tm.get("SHARED").text == "NO"  # type: ignore[union-attr]
    assert "onehost sync --force" in result.output and "restart oned" in result.output


def test_install_keeps_every_other_byte_of_oned_conf(one_location: Path) -> None:
    one_ipfs("install", "--one-location", str(one_location))

    text = (one_location / "etc" / "oned.conf").read_text()
    body, _, block = text.partition(f"\n{oned_conf.BEGIN}")
    assert (
        body.replace("rsync,ipfs -s", "rsync -s")
        .replace('iscsi_libvirt,ipfs"', 'iscsi_libvirt"')
        .replace('linuxcontainers,ipfs"', 'linuxcontainers"')
        == ONED_CONF
    )
    assert block.endswith(f"{oned_conf.END}\n")
    assert '#DATASTORE_MAD = [ EXECUTABLE = "one_datastore", ARGUMENTS = "-t 15 -d dummy" ]' in body


def test_install_copies_the_drivers_into_the_remotes_tree(one_location: Path) -> None:
    python = stand_in_python(one_location / "opt" / "one-ipfs" / "bin", __version__)

    one_ipfs("install", "--one-location", str(one_location), "--python", str(python))

    remotes = one_location / "var" / "remotes"
    assert os.access(remotes / "datastore" / "ipfs" / "cp", os.X_OK)
    assert os.access(remotes / "tm" / "ipfs" / "clone", os.X_OK)
    assert (remotes / HOST_LIB / BUNDLE_STAMP).is_file()
    defaults = (remotes / "etc" / "datastore" / "ipfs" / "ipfs.conf").read_text()
    assert f'ONE_IPFS_PYTHON="{python}"' in defaults


def test_install_twice_changes_nothing_the_second_time(one_location: Path) -> None:
    conf = one_location / "etc" / "oned.conf"
    one_ipfs("install", "--one-location", str(one_location))
    first = conf.read_bytes()
    backups = sorted(p.name for p in conf.parent.iterdir())

    result = one_ipfs("install", "--one-location", str(one_location))

    assert result.exit_code == 0
    assert conf.read_bytes() == first
    assert "nothing to change" in result.output
    assert sorted(p.name for p in conf.parent.iterdir()) == backups


def test_install_keeps_a_backup_of_the_original_oned_conf(one_location: Path) -> None:
    conf = one_location / "etc" / "oned.conf"
    original_mode = 0o640
    conf.chmod(original_mode)

    result = one_ipfs("install", "--one-location", str(one_location))

    backup = one_location / "etc" / "oned.conf.one-ipfs.bak"
    assert backup.read_text() == ONED_CONF
    assert str(backup) in result.output.replace("\n", "")
    assert conf.stat().st_mode & 0o777 == original_mode


def test_print_shows_the_change_as_a_diff_and_makes_none(one_location: Path) -> None:
    before = tree(one_location)

    result = one_ipfs("install", "--one-location", str(one_location), "--print")

    assert result.exit_code == 0
    assert tree(one_location) == before
    output = result.output
    assert f'+    ARGUMENTS  = "{DS_ARGUMENTS.replace("rsync ", "rsync,ipfs ")}' in output
    assert f'-\tARGUMENTS = "{TM_ARGUMENTS}"' in output
    assert '+DS_MAD_CONF = [ NAME = "ipfs"' in output
    assert "would write" in output and "restart oned" not in output


def test_uninstall_gives_back_oned_conf_byte_for_byte(one_location: Path) -> None:
    one_ipfs("install", "--one-location", str(one_location))

    result = one_ipfs("uninstall", "--one-location", str(one_location))

    assert result.exit_code == 0, result.output
    assert (one_location / "etc" / "oned.conf").read_text() == ONED_CONF


def test_uninstall_removes_only_what_install_added_to_the_remotes_tree(one_location: Path) -> None:
    remotes = one_location / "var" / "remotes"
    before = tree(remotes)
    one_ipfs("install", "--one-location", str(one_location))

    one_ipfs("uninstall", "--one-location", str(one_location))

    assert tree(remotes) == before
    assert sorted(p.name for p in (remotes / "etc" / "datastore").iterdir()) == ["fs.conf"]


def test_uninstall_keeps_ipfs_conf_the_admin_changed(one_location: Path) -> None:
    one_ipfs("install", "--one-location", str(one_location))
    defaults = one_location / "var" / "remotes" / "etc" / "datastore" / "ipfs" / "ipfs.conf"
    defaults.write_text(defaults.read_text().replace("IPFS_DEPLOY_MODE=COPY", "IPFS_DEPLOY_MODE=OVERLAY"))

    one_ipfs("uninstall", "--one-location", str(one_location))

    assert "IPFS_DEPLOY_MODE=OVERLAY" in defaults.read_text()
    assert not (one_location / "var" / "remotes" / "tm" / "ipfs").exists()


def test_install_lists_kvm_ipfs_among_the_live_disk_snapshot_pairs_once(one_location: Path) -> None:
    execrc = one_location / "etc" / "vmm_exec" / "vmm_execrc"

    first = one_ipfs("install", "--one-location", str(one_location))
    after_first = execrc.read_bytes()
    again = one_ipfs("install", "--one-location", str(one_location))

    assert first.exit_code == 0 and again.exit_code == 0, first.output + again.output
    assert 'LIVE_DISK_SNAPSHOTS="kvm-qcow2 kvm-shared kvm-ssh qemu-ssh kvm-ipfs"\n' in execrc.read_text()
    assert execrc.read_bytes() == after_first
    assert f"vmm_execrc changed: {execrc}" in first.output.replace("\n", "")
    assert (execrc.parent / "vmm_execrc.one-ipfs.bak").read_text() == VMM_EXECRC
    assert f"vmm_execrc {execrc}: nothing to change" in again.output.replace("\n", "")


def test_uninstall_gives_back_vmm_execrc_byte_for_byte(one_location: Path) -> None:
    one_ipfs("install", "--one-location", str(one_location))

    one_ipfs("uninstall", "--one-location", str(one_location))

    assert (one_location / "etc" / "vmm_exec" / "vmm_execrc").read_text() == VMM_EXECRC


@pytest.mark.parametrize(
    "text",
    [
        VMM_EXECRC.rstrip("\n"),
        VMM_EXECRC.replace("qemu-ssh", "qemu-ssh kvm-ipfs"),
        VMM_EXECRC.replace('"kvm-qcow2 kvm-shared kvm-ssh qemu-ssh"', "''"),
        VMM_EXECRC.replace("qemu-ssh", "qemu-ssh "),
    ],
    ids=["no-final-newline", "listed-by-hand", "empty-list", "trailing-space"],
)
def test_vmm_execrc_comes_back_identical_after_register_and_unregister(text: str) -> None:
    registered = vmm_execrc.register(text)

    assert vmm_execrc.registered(registered)
    assert vmm_execrc.register(registered) == registered
    assert vmm_execrc.unregister(registered) == text


def test_a_vmm_execrc_without_the_live_snapshot_list_is_refused_and_nothing_changes(
    one_location: Path,
) -> None:
    execrc = one_location / "etc" / "vmm_exec" / "vmm_execrc"
    execrc.write_text("LIVE_DISK_SNAPSHOTS=kvm-ssh\n")
    before = tree(one_location)

    result = one_ipfs("install", "--one-location", str(one_location))

    assert result.exit_code == 1
    assert "LIVE_DISK_SNAPSHOTS" in result.output
    assert tree(one_location) == before


def test_uninstall_keeps_what_the_admin_edited_after_install(one_location: Path) -> None:
    conf = one_location / "etc" / "oned.conf"
    one_ipfs("install", "--one-location", str(one_location))
    conf.write_text(conf.read_text().replace("PORT = 2633", "PORT = 2634"))

    one_ipfs("uninstall", "--one-location", str(one_location))

    assert conf.read_text() == ONED_CONF.replace("PORT = 2633", "PORT = 2634")


def test_uninstall_print_changes_nothing(one_location: Path) -> None:
    one_ipfs("install", "--one-location", str(one_location))
    before = tree(one_location)

    result = one_ipfs("uninstall", "--one-location", str(one_location), "--print")

    assert tree(one_location) == before
    assert '-DS_MAD_CONF = [ NAME = "ipfs"' in result.output and "would remove" in result.output


def test_a_registration_made_by_hand_is_left_alone() -> None:
    by_hand = oned_conf.register(ONED_CONF).split(f"\n{oned_conf.BEGIN}")[0] + "\n"
    by_hand += 'DS_MAD_CONF = [ NAME = "ipfs", REQUIRED_ATTRS = "", PERSISTENT_ONLY = "NO" ]\n'
    by_hand += (
        'TM_MAD_CONF = [ NAME = "ipfs", LN_TARGET = "SYSTEM", CLONE_TARGET = "SYSTEM", SHARED = "NO" ]\n'
    )
    by_hand += 'MARKET_MAD_CONF = [ NAME = "ipfs", APP_ACTIONS = "create, delete, monitor" ]\n'

    assert oned_conf.register(by_hand) == by_hand
    assert oned_conf.unregister(by_hand) == by_hand


def test_only_the_missing_parts_are_added_and_later_removed() -> None:
    partly = ONED_CONF.replace('iscsi_libvirt"\n]', 'iscsi_libvirt,ipfs"\n]')

    registered = oned_conf.register(partly)

    assert registered.count(",ipfs") == 3
    assert f"{oned_conf.BEGIN}: added ipfs to the driver list of DATASTORE_MAD MARKET_MAD\n" in registered
    assert oned_conf.unregister(registered) == partly


def test_an_earlier_registration_gains_the_marketplace_and_still_comes_back_identical() -> None:
    earlier = (
        oned_conf.register(ONED_CONF)
        .replace("linuxcontainers,ipfs", "linuxcontainers")
        .replace("DATASTORE_MAD TM_MAD MARKET_MAD", "DATASTORE_MAD TM_MAD")
        .replace(oned_conf.MARKET_MAD_CONF, "")
    )
    assert not oned_conf.inspect(earlier).complete

    upgraded = oned_conf.register(earlier)

    assert upgraded == oned_conf.register(ONED_CONF)
    assert oned_conf.unregister(upgraded) == ONED_CONF


def test_a_file_without_a_final_newline_comes_back_identical() -> None:
    text = ONED_CONF.rstrip("\n")

    registered = oned_conf.register(text)

    assert oned_conf.inspect(registered).complete
    assert oned_conf.unregister(registered) == text


def test_two_active_datastore_mad_sections_are_refused() -> None:
    doubled = ONED_CONF + 'DATASTORE_MAD = [ EXECUTABLE = "one_datastore", ARGUMENTS = "-t 15 -d fs" ]\n'

    with pytest.raises(InvalidInput, match="2 DATASTORE_MAD sections"):
        oned_conf.register(doubled)


def test_a_file_that_is_not_oned_conf_is_refused(one_location: Path) -> None:
    conf = one_location / "etc" / "oned.conf"
    conf.write_text('LOG = [ SYSTEM = "file" ]\n')

    result = one_ipfs("install", "--one-location", str(one_location))

    assert result.exit_code == 1
    assert conf.read_text() == 'LOG = [ SYSTEM = "file" ]\n'
    assert not (one_location / "var" / "remotes" / "tm" / "ipfs").exists()


def test_parse_reads_values_across_lines_and_ignores_comments() -> None:
    attributes = {
        a.name: a for a in oned_conf.parse(ONED_CONF) if a.name in ("DB", "VNC_PORTS", "HOST_ENCRYPTED_ATTR")
    }

    assert attributes["DB"].get("TIMEOUT").text == "2500"  # type: ignore[union-attr]
    assert [key for key, _ in attributes["VNC_PORTS"].pairs] == ["START"]
    assert attributes["HOST_ENCRYPTED_ATTR"].value.text == "NSX_PASSWORD"  # type: ignore[union-attr]


def test_an_unterminated_vector_is_reported_with_its_line() -> None:
    with pytest.raises(InvalidInput, match="end of the file"):
        oned_conf.parse('TM_MAD = [ EXECUTABLE = "one_tm",\n')


def test_every_command_has_help() -> None:
    for command in (
        [],
        ["install"],
        ["uninstall"],
        ["doctor"],
        ["network"],
        ["network", "init"],
        ["network", "status"],
    ):
        result = one_ipfs(*command, "--help")
        assert result.exit_code == 0 and "Usage:" in result.output, command


def test_python_defaults_to_this_interpreter(one_location: Path) -> None:
    one_ipfs("install", "--one-location", str(one_location))

    defaults = one_location / "var" / "remotes" / "etc" / "datastore" / "ipfs" / "ipfs.conf"
    assert f'ONE_IPFS_PYTHON="{sys.executable}"' in defaults.read_text()
