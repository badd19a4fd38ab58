"""The reference docs name every setting, attribute and environment variable the code reads."""

from __future__ import annotations

import re
from pathlib import Path

from one_ipfs.opennebula.install import DEFAULTS, DRIVER_LAUNCHER, SOURCE_REMOTES

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "src" / "one_ipfs"
DOCS = REPO / "docs"


def python_sources() -> str:
    return "\n".join(path.read_text() for path in sorted(SOURCE.rglob("*.py")))


def test_every_environment_variable_the_code_reads_is_in_the_configuration_reference() -> None:
    code = python_sources() + (SOURCE_REMOTES / "datastore" / "ipfs" / DRIVER_LAUNCHER).read_text()
    read = set(re.findall(r"""environ\.get\(\s*["']([A-Z_]+)["']""", code))
    read |= set(re.findall(r"\$\{([A-Z_]+):-", code))
    reference = (DOCS / "configuration.md").read_text()

    assert read >= {"ONE_LOCATION", "ONE_IPFS_STATE", "ONE_IPFS_REMOTES", "ONE_IPFS_PYTHON"}
    assert sorted(name for name in read if f"`{name}`" not in reference) == []


def test_every_setting_of_the_site_file_and_every_image_attribute_the_drivers_write_is_documented() -> None:
    settings = set(re.findall(r"^(?:export )?([A-Z_]+)=", (SOURCE_REMOTES / DEFAULTS).read_text(), re.M))
    image_code = [SOURCE / "images.py", *sorted((SOURCE / "datastore").glob("*.py"))]
    written = set(re.findall(r'"(IPFS_[A-Z_]+)":', "\n".join(path.read_text() for path in image_code)))
    reference = (DOCS / "configuration.md").read_text() + (DOCS / "datastore.md").read_text()

    assert "IPFS_CLONED_FROM" in written
    assert sorted(name for name in settings | written if f"`{name}`" not in reference) == []


def test_transfer_actions_are_spelled_as_the_transfer_manager_runs_them() -> None:
    for page in DOCS.glob("*.md"):
        assert not re.search(r"`[A-Z_]+\.(SSH|LOCAL|SHARED)`", page.read_text()), page.name
