"""Driver settings: site defaults from ``ipfs.conf`` overridden by the datastore's own attributes.

OpenNebula's convention is that a driver's settings live in the datastore template, so an admin
changes one datastore with ``onedatastore update`` and the whole site in the defaults file. Beside them,
where things are on the frontend: OpenNebula's var, etc and remotes folders, and the drivers' own state.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from one_ipfs.defaults import SETTINGS
from one_ipfs.errors import InvalidInput, StorageError
from one_ipfs.ipfs.cluster import Replication
from one_ipfs.ipfs.rpc import ImportSettings, authorization_from_file

DEFAULTS_FILE = Path("etc/datastore/ipfs/ipfs.conf")
_SETTING = re.compile(
    r"""\s*(?:export\s+)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)="""
    r"""(?P<value>"[^"$`\\]*"|'[^']*'|(?:[^\s"'$`\\;&|<>()#][^\s"'$`\\;&|<>()]*)?)"""
    r"""\s*(?:#.*)?"""
)
"""One setting line of ``ipfs.conf``, as the shell would assign it without expanding anything."""
DEPLOY_MODES = ("COPY", "OVERLAY")


@dataclass(frozen=True)
class DatastoreConfig:
    api: str
    host_api: str
    api_auth_file: str
    """The file holding the AuthSecret of the datastore's node (empty: its RPC API needs none)."""
    host_api_auth_file: str
    """The same on every host, for the host's own node: a path on the host, never the secret itself."""
    import_settings: ImportSettings
    transfer_timeout: float
    stall_timeout: float
    rpc_timeout: float
    deploy_mode: str
    host_cache_mb: int
    safe_dirs: tuple[str, ...]
    restricted_dirs: tuple[str, ...]
    cluster_api: str
    """IPFS Cluster's REST API that replicates every image version (empty: the datastore's node alone)."""
    replication: Replication | None
    """How many cluster peers must hold a version before it counts as saved; None without a cluster."""

    def api_authorization(self) -> str | None:
        """The Authorization header for the datastore's node, read from IPFS_API_AUTH_FILE when it is set."""
        if not self.api_auth_file:
            return None
        return authorization_from_file(self.api_auth_file, "IPFS_API_AUTH_FILE")


def one_location() -> Path | None:
    """A self-contained OpenNebula's root, ``$ONE_LOCATION``: OpenNebula's own tools and drivers read it so,
    and oned passes it on to every driver it starts."""
    location = os.environ.get("ONE_LOCATION", "")
    return Path(location) if location else None


def var_dir() -> Path:
    """OpenNebula's var folder: ``$ONE_LOCATION/var``, or the system-wide ``/var/lib/one``."""
    location = one_location()
    return Path("/var/lib/one") if location is None else location / "var"


def etc_dir() -> Path:
    """OpenNebula's configuration folder: ``$ONE_LOCATION/etc``, or the system-wide ``/etc/one``."""
    location = one_location()
    return Path("/etc/one") if location is None else location / "etc"


def remotes_dir() -> Path:
    """The remotes tree: the one the launcher runs from (``ONE_IPFS_REMOTES``), else OpenNebula's."""
    remotes = os.environ.get("ONE_IPFS_REMOTES", "")
    return Path(remotes) if remotes else var_dir() / "remotes"


def state_dir() -> Path:
    """Where the frontend side keeps its locks, scratch files and ssh sockets: oneadmin's, beside
    OpenNebula's own state (``ONE_IPFS_STATE``, else ``.one-ipfs`` in OpenNebula's var folder)."""
    state = os.environ.get("ONE_IPFS_STATE", "")
    return Path(state) if state else var_dir() / ".one-ipfs"


