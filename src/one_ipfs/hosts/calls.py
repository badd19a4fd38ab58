"""One host command on one host: its request (``host.protocol``) as JSON on the host side's stdin, the bundle
shipped first when the host holds another version, and its typed result read back; a failure is a HostError
with the host's own one-line reason."""

from __future__ import annotations

from one_ipfs.config import DatastoreConfig
from one_ipfs.errors import HostError, InvalidInput
from one_ipfs.host.protocol import Cache, Node, R, Request, read_result, to_json
from one_ipfs.hosts.bundle import STALE_BUNDLE, launcher_argv, ship_bundle
from one_ipfs.hosts.ssh import run_relayed

LAUNCHER_MISSING = 2
"""python3's exit status when the launcher is not there (a host never synced)."""


def call(host: str, request: Request[R], *, timeout: float) -> R:
    """Run ``request`` on ``host``; its log lines flow into the driver's log."""
    remote = launcher_argv()
    stdin = (to_json(request) + "\n").encode()
    code, out, reason = run_relayed(host, remote, stdin, timeout=timeout)
    if code == STALE_BUNDLE or (code == LAUNCHER_MISSING and "can't open file" in reason):
        ship_bundle(host, timeout=timeout)
        code, out, reason = run_relayed(host, remote, stdin, timeout=timeout)
    if code != 0:
        raise HostError(f"{host}: {reason or f'{request.command} failed with exit code {code}'}")
    lines = out.strip().splitlines()
    try:
        return read_result(request, lines[-1] if lines else "")
    except InvalidInput as exc:
        raise HostError(f"{host}: {request.command} printed no result it should: {exc}") from None


def host_node(config: DatastoreConfig) -> Node:
    """The Kubo node on a datastore's hosts (IPFS_HOST_API and the file with its secret)."""
    return Node(config.host_api, config.host_api_auth_file or None)


def host_cache(config: DatastoreConfig) -> Cache:
    """The host cache of a datastore's hosts, in its place, at most IPFS_HOST_CACHE_MB."""
    return Cache(max_mb=config.host_cache_mb)
