"""Genuine OpenNebula on the test bed: oned built from OpenNebula's source, driving the drivers over the bed.

``start_cloud`` finds or builds an install (``installation``), brings up a bed for it, starts a
``Frontend`` (oned, the CLI, the drivers installed by ``one-ipfs install``, the bed's hosts added) and hands
back a ``GenuineOne``, which tests and the demo drive as an admin would, one OpenNebula command at a time.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from testbed.bed import Bed
from testbed.genuine.cloud import GenuineOne
from testbed.genuine.frontend import Frontend
from testbed.genuine.installation import VERSIONS, Installation, Unavailable, installation
from testbed.one import OneSim

Cloud = GenuineOne | OneSim
"""What runs the drivers: genuine oned, or the simulator where oned cannot go (same calls, same documents)."""


def start_cloud(take_bed: Callable[[], Bed], version: str, python: str = sys.executable) -> GenuineOne:
    """Genuine oned ``version`` on the bed ``take_bed`` brings up, once the install is there: a version
    that is neither installed nor buildable raises ``Unavailable`` before any bed is touched."""
    found = installation(version)
    frontend = Frontend(take_bed(), found, python)
    try:
        frontend.start()
    except BaseException:
        frontend.stop()
        raise
    return GenuineOne(frontend)


__all__ = [
    "VERSIONS",
    "Cloud",
    "Frontend",
    "GenuineOne",
    "Installation",
    "Unavailable",
    "installation",
    "start_cloud",
]
