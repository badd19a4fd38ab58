"""Running a command of the host side (``one-ipfs-host``) on a host: the bundle shipped when the host holds
another version, the command's JSON result read back, a failure raised as HostError with the host's reason."""

from __future__ import annotations

import json
from typing import Any

from one_ipfs.errors import HostError
from one_ipfs.hosts.bundle import STALE_BUNDLE, launcher_argv, ship_bundle
from one_ipfs.hosts.ssh import run_relayed
from one_ipfs.ipfs.rpc import ImportSettings


def host_options(**values: str | int | float | None) -> list[str]:
    """``--name value`` pairs for the host command (``size_mb`` becomes ``--size-mb``); None is left out."""
    argv: list[str] = []
    for name, value in values.items():
        if value is not None:
            argv += [f"--{name.replace('_', '-')}", f"{value:g}" if isinstance(value, float) else str(value)]
    return argv


def import_options(settings: ImportSettings) -> list[str]:
    """How the host's node must cut and hash what it adds, so that its CIDs are the datastore's."""
    return host_options(
        chunker=settings.chunker,
        cid_version=settings.cid_version,
        raw_leaves="true" if settings.raw_leaves else "false",
        hash=settings.hash,
    )


def run_on_host(host: str, command: str, args: list[str], *, timeout: float) -> dict[str, Any]:
    """Run ``one-ipfs-host <command> <args>`` on ``host``; its log lines flow into the driver's log.

    Returns the JSON object the host printed (empty when it printed none); a failure raises
    HostError with the host's own one-line reason.
    """
    remote = [*launcher_argv(), command, *args]
    code, out, reason = run_relayed(host, remote, timeout=timeout)
    if code == STALE_BUNDLE or (code == 2 and "can't open file" in reason):
        ship_bundle(host, timeout=timeout)
        code, out, reason = run_relayed(host, remote, timeout=timeout)
    if code != 0:
        raise HostError(f"{host}: {reason or f'{command} failed with exit code {code}'}")
    text = out.strip()
    if not text:
        return {}
    try:
        result = json.loads(text.splitlines()[-1])
    except json.JSONDecodeError:
        raise HostError(f"{host}: {command} printed something that is not its JSON result") from None
    if not isinstance(result, dict):
        raise HostError(f"{host}: {command} printed something that is not its JSON result")
    return result
