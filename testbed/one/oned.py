"""oned, as far as datastore and transfer drivers can tell: ``OneSim`` wires the managers the simulator models
and answers tests with OpenNebula's commands (``one.vm_deploy`` is ``onevm create`` + ``onevm deploy``).

Calls are synchronous (oned's are not, but a driver cannot tell): each operation returns when oned would have
processed the driver's reply, and raises ``OneFailure`` with the FAILURE info where OpenNebula would report an
error, leaving the objects in the state OpenNebula leaves them (image ERROR, VM PROLOG_FAILURE...).
"""

from __future__ import annotations

import secrets
import shutil
import sys
from pathlib import Path

from one_ipfs.opennebula.install import install_remotes
from testbed.one.api import ApiServer, state_methods
from testbed.one.conf import OnedConf
from testbed.one.datastores import Datastores
from testbed.one.disk_actions import DiskActions
from testbed.one.documents import host_document
from testbed.one.hosts import HostFiles, Hypervisor, SimulatedSystemTM
from testbed.one.images import ImageManager
from testbed.one.lifecycle import SYSTEM_DS_ID, LifeCycle
from testbed.one.managers import DatastoreDriverManager, DriverResult, TransferDriverManager
from testbed.one.pools import Pools, VmRef, oid
from testbed.one.runner import Execution, Runner
from testbed.one.state import StateStore
from testbed.one.transfers import TransferLines, Transfers

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class OneSim:
    """A frontend's oned with one system datastore (0, ``ssh``) and one host object per runner host.

    ``state`` is the folder of the object documents, which the simulator's XML-RPC API serves the drivers
    (``testbed.one.api``) until ``close()``; it must be reachable by the driver user.
    """

    def __init__(self, runner: Runner, *, state: Path, conf: OnedConf | None = None) -> None:
        self.runner = runner
        self.conf = conf or OnedConf()
        self.hostname = runner.frontend_hostname
        self.store = StateStore(state, owner=runner.owner)
        self.exchanges: list[DriverResult] = []
        self.api = ApiServer(state_methods(self.store), f"oneadmin:{secrets.token_hex(16)}")
        self.auth = state / "one_auth"
        self.store.write_file(self.auth, f"{self.api.session}\n".encode(), mode=0o600)
        self.files = HostFiles(runner)
        self.hypervisor = Hypervisor(self.files)
        self.remotes = runner.var_lib_one / "remotes"
        self.driver_remotes = f"{runner.driver_var_lib_one}/remotes"
        for folder in (self.remotes / "datastore", self.remotes / "tm", runner.var_lib_one / "vms"):
            self.files.make_dirs(folder)
        self.datastore_manager = DatastoreDriverManager(
            runner,
            self.remotes,
            self.driver_remotes,
            self.environment,
            ds_mads=self.conf.datastore_mads,
            system_tms=self.conf.system_ds_tms,
            timeout=self.conf.datastore_timeout,
        )
        system_tm = SimulatedSystemTM(self.files, self.driver_remotes, self._run_script)
        self.transfer_manager = TransferDriverManager(
            runner,
            self.remotes,
            self.driver_remotes,
            self.environment,
            simulated={SimulatedSystemTM.NAME: system_tm},
            tm_mads=self.conf.tm_mads,
        )
        self.pools = Pools(self.store)
        self.datastores = Datastores(self.pools, self.conf, self.datastore_manager, self.exchanges)
        self.image_manager = ImageManager(self.pools, self.datastores)
        lines = TransferLines(self.hostname, self.conf.datastore_location)
        self.transfers = Transfers(self.pools, self.files, lines, self.transfer_manager, self.exchanges)
        self.life_cycle = LifeCycle(
            self.pools, self.conf, self.image_manager, self.transfers, self.hypervisor
        )
        self.disk_actions = DiskActions(self.pools, self.datastores, self.image_manager, self.transfers)
        with self.store.locked():
            if self.store.read("datastore", SYSTEM_DS_ID) is None:
                system = {"NAME": "system", "TYPE": "SYSTEM_DS", "TM_MAD": SimulatedSystemTM.NAME}
                self.datastores.allocate(SYSTEM_DS_ID, system)
            for index, host in enumerate(runner.hosts):
                if self.store.read("host", index) is None:
                    self.store.write("host", index, host_document(index, host, []))
        # What tests call, one name per OpenNebula command (genuine oned's ``GenuineOne`` has the same).
        self.image = self.pools.image
        self.datastore = self.pools.datastore
        self.vm = self.pools.vm
        self.images = self.pools.images
        self.datastore_create = self.datastores.create
        self.datastore_monitor = self.datastores.monitor
        self.image_create = self.image_manager.create
        self.image_clone = self.image_manager.clone
        self.image_delete = self.image_manager.delete
        self.image_persistent = self.image_manager.persistent
        self.vm_deploy = self.life_cycle.deploy
        self.vm_terminate = self.life_cycle.terminate
        self.vm_poweroff = self.life_cycle.poweroff
        self.vm_migrate = self.life_cycle.migrate
        self.vm_recover_retry = self.life_cycle.recover_retry
        self.vm_recover_delete = self.life_cycle.recover_delete
        self.disk_saveas = self.disk_actions.saveas
        self.disk_snapshot_create = self.disk_actions.snapshot_create

    def close(self) -> None:
        """Stop serving the API: drivers can reach this oned no more."""
        self.api.close()

    def environment(self) -> dict[str, str]:
        """oned's environment as its driver managers pass it on, with the API's endpoint and session where
        drivers look first (``ONE_XMLRPC``, ``ONE_AUTH``): ``~/.one/one_auth``, where genuine oned's
        oneadmin keeps it, is the bed's genuine frontend's, or the user's own."""
        env = self.runner.base_env()
        env.setdefault("PATH", DEFAULT_PATH)
        env["ONE_XMLRPC"] = self.api.url
        env["ONE_AUTH"] = str(self.auth)
        return env

    def _run_script(self, argv: list[str], stdin: bytes) -> Execution:
        return self.runner.run(argv, env=self.environment(), stdin=stdin, timeout=None)

    def install_drivers(self, python: str | None = None) -> None:
        """``one-ipfs install`` into the frontend's remotes tree (launchers, defaults, host bundle)."""
        install_remotes(self.remotes, python or sys.executable)
        self.files.give(self.remotes)

    def onehost_sync(self) -> None:
        """``onehost sync``: ``rsync -LRaz --delete`` of the remotes tree into every host's /var/tmp/one."""
        for host in self.runner.hosts:
            target = self.runner.host_path(host, self.conf.scripts_remote_dir)
            for entry in list(target.iterdir()) if target.exists() else []:
                self.files.remove(entry)
            self.files.make_dirs(target)
            shutil.copytree(self.remotes, target, symlinks=False, dirs_exist_ok=True)
            self.files.give(target)

    def results(self, action: str | None = None) -> list[DriverResult]:
        """Every driver manager exchange so far (optionally of one action), oldest first."""
        return [r for r in self.exchanges if action is None or r.action == action]

    def transfer_file(self, vm: VmRef, op: str, seq: int | None = None) -> str:
        """The text of a transfer file oned wrote for ``vm`` (``op`` = prolog, epilog, migrate...)."""
        return self.transfers.file(oid(vm), op, seq)
