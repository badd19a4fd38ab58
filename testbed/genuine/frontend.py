"""A genuine OpenNebula frontend on the bed: oned, its scheduler and its CLI, driving the drivers for real.

oned runs as oneadmin in the bed frontend's mount namespace (where /var/lib/one is the frontend's folder),
with an sqlite database, ``IM_MAD dummy`` (no hypervisor to monitor) and genuine ``VM_MAD kvm``: OpenNebula's
exec driver ssh-es to the hosts and runs a stand-in for KVM's scripts there (``testbed.genuine.hypervisor``),
so live operations reach the transfer drivers the way they do under KVM. The drivers are installed by
``one-ipfs install`` into the remotes tree, hosts are added with ``onehost create`` and synced with
``onehost sync --force``, exactly as docs/install.md tells an admin.

Each bed gets its own self-contained ONE_LOCATION (``BED/frontend/opennebula``): ``etc`` and ``var`` are
copies of the install's, the rest links to it, so the install stays untouched and shared. Everything oned
listens on is bound to loopback on ports of its own, and no marketplace that would reach the Internet is
enabled: nothing dials out.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from xml.etree.ElementTree import Element

from one_ipfs.errors import HostError
from testbed.bed import Bed
from testbed.genuine.api import OnedApi
from testbed.genuine.hypervisor import ACTIONS, TOOLS
from testbed.genuine.installation import Installation
from testbed.one.documents import parse_xml
from testbed.system import BASE_PATH, ONEADMIN, ONEADMIN_HOME, ensure_oneadmin

HYPERVISOR = Path(__file__).with_name("hypervisor.py")
VMM_ACTIONS = tuple(ACTIONS)
"""Every action of KVM's VMM scripts the stand-in plays."""
START_TIMEOUT = 180.0
"""oned, its first host monitoring included, takes 15 to 50 s on 2 busy cores: this only bounds a hang."""
MONITORED = "2"
HOST_ERROR = "3"
SYSTEM_LINKS = {"bin": "/usr/bin", "sbin": "/usr/sbin", "lib": "/usr/lib/one", "share": "/usr/share/one"}
"""Where a system-wide install keeps what a self-contained one has under ONE_LOCATION."""


@dataclass(frozen=True)
class Ports:
    """oned's XML-RPC, monitord's, and the hook manager's two: free loopback ports of this bed's."""

    oned: int
    monitord: int
    hooks_publish: int
    hooks_listen: int

    @classmethod
    def free(cls) -> Ports:
        return cls(*(_free_port() for _ in range(4)))


