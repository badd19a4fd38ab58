"""``one-ipfs-host <command> [--options]``: the host side of the transfer driver, run over ssh.

Log lines go to stderr as ``INFO: ...``; a failure ends with exactly one plain line on stderr (the
reason OpenNebula shows) and exit status 1; a result is printed as one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from one_ipfs.errors import HostError, InvalidInput, OneIpfsError
from one_ipfs.host import backups, commands, inputs
from one_ipfs.host.cache import HostCache
from one_ipfs.ipfs.rpc import ImportSettings, KuboClient, authorization_from_file

DEFAULT_API = "http://127.0.0.1:5001"
RPC_TIMEOUT = 60.0
TRANSFER_TIMEOUT = "21600"
STALL_TIMEOUT = "120"
HOUSEKEEPING_TIMEOUT = "600"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
CACHE_MAX_MB = "20480"


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are failures like any other: one line, exit status 1."""

    def error(self, message: str) -> NoReturn:
        raise InvalidInput(f"{self.prog}: {message}")


@dataclass(frozen=True)
class Command:
    help: str
    options: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], dict[str, Any] | None]
    reports_awaiting: bool = False
    """The result also lists the VMs whose announced disks have not arrived (``HostCache.awaiting``),
    so that the frontend can check them against oned at every action that touches the cache."""


def _client(args: argparse.Namespace) -> KuboClient:
    auth = args.api_auth_file and authorization_from_file(args.api_auth_file, "IPFS_HOST_API_AUTH_FILE")
    return KuboClient(args.api, timeout=RPC_TIMEOUT, auth=auth or None)


def _cache(args: argparse.Namespace) -> HostCache:
    return HostCache(args.cache_dir or inputs.default_cache_dir())


def _node_options(parser: argparse.ArgumentParser, timeout: str) -> None:
    parser.add_argument(
        "--api", type=inputs.api_address, default=DEFAULT_API, help="this host's Kubo RPC API"
    )
    parser.add_argument(
        "--api-auth-file", type=inputs.secret_file, help="the file with the secret of its API.Authorizations"
    )
    parser.add_argument(
        "--timeout", type=inputs.timeout, default=inputs.timeout(timeout), help="seconds in all"
    )


def _cache_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache-dir", type=inputs.cache_dir, help="default: <root>/datastores/.one-ipfs-cache"
    )
    parser.add_argument("--cache-max-mb", type=inputs.cache_mb, default=inputs.cache_mb(CACHE_MAX_MB))


def _deploy_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cid", type=inputs.cid, required=True)
    parser.add_argument("--disk", type=inputs.disk_path, required=True)
    parser.add_argument("--mode", choices=commands.MODES, default="copy")
    parser.add_argument(
        "--format",
        choices=("raw", "qcow2"),
        help="the format of the content's bytes (default: from its header)",
    )
    parser.add_argument("--vm", type=inputs.identifier)
    parser.add_argument("--stall-timeout", type=inputs.timeout, default=inputs.timeout(STALL_TIMEOUT))
    _node_options(parser, TRANSFER_TIMEOUT)
    _cache_options(parser)


def _fetch_options(parser: argparse.ArgumentParser) -> None:
    _deploy_options(parser)
    parser.add_argument(
        "--disk-format",
        choices=("raw", "qcow2"),
        help="the disk's DRIVER, which the disk file must be (default: the content's format; qcow2 overlays)",
    )
    parser.add_argument("--size-mb", type=inputs.size_mb, default=0, help="grow the disk to this size")
    parser.add_argument(
        "--monitor-tm",
        type=inputs.tm_name,
        help="also mark the system datastore for host monitoring by this transfer driver's monitor_ds",
    )


