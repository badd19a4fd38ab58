"""Property-based hostile input (hypothesis) over every entry point: whatever the bytes or the words,
the answer is one plain failure line and a non-zero exit that is not a crash, with no process, no
write, no Kubo request and no file changed; and the parsers only ever return what is safe to use.

Each run is in-process against the same ``World`` as the corpus, so examples cost milliseconds.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import one_ipfs.host.inputs as inputs
from one_ipfs.errors import InvalidInput
from one_ipfs.opennebula.documents import read_ds_action
from one_ipfs.opennebula.location import Location, is_host_name
from one_ipfs.opennebula.output import INTERNAL_ERROR_EXIT
from tests.hostile.corpus import DS_ACTIONS, HOST_DISK, MIGRATION_ARGS, TM_SHAPES, VM_XML, action, b64, image
from tests.hostile.harness import CID, Outcome, World, new_world, placed

EXAMPLES = int(os.environ.get("ONE_IPFS_HOSTILE_EXAMPLES", "40"))
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# What makes a word hostile wherever it goes: shell syntax, quoting, line breaks, NUL, traversal, bidi.
FRAGMENTS = (
    ";",
    "$(",
    "`",
    "|",
    "&",
    ">",
    "\n",
    "\r",
    "\0",
    " ",
    "'",
    '"',
    "\\",
    "/../",
    "*",
    "\u202e",
    "\u00a0",
)
hostile_text = st.builds(
    lambda before, fragment, after: before + fragment + after,
    st.text(max_size=40),
    st.sampled_from(FRAGMENTS),
    st.text(max_size=40),
)
option_like = st.text(max_size=40).map(lambda text: "-" + text)
hostile_word = st.one_of(hostile_text, option_like)
MUTATING = tuple(
    f"/api/v0/{command}"
    for command in (
        "add",
        "pin/add",
        "pin/rm",
        "pin/update",
        "files/cp",
        "files/rm",
        "files/write",
        "files/mkdir",
        "repo/gc",
        "name/publish",
    )
)
IMAGE_FIELDS = (
    "PATH",
    "SOURCE",
    "SIZE",
    "ID",
    "FS",
    "FORMAT",
    "TYPE",
    "PERSISTENT",
    "CLONING_ID",
    "TARGET_SNAPSHOT",
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with new_world(tmp_path_factory.mktemp("hostile-properties")) as running:
        yield running


def refused_cleanly(problems: list[str]) -> None:
    """The corpus's checks with any reason: one line, not a crash, nothing done."""
    assert [problem for problem in problems if not problem.startswith("reason ")] == []


@pytest.mark.parametrize("name", DS_ACTIONS)
@PROPERTY
@given(stdin=st.binary(max_size=2000))
def test_any_bytes_on_stdin_are_refused_by_every_datastore_action(
    world: World, name: str, stdin: bytes
) -> None:
    outcome = world.driver("datastore", name, ["7"], stdin)

    refused_cleanly(outcome.problems(""))


@pytest.mark.parametrize("name", DS_ACTIONS)
@PROPERTY
@given(field=st.sampled_from(IMAGE_FIELDS), value=hostile_word)
def test_a_hostile_image_field_does_no_harm_in_any_datastore_action(
    world: World, name: str, field: str, value: str
) -> None:
    """A well-formed action whose IMAGE carries one hostile value (escaped as oned escapes it): a field
    an action does not use may let it go on, but only as far as asking Kubo about the content."""
    source = {"SOURCE": "one-ipfs/ds100/img7"} if name == "rm" else {}
    # mkfs of a valid SIZE would make a datablock whatever the other fields say: give it none.
    fields = {**source, **({"PATH": "", "SIZE": ""} if name == "mkfs" else {}), field: escape(value)}
    args, stdin = placed(world, ("7",), b64(action(image(**fields))))

    outcome = world.driver("datastore", name, args, stdin)

    harmless(outcome)


def harmless(outcome: Outcome) -> None:
    """Success or one plain line, never a crash; no process, write or changed file; Kubo only asked."""
    if outcome.code != 0:
        assert outcome.code != INTERNAL_ERROR_EXIT and len(outcome.plain) == 1, outcome.err[-1000:]
    assert "Traceback" not in outcome.err
    assert (outcome.watch.processes, outcome.watch.writes, outcome.watch.blocked, outcome.changed) == (
        [],
        [],
        [],
        [],
    )
    assert [path for path in outcome.kubo_requests if path.startswith(MUTATING)] == []


@pytest.mark.parametrize("name", sorted(TM_SHAPES))
@PROPERTY
@given(data=st.data(), word=hostile_word)
def test_a_hostile_argument_is_refused_by_every_transfer_action(
    world: World, name: str, data: st.DataObject, word: str
) -> None:
    """oned's argument list for the action with any one argument replaced by a hostile word."""
    args = list(TM_SHAPES[name][0])
    position = data.draw(st.sampled_from(range(len(args))), label="position")
    args[position] = word

    outcome = world.driver("tm", name, args)

    refused_cleanly(outcome.problems(""))