class Frontend:
    """oned of one ``installation`` on a running ``bed``; ``start()`` brings it up with hosts and drivers."""

    def __init__(self, bed: Bed, installation: Installation, python: str = sys.executable) -> None:
        self.bed = bed
        self.installation = installation
        self.python = python
        self.location = bed.root / "frontend" / "opennebula"
        """ONE_LOCATION, the same path inside and outside the frontend's namespace."""
        self.ports = Ports.free()
        self.auth = f"oneadmin:{secrets.token_hex(16)}"
        self.api = OnedApi(f"http://127.0.0.1:{self.ports.oned}/RPC2", self.auth)
        """oned's XML-RPC API, which the bed reads to watch oned (the admin's commands go through ``run``)."""

    @property
    def version(self) -> str:
        return self.installation.version

    @property
    def remotes(self) -> Path:
        return self.location / "var" / "remotes"

    @property
    def log(self) -> Path:
        """oned's log."""
        return self.location / "var" / "oned.log"

    def environment(self) -> dict[str, str]:
        """What oneadmin's shell on a self-contained frontend has: ONE_LOCATION, its bin on PATH, ONE_XMLRPC,
        and RUBYLIB, since OpenNebula's Ruby programs load ``load_opennebula_paths`` before they add
        ``$ONE_LOCATION/lib/ruby`` to their path (packages rewrite that line; a source install does not)."""
        return {
            "ONE_LOCATION": str(self.location),
            "RUBYLIB": str(self.location / "lib" / "ruby"),
            "PATH": f"{self.location / 'bin'}:{BASE_PATH}",
            "ONE_XMLRPC": f"http://127.0.0.1:{self.ports.oned}/RPC2",
        }

    # Bring-up -------------------------------------------------------------------------------------------

    def start(self, *, drivers: bool = True) -> None:
        """Assemble ONE_LOCATION, install the drivers, start oned and add every bed host, MONITORED and
        synced. Without ``drivers``, a cloud that has never seen one-ipfs: the admin installs them, then
        ``restart()``s oned."""
        user = ensure_oneadmin()
        self._assemble()
        self._configure()
        self._install_standin()
        for folder in (self.location, self.bed.frontend_var_lib_one / ".one"):
            _give(folder, user.pw_uid, user.pw_gid)
        if drivers:
            self.run(["one-ipfs", "install", "--one-location", str(self.location), "--python", self.python])
        self.bed.serve_frontend_ssh(socket.gethostname())
        self._share_ssh()
        self._lock_folder(user.pw_uid, user.pw_gid)
        self._start_daemons()
        for host in self.bed.hosts:
            self.cli(["onehost", "create", host.name, "--im", "dummy", "--vm", "kvm"])
        self._wait_hosts_monitored()
        self.cli(["onehost", "sync", "--force"], timeout=120)
        self._standin_tools()
        self._host_ruby()

    def stop(self) -> None:
        """Stop oned (and 6.x's scheduler): SIGTERM, as ``one stop`` does."""
        for name in ("frontend/mm_sched", "frontend/oned"):
            self.bed.stop_service(name)

    def restart(self) -> None:
        """``systemctl restart opennebula``, as ``one-ipfs install`` tells the admin: oned reads oned.conf
        only when it starts. Its hosts are kept in its database and monitored again."""
        self.stop()
        self._start_daemons()
        self._wait_hosts_monitored()

    def _assemble(self) -> None:
        if self.location.exists():
            shutil.rmtree(self.location)
        self.location.mkdir(parents=True)
        install = self.installation.location
        for part, system_wide in SYSTEM_LINKS.items():
            source = install / part if install else Path(system_wide)
            (self.location / part).symlink_to(source)
        if install:
            shutil.copytree(install / "etc", self.location / "etc", symlinks=True)
            shutil.copytree(install / "var", self.location / "var", symlinks=True)
        else:
            shutil.copytree("/etc/one", self.location / "etc", symlinks=True)
            shutil.copytree("/var/lib/one/remotes", self.location / "var" / "remotes", symlinks=True)
        self._link_restic()
        auth = self.bed.frontend_var_lib_one / ".one"
        auth.mkdir(mode=0o700, exist_ok=True)
        (auth / "one_auth").write_text(self.auth + "\n")

    def _link_restic(self) -> None:
        """OpenNebula's restic backup datastore runs the restic its packages put in the remotes tree (a
        source build leaves a dangling link there): the bed gives it Debian's, which ``onehost sync`` hands
        the hosts as it hands them the rest."""
        restic, installed = self.remotes / "datastore" / "restic" / "restic", shutil.which("restic")
        if installed and not restic.exists():
            restic.unlink(missing_ok=True)
            restic.symlink_to(installed)

    def _configure(self) -> None:
        """oned.conf, monitord.conf (and 6.x's sched.conf) as shipped, but for what a bed needs."""
        ports = self.ports
        etc = self.location / "etc"
        _edit(
            etc / "oned.conf",
            [
                (r"(?m)^PORT\s*=.*$", f"PORT = {ports.oned}"),
                (r"(?m)^LISTEN_ADDRESS\s*=.*$", 'LISTEN_ADDRESS = "127.0.0.1"'),
                # Only the marketplaces a bed can reach: "one" and "linuxcontainers" dial the Internet.
                (r"-m http,s3,one,linuxcontainers", "-m http,s3"),
                # A marketplace lists its apps at its first monitor after 5 s, then every interval.
                (r"(?m)^MONITORING_INTERVAL_MARKET\s*=.*$", "MONITORING_INTERVAL_MARKET = 10"),
                (r"-p 2101 -l 2102", f"-p {ports.hooks_publish} -l {ports.hooks_listen}"),
            ],
            append="DATASTORE_LOCATION = /var/lib/one/datastores\n",
        )
        _edit(
            etc / "monitord.conf",
            [
                (r'ADDRESS\s*=\s*"(::|0\.0\.0\.0)"', 'ADDRESS = "127.0.0.1"'),
                (r"(?m)^(\s*)PORT\s*=\s*4124", rf"\g<1>PORT = {ports.monitord}"),
            ],
            append=(
                'IM_MAD = [ NAME = "dummy", SUNSTONE_NAME = "Dummy", EXECUTABLE = "one_im_sh",\n'
                '    ARGUMENTS = "-r 3 -t 15 -w 90 dummy", THREADS = 0 ]\n'
            ),
        )
        sched = etc / "sched.conf"
        if sched.exists():
            _edit(sched, [(r"localhost:2633", f"127.0.0.1:{ports.oned}")])

    def _install_standin(self) -> None:
        """KVM's VMM scripts give way to the stand-in: one launcher per action, run by the exec driver."""
        folder = self.remotes / "vmm" / "kvm"
        for action in VMM_ACTIONS:
            (folder / action).unlink(missing_ok=True)
            (folder / action).write_text(
                f'#!/bin/sh\nexec python3 "$(dirname "$0")/standin_kvm.py" {action} "$@"\n'
            )
            (folder / action).chmod(0o755)
        shutil.copyfile(HYPERVISOR, folder / "standin_kvm.py")

    def _standin_tools(self) -> None:
        """The stand-in's ``virsh`` first on the hosts' PATH (over /usr/local/bin, in each host's own mount
        namespace only), running the copy ``onehost sync`` gave the host, as the TMs' own virsh calls need."""
        for host in self.bed.hosts:
            tools = host.var_lib_one.parent / "standin-bin"
            tools.mkdir(exist_ok=True)
            for tool in TOOLS:
                (tools / tool).write_text(
                    f'#!/bin/sh\nexec python3 /var/tmp/one/vmm/kvm/standin_kvm.py {tool} "$@"\n'
                )
                (tools / tool).chmod(0o755)
            self.bed.host_run(host, ["mount", "--bind", tools, "/usr/local/bin"])

    def _host_ruby(self) -> None:
        """oneadmin's shell on each host finds OpenNebula's Ruby libraries as on the frontend (ONE_LOCATION,
        RUBYLIB), as the node packages give a host: the system datastore's TMs run Ruby there (a backup's
        ``tm/lib/backup_qcow2.rb``), which loads ``load_opennebula_paths`` first. bash reads ``~/.bashrc``
        for the commands ssh runs."""
        wanted = self.environment()
        lines = "".join(
            f"export {name}={shlex.quote(wanted[name])}\n" for name in ("ONE_LOCATION", "RUBYLIB")
        )
        for host in self.bed.hosts:
            bashrc = host.var_lib_one / ".bashrc"
            bashrc.write_text(lines)
            owner = (host.var_lib_one / ".ssh").stat()
            os.chown(bashrc, owner.st_uid, owner.st_gid)

    def _share_ssh(self) -> None:
        """Hosts reach each other and the frontend as oneadmin with the frontend's key, as KVM's live
        migration and the ssh TM's moves to the frontend need."""
        seen = self.bed.frontend_var_lib_one / ".ssh"
        for host in self.bed.hosts:
            target = host.var_lib_one / ".ssh"
            for name in ("id_ed25519", "config", "known_hosts"):
                shutil.copy2(seen / name, target / name)
                shutil.copystat(seen / name, target / name)
                os.chown(target / name, seen.stat().st_uid, seen.stat().st_gid)

    def _lock_folder(self, uid: int, gid: int) -> None:
        """/var/lock/one, oneadmin's, as OpenNebula's packages make it: the drivers' ``exclusive`` locks
        live there (the ssh TM's replica copies). A tmpfs over /run/lock in the frontend's mount namespace
        keeps it the bed's own."""
        lock = Path("/run/lock")
        for argv in (
            ["mount", "-t", "tmpfs", "-o", "mode=1777", "tmpfs", str(lock)],
            ["install", "-d", "-o", str(uid), "-g", str(gid), "-m", "0755", str(lock / "one")],
        ):
            self.bed.frontend_command(argv, user="root", check=True)

    def _start_daemons(self) -> None:
        env = {**self.environment(), "HOME": str(ONEADMIN_HOME)}
        self.bed.start_service(
            "frontend/oned", [self.location / "bin" / "oned", "-f"], env=env, log=self.location / "oned.out"
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not self.api.answers():
            if not self.bed.service_alive("frontend/oned"):
                raise HostError(f"test bed: oned {self.version} exited; see {self.log}")
            if time.monotonic() > deadline:
                raise HostError(f"test bed: oned {self.version} did not answer in time; see {self.log}")
            time.sleep(0.5)
        scheduler = self.location / "bin" / "mm_sched"
        if self.installation.major < 7 and scheduler.exists():
            self.bed.start_service("frontend/mm_sched", [scheduler], env=env, log=self.location / "sched.out")

    def _wait_hosts_monitored(self) -> None:
        """Wait until every host is MONITORED. A host whose first monitoring failed (its probes cut off on
        busy cores) stays in ERROR until the next host monitoring, minutes later: ``onehost forceupdate``
        monitors it again, as an admin would."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            states = {host.findtext("NAME", ""): host.findtext("STATE", "") for host in self._host_pool()}
            waiting = [host.name for host in self.bed.hosts if states.get(host.name) != MONITORED]
            if not waiting:
                return
            for name in waiting:
                if states.get(name) == HOST_ERROR:
                    self.cli(["onehost", "forceupdate", name])
            if time.monotonic() > deadline:
                raise HostError(f"test bed: host {waiting[0]} was not MONITORED by oned in time")
            time.sleep(0.5)

    def _host_pool(self) -> list[Element]:
        return parse_xml(str(self.api.call("one.hostpool.info"))).findall("HOST")

    # Using it -------------------------------------------------------------------------------------------

    def run(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        env: Mapping[str, str] | None = None,
        input: bytes | None = None,
        check: bool = True,
        timeout: float | None = 300,
    ) -> subprocess.CompletedProcess[bytes]:
        """A command as oneadmin on the frontend, with the environment of oneadmin's shell."""
        path = [*self.environment()["PATH"].split(":"), str(Path(self.python).parent)]
        result = self.bed.frontend_command(
            argv,
            env={**self.environment(), "PATH": ":".join(path), **(env or {})},
            input=input,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            reason = (result.stderr or result.stdout).decode(errors="replace").strip()
            raise HostError(f"{' '.join(map(str, argv))} failed on the frontend: {reason}")
        return result

    def cli(self, argv: Sequence[str], *, timeout: float | None = 300) -> subprocess.CompletedProcess[bytes]:
        """An OpenNebula CLI command (``onevm ...``) that must succeed."""
        return self.run(argv, timeout=timeout)

    @contextmanager
    def template(self, text: str) -> Iterator[str]:
        """A template file for the CLI, which reads templates from files only (not from stdin): written
        where oneadmin reads it, named as the frontend sees it, removed afterwards."""
        folder = self.bed.frontend_var_lib_one / "templates"
        folder.mkdir(exist_ok=True)
        fd, name = tempfile.mkstemp(suffix=".tpl", dir=folder)
        with os.fdopen(fd, "w") as file:
            file.write(text)
        os.chmod(name, 0o644)
        try:
            yield str(ONEADMIN_HOME / "templates" / Path(name).name)
        finally:
            os.unlink(name)


def _edit(path: Path, changes: Sequence[tuple[str, str]], append: str = "") -> None:
    """Apply each (pattern, replacement) exactly where it matches, at least once: a shipped file that no
    longer says what a change expects fails here, not later in a confusing way."""
    text = path.read_text()
    for pattern, replacement in changes:
        text, count = re.subn(pattern, replacement, text)
        if count == 0:
            raise HostError(f"test bed: {path.name} has no {pattern!r} to change")
    path.write_text(text + append)


def _give(folder: Path, uid: int, gid: int) -> None:
    """Everything under ONE_LOCATION is oneadmin's, as install.sh -u oneadmin leaves it (links aside)."""
    for root, dirs, files in os.walk(folder):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(root, name), uid, gid)
    os.chown(folder, uid, gid)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


__all__ = ["ONEADMIN", "Frontend", "Ports"]
