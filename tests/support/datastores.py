"""IPFS datastore templates for tests, as an admin would write them for the bed in use."""

from __future__ import annotations

import socket

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


def rsync_backup_template(name: str) -> dict[str, str]:
    """OpenNebula's ``rsync`` backup datastore, kept on the frontend (reached over ssh by its name, as the
    hosts reach it)."""
    return {
        "NAME": name,
        "TYPE": "BACKUP_DS",
        "DS_MAD": "rsync",
        "TM_MAD": "-",
        "RSYNC_HOST": socket.gethostname(),
        "RSYNC_USER": "oneadmin",
    }


def restic_backup_template(name: str) -> dict[str, str]:
    """OpenNebula's ``restic`` backup datastore, its repository on h4 reached over sftp (as a backup server
    is: a host ``onehost sync`` gave the restic binary)."""
    return {
        "NAME": name,
        "TYPE": "BACKUP_DS",
        "DS_MAD": "restic",
        "TM_MAD": "-",
        "RESTIC_SFTP_SERVER": "h4",
        "RESTIC_SFTP_USER": "oneadmin",
        "RESTIC_PASSWORD": "bed-restic-password",
    }
