"""Which genuine OpenNebula the bed runs: an install found or built by ``scripts/ensure-opennebula``."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from one_ipfs.errors import HostError

REPO = Path(__file__).resolve().parent.parent.parent
ENSURE = REPO / "scripts" / "ensure-opennebula"
VERSIONS = ("7.4.0", "6.10.5")
"""The versions the drivers are tested with: the current release and the LTS line."""
UNAVAILABLE = 3
"""ensure-opennebula's exit status when it has neither an install nor a source of the version."""


class Unavailable(HostError):
    """No install and no source of the version asked for; the message says how to provide one."""


@dataclass(frozen=True)
class Installation:
    """An OpenNebula install: ``location`` is its ONE_LOCATION (self-contained), or None (system-wide)."""

    version: str
    location: Path | None

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    def path(self, self_contained: str, system_wide: str) -> Path:
        """A file of the install: ``$ONE_LOCATION/<self_contained>`` or the system-wide path."""
        return self.location / self_contained if self.location else Path(system_wide)


def installation(version: str) -> Installation:
    """The install of ``version`` to run, built once from its source archive if none is installed."""
    done = subprocess.run([str(ENSURE), version], capture_output=True, text=True, check=False)
    reason = done.stderr.strip().splitlines()
    if done.returncode == UNAVAILABLE:
        raise Unavailable(reason[-1] if reason else f"no OpenNebula {version}")
    if done.returncode != 0:
        raise HostError(f"ensure-opennebula {version} failed: {reason[-1] if reason else done.returncode}")
    location = done.stdout.strip()
    return Installation(version, None if location == "/" else Path(location))


def main() -> int:
    """Find or build every tested version (``make opennebula``); a version with no install and no source
    is reported in one line and left to the tests to skip."""
    for version in VERSIONS:
        try:
            found = installation(version)
        except Unavailable as missing:
            print(f"OpenNebula {version}: not available ({missing})")
            continue
        print(f"OpenNebula {version}: {found.location or 'system-wide'}")
    return 0
