"""The OpenNebula simulator: oned and its datastore and transfer driver managers, for tests.

Tests read like OpenNebula operations (``one.image_create(ds, path=...)``, ``one.vm_deploy([image], "h1")``,
``one.vm_migrate(vm, "h2", live=True)``) and drive the real driver scripts exactly as oned would: same command
lines, stdin, environment, transfer files and result mapping (see
``../shared/docs/opennebula-driver-protocol.md``). The state lives in a folder of OpenNebula XML documents
that a small XML-RPC server (``testbed.one.api``) serves to the drivers as oned's API.

It plays only what genuine oned (``testbed.genuine``) cannot be made to do on cue and what the demo and
benchmarks need without oned: deploy, terminate, recover, cold and live migration, save-as, a snapshot of a
powered-off disk, and the driver managers' requests by hand (docs/testing.md says which tests use it), one
module per part of oned it models, wired by ``oned.OneSim``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from testbed.one.conf import OnedConf
    from testbed.one.documents import Datastore, DiskSpec, Image, VirtualMachine
    from testbed.one.failure import OneFailure
    from testbed.one.oned import OneSim
    from testbed.one.runner import LocalRunner

_HOME = {
    "OnedConf": "conf",
    **dict.fromkeys(["Datastore", "DiskSpec", "Image", "VirtualMachine"], "documents"),
    "OneFailure": "failure",
    "OneSim": "oned",
    "LocalRunner": "runner",
}


def __getattr__(name: str) -> Any:
    """Load the simulator on first use: importing ``testbed.one`` for its documents alone stays cheap."""
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)


__all__ = [
    "Datastore",
    "DiskSpec",
    "Image",
    "LocalRunner",
    "OneFailure",
    "OneSim",
    "OnedConf",
    "VirtualMachine",
]
