"""The OpenNebula simulator: oned and its datastore and transfer driver managers, for tests.

Tests read like OpenNebula operations (``one.image_create(ds, path=...)``, ``one.vm_deploy([image], "h1")``,
``one.vm_migrate(vm, "h2", live=True)``) and drive the real driver scripts exactly as oned would: same
command lines, stdin, environment, transfer files and result mapping (see
``/docs/opennebula-driver-protocol.md``). The state lives in a folder of OpenNebula XML documents that the
``onevm/oneimage/onedatastore/onehost`` stand-ins serve to the drivers.
"""

from testbed.one.conf import OnedConf
from testbed.one.documents import Datastore, Disk, History, Host, Image, VirtualMachine
from testbed.one.failure import OneFailure
from testbed.one.managers import DriverResult, LogLine
from testbed.one.oned import DiskSpec, OneSim, Volatile
from testbed.one.runner import Execution, LocalRunner, Runner

__all__ = [
    "Datastore",
    "Disk",
    "DiskSpec",
    "DriverResult",
    "Execution",
    "History",
    "Host",
    "Image",
    "LocalRunner",
    "LogLine",
    "OneFailure",
    "OneSim",
    "OnedConf",
    "Runner",
    "VirtualMachine",
    "Volatile",
]
