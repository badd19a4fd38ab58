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
from one_ipfs.host import backups, commands, inputs
from one_ipfs.host import protocol as p
from one_ipfs.host.cache import HostCache
from one_ipfs.ipfs.rpc import KuboClient, authorization_from_file

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


def _client(node: p.Node) -> KuboClient:
    auth = node.auth_file and authorization_from_file(node.auth_file, "IPFS_HOST_API_AUTH_FILE")
    return KuboClient(node.api, timeout=RPC_TIMEOUT, auth=auth or None)


def _cache(request: Any) -> HostCache:
    return HostCache(request.cache.folder or inputs.default_cache_dir())


def _fetch(r: p.Fetch) -> p.Deployed:
    if r.monitor_tm:
        commands.monitor_marker(r.disk.parent, r.monitor_tm)
    deployed = commands.fetch(
        _client(r.node),
        _cache(r),
        r.cid,
        r.disk,
        size_mb=r.size_mb,
        mode=r.mode,
        image_format=r.format,
        disk_format=r.disk_format,
        vm=r.vm,
        timeout=r.timeout,
        stall_timeout=r.stall_timeout,
        cache_max_mb=r.cache.max_mb,
    )
    return p.Deployed(**deployed)


def _prefetch(r: p.Prefetch) -> p.Stored:
    held = commands.prefetch(
        _client(r.node),
        _cache(r),
        r.cid,
        r.disk,
        mode=r.mode,
        image_format=r.format,
        vm=r.vm,
        timeout=r.timeout,
        stall_timeout=r.stall_timeout,
        cache_max_mb=r.cache.max_mb,
    )
    return p.Stored(**held)


def _warm(r: p.Warm) -> p.Held:
    held = commands.warm(
        _client(r.node),
        _cache(r),
        r.cid,
        timeout=r.timeout,
        stall_timeout=r.stall_timeout,
        cache_max_mb=r.cache.max_mb,
    )
    return p.Held(**held)


def _save(r: p.Save) -> p.Stored:
    added = commands.save(
        _client(r.node),
        _cache(r),
        r.disk,
        image_format=r.format,
        disk_format=r.disk_format,
        settings=r.settings,
        vm=r.vm,
        timeout=r.timeout,
    )
    return p.Stored(**added)


def _delete_disk(r: p.DeleteDisk) -> p.Removed:
    commands.delete_disk(
        _client(r.node), _cache(r), r.disk, vm=r.vm, timeout=r.timeout, cache_max_mb=r.cache.max_mb
    )
    return p.Removed()


def _delete_folder(r: p.DeleteFolder) -> p.Removed:
    commands.delete_folder(_client(r.node), _cache(r), r.dir, timeout=r.timeout, cache_max_mb=r.cache.max_mb)
    return p.Removed()


def _release(r: p.Release) -> p.Done:
    commands.release(_client(r.node), _cache(r), r.vm, timeout=r.timeout, cache_max_mb=r.cache.max_mb)
    return p.Done()


def _has(r: p.Has) -> p.Presence:
    return p.Presence(**commands.has(_client(r.node), r.cid, timeout=r.timeout))


def _snapshot(action: Callable[[Any, int], None]) -> Callable[[p.SnapshotCreate], p.Done]:
    def run(r: p.SnapshotCreate) -> p.Done:
        action(r.disk, r.snap_id)
        return p.Done()

    return run


def _live_snapshot(r: p.SnapshotCreateLive) -> p.Done:
    commands.snapshot_create_live(r.disk, r.snap_id, r.domain, r.libvirt_uri, timeout=r.timeout)
    return p.Done()


def _resize(r: p.Resize) -> p.Done:
    commands.resize(r.disk, r.size_mb, image_format=r.format, timeout=r.timeout)
    return p.Done()


def _marker(r: p.MonitorMarker) -> p.Done:
    commands.monitor_marker(r.dir, r.tm)
    return p.Done()


def _status(r: p.CacheStatus) -> p.CacheListing:
    return p.CacheListing(**commands.cache_status(_cache(r)))


def _evict(r: p.CacheEvict) -> p.Evicted:
    return p.Evicted(**commands.cache_evict(_client(r.node), _cache(r), r.keep_mb, timeout=r.timeout))


def _backup_add(r: p.BackupAdd) -> p.Held:
    added = backups.add_backup(
        _client(r.node), _cache(r), r.dir, r.token, settings=r.settings, timeout=r.timeout
    )
    return p.Held(**added)


def _backup_release(r: p.BackupRelease) -> p.Done:
    backups.release_backup(_client(r.node), r.token)
    return p.Done()


HANDLERS: dict[type[p.Request[Any]], Callable[[Any], Any]] = {
    p.Fetch: _fetch,
    p.Prefetch: _prefetch,
    p.Warm: _warm,
    p.Save: _save,
    p.DeleteDisk: _delete_disk,
    p.DeleteFolder: _delete_folder,
    p.Release: _release,
    p.Has: _has,
    p.SnapshotCreate: _snapshot(commands.snapshot_create),
    p.SnapshotCreateLive: _live_snapshot,
    p.SnapshotRevert: _snapshot(commands.snapshot_revert),
    p.SnapshotDelete: _snapshot(commands.snapshot_delete),
    p.Resize: _resize,
    p.MonitorMarker: _marker,
    p.CacheStatus: _status,
    p.CacheEvict: _evict,
    p.BackupAdd: _backup_add,
    p.BackupRelease: _backup_release,
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
