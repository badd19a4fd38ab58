"""``one-ipfs-host``: the host side, run over ssh. It reads one request (``protocol``) as JSON on stdin, runs
its handler and prints the result as one JSON line on stdout.

Log lines go to stderr as ``INFO: ...``; a failure ends with exactly one plain line on stderr (the
reason OpenNebula shows) and exit status 1.
"""

from __future__ import annotations

import dataclasses
import signal
import sys
import traceback
from collections.abc import Callable
from types import FrameType
from typing import Any, NoReturn

from one_ipfs.defaults import RPC_TIMEOUT
from one_ipfs.errors import HostError, OneIpfsError
from one_ipfs.host import admin, backups, commands, inputs, probe
from one_ipfs.host import protocol as p
from one_ipfs.host.cache import HostCache
from one_ipfs.ipfs.rpc import KuboClient, authorization_from_file

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


def _client(node: p.Node) -> KuboClient:
    auth = node.auth_file and authorization_from_file(node.auth_file, "IPFS_HOST_API_AUTH_FILE")
    return KuboClient(node.api, timeout=RPC_TIMEOUT, auth=auth or None)


def _cache(request: Any) -> HostCache:
    return HostCache(request.cache.folder or inputs.default_cache_dir())


def _backup_add(r: p.BackupAdd) -> p.Held:
    added = backups.add_backup(
        _client(r.node), _cache(r), r.dir, r.token, settings=r.settings, timeout=r.timeout
    )
    return p.Held(**added)


def _backup_release(r: p.BackupRelease) -> p.Done:
    backups.release_backup(_client(r.node), r.token)
    return p.Done()


def _probe(r: p.Probe) -> p.NodeFacts:
    facts = probe.probe(
        r.repo,
        r.api,
        auth_file=r.auth_file,
        auth_setting=r.auth_setting,
        lib=r.lib,
        frontend_bundle=r.frontend_bundle,
    )
    return p.from_fields(p.NodeFacts, facts, r.command)


HANDLERS: dict[type[p.Request[Any]], Callable[[Any], Any]] = {
    p.Fetch: lambda r: commands.fetch(_client(r.node), _cache(r), r),
    p.Prefetch: lambda r: commands.prefetch(_client(r.node), _cache(r), r),
    p.Warm: lambda r: commands.warm(_client(r.node), _cache(r), r),
    p.Save: lambda r: commands.save(_client(r.node), _cache(r), r),
    p.DeleteDisk: lambda r: commands.delete_disk(_client(r.node), _cache(r), r),
    p.DeleteFolder: lambda r: commands.delete_folder(_client(r.node), _cache(r), r),
    p.Release: lambda r: commands.release(_client(r.node), _cache(r), r),
    p.Has: lambda r: commands.has(_client(r.node), r),
    p.SnapshotCreate: commands.snapshot_create,
    p.SnapshotCreateLive: commands.snapshot_create_live,
    p.SnapshotRevert: commands.snapshot_revert,
    p.SnapshotDelete: commands.snapshot_delete,
    p.Resize: commands.resize,
    p.MonitorMarker: commands.monitor_marker,
    p.CacheStatus: lambda r: commands.cache_status(_cache(r)),
    p.CacheEvict: lambda r: commands.cache_evict(_client(r.node), _cache(r), r),
    p.BackupAdd: _backup_add,
    p.BackupRelease: _backup_release,
    p.Probe: _probe,
    p.InitRepo: admin.init_repo,
    p.ConfigureRepo: admin.configure_repo,
    p.RestartDaemon: admin.restart_daemon,
    p.InstallUnit: admin.install_unit,
    p.InitPeer: admin.init_peer,
    p.ConfigurePeer: admin.configure_peer,
}


def handle(request: p.Request[Any]) -> Any:
    """Run the request's handler; the result also lists the VMs awaited here when the command reports them."""
    result = HANDLERS[type(request)](request)
    if request.reports_awaiting:
        result = dataclasses.replace(result, awaiting=tuple(_cache(request).awaiting()))
    return result


def _interrupted(signum: int, frame: FrameType | None) -> NoReturn:
    """ssh going away or a kill must still run the clean-up of the command under way."""
    raise HostError(f"interrupted by signal {signal.Signals(signum).name}")


def main() -> int:
    previous = {signum: signal.signal(signum, _interrupted) for signum in STOP_SIGNALS}
    command = ""
    try:
        request = p.read_request(sys.stdin.read(p.MAX_REQUEST + 1))
        command = request.command
        result = handle(request)
    except OneIpfsError as exc:
        _fail(str(exc) or type(exc).__name__)
        return exc.exit_code
    except Exception as exc:
        for line in traceback.format_exc().splitlines():
            sys.stderr.write(f"ERROR: {line}\n")
        _fail(f"host {command} failed: {type(exc).__name__}: {exc}")
        return 1
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    sys.stdout.write(p.to_json(result) + "\n")
    return 0


def _fail(reason: str) -> None:
    """One line with no control character: the reason may quote a hostile value."""
    line = "".join(char if char.isprintable() else "?" for char in " ".join(reason.split()))
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(main())
