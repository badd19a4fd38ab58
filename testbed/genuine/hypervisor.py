#!/usr/bin/env python3
"""A stand-in for KVM behind OpenNebula's own exec VMM driver (``one_vmm_exec``), run on the bed's hosts.

oned runs genuine ``VM_MAD kvm``: the exec driver ssh-es to the host and runs ``vmm/kvm/<action>`` there, as
under KVM, and every TM step it orders on the way (live migration, hot-plug, live snapshots) reaches the
transfer drivers for real. In place of libvirt, these actions do to the VM's files what KVM would:

- ``deploy``/``restore``/``attach_disk`` open every disk as the domain says, with the format oned announced
  (``<driver type=...>``, forced to the image's FORMAT by oned): a disk whose file has another format, or
  whose backing chain does not open, fails the action with one line, as QEMU would refuse to start;
- ``migrate`` copies each disk's guest-visible content into a new file of the same format on the target, as
  ``virsh migrate --copy-storage-all`` does when the system datastore is not shared, and the VM folder's
  ``*.xml`` and ``disk.*.snap`` with it;
- ``save`` writes the checkpoint file; ``shutdown``/``cancel`` stop the domain;
- ``resize_disk`` grows a running domain's disk as ``virsh blockresize`` does (the TMs leave a running VM's
  disk alone: QEMU holds it);
- ``virsh blockcopy --wait --finish``, which OpenNebula's TMs run themselves for a live disk snapshot (the
  ``virsh`` on the hosts' PATH is this script), copies the running domain's disk as QEMU's block mirror
  does: the guest's whole view into a new file of the disk's format, with no backing file;
- the virsh commands of a running VM's full backup (``prebackup_live``/``postbackup_live``):
  ``snapshot-create-as --disk-only`` puts a qcow2 overlay on each backed-up disk and the domain writes
  there while the TM copies the disk beneath, ``blockcommit --active --pivot`` writes the overlay back
  into the disk and the domain onto it again, ``snapshot-delete --metadata`` forgets the snapshot;
- and those of its incremental backups: a checkpoint (``checkpoint-create``) is a persistent dirty bitmap in
  each qcow2 disk, which every later write marks; ``backup-begin`` (pull mode) serves the disk read-only
  over NBD on the backup's socket (``qemu-nbd``, so one disk per backup) with the bitmap of the writes
  since the parent checkpoint, until ``domjobabort``.

A running domain is a file ``<deploy id>.xml`` (its domain XML) in ``~/.standin-kvm`` of the host. Python's
standard library only: it runs on the host with the host's python3 and qemu-img.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

DOMAINS = Path.home() / ".standin-kvm"


class Refused(Exception):
    """What the hypervisor refuses, said in one line."""


def main(argv: list[str]) -> int:
    action, *args = argv
    handler = {**ACTIONS, **TOOLS}.get(action)
    if handler is None:
        print(f"stand-in kvm: {action} is not supported", file=sys.stderr)
        return 1
    stdin = b"" if sys.stdin.isatty() else sys.stdin.buffer.read()
    try:
        handler(args, stdin)
    except Refused as refused:
        print(f"stand-in kvm: {refused}", file=sys.stderr)
        return 1
    return 0


# Domains ------------------------------------------------------------------------------------------------


def _record(deploy_id: str) -> Path:
    if not deploy_id or "/" in deploy_id or deploy_id.startswith("."):
        raise Refused(f"no such domain {deploy_id!r}")
    return DOMAINS / f"{deploy_id}.xml"


def _running(deploy_id: str) -> ET.Element:
    try:
        return ET.fromstring(_record(deploy_id).read_bytes())
    except FileNotFoundError:
        raise Refused(f"domain {deploy_id} is not running on this host") from None


def _start(domain: ET.Element) -> str:
    """Open every disk as QEMU would, then record the domain as running; its name is the deploy id."""
    for source, driver in _disks(domain):
        _open(source, driver)
    name = domain.findtext("name") or ""
    DOMAINS.mkdir(mode=0o700, exist_ok=True)
    _record(name).write_bytes(ET.tostring(domain))
    return name


def _stop(deploy_id: str) -> None:
    _record(deploy_id).unlink(missing_ok=True)


def _disks(domain: ET.Element) -> list[tuple[Path, str]]:
    """(file, format the domain opens it with) of every file-backed disk."""
    return [file for file in map(_file, domain.iter("disk")) if file is not None]


def _file(disk: ET.Element) -> tuple[Path, str] | None:
    """(file, format) of a file-backed disk of a domain, None for any other disk."""
    source = disk.find("source")
    if disk.get("type") != "file" or source is None or not source.get("file"):
        return None
    driver = disk.find("driver")
    fmt = (driver.get("type") if driver is not None else None) or "raw"
    return Path(source.get("file", "")), fmt


def _info(path: Path) -> dict[str, object]:
    done = subprocess.run(
        ["qemu-img", "info", "--output=json", "--backing-chain", "-U", str(path)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip().splitlines()
        raise Refused(f"cannot open {path}: {reason[-1] if reason else 'qemu-img failed'}")
    chain: list[dict[str, object]] = json.loads(done.stdout)
    return chain[0]


def _open(path: Path, fmt: str) -> None:
    """QEMU opens ``path`` with the format libvirt names: a file of another format is refused, since the
    guest would see that format's metadata as its disk."""
    if not path.exists():
        raise Refused(f"disk {path} does not exist")
    actual = _info(path).get("format")
    if fmt in ("raw", "qcow2") and actual != fmt:
        raise Refused(f"disk {path} is a {actual} file, but the domain opens it as {fmt}")