@pytest.mark.parametrize("name", ["premigrate", "postmigrate", "failmigrate"])
@PROPERTY
@given(data=st.data(), word=hostile_word, stdin=st.one_of(st.binary(max_size=500), st.just(b64(VM_XML))))
def test_a_hostile_migration_step_is_refused(
    world: World, name: str, data: st.DataObject, word: str, stdin: bytes
) -> None:
    args = list(MIGRATION_ARGS)
    position = data.draw(st.sampled_from(range(4)), label="position")
    args[position] = word

    outcome = world.driver("tm", name, args, stdin)

    refused_cleanly(outcome.problems(""))


@PROPERTY
@given(stdin=st.binary(max_size=2000))
def test_any_bytes_are_refused_by_the_transfer_monitor(world: World, stdin: bytes) -> None:
    refused_cleanly(world.driver("tm", "monitor", ["100"], stdin).problems(""))


HOST_COMMANDS: dict[str, list[str]] = {
    "fetch": ["--cid", CID, "--disk", HOST_DISK, "--size-mb", "2", "--vm", "42", "--monitor-tm", "ssh"],
    "prefetch": ["--cid", CID, "--disk", HOST_DISK, "--vm", "42"],
    "warm": ["--cid", CID, "--cache-max-mb", "10"],
    "save": ["--disk", HOST_DISK, "--format", "raw", "--chunker", "size-1048576", "--hash", "sha2-256"],
    "delete": ["--disk", HOST_DISK, "--vm", "42"],
    "release": ["--vm", "42", "--api", "http://127.0.0.1:5001"],
    "has": ["--cid", CID, "--timeout", "30"],
    "snapshot-create": ["--disk", HOST_DISK, "--snap-id", "1"],
    "resize": ["--disk", HOST_DISK, "--size-mb", "64"],
    "monitor-marker": ["--dir", "{host}/datastores/0/42", "--tm", "ssh"],
    "cache-evict": ["--keep-mb", "10", "--cache-dir", "{host}/datastores/.one-ipfs-cache"],
}


@pytest.mark.parametrize("name", sorted(HOST_COMMANDS))
@PROPERTY
@given(data=st.data(), word=hostile_word)
def test_a_hostile_option_value_is_refused_by_every_host_command(
    world: World, name: str, data: st.DataObject, word: str
) -> None:
    """The transfer driver's command line with any one option value replaced by a hostile word."""
    words = list(HOST_COMMANDS[name])
    position = data.draw(st.sampled_from(range(1, len(words), 2)), label="value")
    words[position] = word
    args, _ = placed(world, (name, *words), b"")

    outcome = world.host(args)

    refused_cleanly(outcome.problems(""))


@settings(max_examples=2000, deadline=None)
@given(
    text=st.one_of(
        st.text(max_size=120),
        hostile_text,
        st.builds(lambda a, b: f"{a}:{b}", st.text(max_size=40), st.text(max_size=80)),
    )
)
def test_a_parsed_location_is_always_a_plain_host_and_a_clean_absolute_path(text: str) -> None:
    try:
        location = Location.parse(text)
    except InvalidInput as error:
        assert "\n" not in str(error)
        return
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", location.host)
    assert location.path.startswith("/")
    assert re.fullmatch(r"[A-Za-z0-9._/+@%=,~-]*", location.path)
    assert ".." not in location.path.split("/")


@settings(max_examples=1000, deadline=None)
@given(
    text=st.one_of(
        st.text(max_size=120), hostile_text, st.text(max_size=80).map(lambda t: "/var/lib/one/" + t)
    )
)
def test_a_checked_host_path_never_leaves_oneadmins_tree(text: str) -> None:
    root = inputs.root()
    try:
        path = inputs.path_inside_root(text, "the path")
    except InvalidInput:
        return
    assert str(path).startswith(str(root).rstrip("/") + "/")
    assert ".." not in path.parts
    assert "\n" not in str(path) and "\0" not in str(path)
    assert Path(os.path.normpath(path)) == path


@settings(max_examples=1000, deadline=None)
@given(stdin=st.binary(max_size=3000), argv=st.lists(st.text(max_size=20), max_size=3))
def test_any_driver_action_bytes_parse_or_give_one_invalid_input_line(stdin: bytes, argv: list[str]) -> None:
    try:
        read_ds_action(argv or ["7"], io.BytesIO(stdin))
    except InvalidInput as error:
        assert "\n" not in str(error)


@pytest.mark.parametrize("command", [["doctor"], ["network", "status"], ["network", "init"]])
@PROPERTY
@given(word=hostile_word.filter(lambda word: "," not in word and not is_host_name(word.strip() or "h2")))
def test_a_hostile_host_name_is_refused_by_the_admin_cli(world: World, command: list[str], word: str) -> None:
    """``--hosts`` goes to ssh: no word that is not a plain host name gets that far (blanks around
    a name are trimmed, as a comma-separated list is written)."""
    outcome = world.admin([*command, "--hosts", f"h1,{word}"])

    refused_cleanly(outcome.problems(""))
