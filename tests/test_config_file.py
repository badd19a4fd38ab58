"""``ipfs.conf`` is read like the shell file it looks like, by the drivers and by the launcher alike; a line
neither can read fails with its line number instead of being skipped; it and the configuration reference
give every setting the default the code uses (``one_ipfs.defaults``)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from one_ipfs.config import load_config, read_defaults
from one_ipfs.defaults import SETTINGS
from one_ipfs.errors import InvalidInput, StorageError
from one_ipfs.opennebula.install import DEFAULTS, DRIVER_LAUNCHER, SOURCE_REMOTES

SHELLS = [shell for shell in ("dash", "bash") if shutil.which(shell)]


def conf(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ipfs.conf"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ("IPFS_DEPLOY_MODE=OVERLAY", "OVERLAY"),
        ("IPFS_DEPLOY_MODE=OVERLAY # deploy instantly", "OVERLAY"),
        ("IPFS_DEPLOY_MODE=OVERLAY\t# a tab before the comment", "OVERLAY"),
        ("export IPFS_DEPLOY_MODE=OVERLAY", "OVERLAY"),
        ('  export   IPFS_DEPLOY_MODE="OVERLAY"   # indented, quoted', "OVERLAY"),
        ("IPFS_DEPLOY_MODE='OVERLAY' # single quotes", "OVERLAY"),
        ('IPFS_DEPLOY_MODE="OVER # LAY"', "OVER # LAY"),
        ("IPFS_DEPLOY_MODE=OVER#LAY", "OVER#LAY"),
        ("IPFS_DEPLOY_MODE=", ""),
        ('IPFS_DEPLOY_MODE=""  # empty', ""),
    ],
)
def test_a_setting_reads_as_the_shell_would_assign_it(tmp_path: Path, line: str, value: str) -> None:
    path = conf(tmp_path, f"# site defaults\n\n{line}\n")

    assert read_defaults(path) == {"IPFS_DEPLOY_MODE": value}


@pytest.mark.parametrize(
    "line",
    [
        'IPFS_DEPLOY_MODE="OVERLAY',
        "IPFS_DEPLOY_MODE='OVERLAY",
        "IPFS_DEPLOY_MODE = OVERLAY",
        "IPFS_DEPLOY_MODE=OVER LAY",
        "IPFS_DEPLOY_MODE=$MODE",
        'IPFS_DEPLOY_MODE="${MODE}"',
        "IPFS_DEPLOY_MODE=`cat /etc/mode`",
        "IPFS_DEPLOY_MODE=OVERLAY; rm -rf /",
        "IPFS_DEPLOY_MODE",
        "deploy mode overlay",
        "1MODE=OVERLAY",
    ],
)
def test_a_line_the_shell_would_not_simply_assign_fails_with_its_number(tmp_path: Path, line: str) -> None:
    path = conf(tmp_path, f"# site defaults\nIPFS_HOST_CACHE_MB=100\n{line}\nIPFS_RPC_TIMEOUT=5\n")

    with pytest.raises(InvalidInput, match=rf"^{path} line 3 is not NAME=value") as raised:
        read_defaults(path)
    assert "\n" not in str(raised.value)


def test_the_last_of_a_repeated_name_wins_as_in_the_shell(tmp_path: Path) -> None:
    path = conf(tmp_path, "IPFS_RPC_TIMEOUT=5\nexport IPFS_RPC_TIMEOUT=7\n")

    assert read_defaults(path) == {"IPFS_RPC_TIMEOUT": "7"}


def test_an_unreadable_file_fails_with_one_line_and_a_missing_one_means_the_defaults(tmp_path: Path) -> None:
    broken = tmp_path / "ipfs.conf"
    broken.write_bytes(b"IPFS_API=\xff\n")

    with pytest.raises(StorageError, match="not UTF-8"):
        read_defaults(broken)
    assert read_defaults(tmp_path / "missing.conf") == {}


def test_a_driver_action_fails_on_a_broken_site_file_instead_of_using_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    remotes = tmp_path / "remotes"
    (remotes / DEFAULTS).parent.mkdir(parents=True)
    (remotes / DEFAULTS).write_text('IPFS_DEPLOY_MODE="OVERLAY\n')
    monkeypatch.setenv("ONE_IPFS_REMOTES", str(remotes))

    with pytest.raises(InvalidInput, match="line 1 is not NAME=value"):
        load_config({})


def test_the_shipped_defaults_file_reads_cleanly() -> None:
    assert read_defaults(SOURCE_REMOTES / DEFAULTS)["ONE_IPFS_PYTHON"] == "python3"


def documented_settings() -> dict[str, str]:
    """Every setting ``ipfs.conf`` documents: those it sets, and those it shows commented out
    (``# NAME=value``, which apply only when uncommented)."""
    text = (SOURCE_REMOTES / DEFAULTS).read_text(encoding="utf-8")
    shown = dict(re.findall(r"(?m)^#\s*([A-Z][A-Z0-9_]*)=(\S*)$", text))
    return {**shown, **read_defaults(SOURCE_REMOTES / DEFAULTS)}


def test_the_shipped_defaults_file_documents_every_setting_with_the_default_the_code_uses() -> None:
    assert documented_settings() == SETTINGS
    assert load_config({}, read_defaults(SOURCE_REMOTES / DEFAULTS)) == load_config({}, {})


def test_the_configuration_reference_gives_every_setting_the_default_the_code_uses() -> None:
    reference = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text(encoding="utf-8")
    table = reference.split("| Attribute | Default | Meaning |", 1)[1].split("\n\n", 1)[0]
    rows = dict(re.findall(r"(?m)^\| `([A-Z][A-Z0-9_]*)` \| ([^|]*) \|", table))
    shown = {
        name: "" if cell.strip() == "(empty)" else cell.strip().strip("`") for name, cell in rows.items()
    }
    shown["IPFS_REPLICATION_MAX"] = SETTINGS[shown["IPFS_REPLICATION_MAX"]]  # it defaults to the minimum

    assert shown == {name: value for name, value in SETTINGS.items() if name != "ONE_IPFS_PYTHON"}


@pytest.mark.parametrize(
    ("datastore", "site", "backup", "chunker"),
    [
        ({}, {}, True, "size-65536"),
        ({"IPFS_CHUNKER": "size-262144"}, {}, True, "size-262144"),
        ({}, {"IPFS_BACKUP_CHUNKER": "size-131072"}, True, "size-131072"),
        ({}, {"IPFS_CHUNKER": "size-262144"}, True, "size-65536"),
        ({}, {}, False, "size-1048576"),
        ({}, {"IPFS_BACKUP_CHUNKER": "size-131072"}, False, "size-1048576"),
        ({"IPFS_CHUNKER": "size-262144"}, {}, False, "size-262144"),
    ],
)
def test_a_backup_datastore_chunks_by_qcow2_clusters_unless_its_own_template_sets_the_chunker(
    datastore: dict[str, str], site: dict[str, str], backup: bool, chunker: str
) -> None:
    """The shipped ipfs.conf, edited by ``site``: a backup datastore takes IPFS_BACKUP_CHUNKER, not the
    image datastores' IPFS_CHUNKER, unless its own template sets IPFS_CHUNKER."""
    defaults = {**read_defaults(SOURCE_REMOTES / DEFAULTS), **site}

    assert load_config(datastore, defaults, backup=backup).import_settings.chunker == chunker


def test_a_bad_backup_chunker_is_refused_by_its_name() -> None:
    with pytest.raises(InvalidInput, match=r"^IPFS_BACKUP_CHUNKER must look like size-<bytes>"):
        load_config({}, {"IPFS_BACKUP_CHUNKER": "rabin"}, backup=True)


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(
    "line",
    [
        "ONE_IPFS_PYTHON={python}",
        'ONE_IPFS_PYTHON="{python}"',
        "export ONE_IPFS_PYTHON='{python}'  # the venv of one-ipfs",
        "  export\tONE_IPFS_PYTHON={python}\t# indented",
    ],
)
def test_the_launcher_runs_the_interpreter_the_drivers_read(tmp_path: Path, shell: str, line: str) -> None:
    python = tmp_path / "bin" / "python"
    python.parent.mkdir()
    python.write_text('#!/bin/sh\necho "ran $0 $*"\n')
    python.chmod(0o755)
    remotes = tmp_path / "remotes"
    driver = remotes / "datastore" / "ipfs"
    driver.mkdir(parents=True)
    shutil.copy(SOURCE_REMOTES / "datastore" / "ipfs" / DRIVER_LAUNCHER, driver / DRIVER_LAUNCHER)
    (driver / "stat").symlink_to(DRIVER_LAUNCHER)
    (remotes / DEFAULTS).parent.mkdir(parents=True)
    (remotes / DEFAULTS).write_text(
        f"# defaults\nIPFS_API=http://127.0.0.1:5001\n{line.format(python=python)}\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "ONE_IPFS_PYTHON"}

    ran = subprocess.run(
        [shell, str(driver / "stat"), "action"], env=env, capture_output=True, text=True, check=True
    )

    assert read_defaults(remotes / DEFAULTS)["ONE_IPFS_PYTHON"] == str(python)
    assert ran.stdout == f"ran {python} -m one_ipfs.driver datastore stat action\n"
