"""Host requests written as the words of a command line (``fetch --cid X --size-mb 2``), as the hostile cases
are: each becomes the JSON request the frontend sends, numbers and flags as JSON's own where the words are
plainly one (``-1``, ``nan``, ``true``), any other word left a string for the host to refuse."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from one_ipfs.host import protocol

NESTED = {
    "api": ("node", "api", "str"),
    "api-auth-file": ("node", "auth_file", "str"),
    "cache-dir": ("cache", "folder", "str"),
    "cache-max-mb": ("cache", "max_mb", "int"),
    "chunker": ("settings", "chunker", "str"),
    "cid-version": ("settings", "cid_version", "int"),
    "raw-leaves": ("settings", "raw_leaves", "bool"),
    "hash": ("settings", "hash", "str"),
}
"""Options that are fields of a nested object: (its field in the request, its name in it, its type)."""
WHOLE = re.compile(r"-?[0-9]+")
NUMBER = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?(?:e[-+]?[0-9]+)?|nan|inf)")


def request_line(words: list[str]) -> str:
    """The JSON request for ``words``: a command, then ``--name value`` pairs."""
    command = words[0] if words else ""
    if command == "delete":
        command = "delete-disk" if "--disk" in words else "delete-folder"
    kind = protocol.REQUESTS.get(command)
    types = {item.name: str(item.type) for item in dataclasses.fields(kind)} if kind else {}
    request: dict[str, Any] = {"command": command}
    pairs = words[1:]
    for index in range(0, len(pairs) - 1, 2):
        option, value = pairs[index].removeprefix("--"), pairs[index + 1]
        if option in NESTED:
            part, name, annotation = NESTED[option]
            request.setdefault(part, {})[name] = _typed(value, annotation)
        else:
            name = option.replace("-", "_")
            request[name] = _typed(value, types.get(name, "str"))
    if len(pairs) % 2:
        request[pairs[-1].removeprefix("--").replace("-", "_")] = None
    return json.dumps(request)


def _typed(value: str, annotation: str) -> Any:
    if annotation.startswith("int") and WHOLE.fullmatch(value) and str(int(value)) == value:
        return int(value)  # only a number's own spelling: "-0" or "007" stay words for the host to refuse
    if annotation.startswith("float") and NUMBER.fullmatch(value):
        return float(value)
    if annotation.startswith("bool") and value in ("true", "false"):
        return value == "true"
    return value
