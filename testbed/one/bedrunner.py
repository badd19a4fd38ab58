"""The simulator on the test bed: drivers run as oneadmin in the frontend's mount namespace.

Scripts start through ``Bed.frontend_command`` (nsenter into the frontend's mount namespace, then setpriv
to oneadmin, cwd /var/lib/one), so they see /var/lib/one as the bed's frontend folder and reach hosts
with oneadmin's ssh configuration, exactly as under oned. Host folders are reached through their
root-namespace paths (``Host.var_lib_one``/``var_tmp_one``); files the simulator puts there are given
to oneadmin. One difference from oned is documented here rather than hidden: on a ``-w`` timeout the
script itself is killed (``subprocess.run``), not its whole process group.
"""

from __future__ import annotations

import pwd
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path

from testbed.bed import Bed
from testbed.one.runner import ONE_TMP, ONE_VAR, Execution, map_path
from testbed.system import ONEADMIN


class BedRunner:
    """A ``Runner`` over a running ``Bed``; the frontend answers to this machine's hostname, as oned's
    default HOSTNAME does."""

    def __init__(self, bed: Bed, frontend_hostname: str | None = None) -> None:
        self.bed = bed
        account = pwd.getpwnam(ONEADMIN)
        self.owner: tuple[int, int] | None = (account.pw_uid, account.pw_gid)
        self.frontend_hostname = frontend_hostname or socket.gethostname()
        self.var_lib_one = bed.root / "frontend" / "var-lib-one"
        self.driver_var_lib_one = ONE_VAR
        self.hosts = tuple(host.name for host in bed.hosts)

    def base_env(self) -> dict[str, str]:
        """Empty: ``frontend_command`` starts from oneadmin's login-like environment."""
        return {}

    def run(
        self, argv: list[str], *, env: Mapping[str, str], stdin: bytes, timeout: float | None
    ) -> Execution:
        try:
            done = self.bed.frontend_command(argv, env=env, input=stdin, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            return Execution(255, exc.stdout or b"", exc.stderr or b"", timed_out=True)
        code = done.returncode if done.returncode >= 0 else 255
        return Execution(code, done.stdout, done.stderr)

    def host_path(self, host: str, path: str) -> Path:
        """A host sees its own /var/lib/one and /var/tmp/one, and this machine's files elsewhere (where an
        admin may put DATASTORE_LOCATION)."""
        if host == self.frontend_hostname:
            mapped = map_path(self.var_lib_one, ONE_VAR, path)
        else:
            node = self.bed.host(host)
            mapped = map_path(node.var_lib_one, ONE_VAR, path) or map_path(node.var_tmp_one, ONE_TMP, path)
            mapped = mapped or Path(path)
        if mapped is None:
            raise KeyError(f"{path} on {host} is outside {ONE_VAR}")
        return mapped