# Actions ------------------------------------------------------------------------------------------------


def deploy(args: list[str], stdin: bytes) -> None:
    """``deploy <deployment file> <host>``, the domain XML on stdin; prints the deploy id."""
    deployment = Path(args[0])
    deployment.parent.mkdir(parents=True, exist_ok=True)
    deployment.write_bytes(stdin)
    print(_start(ET.fromstring(stdin)))


def shutdown(args: list[str], stdin: bytes) -> None:
    _running(args[0])
    _stop(args[0])


def cancel(args: list[str], stdin: bytes) -> None:
    _stop(args[0])


def save(args: list[str], stdin: bytes) -> None:
    """``save <deploy id> <checkpoint> <host> ...``: the domain's state goes to the checkpoint file."""
    domain = _running(args[0])
    checkpoint = Path(args[1])
    checkpoint.write_bytes(ET.tostring(domain))
    _stop(args[0])


def restore(args: list[str], stdin: bytes) -> None:
    """``restore <checkpoint> <host> <deploy id> ...``."""
    try:
        domain = ET.fromstring(Path(args[0]).read_bytes())
    except (OSError, ET.ParseError) as exc:
        raise Refused(f"cannot read the checkpoint {args[0]}: {exc}") from None
    _start(domain)


def migrate(args: list[str], stdin: bytes) -> None:
    """``migrate <deploy id> <target host> <host> <vm id> ...``, the driver's action XML on stdin."""
    deploy_id, target = args[0], args[1]
    domain = _running(deploy_id)
    action = ET.fromstring(stdin)
    shared = (action.findtext("DATASTORE/TEMPLATE/SHARED") or "").upper() == "YES"
    if not shared:
        source_dir = Path(action.findtext("DATASTORE/BASE_PATH") or "") / args[3]
        target_dir = Path(action.findtext("DISK_TARGET_PATH") or "")
        _copy_storage(domain, target, source_dir, target_dir)
    _on(target, ["mkdir", "-p", str(DOMAINS)])
    _on(target, ["sh", "-c", f"cat > {shlex.quote(str(_record(deploy_id)))}"], ET.tostring(domain))
    _stop(deploy_id)


