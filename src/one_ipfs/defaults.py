"""Every default an admin tuning one-ipfs looks for, written once: the site settings that ``ipfs.conf``
ships (a datastore's own attributes override them, ``config.load_config``), then the fixed timeouts,
slack and ports around them.

Standard library only and shipped in the host bundle, so that the host side reads the same values.
``tests/test_config_file.py`` holds ``ipfs.conf`` and docs/configuration.md to ``SETTINGS``.
"""

from __future__ import annotations

# ------------------------------------------------------------------- settings of ipfs.conf

PYTHON = "python3"
"""ONE_IPFS_PYTHON: the interpreter on PATH, until ``one-ipfs install`` records the one it ran under."""
KUBO_API = "http://127.0.0.1:5001"
"""IPFS_API and IPFS_HOST_API: Kubo's own RPC address, on loopback, where each node's daemon listens."""
API_AUTH_FILE = ""
"""IPFS_API_AUTH_FILE and IPFS_HOST_API_AUTH_FILE: none, as a node's RPC API is open on loopback."""
CHUNKER = "size-1048576"
"""IPFS_CHUNKER: 1 MiB fixed-size chunks (Kubo's unixfs-v1-2025 profile): the same bytes, the same CID."""
BACKUP_CHUNKER = "size-65536"
"""IPFS_BACKUP_CHUNKER: a backup datastore's chunks, qcow2's cluster size, so that a cluster prebackup's qcow2
file moved is still one block backups share (docs/backups.md)."""
CID_VERSION = 1
"""IPFS_CID_VERSION: CIDv1, as unixfs-v1-2025 makes them."""
RAW_LEAVES = True
"""IPFS_RAW_LEAVES: leaves are the disk's bytes as they are, so a block reads without unwrapping."""
HASH = "sha2-256"
"""IPFS_HASH: the multihash every Kubo verifies."""
TRANSFER_TIMEOUT = 21600.0
"""IPFS_TRANSFER_TIMEOUT: six hours for a whole transfer, enough for a large image over a slow link; oned
itself bounds no transfer action."""
STALL_TIMEOUT = 120.0
"""IPFS_STALL_TIMEOUT: two minutes without a block is a stuck transfer, not a slow one."""
RPC_TIMEOUT = 60.0
"""IPFS_RPC_TIMEOUT: any other call to a Kubo node (or a cluster peer) answers within a minute when it is
well."""
DEPLOY_MODE = "COPY"
"""IPFS_DEPLOY_MODE: full sparse copies, which behave like every other OpenNebula datastore's disks."""
HOST_CACHE_MB = 20480
"""IPFS_HOST_CACHE_MB: 20 GiB of images a host keeps after their VMs are gone, a few images' worth."""
CLUSTER_API = ""
"""IPFS_CLUSTER_API: no cluster, each version lives on the datastore's node (and the hosts that hold it)."""
REPLICATION_MIN = 2
"""IPFS_REPLICATION_MIN, with a cluster: two peers, so that losing any one node loses no version
(IPFS_REPLICATION_MAX defaults to it)."""
SAFE_DIRS = "/var/tmp"
"""SAFE_DIRS, OpenNebula's own datastore attribute: its default."""
RESTRICTED_DIRS = "/"
"""RESTRICTED_DIRS, OpenNebula's own datastore attribute: its default."""

SETTINGS = {
    "ONE_IPFS_PYTHON": PYTHON,
    "IPFS_API": KUBO_API,
    "IPFS_HOST_API": KUBO_API,
    "IPFS_API_AUTH_FILE": API_AUTH_FILE,
    "IPFS_HOST_API_AUTH_FILE": API_AUTH_FILE,
    "IPFS_CHUNKER": CHUNKER,
    "IPFS_BACKUP_CHUNKER": BACKUP_CHUNKER,
    "IPFS_CID_VERSION": str(CID_VERSION),
    "IPFS_RAW_LEAVES": "YES" if RAW_LEAVES else "NO",
    "IPFS_HASH": HASH,
    "IPFS_TRANSFER_TIMEOUT": f"{TRANSFER_TIMEOUT:g}",
    "IPFS_STALL_TIMEOUT": f"{STALL_TIMEOUT:g}",
    "IPFS_RPC_TIMEOUT": f"{RPC_TIMEOUT:g}",
    "IPFS_DEPLOY_MODE": DEPLOY_MODE,
    "IPFS_HOST_CACHE_MB": str(HOST_CACHE_MB),
    "IPFS_CLUSTER_API": CLUSTER_API,
    "IPFS_REPLICATION_MIN": str(REPLICATION_MIN),
    "IPFS_REPLICATION_MAX": str(REPLICATION_MIN),
    "SAFE_DIRS": SAFE_DIRS,
    "RESTRICTED_DIRS": RESTRICTED_DIRS,
}
"""Each setting of ``ipfs.conf`` (or of a datastore's template) and its default, as the file writes it."""

# ------------------------------------------------------------------------- fixed waits

HOST_CALL_SLACK = 120.0
"""Seconds a call to a host may take beyond the host side's own bound: ssh, shipping the host bundle,
the host side's clean-up."""
HOUSEKEEPING_TIMEOUT = 600.0
"""A host command that moves no image (delete, release, resize, cache trim): ten minutes at most."""
PRESENCE_TIMEOUT = 30.0
"""Asking a host's node how much of a CID it holds, offline: it answers from its own blockstore."""
UPSTREAM_TIMEOUT = 3600.0
"""One of OpenNebula's own ssh TM scripts that a system datastore's action runs (context, mkimage...)."""
MKFS_TIMEOUT = 600.0
"""mkfs or qemu-img making a datablock on the frontend: a sparse file, quick whatever its size."""
BACKUP_CANCEL_WAIT = 60.0
"""How long backup_cancel waits for the cancelled backup to clean up and go."""
ADMIN_SSH_TIMEOUT = 60.0
"""One command of the admin tool on a host over ssh (a probe, a repository, a systemd unit)."""
ONED_TIMEOUT = 60.0
"""One request to oned's XML-RPC API: oned answers a read in milliseconds unless it hangs."""
ADMIN_RPC_TIMEOUT = 10.0
"""One question of the admin tool to a Kubo node: a node that takes longer is reported as not answering."""
CLUSTER_TIMEOUT = 30.0
"""One question of the admin tool to IPFS Cluster's REST API."""

SSH_CONNECT_TIMEOUT = 15
"""Seconds ssh may take to connect to a host: a host that takes longer is down or unreachable."""
SSH_ALIVE_INTERVAL = 15
"""Seconds between ssh's keep-alive probes, so that a host lost mid-transfer is noticed."""
SSH_CONTROL_PERSIST = 60
"""Seconds a shared ssh connection to a host stays open after its last action: the next one skips the
handshake."""

# ---------------------------------------------------------------------------- ports

KUBO_SWARM_PORT = 4001
"""Kubo's own swarm port, where a node of the private network listens for its peers."""
CLUSTER_SWARM_PORT = 9096
"""IPFS Cluster's own cluster port, where a peer listens for the other peers."""
CLUSTER_REST_API = "http://127.0.0.1:9094"
"""IPFS Cluster's own REST API address, on loopback: where the admin tool asks the frontend's peer."""
CLUSTER_REST_LISTEN = "/ip4/127.0.0.1/tcp/9094"
"""The same REST API as the peer's configuration writes it (a multiaddr)."""
