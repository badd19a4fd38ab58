"""The host bundle: the standard-library-only part of this package that hosts run, its launcher, and the
digest that tells a host holding another version apart.

``one-ipfs install`` writes it into the remotes tree (``tm/ipfs/lib``), which ``onehost sync`` copies to
every host's ``/var/tmp/one``; a host that lacks it, or holds another version, gets it over ssh from here.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import one_ipfs
from one_ipfs.config import remotes_dir
from one_ipfs.errors import HostError
from one_ipfs.hosts.ssh import last_plain_line, ssh_argv
from one_ipfs.opennebula.output import log_info

PACKAGE_DIR = Path(one_ipfs.__file__).resolve().parent
HOST_LIB = Path("tm/ipfs/lib")
HOST_LAUNCHER = "one-ipfs-host"
BUNDLE_STAMP = "BUNDLE"
STALE_BUNDLE = 3
"""The launcher's exit status when the host holds another version of the bundle."""
UNPACK = "import sys, tarfile; tarfile.open(fileobj=sys.stdin.buffer, mode='r|gz').extractall(sys.argv[1])"

# The modules a host needs: nothing here imports beyond the standard library.
HOST_MODULES = (
    "__init__.py",
    "defaults.py",
    "errors.py",
    "diskformat.py",
    "ipfs/__init__.py",
    "ipfs/rpc.py",
    "ipfs/transport.py",
    "ipfs/paths.py",
    "ipfs/fetching.py",
    "ipfs/gateway.py",
    "ipfs/fleet.py",
    "ipfs/network.py",
    "ipfs/cluster_peer.py",
    "host/*.py",
)

HOST_LAUNCHER_TEXT = """#!/usr/bin/env python3
# Runs one_ipfs's host side from this folder. The transfer driver passes the bundle digest it expects
# first; exit status 3 tells it that this host holds another version and needs the bundle shipped.
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
if len(sys.argv) > 2 and sys.argv[1] == "--bundle":
    with open(os.path.join(here, "BUNDLE")) as stamp:
        if stamp.read().strip() != sys.argv[2]:
            sys.stderr.write("one-ipfs host bundle is out of date\\n")
            sys.exit(3)
    del sys.argv[1:3]
sys.path.insert(0, here)
from one_ipfs.host.__main__ import main  # noqa: E402

sys.exit(main())
"""


def host_bundle_files() -> list[tuple[Path, Path]]:
    """(source file, path inside ``lib/one_ipfs``) for every module shipped to hosts."""
    files: list[tuple[Path, Path]] = []
    for pattern in HOST_MODULES:
        for source in sorted(PACKAGE_DIR.glob(pattern)):
            files.append((source, source.relative_to(PACKAGE_DIR)))
    return files


def source_digest() -> str:
    """A digest of the host bundle this package would write, so any change to host code is a new version."""
    digest = hashlib.sha256()
    for source, relative in host_bundle_files():
        digest.update(str(relative).encode())
        digest.update(source.read_bytes())
    digest.update(HOST_LAUNCHER_TEXT.encode())
    return digest.hexdigest()[:16]


def write_host_bundle(lib_dir: Path) -> str:
    """Write the host bundle into ``lib_dir`` (replacing an older one) and return its digest."""
    target = lib_dir / "one_ipfs"
    if target.exists():
        shutil.rmtree(target)
    for source, relative in host_bundle_files():
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, destination)
    launcher = lib_dir / HOST_LAUNCHER
    launcher.write_text(HOST_LAUNCHER_TEXT, encoding="utf-8")
    launcher.chmod(0o755)
    digest = source_digest()
    (lib_dir / BUNDLE_STAMP).write_text(digest + "\n", encoding="utf-8")
    return digest


def remote_lib() -> str:
    """Where the bundle sits on hosts: OpenNebula's SCRIPTS_REMOTE_DIR plus the driver's lib folder."""
    return f"{os.environ.get('ONE_IPFS_SCRIPTS_REMOTE_DIR', '/var/tmp/one')}/{HOST_LIB}"


def local_lib() -> Path:
    return remotes_dir() / HOST_LIB


def bundle_digest(remotes: Path) -> str | None:
    """The digest of the host bundle installed in the remotes tree ``remotes``, or None without one."""
    try:
        return (remotes / HOST_LIB / BUNDLE_STAMP).read_text(encoding="utf-8").strip()
    except OSError:
        return None


def installed_digest() -> str:
    """The digest of the host bundle in this frontend's remotes tree (what every host must run)."""
    digest = bundle_digest(remotes_dir())
    if digest is None:
        raise HostError(f"the drivers are not installed in {remotes_dir()}: run `one-ipfs install`")
    return digest


def launcher_argv() -> list[str]:
    """The command that runs the host side on a host, telling it which bundle it must be."""
    return ["python3", f"{remote_lib()}/{HOST_LAUNCHER}", "--bundle", installed_digest()]


def ship_bundle(host: str, *, timeout: float) -> None:
    """Copy the host bundle of this frontend to ``host`` over ssh (it replaces any older one)."""
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        tar.add(local_lib(), arcname=".")
    remote = ["sh", "-c", 'mkdir -p "$1" && exec python3 -c "$2" "$1"', "sh", remote_lib(), UNPACK]
    try:
        result = subprocess.run(
            ssh_argv(host, remote),
            input=archive.getvalue(),
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise HostError(f"{host}: copying the one-ipfs host bundle took longer than {timeout:g} s") from None
    if result.returncode != 0:
        raise HostError(f"{host}: cannot copy the one-ipfs host bundle: {last_plain_line(result.stderr)}")
    log_info(f"copied the one-ipfs host bundle to {host}")