def _fetch(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.monitor_tm:
        commands.monitor_marker(args.disk.parent, args.monitor_tm)
    return commands.fetch(
        _client(args),
        _cache(args),
        args.cid,
        args.disk,
        size_mb=args.size_mb,
        mode=args.mode,
        image_format=args.format,
        disk_format=args.disk_format,
        vm=args.vm,
        timeout=args.timeout,
        stall_timeout=args.stall_timeout,
        cache_max_mb=args.cache_max_mb,
    )


def _prefetch(args: argparse.Namespace) -> dict[str, Any] | None:
    return commands.prefetch(
        _client(args),
        _cache(args),
        args.cid,
        args.disk,
        mode=args.mode,
        image_format=args.format,
        vm=args.vm,
        timeout=args.timeout,
        stall_timeout=args.stall_timeout,
        cache_max_mb=args.cache_max_mb,
    )


def _warm_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cid", type=inputs.cid, required=True)
    parser.add_argument("--stall-timeout", type=inputs.timeout, default=inputs.timeout(STALL_TIMEOUT))
    _node_options(parser, TRANSFER_TIMEOUT)
    _cache_options(parser)


def _warm(args: argparse.Namespace) -> dict[str, Any] | None:
    return commands.warm(
        _client(args),
        _cache(args),
        args.cid,
        timeout=args.timeout,
        stall_timeout=args.stall_timeout,
        cache_max_mb=args.cache_max_mb,
    )


def _import_options(parser: argparse.ArgumentParser) -> None:
    defaults = ImportSettings()
    parser.add_argument("--chunker", type=inputs.chunker, default=defaults.chunker)
    parser.add_argument("--cid-version", type=int, choices=(0, 1), default=defaults.cid_version)
    parser.add_argument("--raw-leaves", type=inputs.boolean, default=defaults.raw_leaves)
    parser.add_argument("--hash", type=inputs.hash_name, default=defaults.hash)


def _settings(args: argparse.Namespace) -> ImportSettings:
    return ImportSettings(args.chunker, args.cid_version, args.raw_leaves, args.hash)


def _save_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--disk", type=inputs.disk_path, required=True, help="a disk or disk.<n>.snap/<id>")
    parser.add_argument("--format", choices=("raw", "qcow2"), required=True, help="the image's FORMAT")
    parser.add_argument(
        "--disk-format",
        choices=("raw", "qcow2"),
        help="the disk's DRIVER, what the file is where no deploy here recorded it (a live migration's)",
    )
    _import_options(parser)
    parser.add_argument("--vm", type=inputs.identifier)
    _node_options(parser, TRANSFER_TIMEOUT)
    _cache_options(parser)


def _save(args: argparse.Namespace) -> dict[str, Any] | None:
    return commands.save(
        _client(args),
        _cache(args),
        args.disk,
        image_format=args.format,
        disk_format=args.disk_format,
        settings=_settings(args),
        vm=args.vm,
        timeout=args.timeout,
    )


def _backup_add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", type=inputs.vm_folder, required=True, help="the VM folder holding backup/")
    parser.add_argument("--token", type=backups.token, required=True, help="the frontend's name for it")
    _import_options(parser)
    _node_options(parser, TRANSFER_TIMEOUT)
    parser.add_argument("--cache-dir", type=inputs.cache_dir)


def _backup_add(args: argparse.Namespace) -> dict[str, Any] | None:
    return backups.add_backup(
        _client(args), _cache(args), args.dir, args.token, settings=_settings(args), timeout=args.timeout
    )


def _backup_release_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--token", type=backups.token, required=True)
    _node_options(parser, HOUSEKEEPING_TIMEOUT)


def _backup_release(args: argparse.Namespace) -> dict[str, Any] | None:
    backups.release_backup(_client(args), args.token)
    return None


def _delete_options(parser: argparse.ArgumentParser) -> None:
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--disk", type=inputs.disk_path)
    target.add_argument("--dir", type=inputs.vm_folder, help="a VM folder: <datastore id>/<vm id>")
    parser.add_argument("--vm", type=inputs.identifier)
    _node_options(parser, HOUSEKEEPING_TIMEOUT)
    _cache_options(parser)


def _delete(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.dir is not None:
        commands.delete_folder(
            _client(args), _cache(args), args.dir, timeout=args.timeout, cache_max_mb=args.cache_max_mb
        )
    else:
        commands.delete_disk(
            _client(args),
            _cache(args),
            args.disk,
            vm=args.vm,
            timeout=args.timeout,
            cache_max_mb=args.cache_max_mb,
        )
    return None


def _release_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vm", type=inputs.identifier, required=True)
    _node_options(parser, HOUSEKEEPING_TIMEOUT)
    _cache_options(parser)


def _release(args: argparse.Namespace) -> dict[str, Any] | None:
    commands.release(
        _client(args), _cache(args), args.vm, timeout=args.timeout, cache_max_mb=args.cache_max_mb
    )
    return None


def _has_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cid", type=inputs.cid, required=True)
    _node_options(parser, "30")


def _has(args: argparse.Namespace) -> dict[str, Any] | None:
    return commands.has(_client(args), args.cid, timeout=args.timeout)


def _snapshot_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--disk", type=inputs.disk_path, required=True)
    parser.add_argument("--snap-id", type=inputs.identifier, required=True)


def _snapshot(action: Callable[[Path, int], None]) -> Callable[[argparse.Namespace], dict[str, Any] | None]:
    def run(args: argparse.Namespace) -> dict[str, Any] | None:
        action(args.disk, args.snap_id)
        return None

    return run


def _live_snapshot_options(parser: argparse.ArgumentParser) -> None:
    _snapshot_options(parser)
    parser.add_argument("--domain", type=inputs.domain_name, required=True, help="the VM's DEPLOY_ID")
    parser.add_argument("--libvirt-uri", type=inputs.libvirt_uri, required=True, help="kvmrc's LIBVIRT_URI")
    parser.add_argument("--timeout", type=inputs.timeout, default=inputs.timeout(TRANSFER_TIMEOUT))


def _live_snapshot(args: argparse.Namespace) -> dict[str, Any] | None:
    commands.snapshot_create_live(
        args.disk, args.snap_id, args.domain, args.libvirt_uri, timeout=args.timeout
    )
    return None


def _resize_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--disk", type=inputs.disk_path, required=True)
    parser.add_argument("--size-mb", type=inputs.positive_size_mb, required=True)
    parser.add_argument("--format", choices=("raw", "qcow2"), help="for disks this driver did not deploy")
    parser.add_argument("--timeout", type=inputs.timeout, default=inputs.timeout(HOUSEKEEPING_TIMEOUT))


def _resize(args: argparse.Namespace) -> dict[str, Any] | None:
    commands.resize(args.disk, args.size_mb, image_format=args.format, timeout=args.timeout)
    return None


def _marker_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", type=inputs.vm_folder, required=True, help="the VM folder")
    parser.add_argument(
        "--tm", type=inputs.tm_name, default="ssh", help="whose monitor_ds reports the datastore"
    )


def _marker(args: argparse.Namespace) -> dict[str, Any] | None:
    commands.monitor_marker(args.dir, args.tm)
    return None


def _status_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache-dir", type=inputs.cache_dir)


def _status(args: argparse.Namespace) -> dict[str, Any] | None:
    return commands.cache_status(_cache(args))


def _evict_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keep-mb", type=inputs.cache_mb, required=True)
    parser.add_argument("--cache-dir", type=inputs.cache_dir)
    _node_options(parser, HOUSEKEEPING_TIMEOUT)


def _evict(args: argparse.Namespace) -> dict[str, Any] | None:
    return commands.cache_evict(_client(args), _cache(args), args.keep_mb, timeout=args.timeout)


COMMANDS: dict[str, Command] = {
    "fetch": Command("deploy a disk from IPFS (TM clone/ln)", _fetch_options, _fetch, True),
    "prefetch": Command("hold a disk's content before the disk moves here", _deploy_options, _prefetch, True),
    "warm": Command("hold an image's content in the host cache before deploys need it", _warm_options, _warm),
    "save": Command("add a disk to this host's node (TM mvds/cpds)", _save_options, _save, True),
    "delete": Command("remove a disk or a VM folder (TM delete)", _delete_options, _delete, True),
    "release": Command("drop the cache references of a VM that left", _release_options, _release),
    "has": Command("how much of a CID this host's node holds", _has_options, _has),
    "snapshot-create": Command(
        "copy a disk to disk.<n>.snap/<id>", _snapshot_options, _snapshot(commands.snapshot_create)
    ),
    "snapshot-create-live": Command(
        "have the hypervisor copy a running VM's disk to disk.<n>.snap/<id>",
        _live_snapshot_options,
        _live_snapshot,
    ),
    "snapshot-revert": Command(
        "copy a snapshot back over its disk", _snapshot_options, _snapshot(commands.snapshot_revert)
    ),
    "snapshot-delete": Command(
        "remove a disk snapshot", _snapshot_options, _snapshot(commands.snapshot_delete)
    ),
    "resize": Command("grow a disk", _resize_options, _resize),
    "monitor-marker": Command("enable host monitoring of a system datastore", _marker_options, _marker),
    "cache-status": Command("list the host cache", _status_options, _status),
    "cache-evict": Command("trim the host cache now", _evict_options, _evict),
    "backup-add": Command(
        "add a VM folder's backup files as one IPFS directory (backup datastore)",
        _backup_add_options,
        _backup_add,
    ),
    "backup-release": Command(
        "drop this host's pin of a backup the frontend holds", _backup_release_options, _backup_release
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="one-ipfs-host", description=__doc__, allow_abbrev=False)
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, command in COMMANDS.items():
        command.options(
            subparsers.add_parser(name, help=command.help, description=command.help, allow_abbrev=False)
        )
    return parser


def _interrupted(signum: int, frame: FrameType | None) -> NoReturn:
    """ssh going away or a kill must still run the clean-up of the command under way."""
    raise HostError(f"interrupted by signal {signal.Signals(signum).name}")


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    name = words[0] if words else ""
    previous = {signum: signal.signal(signum, _interrupted) for signum in STOP_SIGNALS}
    try:
        args = build_parser().parse_args(words)
        command = COMMANDS[args.command]
        result = command.run(args)
        if command.reports_awaiting:
            result = {**(result or {}), "awaiting": _cache(args).awaiting()}
    except OneIpfsError as exc:
        _fail(str(exc) or type(exc).__name__)
        return exc.exit_code
    except Exception as exc:
        for line in traceback.format_exc().splitlines():
            sys.stderr.write(f"ERROR: {line}\n")
        _fail(f"host {name[:40]} failed: {type(exc).__name__}: {exc}")
        return 1
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if result is not None:
        sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
    return 0


def _fail(reason: str) -> None:
    """One line with no control character: the reason may quote a hostile argument."""
    line = "".join(char if char.isprintable() else "?" for char in " ".join(reason.split()))
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(main())