def _copy_storage(domain: ET.Element, target: str, source_dir: Path, target_dir: Path) -> None:
    """What ``--copy-storage-all`` leaves on the target: each disk's whole guest view in a file of its
    format (no backing file), plus the folder's ``*.xml`` and ``disk.*.snap`` copied as they are."""
    _on(target, ["mkdir", "-p", str(target_dir)])
    extras = [str(p) for p in [*source_dir.glob("*.xml"), *source_dir.glob("disk.*.snap")]]
    if extras:
        _run(["rsync", "-az", *extras, f"{target}:{target_dir}/"])
    for source, fmt in _disks(domain):
        if source.is_symlink() or not source.is_relative_to(source_dir):
            continue
        with tempfile.TemporaryDirectory(dir=source_dir) as scratch:
            flat = Path(scratch) / source.name
            _run(["qemu-img", "convert", "-U", "-O", fmt, str(source), str(flat)])
            destination = target_dir / source.relative_to(source_dir)
            _on(target, ["sh", "-c", f"cat > {shlex.quote(str(destination))}"], flat.read_bytes())


def attach_disk(args: list[str], stdin: bytes) -> None:
    """``attach_disk <deploy id> <disk path> <target> <index> <action>``: opened as the VM's DISK says."""
    deploy_id, source, target = args[0], Path(args[1]), args[2]
    domain = _running(deploy_id)
    action = ET.fromstring(stdin) if stdin else None
    fmt = "raw"
    if action is not None:
        for disk in action.iter("DISK"):
            if disk.findtext("ATTACH") == "YES":
                fmt = disk.findtext("DRIVER") or disk.findtext("FORMAT") or "raw"
    _open(source, fmt)
    devices = domain.find("devices")
    if devices is None:
        devices = ET.SubElement(domain, "devices")
    disk = ET.SubElement(devices, "disk", type="file", device="disk")
    ET.SubElement(disk, "driver", name="qemu", type=fmt)
    ET.SubElement(disk, "source", file=str(source))
    ET.SubElement(disk, "target", dev=target)
    _record(deploy_id).write_bytes(ET.tostring(domain))


def detach_disk(args: list[str], stdin: bytes) -> None:
    deploy_id, target = args[0], args[2]
    domain = _running(deploy_id)
    devices = domain.find("devices")
    for disk in list(devices) if devices is not None else []:
        node = disk.find("target")
        if disk.tag == "disk" and node is not None and node.get("dev") == target:
            devices.remove(disk)  # type: ignore[union-attr]
    _record(deploy_id).write_bytes(ET.tostring(domain))


def resize_disk(args: list[str], stdin: bytes) -> None:
    """``resize_disk <deploy id> <disk id> <size in MiB> ...``: the running domain's ``disk.<id>`` grows to
    that size, as QEMU grows an image it holds; a disk never shrinks."""
    domain = _running(args[0])
    name = f"disk.{args[1]}"
    found = [(path, fmt) for path, fmt in _disks(domain) if path.name == name]
    if not found:
        raise Refused(f"domain {args[0]} has no disk {name}")
    path, fmt = found[0]
    size = int(args[2]) << 20
    current = _info(path).get("virtual-size")
    if not isinstance(current, int) or size < current:
        raise Refused(f"{path} cannot shrink to {args[2]} MiB")
    if fmt == "qcow2":
        _run(["qemu-img", "resize", "-q", "-f", "qcow2", str(path), str(size)])
    else:
        os.truncate(path, size)


def running_only(args: list[str], stdin: bytes) -> None:
    """Actions that change nothing on disk (reboot, reset, resize, reconfigure, NICs): they need the domain
    to be running."""
    _running(args[0])


def virsh(args: list[str], stdin: bytes) -> None:
    """``virsh [-q] [-c|--connect URI] <command> ...``: the commands the TMs run on a host themselves."""
    while args and args[0] in ("-q", "-c", "--connect"):
        args = args[1:] if args[0] == "-q" else args[2:]
    command = VIRSH.get(args[0]) if args else None
    if command is None:
        raise Refused(f"virsh {' '.join(args[:1])} is not supported")
    command(args[1:])


def blockcopy(args: list[str]) -> None:
    """``blockcopy <domain> --path <disk> --dest <file> --wait --finish`` (a live disk snapshot). The domain
    must be running and have that disk."""
    if not args:
        raise Refused("blockcopy names no domain")
    domain, options = _running(args[0]), args[1:]
    if not {"--path", "--dest", "--wait", "--finish"} <= set(options) or options[-1] in ("--path", "--dest"):
        raise Refused("blockcopy without --path, --dest, --wait and --finish is not supported")
    path = Path(options[options.index("--path") + 1])
    dest = Path(options[options.index("--dest") + 1])
    formats = dict(_disks(domain))
    if path not in formats:
        raise Refused(f"domain {args[0]} has no disk {path}")
    _run(["qemu-img", "convert", "-U", "-f", formats[path], "-O", formats[path], str(path), str(dest)])


