"""IPFS datastore templates for tests, as an admin would write them for the bed in use."""

from __future__ import annotations

from testbed.bed import Bed


def ipfs_datastore_template(bed: Bed, name: str, **attributes: str) -> dict[str, str]:
    """``DS_MAD=ipfs TM_MAD=ipfs`` plus the frontend node's address and short waits for failure tests."""
    return {
        "NAME": name,
        "DS_MAD": "ipfs",
        "TM_MAD": "ipfs",
        "IPFS_API": bed.frontend.api,
        "IPFS_STALL_TIMEOUT": "15",
        **attributes,
    }
