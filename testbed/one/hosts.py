"""What happens on hosts that is not our drivers' doing: the system datastore's TM and the hypervisor.

A VM on an ``ssh`` system datastore also gets work from OpenNebula's own ``tm/ssh`` scripts (context ISO,
moving and deleting the VM folder, ``premigrate`` calling the other TMs) and from the KVM
driver (deployment file, checkpoint, copying disks on a live migration). The test bed carries no
OpenNebula, so the simulator does that share itself, minimally and with the same visible effect on the
hosts' folders: files owned by the driver user, in the places OpenNebula's scripts put them. Everything
the image datastore's TM (ours) must do is left to it: in a prolog nothing here creates the VM folder
before the first CLONE/LN line, exactly as with real OpenNebula.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from testbed.one.documents import parse_xml
from testbed.one.runner import Execution, Runner, map_path

ScriptRunner = Callable[[list[str], bytes], Execution]
_DISK = re.compile(r"/disk\.[0-9]+")
_MIGRATED = re.compile(r"disk\.[0-9]+(\.snap)?|.*\.xml")


def split_location(location: str) -> tuple[str, str]:
    """``arg_host``/``arg_path`` of tm_common.sh: ``host:/path`` (no ``:`` means a bare path)."""
    host, sep, path = location.partition(":")
    return (host, path) if sep else ("", location)


class HostFiles:
    """File operations on a host's folders (the frontend's too), leaving files to the driver user."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def path(self, host: str, path: str) -> Path:
        return self.runner.host_path(host, path)

    def frontend(self, driver_path: str) -> Path:
        """A frontend path as drivers see it (``/var/lib/one/vms/..``) as this process reaches it."""
        mapped = map_path(self.runner.var_lib_one, self.runner.driver_var_lib_one, driver_path)
        if mapped is None:
            raise KeyError(f"{driver_path} is outside the frontend's {self.runner.driver_var_lib_one}")
        return mapped

    def give(self, path: Path) -> None:
        owner = self.runner.owner
        if owner is None:
            return
        os.chown(path, *owner, follow_symlinks=False)
        if path.is_dir() and not path.is_symlink():
            for folder, dirs, files in os.walk(path):
                for name in dirs + files:
                    os.chown(os.path.join(folder, name), *owner, follow_symlinks=False)

    def make_dirs(self, path: Path) -> None:
        missing = []
        current = path
        while not current.exists():
            missing.append(current)
            current = current.parent
        path.mkdir(parents=True, exist_ok=True)
        for folder in missing:
            self.give(folder)

    def write(self, path: Path, data: bytes) -> None:
        self.make_dirs(path.parent)
        path.write_bytes(data)
        self.give(path)

    def remove(self, path: Path) -> None:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()

    def move(self, source: Path, target: Path) -> None:
        self.make_dirs(target.parent)
        if target.exists():
            self.remove(target)
        shutil.move(source, target)

    def copy_into(self, entries: list[Path], target: Path) -> None:
        """Copy files and folders into the folder ``target`` (replacing), as a storage migration does."""
        self.make_dirs(target)
        for entry in entries:
            destination = target / entry.name
            if entry.is_dir() and not entry.is_symlink():
                shutil.copytree(entry, destination, symlinks=True, dirs_exist_ok=True)
            else:
                if destination.exists() or destination.is_symlink():
                    self.remove(destination)
                shutil.copy2(entry, destination, follow_symlinks=False)
            self.give(destination)


def _ok() -> Execution:
    return Execution(0, b"", b"")


def _fail(script: str, message: str) -> Execution:
    """A failing script in OpenNebula's style: an ``ERROR:`` log line and one plain line for oned."""
    return Execution(1, b"", f"ERROR: {script}: {message}\n{message}\n".encode())