def _options(args: list[str], *valued: str) -> tuple[dict[str, list[str]], list[str]]:
    """(options with their values, the ``valued`` ones taking the next word, flags none; the positional
    arguments)."""
    options: dict[str, list[str]] = {}
    positional = []
    words = iter(args)
    for word in words:
        if word in valued:
            options.setdefault(word, []).append(next(words, ""))
        elif word.startswith("--"):
            options.setdefault(word, [])
        else:
            positional.append(word)
    return options, positional


def _disk_file(domain: ET.Element, target: str) -> tuple[ET.Element, Path, str]:
    """The domain's file-backed disk ``target`` (``vda``), its file and format."""
    for disk in domain.iter("disk"):
        node, file = disk.find("target"), _file(disk)
        if file is not None and node is not None and node.get("dev") == target:
            return disk, *file
    raise Refused(f"the domain has no disk {target}")


def _point(disk: ET.Element, path: Path, fmt: str) -> None:
    """The domain's disk now reads and writes ``path`` as ``fmt``."""
    source, driver = disk.find("source"), disk.find("driver")
    if source is None or driver is None:
        raise Refused("a disk of the domain has no source or driver")
    source.set("file", str(path))
    driver.set("type", fmt)


def snapshot_create_as(args: list[str]) -> None:
    """``snapshot-create-as --disk-only --atomic --diskspec <target>,file=<overlay> ... <domain>``: each
    named disk gets a qcow2 overlay on its current file, into which the guest then writes (an existing
    overlay is used as it is with ``--reuse-external``); ``<target>,snapshot=no`` leaves a disk alone."""
    options, positional = _options(args, "--name", "--diskspec")
    if "--disk-only" not in options or len(positional) != 1:
        raise Refused("snapshot-create-as other than --disk-only of one domain is not supported")
    domain = _running(positional[0])
    for spec in options.get("--diskspec", []):
        target, _, setting = spec.partition(",")
        if setting == "snapshot=no":
            continue
        if not setting.startswith("file="):
            raise Refused(f"--diskspec {spec} is not supported")
        disk, current, fmt = _disk_file(domain, target)
        overlay = Path(setting.removeprefix("file="))
        if "--reuse-external" not in options:
            _run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", fmt, "-b", str(current), str(overlay)])
        _point(disk, overlay, "qcow2")
    _record(positional[0]).write_bytes(ET.tostring(domain))


def blockcommit(args: list[str]) -> None:
    """``blockcommit <domain> <target> --active --pivot [--base <file>] [--wait] [--keep-relative]``: the
    guest's writes in the disk's active overlay go down into ``base`` (by default the overlay's backing
    file), and the domain reads and writes ``base`` again."""
    options, positional = _options(args, "--base", "--top")
    if len(positional) != 2 or not {"--active", "--pivot"} <= set(options):
        raise Refused("blockcommit other than --active --pivot of one domain's disk is not supported")
    domain = _running(positional[0])
    disk, top, _ = _disk_file(domain, positional[1])
    if options.get("--top", [str(top)]) != [str(top)]:
        raise Refused("blockcommit --active of another file than the active one is not supported")
    backing = _info(top).get("full-backing-filename")
    base = Path(options["--base"][0]) if "--base" in options else Path(str(backing))
    if backing is None or Path(str(backing)).resolve() != base.resolve():
        raise Refused(f"{base} is not the backing file of {top}")
    _run(["qemu-img", "commit", "-q", "-b", str(base), str(top)])
    for bitmap in _bitmaps(top):
        # A checkpoint made while the overlay was active goes down with the overlay, as libvirt merges it.
        if bitmap not in _bitmaps(base):
            _run(["qemu-img", "bitmap", "--add", str(base), bitmap])
        _run(["qemu-img", "bitmap", "--merge", bitmap, "-b", str(top), "-F", "qcow2", str(base), bitmap])
    _point(disk, base, str(_info(base).get("format")))
    _record(positional[0]).write_bytes(ET.tostring(domain))


