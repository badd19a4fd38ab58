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
  does: the guest's whole view into a new file of the disk's format, with no backing file.

A running domain is a file ``<deploy id>.xml`` (its domain XML) in ``~/.standin-kvm`` of the host. Python's
standard library only: it runs on the host with the host's python3 and qemu-img.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
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
    disks = []
    for disk in domain.iter("disk"):
        source = disk.find("source")
        if disk.get("type") != "file" or source is None or not source.get("file"):
            continue
        driver = disk.find("driver")
        fmt = (driver.get("type") if driver is not None else None) or "raw"
        disks.append((Path(source.get("file", "")), fmt))
    return disks


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
    """``virsh [-q] [-c URI] blockcopy <domain> --path <disk> --dest <file> --wait --finish``: the only
    virsh command the TMs run on a host. The domain must be running and have that disk."""
    while args and args[0] in ("-q", "-c"):
        args = args[2:] if args[0] == "-c" else args[1:]
    if len(args) < 2 or args[0] != "blockcopy":
        raise Refused(f"virsh {' '.join(args[:1])} is not supported")
    domain, options = _running(args[1]), args[2:]
    if not {"--path", "--dest", "--wait", "--finish"} <= set(options) or options[-1] in ("--path", "--dest"):
        raise Refused("blockcopy without --path, --dest, --wait and --finish is not supported")
    path = Path(options[options.index("--path") + 1])
    dest = Path(options[options.index("--dest") + 1])
    formats = dict(_disks(domain))
    if path not in formats:
        raise Refused(f"domain {args[1]} has no disk {path}")
    _run(["qemu-img", "convert", "-U", "-f", formats[path], "-O", formats[path], str(path), str(dest)])


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
