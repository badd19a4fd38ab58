"""ssh between the frontend's oneadmin and each host, set up the way an OpenNebula installation has it.

Each host runs its own sshd (its own host key, listening only on the host's address); the frontend's
oneadmin has a key, an ``~/.ssh/config`` naming every host and a known_hosts file that already holds every
host key, so that the drivers' ``ssh h1 ...`` works non-interactively and verifies the host.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Sequence
from pathlib import Path

from one_ipfs.errors import InvalidInput
from testbed.system import ONEADMIN_HOME, run

SSHD = Path("/usr/sbin/sshd")
PRIVSEP_DIR = Path("/run/sshd")
CLIENT_KEY = "id_ed25519"
AUTHORIZED_KEYS = ONEADMIN_HOME / ".ssh" / "authorized_keys"


def host_key(folder: Path) -> str:
    """Create the host's ed25519 key in ``folder`` and return the public line (``ssh-ed25519 AAAA...``)."""
    key = folder / "ssh_host_ed25519_key"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", folder.name, "-f", key])
    return " ".join(key.with_suffix(".pub").read_text().split()[:2])


def write_sshd_config(folder: Path, address: str, port: int = 22) -> Path:
    """An sshd_config for one host; StrictModes is off because the keys live in the bed's folder.

    Every account (oneadmin, and root for tests) is authorized by the host's own
    ``/var/lib/one/.ssh/authorized_keys``, as sshd sees it in the host's mount namespace. The SFTP
    subsystem is there as in a distribution's sshd: scp speaks SFTP since OpenSSH 9 (OpenNebula's image
    cache fetches with scp).
    """
    if any(c.isspace() or c in "\"'#" for c in str(folder)):
        raise InvalidInput(f"test bed: sshd cannot take the path {folder}: use a bed root without spaces")
    config = folder / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"ListenAddress {address}",
                f"Port {port}",
                f"HostKey {folder / 'ssh_host_ed25519_key'}",
                f"AuthorizedKeysFile {AUTHORIZED_KEYS}",
                f"PidFile {folder / 'sshd.pid'}",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "PrintMotd no",
                "Subsystem sftp internal-sftp",
                "",
            ]
        )
    )
    return config


def sshd_command(config: Path) -> list[str]:
    """sshd in the foreground (the bed tracks its pid), logging to stderr (the bed's log file)."""
    PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    return [str(SSHD), "-D", "-e", "-f", str(config)]


def authorize(var_lib_one: Path, user: pwd.struct_passwd, public_key: str) -> None:
    """Let ``public_key`` in on a host: its oneadmin's ``~/.ssh/authorized_keys``, as on a real host."""
    ssh_dir = var_lib_one / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    keys = ssh_dir / "authorized_keys"
    keys.write_text(public_key + "\n")
    for path in (ssh_dir, keys):
        os.chown(path, user.pw_uid, user.pw_gid)
    keys.chmod(0o600)


def setup_client(ssh_dir: Path, user: pwd.struct_passwd, hosts: Sequence[tuple[str, str, str]]) -> str:
    """oneadmin's ``~/.ssh`` (at ``ssh_dir`` in the root namespace): key, config, known_hosts.

    ``hosts`` holds (name, address, host public key). Paths inside the files are as oneadmin sees them in
    the frontend's mount namespace (``/var/lib/one/.ssh/...``). Returns the client's public key line.
    """
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = ssh_dir / CLIENT_KEY
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "oneadmin@frontend", "-f", key])
    (ssh_dir / "config").write_text("\n".join(_client_block(name, address) for name, address, _ in hosts))
    (ssh_dir / "known_hosts").write_text(
        "".join(f"{name},{address} {public}\n" for name, address, public in hosts)
    )
    for path in (ssh_dir, *ssh_dir.iterdir()):
        os.chown(path, user.pw_uid, user.pw_gid)
        path.chmod(0o700 if path.is_dir() else 0o600)
    return " ".join(key.with_suffix(".pub").read_text().split()[:2])


def add_client_entry(ssh_dir: Path, name: str, address: str, port: int, public: str) -> None:
    """One more machine oneadmin reaches as ``name`` (its sshd on ``address:port``, host key ``public``)."""
    with (ssh_dir / "config").open("a") as config:
        config.write("\n" + _client_block(name, address, port))
    with (ssh_dir / "known_hosts").open("a") as known:
        known.write(f"[{name}]:{port},[{address}]:{port} {public}\n")


def _client_block(name: str, address: str, port: int = 22) -> str:
    seen = ONEADMIN_HOME / ".ssh"
    return (
        f"Host {name}\n"
        f"    HostName {address}\n"
        f"    Port {port}\n"
        "    User oneadmin\n"
        f"    IdentityFile {seen / CLIENT_KEY}\n"
        "    IdentitiesOnly yes\n"
        f"    UserKnownHostsFile {seen / 'known_hosts'}\n"
        "    StrictHostKeyChecking yes\n"
        "    BatchMode yes\n"
        "    ConnectTimeout 5\n"
    )