class SimulatedSystemTM:
    """The ``ssh`` system datastore TM, as far as a VM on our image datastore needs it.

    Called by the transfer manager as ``(tm, action, args, stdin, vmid)`` for lines whose TM is ``NAME``.
    ``run_script`` runs another TM's script as the ssh scripts' ``migrate_other`` does.
    """

    NAME = "ssh"

    def __init__(self, files: HostFiles, driver_remotes: str, run_script: ScriptRunner) -> None:
        self.files = files
        self.driver_remotes = driver_remotes
        self.run_script = run_script

    def __call__(self, tm: str, action: str, args: list[str], stdin: bytes, vmid: int) -> Execution:
        name = action.rsplit(".", 1)[0] if "." in action else action
        handler = getattr(self, f"_{name}", None)
        if handler is None:
            return _fail(f"{tm}/{action}", f"the simulator does not play {tm}/{name}")
        try:
            result: Execution = handler(tm, name, args, stdin)
        except (OSError, KeyError, ValueError, IndexError) as exc:
            return _fail(f"{tm}/{name}", f"{type(exc).__name__}: {exc}")
        return result

    def _located(self, location: str) -> Path:
        host, path = split_location(location)
        return self.files.path(host, path)

    def _context(self, tm: str, action: str, args: list[str], stdin: bytes) -> Execution:
        """CONTEXT context.sh [files] host:dir/disk.N vmid dsid: an "ISO" holding the context file."""
        context_file, target = args[0], args[-3]
        data = self.files.frontend(context_file).read_bytes()
        self.files.write(self._located(target), data)
        return _ok()

    def _delete(self, tm: str, action: str, args: list[str], stdin: bytes) -> Execution:
        self.files.remove(self._located(args[0]))
        return _ok()

    def _mv(self, tm: str, action: str, args: list[str], stdin: bytes) -> Execution:
        """Per-disk MV is a no-op; the VM folder moves as a whole (tm/ssh/mv)."""
        source, target = args[0], args[1]
        if source == target or _DISK.search(split_location(target)[1]):
            return _ok()
        origin = self._located(source)
        if not origin.exists():
            return _fail(f"{tm}/mv", f"{source} does not exist")
        self.files.move(origin, self._located(target))
        return _ok()

    def _premigrate(self, tm: str, action: str, args: list[str], stdin: bytes) -> Execution:
        target_host, folder = args[1], args[2]
        self.files.make_dirs(self.files.path(target_host, folder))
        return self._migrate_other(tm, action, args, stdin)

    def _postmigrate(self, tm: str, action: str, args: list[str], stdin: bytes) -> Execution:
        result = self._migrate_other(tm, action, args, stdin)
        self.files.remove(self.files.path(args[0], args[2]))
        return result

    def _failmigrate(self, tm: str, action: str, args: list[str], stdin: bytes) -> Execution:
        """``tm/ssh/failmigrate`` and ``tm/local/failmigrate`` link to ``tm/common/failmigrate``:
        ``exit 0``. No other TM hears of the failure, and the target folder stays as it was."""
        return _ok()

    def _migrate_other(self, tm: str, action: str, args: list[str], stdin: bytes) -> Execution:
        """tm_common.sh ``migrate_other``: the same action of every other TM among the VM's disks,
        with the caller's name appended and the same base64 VM on stdin; the first failure stops."""
        document = parse_xml(base64.b64decode(stdin))
        others: list[str] = []
        for node in document.findall("TEMPLATE/DISK/TM_MAD"):
            other = node.text or ""
            if other and other != tm and other not in others:
                others.append(other)
        stdout, stderr = b"", b""
        for other in others:
            script = f"{self.driver_remotes}/tm/{other}/{action}"
            execution = self.run_script([script, *args, tm], stdin)
            stdout, stderr = stdout + execution.stdout, stderr + execution.stderr
            if execution.returncode != 0 or execution.timed_out or execution.internal_error:
                problem = execution.internal_error.encode()
                return Execution(execution.returncode or 1, stdout, stderr + problem)
        return Execution(0, stdout, stderr)


class Hypervisor:
    """The KVM driver's visible effects on a host's VM folder (deployment file, checkpoint, migration)."""

    def __init__(self, files: HostFiles) -> None:
        self.files = files

    def boot(self, host: str, folder: str, seq: int, deployment: bytes) -> None:
        self.files.write(self.files.path(host, f"{folder}/deployment.{seq}"), deployment)

    def save(self, host: str, folder: str) -> None:
        self.files.write(self.files.path(host, f"{folder}/checkpoint"), b"simulated checkpoint\n")

    def restore(self, host: str, folder: str) -> None:
        self.files.remove(self.files.path(host, f"{folder}/checkpoint"))

    def migrate(self, source_host: str, target_host: str, folder: str) -> None:
        """Live migration with local storage, as KVM's ``migrate`` does it: libvirt copies the disks
        (``--copy-storage-all``) and the driver rsyncs the folder's ``*.xml`` and ``disk.<n>.snap``;
        nothing else travels, neither a deployment file nor what a transfer driver keeps beside its
        disks. (libvirt also flattens an overlay into a standalone file; the copy here keeps its
        backing file, which the target holds once premigrate has run: the guest sees the same.)"""
        source = self.files.path(source_host, folder)
        if not source.is_dir():
            raise FileNotFoundError(f"{folder} does not exist on {source_host}")
        carried = [entry for entry in source.iterdir() if _MIGRATED.fullmatch(entry.name)]
        self.files.copy_into(carried, self.files.path(target_host, folder))