def snapshot_delete(args: list[str]) -> None:
    """``snapshot-delete <domain> --snapshotname <name> --metadata``: libvirt forgets the snapshot; the
    files stay as they are."""
    options, positional = _options(args, "--snapshotname")
    if "--metadata" not in options or len(positional) != 1:
        raise Refused("snapshot-delete other than --metadata is not supported")
    _running(positional[0])


# Checkpoints and incremental backups: a checkpoint is a persistent dirty bitmap of its name in each of its
# disks' qcow2 files, which records every write made after it (QEMU's changed-block tracking).


def _bitmaps(path: Path) -> list[str]:
    data = _info(path).get("format-specific", {})
    found = data.get("data", {}).get("bitmaps", []) if isinstance(data, dict) else []
    return [bitmap["name"] for bitmap in found]


def _checkpoint_disks(domain: ET.Element, xml_file: str) -> tuple[str, list[Path]]:
    """The name of the checkpoint an XML file describes, and the files of the disks it names."""
    checkpoint = ET.parse(xml_file).getroot()
    disks = [_disk_file(domain, disk.get("name", ""))[1] for disk in checkpoint.iter("disk")]
    return checkpoint.findtext("name") or "", disks


def checkpoint_list(args: list[str]) -> None:
    """``checkpoint-list <domain> --name``: the checkpoints the domain's disks hold."""
    _, positional = _options(args)
    domain = _running(positional[0])
    names = {bitmap for path, fmt in _disks(domain) if fmt == "qcow2" for bitmap in _bitmaps(path)}
    print("\n".join(sorted(names)))


def checkpoint_create(args: list[str]) -> None:
    """``checkpoint-create <domain> --xmlfile <file> [--redefine]``: a new checkpoint starts recording in
    each disk it names; ``--redefine`` only tells libvirt of a checkpoint the disks already hold."""
    options, positional = _options(args, "--xmlfile")
    domain = _running(positional[0])
    name, files = _checkpoint_disks(domain, options["--xmlfile"][0])
    if "--redefine" in options:
        return
    for path in files:
        _run(["qemu-img", "bitmap", "--add", str(path), name])


def checkpoint_delete(args: list[str]) -> None:
    """``checkpoint-delete <domain> <name>`` (or ``--checkpointname <name>``): its bitmaps go; with
    ``--metadata`` only libvirt's record of it does."""
    options, positional = _options(args, "--checkpointname")
    domain = _running(positional[0])
    name = positional[1] if len(positional) > 1 else options["--checkpointname"][0]
    if "--metadata" in options:
        return
    for path, fmt in _disks(domain):
        if fmt == "qcow2" and name in _bitmaps(path):
            _run(["qemu-img", "bitmap", "--remove", str(path), name])


def backup_begin(args: list[str]) -> None:
    """``backup-begin <domain> --backupxml <file> [--checkpointxml <file>] --reuse-external``, pull mode: the
    disk is served read-only over NBD on the backup's unix socket, exported as its target, with the bitmap
    ``backup-<target>`` of the writes since the ``<incremental>`` checkpoint (when there is one); the new
    checkpoint starts recording."""
    options, positional = _options(args, "--backupxml", "--checkpointxml")
    domain = _running(positional[0])
    backup = ET.parse(options["--backupxml"][0]).getroot()
    server = backup.find("server")
    if backup.get("mode") != "pull" or server is None or server.get("transport") != "unix":
        raise Refused("backup-begin other than pull mode on a unix socket is not supported")
    parent = backup.findtext("incremental")
    targets = [node.get("name", "") for node in backup.iter("disk")]
    if len(targets) != 1:
        raise Refused("the stand-in serves one disk per pull-mode backup (qemu-nbd has one export a socket)")
    target, socket = targets[0], server.get("socket", "")
    _, path, fmt = _disk_file(domain, target)
    if parent:
        _run(["qemu-img", "bitmap", "--add", "--disable", str(path), f"backup-{target}"])
        _run(["qemu-img", "bitmap", "--merge", parent, str(path), f"backup-{target}"])
    if "--checkpointxml" in options:
        name, files = _checkpoint_disks(domain, options["--checkpointxml"][0])
        for file in files:
            _run(["qemu-img", "bitmap", "--add", str(file), name])
    command = ["qemu-nbd", "-r", "-t", "-k", socket, "-x", target, "-f", fmt, str(path)]
    command += ["-B", f"backup-{target}"] if parent else []
    daemon = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    for _ in range(100):
        if Path(socket).exists() or daemon.poll() is not None:
            break
        time.sleep(0.05)
    if not Path(socket).exists():
        daemon.kill()
        raise Refused("the backup's NBD server did not start")
    job = {
        "pid": daemon.pid,
        "socket": socket,
        "bitmaps": [[str(path), f"backup-{target}"]] if parent else [],
    }
    _job(positional[0]).write_text(json.dumps(job))


