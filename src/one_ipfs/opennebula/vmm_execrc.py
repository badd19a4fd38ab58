"""Register ``kvm-ipfs`` in the VMM's ``LIVE_DISK_SNAPSHOTS`` (``etc/vmm_exec/vmm_execrc``) by editing text.

The KVM driver takes a disk snapshot of a running VM only when the disk's ``<VM_MAD>-<TM_MAD>`` pair is in
that list (``one_vmm_exec.rb``); it then runs the TM's ``snap_create_live``. The file is shell the driver
sources, so the edit is one word added inside the list's quotes and a marker comment at the end saying so;
``unregister`` removes exactly these and gives back the original bytes.
"""

from __future__ import annotations

import re

from one_ipfs.errors import InvalidInput

PAIRS = ("kvm-ipfs",)
MARKER = "# one-ipfs added kvm-ipfs to LIVE_DISK_SNAPSHOTS (`one-ipfs uninstall` removes it)"
NO_FINAL_NEWLINE = " [no final newline]"
_LIST = re.compile(r"(?m)^[ \t]*(?:export[ \t]+)?LIVE_DISK_SNAPSHOTS=([\"'])([^\"'\n]*)\1[ \t]*$")


def registered(text: str) -> bool:
    return all(pair in _live_list(text).group(2).split() for pair in PAIRS)


def register(text: str) -> str:
    """``text`` with ``kvm-ipfs`` in LIVE_DISK_SNAPSHOTS; the same text when it is there already."""
    if registered(text):
        return text
    found = _live_list(text)
    missing = [pair for pair in PAIRS if pair not in found.group(2).split()]
    text = text[: found.end(2)] + "".join(f" {pair}" for pair in missing) + text[found.end(2) :]
    if text.endswith("\n"):
        return f"{text}{MARKER}\n"
    return f"{text}\n{MARKER}{NO_FINAL_NEWLINE}\n"


def unregister(text: str) -> str:
    """``text`` without what ``register`` added (nothing, when its marker is not there)."""
    at = text.rfind(f"{MARKER}")
    if at < 0 or (at > 0 and text[at - 1] != "\n"):
        return text
    line_end = text.find("\n", at)
    line = text[at : len(text) if line_end < 0 else line_end]
    text = text[:at] + text[len(text) if line_end < 0 else line_end + 1 :]
    if line.endswith(NO_FINAL_NEWLINE) and text.endswith("\n"):
        text = text[:-1]
    found = _live_list(text)
    words = found.group(2)
    for pair in PAIRS:
        at = max((m.start() for m in re.finditer(rf" {re.escape(pair)}(?=\s|$)", words)), default=-1)
        if at >= 0:
            words = words[:at] + words[at + 1 + len(pair) :]
    return text[: found.start(2)] + words + text[found.end(2) :]


def _live_list(text: str) -> re.Match[str]:
    found = list(_LIST.finditer(text))
    if not found:
        raise InvalidInput(
            'vmm_execrc has no quoted LIVE_DISK_SNAPSHOTS="..." line: is this OpenNebula\'s vmm_execrc?'
        )
    return found[-1]
