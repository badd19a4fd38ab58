"""Put the drivers into an OpenNebula remotes tree.

The remotes tree is what oned runs on the frontend and what ``onehost sync`` copies to every host's
``/var/tmp/one``. Besides the launchers it carries the host bundle (``one_ipfs.hosts.bundle``).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
from pathlib import Path

import one_ipfs
from one_ipfs.errors import StorageError
from one_ipfs.hosts.bundle import HOST_LIB, PACKAGE_DIR, write_host_bundle

SOURCE_REMOTES = PACKAGE_DIR / "remotes"
"""The remotes tree as this package ships it (package data, so a wheel carries it too)."""
DRIVER_LAUNCHER = "one-ipfs-driver"
DRIVER_DIRS = (Path("datastore/ipfs"), Path("tm/ipfs"), Path("market/ipfs"))
DEFAULTS = Path("etc/datastore/ipfs/ipfs.conf")
COMPILE_TIMEOUT = 120.0


def install_remotes(remotes_dir: Path, python: str) -> None:
    """Copy the launchers and defaults into ``remotes_dir``, record ``python`` and write the host bundle.

    An existing defaults file is kept (it holds the admin's settings) except for the interpreter line.
    """
    if not SOURCE_REMOTES.is_dir():
        raise StorageError(f"the one-ipfs remotes tree is missing at {SOURCE_REMOTES}: reinstall one-ipfs")
    for driver_dir in DRIVER_DIRS:
        _copy_driver(SOURCE_REMOTES / driver_dir, remotes_dir / driver_dir)
    defaults = remotes_dir / DEFAULTS
    if not defaults.exists():
        defaults.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SOURCE_REMOTES / DEFAULTS, defaults)
    text = defaults.read_text(encoding="utf-8")
    line = f'ONE_IPFS_PYTHON="{python}"'
    text, count = re.subn(r"(?m)^[ \t]*(?:export[ \t]+)?ONE_IPFS_PYTHON=.*$", lambda _: line, text)
    if count == 0:
        text += f"\n{line}\n"
    defaults.write_text(text, encoding="utf-8")
    write_host_bundle(remotes_dir / HOST_LIB)
    compile_package(python)


def _copy_driver(source: Path, target: Path) -> None:
    """The launcher, and every action a link to it: the same tree whether the package came from a
    checkout (links) or a wheel (which cannot hold links, so each action arrives as a copy)."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    shutil.copy(source / DRIVER_LAUNCHER, target / DRIVER_LAUNCHER)
    for action in sorted(entry.name for entry in source.iterdir()):
        if action != DRIVER_LAUNCHER:
            (target / action).symlink_to(DRIVER_LAUNCHER)


INTERPRETER_CHECK = (
    "import sys\n"
    "if sys.version_info < (3, 11):\n"
    "    sys.exit('it is Python %d.%d; the drivers need 3.11 or later' % sys.version_info[:2])\n"
    "import one_ipfs, one_ipfs.driver, one_ipfs.datastore.actions, one_ipfs.transfer.actions\n"
    "import one_ipfs.market.actions\n"
    "print(one_ipfs.__version__)\n"
)
"""What the drivers need of their interpreter: Python 3.11, and one_ipfs with its dependencies."""
INTERPRETER_TIMEOUT = 60.0


def interpreter_problem(python: str) -> str | None:
    """Why ``python`` cannot run these drivers (not there, too old, no one_ipfs or another version of
    it), or None when it can."""
    try:
        result = subprocess.run(
            [python, "-c", INTERPRETER_CHECK],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=INTERPRETER_TIMEOUT,
            check=False,
            cwd="/",
        )
    except OSError as exc:
        return exc.strerror or str(exc)
    except subprocess.TimeoutExpired:
        return f"it did not answer within {INTERPRETER_TIMEOUT:g} s"
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        return lines[-1] if lines else f"exit status {result.returncode}"
    version = result.stdout.strip()
    if version != one_ipfs.__version__:
        return f"it runs one_ipfs {version[:40]}, these drivers are {one_ipfs.__version__}"
    return None


def compile_package(python: str) -> None:
    """Byte-compile the package with the drivers' interpreter, which runs as oneadmin and so cannot
    cache bytecode in a package it does not own: every action would otherwise compile every module.

    A package that cannot be written (installed read-only) keeps running from source, only slower.
    """
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run(
            [python, "-m", "compileall", "-q", str(PACKAGE_DIR)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=COMPILE_TIMEOUT,
            check=False,
        )