def _job(deploy_id: str) -> Path:
    return _record(deploy_id).with_suffix(".backup")


def domjobinfo(args: list[str]) -> None:
    """``domjobinfo <domain>``: the backup job, if one runs."""
    _running(args[0])
    print(
        "Job type:         Unbounded\nOperation:        Backup"
        if _job(args[0]).exists()
        else "Job type:         None"
    )


def domjobabort(args: list[str]) -> None:
    """``domjobabort <domain>``: the backup ends, its NBD server stops and its bitmaps go."""
    _running(args[0])
    try:
        job = json.loads(_job(args[0]).read_text())
    except FileNotFoundError:
        raise Refused(f"domain {args[0]} runs no job") from None
    with contextlib.suppress(ProcessLookupError):
        os.kill(job["pid"], signal.SIGTERM)
    for _ in range(100):
        if not Path(f"/proc/{job['pid']}").exists():
            break
        time.sleep(0.05)
    Path(job["socket"]).unlink(missing_ok=True)
    for path, bitmap in job["bitmaps"]:
        if bitmap in _bitmaps(Path(path)):
            _run(["qemu-img", "bitmap", "--remove", path, bitmap])
    _job(args[0]).unlink()


VIRSH = {
    "blockcopy": blockcopy,
    "snapshot-create-as": snapshot_create_as,
    "blockcommit": blockcommit,
    "snapshot-delete": snapshot_delete,
    "checkpoint-list": checkpoint_list,
    "checkpoint-create": checkpoint_create,
    "checkpoint-delete": checkpoint_delete,
    "backup-begin": backup_begin,
    "domjobinfo": domjobinfo,
    "domjobabort": domjobabort,
}
"""The virsh commands the TMs run on a host: a live disk snapshot's, and a running VM's backups'."""


def poll(args: list[str], stdin: bytes) -> None:
    print("STATE=a" if _record(args[0]).exists() else "STATE=d")


def _run(argv: list[str], data: bytes | None = None) -> None:
    done = subprocess.run(argv, input=data, capture_output=True, check=False)
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip().splitlines()
        raise Refused(f"{argv[0]} failed: {reason[-1] if reason else done.returncode}")


def _on(host: str, argv: list[str], data: bytes | None = None) -> None:
    """Run ``argv`` on another host over oneadmin's ssh, as libvirt's migration reaches its peer."""
    _run(["ssh", host, shlex.join(argv)], data)


ACTIONS = {
    "deploy": deploy,
    "shutdown": shutdown,
    "cancel": cancel,
    "save": save,
    "restore": restore,
    "migrate": migrate,
    "attach_disk": attach_disk,
    "detach_disk": detach_disk,
    "resize_disk": resize_disk,
    "poll": poll,
    **dict.fromkeys(
        [
            "reboot",
            "reset",
            "resize",
            "prereconfigure",
            "reconfigure",
            "attach_nic",
            "detach_nic",
        ],
        running_only,
    ),
}

TOOLS = {"virsh": virsh}
"""Commands the TMs run on a host directly, not through the VMM driver."""

if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main(sys.argv[1:]))
