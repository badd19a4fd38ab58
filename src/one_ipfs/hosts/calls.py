"""One host command on one host: its request (``host.protocol``) as JSON on the host side's stdin, the bundle
shipped first when the host holds another version, and its typed result read back; a failure is a HostError
with the host's own one-line reason (HostUnreachable when ssh failed, PythonMissing when python3 did).

``Probe`` alone runs without the bundle: it is what tells whether a host holds the frontend's bundle
(``one-ipfs doctor``, run before ``install`` as after it), so it must answer on a host that holds none or
another version, and change nothing there (shipping the bundle first would hide the stale bundle doctor
looks for, and before ``install`` there is none to ship). Its handler, ``host/probe.py``, imports only the
standard library at load and is sent as the ``python3 -c`` program itself: the simplest bootstrap, one file
that is the very code the frontend runs in process, and no second launcher to keep on hosts."""

from __future__ import annotations

from pathlib import Path

from one_ipfs.config import DatastoreConfig
from one_ipfs.errors import HostError, HostUnreachable, InvalidInput, PythonMissing
from one_ipfs.host import probe
from one_ipfs.host.protocol import Cache, Node, Probe, R, Request, read_result, to_json
from one_ipfs.hosts.bundle import STALE_BUNDLE, launcher_argv, ship_bundle
from one_ipfs.hosts.ssh import SSH_FAILED, run_relayed

LAUNCHER_MISSING = 2
"""python3's exit status when the launcher is not there (a host never synced)."""
PYTHON_MISSING = 127
"""The shell's exit status when there is no python3 to run."""


def call(host: str, request: Request[R], *, timeout: float) -> R:
    """Run ``request`` on ``host``; its log lines flow into the driver's log."""
    stdin = (to_json(request) + "\n").encode()
    if isinstance(request, Probe):
        code, out, reason = run_relayed(host, probe_argv(), stdin, timeout=timeout)
    else:
        remote = launcher_argv()
        code, out, reason = run_relayed(host, remote, stdin, timeout=timeout)
        if code == STALE_BUNDLE or (code == LAUNCHER_MISSING and "can't open file" in reason):
            ship_bundle(host, timeout=timeout)
            code, out, reason = run_relayed(host, remote, stdin, timeout=timeout)
    if code == SSH_FAILED:
        raise HostUnreachable(f"{host}: {reason}")
    if code == PYTHON_MISSING:
        raise PythonMissing(f"{host}: {reason or 'python3 is missing'}")
    if code != 0:
        raise HostError(f"{host}: {reason or f'{request.command} failed with exit code {code}'}")
    lines = out.strip().splitlines()
    try:
        return read_result(request, lines[-1] if lines else "")
    except InvalidInput as exc:
        raise HostError(f"{host}: {request.command} printed no result it should: {exc}") from None


def probe_argv() -> list[str]:
    """``host/probe.py`` as the program of a bare python3: it needs no host bundle."""
    return ["python3", "-c", Path(probe.__file__).read_text(encoding="utf-8")]


def host_node(config: DatastoreConfig) -> Node:
    """The Kubo node on a datastore's hosts (IPFS_HOST_API and the file with its secret)."""
    return Node(config.host_api, config.host_api_auth_file or None)


def host_cache(config: DatastoreConfig) -> Cache:
    """The host cache of a datastore's hosts, in its place, at most IPFS_HOST_CACHE_MB."""
    return Cache(max_mb=config.host_cache_mb)
