"""oned's datastore and transfer driver managers (``one_datastore.rb``, ``one_tm.rb``), line for line.

What a driver script experiences, and what oned reads back, is decided here: the command line, the
stdin, the process group and timeout, and the mapping of exit code and stderr to ``SUCCESS``/``FAILURE``
info and ``LOG`` lines (``DriverExecHelper#get_info_from_execution`` and ``GenericCommand#run`` of
OpenNebula master, see ``../shared/docs/opennebula-driver-protocol.md`` §2.a, §2.b, §3). Each call returns a
``DriverResult`` carrying both the decoded outcome and the exact protocol lines, so tests can assert on
either.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from testbed.one.documents import parse_xml, text
from testbed.one.runner import Execution, Runner

SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
DEFAULT_SYSTEM_DS_TMS = ("shared", "ssh", "ceph")
_STRIP = " \t\n\v\f\r\0"
_LOG_LINE = re.compile(r"^(ERROR|DEBUG|INFO):(.*)$")
_INFO_LINE = re.compile(r"^(ERROR|INFO|WARN|DEBUG):\s+(\d+)?\s*(.*)$")
_SEVERITY = {"ERROR": "E", "INFO": "I", "WARN": "W", "DEBUG": "D"}
_SHELL_SAFE = re.compile(r"([^A-Za-z0-9_\-.,:+/@\n])")


@dataclass(frozen=True)
class LogLine:
    severity: str
    id: int
    text: str


@dataclass(frozen=True)
class DriverResult:
    """One action through a driver manager.

    ``info`` is what oned reads as the reply's info (the rest of the first reply line); ``wire`` holds
    every line the manager wrote to oned (LOG lines, then the reply) and ``request`` the line oned sent.
    ``steps`` are the commands of a TRANSFER (or the TM step of a VMM action), in order, up to the
    first failure; their own reply lines are what ``do_transfer_action`` returned, not sent to oned.
    """

    action: str
    id: int
    success: bool
    info: str
    logs: tuple[LogLine, ...] = ()
    wire: tuple[str, ...] = ()
    request: str = ""
    command: str = ""
    exit_code: int | None = None
    stdout: bytes = field(default=b"", repr=False)
    stderr: bytes = field(default=b"", repr=False)
    steps: tuple[DriverResult, ...] = ()


def shell_escape(word: str) -> str:
    """Ruby's ``Shellwords.escape``: how ``one_tm`` quotes each argument of a transfer command."""
    if not word:
        return "''"
    return _SHELL_SAFE.sub(r"\\\1", word).replace("\n", "'\n'")


def _strip(value: str) -> str:
    return value.strip(_STRIP)


def _each_line(value: str) -> list[str]:
    """Ruby's ``String#each_line``: split after every newline, no empty tail."""
    parts = value.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _log(oid: int, message: str) -> list[LogLine]:
    """``DriverExecHelper#log``: every line of ``message``, prefixed ones with their severity."""
    result = []
    for line in _each_line(_strip(message)):
        match = _LOG_LINE.match(line)
        if match:
            result.append(LogLine(_SEVERITY[match.group(1)], oid, _strip(match.group(2))))
        else:
            result.append(LogLine("I", oid, _strip(line)))
    return result


def _reply_lines(action: str, result: str, oid: int, info: str) -> list[str]:
    """``send_message`` puts ``"ACTION RESULT ID INFO"``; a multi-line info becomes several lines."""
    message = f"{action} {result} {oid} {info}"
    return _each_line(message if message.endswith("\n") else message + "\n")


def interpret(
    action: str, oid: int, command: str, execution: Execution, encode64: bool = False
) -> DriverResult:
    """``GenericCommand#run`` + ``get_info_from_execution`` (+ base64 for MONITOR) + ``send_message``."""
    logs: list[LogLine] = []
    stderr = execution.stderr.decode(errors="replace")
    stdout = execution.stdout.decode(errors="replace")
    code = execution.returncode
    if execution.timed_out or execution.internal_error:
        message = (
            f"Timeout executing {command}"
            if execution.timed_out
            else f"Internal error {execution.internal_error}"
        )
        logs.extend(_log(oid, message))
        stderr, stdout, code = message, "", 255
    elif code != 0:
        logs.extend(_log(oid, f"Command execution failed (exit code: {code}): {command}"))
        logs.extend(_log(oid, stderr))
    plain = ""
    for raw in _each_line(stderr):
        line = _strip(raw)
        match = _INFO_LINE.match(line)
        if not match:
            plain += line
            continue
        log_id = int(match.group(2)) if match.group(2) else -1
        logs.append(LogLine(_SEVERITY[match.group(1)], log_id, _strip(match.group(3))))
    success = code == 0
    info = stdout if success else _strip(plain.replace("\n", " "))
    if not info:
        info = "-"
    if encode64:
        info = base64.b64encode(info.encode()).decode()
    return _finish(action, oid, success, info, logs, command=command, code=code, execution=execution)


