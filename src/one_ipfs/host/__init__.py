"""The host side of the drivers: what runs on a hypervisor as oneadmin, answering the frontend's requests
(``protocol``, JSON over the ssh channel of ``hosts``) with the host's own Kubo node through ``ipfs``.

A host has python3, its own Kubo node and qemu-img, nothing more, so this package uses the
standard library only and must run on python3 >= 3.9. Commands print log lines on stderr
(``INFO: ...``), one plain line on failure, and their result as one JSON line on stdout.
"""

from __future__ import annotations

import sys


def log_info(message: str) -> None:
    """A progress line the frontend relays into the VM's log."""
    sys.stderr.write(f"INFO: {message}\n")
    sys.stderr.flush()