def read_defaults(path: Path) -> dict[str, str]:
    """Read ``ipfs.conf`` the way the shell reads it (it looks like OpenNebula's shell-sourced ``fs.conf``):
    ``NAME=value`` or ``export NAME=value``, the value bare, "double" or 'single' quoted, a ``#`` comment
    at the end of a line or on a line of its own, the last of a repeated name winning. A line that is none
    of these (an expansion, a command, a missing quote) fails with its line number: a setting the drivers
    skipped would silently not apply. A missing file means every default."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
        raise StorageError(f"cannot read {path}: {reason}") from exc
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        setting = _SETTING.fullmatch(line)
        if setting is None:
            raise InvalidInput(
                f"{path} line {number} is not NAME=value (or export NAME=value; the value bare or quoted, "
                "without $, ` or \\; a # comment after it)"
            )
        value = setting.group("value")
        values[setting.group("name")] = value[1:-1] if value[:1] in ("'", '"') else value
    return values


def load_config(
    attributes: Mapping[str, str], defaults: Mapping[str, str] | None = None, *, backup: bool = False
) -> DatastoreConfig:
    """Merge the datastore template's attributes over the site defaults (``ipfs.conf``, then the code's own,
    ``defaults.SETTINGS``) and validate the result. A backup datastore chunks with IPFS_BACKUP_CHUNKER unless
    its own template sets IPFS_CHUNKER."""
    if defaults is None:
        defaults = read_defaults(remotes_dir() / DEFAULTS_FILE)
    merged = {**defaults, **{k: v for k, v in attributes.items() if v != ""}}

    def text(key: str) -> str:
        return merged.get(key, SETTINGS[key]).strip()

    def number(key: str, low: float, high: float, default: str | None = None) -> float:
        raw = merged.get(key, default or SETTINGS[key]).strip()
        try:
            value = float(raw)
        except ValueError:
            raise InvalidInput(f"{key} must be a number, not {raw[:40]!r}") from None
        if not low <= value <= high:
            raise InvalidInput(f"{key} must be between {low:g} and {high:g}, not {raw[:40]}")
        return value

    def flag(key: str) -> bool:
        raw = text(key).upper()
        if raw not in ("YES", "NO", "TRUE", "FALSE"):
            raise InvalidInput(f"{key} must be YES or NO, not {raw[:40]!r}")
        return raw in ("YES", "TRUE")

    mode = text("IPFS_DEPLOY_MODE").upper()
    if mode not in DEPLOY_MODES:
        raise InvalidInput(f"IPFS_DEPLOY_MODE must be COPY or OVERLAY, not {mode[:40]!r}")
    chunker_key = "IPFS_BACKUP_CHUNKER" if backup and not attributes.get("IPFS_CHUNKER") else "IPFS_CHUNKER"
    chunker = text(chunker_key)
    if not _valid_chunker(chunker):
        raise InvalidInput(
            f"{chunker_key} must look like size-<bytes> (at most 2096896), not {chunker[:40]!r}"
        )
    cluster_api = text("IPFS_CLUSTER_API")
    replication = None
    if cluster_api:
        minimum = int(number("IPFS_REPLICATION_MIN", 1, 100))
        replication = Replication(minimum, int(number("IPFS_REPLICATION_MAX", minimum, 100, str(minimum))))
    elif merged.get("IPFS_REPLICATION_MIN", "").strip() or merged.get("IPFS_REPLICATION_MAX", "").strip():
        raise InvalidInput(
            "IPFS_REPLICATION_MIN and IPFS_REPLICATION_MAX need IPFS_CLUSTER_API, the REST API of the "
            "IPFS Cluster peer that replicates the datastore's images"
        )
    hash_name = text("IPFS_HASH")
    if not hash_name.replace("-", "").isalnum():
        raise InvalidInput(f"IPFS_HASH is not a hash function name: {hash_name[:40]!r}")
    return DatastoreConfig(
        api=_address(text("IPFS_API"), "IPFS_API"),
        host_api=_address(text("IPFS_HOST_API"), "IPFS_HOST_API"),
        api_auth_file=_secret_file(text("IPFS_API_AUTH_FILE"), "IPFS_API_AUTH_FILE"),
        host_api_auth_file=_secret_file(text("IPFS_HOST_API_AUTH_FILE"), "IPFS_HOST_API_AUTH_FILE"),
        import_settings=ImportSettings(
            chunker=chunker,
            cid_version=int(number("IPFS_CID_VERSION", 0, 1)),
            raw_leaves=flag("IPFS_RAW_LEAVES"),
            hash=hash_name,
        ),
        transfer_timeout=number("IPFS_TRANSFER_TIMEOUT", 1, 7 * 86400),
        stall_timeout=number("IPFS_STALL_TIMEOUT", 1, 86400),
        rpc_timeout=number("IPFS_RPC_TIMEOUT", 1, 3600),
        deploy_mode=mode,
        host_cache_mb=int(number("IPFS_HOST_CACHE_MB", 0, 1 << 40)),
        safe_dirs=tuple(text("SAFE_DIRS").split()),
        restricted_dirs=tuple(text("RESTRICTED_DIRS").split()),
        cluster_api=_address(cluster_api, "IPFS_CLUSTER_API") if cluster_api else "",
        replication=replication,
    )


def _valid_chunker(chunker: str) -> bool:
    """Only fixed-size chunking guarantees the same bytes always give the same CID."""
    prefix, _, size = chunker.partition("-")
    return prefix == "size" and size.isdigit() and 0 < int(size) <= 2096896


def _address(value: str, key: str) -> str:
    """RPC addresses stay on loopback unless they name a host explicitly; anything odd is refused."""
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:/.-_[]")
    if not value or len(value) > 200 or not set(value) <= allowed:
        raise InvalidInput(
            f"{key} is not an RPC address (http://host:port or /ip4/host/tcp/port): {value[:60]!r}"
        )
    return value


def _secret_file(value: str, key: str) -> str:
    """A secret is named by the absolute path of its file, so that no template or command line holds it."""
    if value and (not value.startswith("/") or len(value) > 200 or not value.isprintable()):
        # The value is not quoted: an admin who put the secret itself here must not see it in a log.
        raise InvalidInput(
            f"{key} must be the absolute path of the file that holds the Kubo RPC secret, not the secret"
        )
    return value