def _finish(
    action: str,
    oid: int,
    success: bool,
    info: str,
    logs: list[LogLine],
    *,
    command: str = "",
    code: int | None = None,
    execution: Execution | None = None,
) -> DriverResult:
    reply = _reply_lines(action, SUCCESS if success else FAILURE, oid, info)
    first = reply[0].rstrip("\n").split(" ", 3)
    return DriverResult(
        action=action,
        id=oid,
        success=success,
        info=first[3].lstrip() if len(first) > 3 else "",
        logs=tuple(logs),
        wire=tuple(f"LOG {log.severity} {log.id} {log.text}" for log in logs)
        + tuple(line.rstrip("\n") for line in reply),
        command=command,
        exit_code=code,
        stdout=execution.stdout if execution else b"",
        stderr=execution.stderr if execution else b"",
    )


def refused(action: str, oid: int, info: str, request: str = "") -> DriverResult:
    """A reply the manager sends without running anything (driver not enabled, no such file...)."""
    result = _finish(action, oid, False, info, [])
    return DriverResult(**{**result.__dict__, "request": request})


def _with_request(result: DriverResult, request: str) -> DriverResult:
    return DriverResult(**{**result.__dict__, "request": request})


def _script_problem(path: Path) -> str:
    """The ``Errno`` text Ruby's spawn would raise for a script it cannot execute ('' if runnable)."""
    if not path.exists():
        return "No such file or directory"
    if not os.access(path, os.X_OK):
        return "Permission denied"
    return ""


class Environment(Protocol):
    def __call__(self) -> Mapping[str, str]: ...


class DatastoreDriverManager:
    """``one_datastore.rb``, options ``-d`` (``ds_mads``), ``-s`` (``system_tms``), ``-w`` (``timeout``).

    ``remotes`` is the frontend's remotes tree as this process reaches it, ``driver_remotes`` the same
    tree as the scripts see it (their command lines and argv[0]).
    """

    def __init__(
        self,
        runner: Runner,
        remotes: Path,
        driver_remotes: str,
        environment: Environment,
        *,
        ds_mads: tuple[str, ...] | None = None,
        system_tms: tuple[str, ...] = DEFAULT_SYSTEM_DS_TMS,
        timeout: float | None = None,
    ) -> None:
        self.runner = runner
        self.remotes = remotes
        self.driver_remotes = driver_remotes
        self.environment = environment
        self.ds_mads = ds_mads
        self.system_tms = system_tms
        self.timeout = timeout

    def enabled(self) -> tuple[str, ...]:
        if self.ds_mads is not None:
            return self.ds_mads
        folder = self.remotes / "datastore"
        return tuple(sorted(p.name for p in folder.iterdir() if p.is_dir())) if folder.is_dir() else ()

    def request(self, action: str, oid: int, payload: str, convention: str = "current") -> DriverResult:
        """Handle ``<ACTION>  <oid> <payload>`` (payload = base64 DS_DRIVER_ACTION_DATA, one line)."""
        request = f"{action}  {oid} {payload}"
        document = parse_xml(base64.b64decode(payload))
        ds_mad = text(document, "DATASTORE/DS_MAD")
        system_tm = text(document, "DATASTORE/TM_MAD") if text(document, "DATASTORE/TYPE") == "1" else ""
        encode64 = action == "MONITOR"
        if encode64 and system_tm:
            if system_tm not in self.system_tms:
                return refused(action, oid, f"System datastore driver '{system_tm}' not available", request)
            relative = f"tm/{system_tm}/monitor"
        else:
            if ds_mad not in self.enabled():
                return refused(action, oid, f"Datastore driver '{ds_mad}' not available", request)
            relative = f"datastore/{ds_mad}/{action.lower()}"
        script = f"{self.driver_remotes}/{relative}"
        if convention == "pre-6.8":
            argv, stdin = [script, payload, str(oid)], b""
        else:
            argv, stdin = [script, str(oid)], payload.encode()
        problem = _script_problem(self.remotes / relative)
        if problem:
            execution = Execution(255, b"", b"", internal_error=f"{problem} - {script}")
        else:
            execution = self.runner.run(argv, env=self.environment(), stdin=stdin, timeout=self.timeout)
        return _with_request(interpret(action, oid, " ".join(argv), execution, encode64), request)


