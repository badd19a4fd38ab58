"""The one place that turns an action's outcome into OpenNebula's driver output convention.

On success stdout carries exactly the action's result. On failure OpenNebula 7.x's driver managers show
the user every stderr line *not* prefixed ``ERROR:``/``INFO:``/``WARN:``/``DEBUG:``, glued together with no
separator, so exactly one such plain line is written; everything else is a prefixed log line, flattened
to one line. OpenNebula 6.x shows the whole stderr instead, and oned keeps only the first 100 characters
of a VM's error: so an action's log lines are held until it ends, and a failure's reason comes first.
Nothing here prints the environment: it may hold credentials.
"""

from __future__ import annotations

import re
import sys
import traceback
from collections.abc import Callable, Mapping
from typing import TypeVarTuple

from one_ipfs.errors import NotSupported, OneIpfsError

MAX_LINE = 4000
INTERNAL_ERROR_EXIT = 70  # EX_SOFTWARE: a bug, not a refused request
# The managers' log-line pattern (DriverExecHelper): a plain line matching it would be taken for a log line.
SEVERITIES = ("ERROR", "INFO", "WARN", "DEBUG")
_LOG_LINE = re.compile(rf"(?:{'|'.join(SEVERITIES)}):\s")
_CONTROLS = {code: "?" for code in (*range(0x20), 0x7F, *range(0x80, 0xA0))} | {0x09: " "}
_held: list[str] | None = None
"""The log lines of the running action, written when it ends (None: no action, write at once)."""
Parsed = TypeVarTuple("Parsed")


def log_info(message: str) -> None:
    """An ``INFO:`` line: shown in oned.log, or the VM log for transfer actions."""
    _log("INFO", message)


def log_error(message: str) -> None:
    """An ``ERROR:`` line: logged, but not what the user sees as the failure reason."""
    _log("ERROR", message)


def relay_log(line: str) -> bool:
    """Pass on a log line another process wrote (a host's ``INFO: ...``) with the guards of our own: one
    line, and a message that starts with a number never read as the id of the object to log to (oned
    7.4.0 dereferences the VM of that id unchecked, and crashes when there is none). False for a line
    that is not a log line."""
    severity, colon, message = line.partition(":")
    if not colon or severity not in SEVERITIES or not message.startswith(" "):
        return False
    _log(severity, message.strip())
    return True


def dispatch(
    driver: str,
    actions: Mapping[str, Callable[[*Parsed], str | None]],
    name: str,
    parse: Callable[[], tuple[*Parsed]],
) -> str | None:
    """Run the action ``name`` of a driver's table on what ``parse`` reads of oned's call; an unknown
    name is refused before anything is read."""
    action = actions.get(name)
    if action is None:
        raise NotSupported(f"the ipfs {driver} driver has no action {name[:40]!r}")
    return action(*parse())


def run_action(fn: Callable[[], str | None], action: str = "driver") -> int:
    """Run an action and report its outcome; returns the exit status for the driver manager.

    ``action`` names it in the message of an unexpected error, e.g. ``datastore cp``.
    """
    global _held  # noqa: PLW0603 - one action per driver process
    _held = []
    try:
        result = fn()
    except OneIpfsError as exc:
        reason = str(exc) or type(exc).__name__
        log_error(reason)
        _failure(reason)
        return _exit_code(exc)
    except Exception as exc:
        for line in "".join(traceback.format_exception(exc)).splitlines():
            if line.strip():
                log_error(line)
        _failure(f"Internal error in one-ipfs {action}: {type(exc).__name__}: {exc}")
        return INTERNAL_ERROR_EXIT
    finally:
        held, _held = _held, None
        sys.stderr.write("".join(held))
        sys.stderr.flush()
    if result is not None:
        sys.stdout.write(result.rstrip("\n") + "\n")
        sys.stdout.flush()
    return 0


def _one_line(message: str) -> str:
    """Line breaks become spaces and other control characters ``?``, so no message can forge lines."""
    line = " ".join(message.splitlines()).translate(_CONTROLS).strip()
    return line if len(line) <= MAX_LINE else line[:MAX_LINE] + "..."


def _log(severity: str, message: str) -> None:
    line = _one_line(message)
    if line[:1].isdigit():
        # The managers read a number right after the prefix as the id of the object to log to.
        line = f"one-ipfs: {line}"
    if _held is not None:
        _held.append(f"{severity}: {line}\n")
        return
    sys.stderr.write(f"{severity}: {line}\n")
    sys.stderr.flush()


def _failure(reason: str) -> None:
    """The one plain stderr line, which OpenNebula shows as the reason the action failed."""
    line = _one_line(reason) or "the action failed without a message"
    if _LOG_LINE.match(line):
        line = f"one-ipfs: {line}"
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _exit_code(error: OneIpfsError) -> int:
    """The error's exit status; never 0, which would tell OpenNebula the action succeeded."""
    code = error.exit_code
    return code if 0 < code < 256 else 1
