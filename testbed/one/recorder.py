"""Tiny recording drivers: scripts that note how they were called and answer as told.

This is how the observations of ``../shared/docs/opennebula-driver-protocol.md`` §3 were made against the
genuine Ruby driver managers, and how the simulator's tests check that it calls scripts the same way, without
IPFS: each script appends one JSON line (argv, stdin, cwd, selected environment) to a log, optionally
runs commands (``{1}`` in an argument is replaced by its own argv[1]), sleeps, then prints the stdout
and stderr it was given and exits with the given code.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

_SCRIPT = """#!{python}
import json, os, subprocess, sys, time
BEHAVIOUR = json.loads({behaviour!r})
record = {{
    "argv": sys.argv,
    "stdin": sys.stdin.read(),
    "cwd": os.getcwd(),
    "env": {{name: os.environ.get(name) for name in ("PATH", "ONE_XMLRPC", "ONE_AUTH", "HOME")}},
    "runs": [],
}}
for command in BEHAVIOUR["run"]:
    argv = [word.format(*sys.argv) for word in command]
    done = subprocess.run(argv, capture_output=True, text=True)
    record["runs"].append(
        {{"argv": argv, "code": done.returncode, "stdout": done.stdout, "stderr": done.stderr}}
    )
with open({log!r}, "a") as handle:
    handle.write(json.dumps(record) + "\\n")
time.sleep(BEHAVIOUR["sleep"])
sys.stdout.write(BEHAVIOUR["stdout"])
sys.stderr.write(BEHAVIOUR["stderr"])
sys.exit(BEHAVIOUR["exit_code"])
"""


@dataclass(frozen=True)
class Behaviour:
    """What a recording driver answers."""

    stdout: str = ""
    stderr: str = ""
    exit_code: int = 0
    sleep: float = 0.0
    run: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class Call:
    """One recorded invocation; ``action`` is the script's file name, ``args`` its argv[1:]."""

    kind: str
    name: str
    action: str
    args: list[str]
    stdin: str
    cwd: str
    env: dict[str, str | None]
    runs: list[dict[str, object]] = field(default_factory=list)


class RecordingDrivers:
    """Recording scripts installed into a remotes tree (``<remotes>/<datastore|tm>/<name>/<action>``)."""

    def __init__(self, remotes: Path, log: Path, python: str = sys.executable) -> None:
        self.remotes = remotes
        self.log = log
        self.python = python

    def install(self, kind: str, name: str, action: str, behaviour: Behaviour | None = None) -> Path:
        behaviour = behaviour or Behaviour()
        folder = self.remotes / kind / name
        folder.mkdir(parents=True, exist_ok=True)
        script = folder / action
        settings = {
            "stdout": behaviour.stdout,
            "stderr": behaviour.stderr,
            "exit_code": behaviour.exit_code,
            "sleep": behaviour.sleep,
            "run": [list(command) for command in behaviour.run],
        }
        script.write_text(
            _SCRIPT.format(python=self.python, behaviour=json.dumps(settings), log=str(self.log)),
            encoding="utf-8",
        )
        script.chmod(0o755)
        return script

    def calls(
        self, kind: str | None = None, name: str | None = None, action: str | None = None
    ) -> list[Call]:
        if not self.log.exists():
            return []
        result = []
        for line in self.log.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            path = Path(record["argv"][0])
            call = Call(
                kind=path.parent.parent.name,
                name=path.parent.name,
                action=path.name,
                args=record["argv"][1:],
                stdin=record["stdin"],
                cwd=record["cwd"],
                env=record["env"],
                runs=record["runs"],
            )
            if (kind, name, action) == (None, None, None) or (
                kind in (None, call.kind) and name in (None, call.name) and action in (None, call.action)
            ):
                result.append(call)
        return result