SimulatedTM = Callable[[str, str, list[str], bytes, int], Execution]


class TransferDriverManager:
    """``one_tm.rb``: TRANSFER files line by line, and single commands for the VMM driver's TM steps.

    ``tm_mads`` is ``-d`` (None: every folder under ``remotes/tm`` plus the simulated TMs). Lines whose
    TM is in ``simulated`` (the system datastore's ssh/shared) are run by that callable instead of a
    script, since the test bed carries no OpenNebula scripts of its own.
    """

    def __init__(
        self,
        runner: Runner,
        remotes: Path,
        driver_remotes: str,
        environment: Environment,
        *,
        simulated: Mapping[str, SimulatedTM],
        tm_mads: tuple[str, ...] | None = None,
    ) -> None:
        self.runner = runner
        self.remotes = remotes
        self.driver_remotes = driver_remotes
        self.environment = environment
        self.simulated = simulated
        self.tm_mads = tm_mads

    def enabled(self) -> tuple[str, ...]:
        if self.tm_mads is not None:
            return self.tm_mads
        folder = self.remotes / "tm"
        found = {p.name for p in folder.iterdir() if p.is_dir()} if folder.is_dir() else set()
        return tuple(sorted(found | set(self.simulated)))

    def transfer(self, vmid: int, transfer_file: Path, driver_path: str) -> DriverResult:
        """``TRANSFER  <vmid> <file>``: run each command, stop at the first failure."""
        request = f"TRANSFER  {vmid} {driver_path}"
        if not transfer_file.exists():
            return refused("TRANSFER", vmid, f"Transfer file '{driver_path}' does not exist", request)
        steps: list[DriverResult] = []
        for line in transfer_file.read_text(encoding="utf-8").splitlines():
            if re.match(r"^\s*#", line) or re.match(r"^\s*$", line):
                continue
            step = self.command(vmid, line.split())
            steps.append(step)
            if not step.success:
                break
        logs = [log for step in steps for log in step.logs]
        failed = [step for step in steps if not step.success]
        final = _finish("TRANSFER", vmid, not failed, failed[0].info if failed else "-", logs)
        return DriverResult(**{**final.__dict__, "request": request, "steps": tuple(steps)})

    def command(self, vmid: int, words: list[str], stdin: bytes | None = None) -> DriverResult:
        """``do_transfer_action``: one command (``ACTION tm args...``), also used for VMM-driven steps."""
        action = words[0].lower() if words else ""
        tm = words[1] if len(words) > 1 else ""
        args = words[2:]
        label = words[0] if words else ""
        if tm not in self.enabled():
            return refused(label, vmid, f"Transfer Driver '{tm}' not available")
        script, local = self._script(tm, action)
        if not script:
            return refused(label, vmid, local)
        command = " ".join([script, *(shell_escape(arg) for arg in args)])
        problem = "" if tm in self.simulated else _script_problem(Path(local))
        if tm in self.simulated:
            execution = self.simulated[tm](tm, action, args, stdin or b"", vmid)
        elif problem:
            execution = Execution(255, b"", b"", internal_error=f"{problem} - {script}")
        else:
            execution = self.runner.run(
                [script, *args], env=self.environment(), stdin=stdin or b"", timeout=None
            )
        return interpret(label, vmid, command, execution)

    def _script(self, tm: str, action: str) -> tuple[str, str]:
        """(driver-view path, local path) with one_tm's fall back from ``clone.ssh`` to ``clone``;
        ("", reason) when neither exists."""
        path = f"{self.driver_remotes}/tm/{tm}/{action}"
        local = self.remotes / "tm" / tm / action
        if tm in self.simulated or local.exists():
            return path, str(local)
        if "." not in action:
            return "", f"Driver path '{path}' does not exists"
        base = action.rsplit(".", 1)[0]
        shortened = f"{self.driver_remotes}/tm/{tm}/{base}"
        local = self.remotes / "tm" / tm / base
        if not base or not local.exists():
            return "", f"Driver path '{path}' nor '{shortened}' exists"
        return shortened, str(local)
