"""The package as an admin installs it: a wheel built from an sdist of the checkout's tracked parts (as
``python -m build`` does), installed into a clean venv, whose ``one-ipfs`` and Python the genuine clouds run.

Offline: the build uses this venv's setuptools, and the clean venv borrows only the third-party packages
(click, rich, defusedxml) of this one through a .pth file, never its one_ipfs or the checkout.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from fnmatch import fnmatch
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHECKOUT = ("pyproject.toml", "README.md", "LICENSE", "src", "testbed", "tests", "benchmarks")
"""What the sdist is built from: the checkout's tracked parts, the ones that must not ship included."""
IGNORED = ("__pycache__", "*.egg-info", "results")
CACHE = REPO / ".cache" / "package"
COMPLETE = ".complete"
"""Written last into a cached venv: one without it was left half-built."""


def build_wheel(workdir: Path) -> Path:
    """The wheel built from an sdist of a copy of the checkout's tracked parts (no venv, cache, bytecode)."""
    source = workdir / "checkout"
    source.mkdir(parents=True)
    for part in CHECKOUT:
        if (REPO / part).is_dir():
            ignore = shutil.ignore_patterns(*IGNORED)
            shutil.copytree(REPO / part, source / part, symlinks=True, ignore=ignore)
        else:
            shutil.copy(REPO / part, source / part)
    build = "import sys, setuptools.build_meta as backend; print(backend.build_sdist(sys.argv[1]))"
    built = run([sys.executable, "-c", build, source / "dist"], cwd=source).stdout.split()[-1]
    sdist = source / "dist" / built
    wheels = workdir / "wheels"
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
    run([*pip, "-w", wheels, sdist])
    return next(wheels.glob("one_ipfs-*.whl"))


def install_venv(wheel: Path, root: Path) -> Path:
    """A clean venv at ``root`` holding ``wheel`` (its dependencies borrowed from this venv); its Python."""
    run([sys.executable, "-m", "venv", "--without-pip", root])
    python = root / "bin" / "python"
    purelib = run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip()
    (Path(purelib) / "zz-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel])
    return python


def installed() -> Path:
    """The Python of a venv holding the wheel of the checkout as it is now: built once per content of the
    checkout's tracked parts, kept under ``.cache/package`` (a venv cannot move: it is built in place, under
    a lock), readable by oneadmin, as oned runs the drivers with it."""
    venv = CACHE / _checkout_digest()
    python = venv / "bin" / "python"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (venv / COMPLETE).is_file():
            return python
        shutil.rmtree(venv, ignore_errors=True)
        with tempfile.TemporaryDirectory(dir=CACHE) as work:
            install_venv(build_wheel(Path(work)), venv)
        (venv / COMPLETE).touch()
    return python


def run(argv: list[str | os.PathLike[str]], cwd: Path = Path("/")) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` away from the checkout (``python -c`` would import from its folder); a failure raises
    with the command's error output."""
    result = subprocess.run(
        [str(arg) for arg in argv], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed: {result.stderr.strip()}")
    return result


def _checkout_digest() -> str:
    digest = hashlib.sha256()
    for part in CHECKOUT:
        top = REPO / part
        files = sorted(p for p in top.rglob("*") if p.is_file()) if top.is_dir() else [top]
        for path in files:
            if not any(fnmatch(name, pattern) for name in path.parts for pattern in IGNORED):
                digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]
