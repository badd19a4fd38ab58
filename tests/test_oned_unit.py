"""The drivers' client of oned (``one_ipfs.opennebula.oned``) against a fake oned on loopback: it finds
oned and oneadmin's session where OpenNebula's CLI and Ruby drivers do, sends the calls the CLI would send,
and turns each way oned can fail into one line."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from one_ipfs.defaults import ONED_TIMEOUT
from one_ipfs.errors import ObjectMissing, OnedUnreachable, OpenNebulaError
from one_ipfs.opennebula import oned
from testbed.one.api import NO_EXISTS, ApiFailure, ApiServer, Method
from tests.support.oned import SESSION, fake_oned, self_signed
from tests.test_opennebula_input import datastore_xml, image_xml


def test_drivers_read_and_write_images_through_oned_as_the_cli_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[tuple[object, ...]] = []

    answers: dict[str, object] = {
        "one.image.info": image_xml(),
        "one.datastorepool.info": f"<DATASTORE_POOL>{datastore_xml()}</DATASTORE_POOL>",
        "one.image.update": 7,
        "one.image.allocate": 12,
        "one.userpool.info": "<USER_POOL><USER><ID>3</ID><NAME>alice</NAME></USER></USER_POOL>",
        "one.image.chown": 12,
    }

    def recorded(method: str) -> Method:
        def answer(*params: object) -> object:
            sent.append((method, *params))
            return answers[method]

        return answer

    with fake_oned(tmp_path, {method: recorded(method) for method in answers}) as env:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        image = oned.show_image(7)
        (datastore,) = oned.list_datastores()
        oned.update_image(7, {"IPFS_CID": 'a "quoted" cid'})
        created = oned.create_image(100, oned.template_line("NAME", "restored"))
        oned.chown("image", created, "alice")

    assert (image.id, datastore.id, datastore.ds_mad, created) == (7, 100, "ipfs", 12)
    assert sent == [
        ("one.image.info", 7, False),
        ("one.datastorepool.info",),
        ("one.image.update", 7, 'IPFS_CID = "a \\"quoted\\" cid"\n', 1),
        ("one.image.allocate", 'NAME = "restored"\n', 100, False),
        ("one.userpool.info",),
        ("one.image.chown", 12, 3, -1),
    ]


def test_endpoint_and_session_come_from_the_environment_then_home_then_the_default(tmp_path: Path) -> None:
    dot_one = tmp_path / ".one"
    dot_one.mkdir()
    (dot_one / "one_auth").write_text("oneadmin:from-home\n")
    (tmp_path / "named").write_text("oneadmin:named\n")

    from_home = oned.endpoint({"HOME": str(tmp_path)})
    (dot_one / "one_endpoint").write_text("http://127.0.0.1:2644/RPC2\n")
    from_files = oned.endpoint({"HOME": str(tmp_path), "ONE_AUTH": str(tmp_path / "no-such-file")})
    named = oned.endpoint(
        {"HOME": str(tmp_path), "ONE_AUTH": str(tmp_path / "named"), "ONE_XMLRPC": "http://x/RPC2"}
    )

    assert (from_home.url, from_home.session) == (oned.DEFAULT_ENDPOINT, "oneadmin:from-home")
    assert (from_files.url, from_files.session) == ("http://127.0.0.1:2644/RPC2", "oneadmin:from-home")
    assert (named.url, named.session, named.auth) == (
        "http://x/RPC2",
        "oneadmin:named",
        str(tmp_path / "named"),
    )


def test_each_failure_of_oned_is_one_line_naming_what_is_wrong(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(oned, "ONEADMIN_FILES", tmp_path / "no-oneadmin")

    def missing(oid: int, decrypt: bool) -> str:
        raise ApiFailure(f"[one.vm.info] Error getting virtual machine [{oid}].", NO_EXISTS)

    methods = {"one.vm.info": missing, "one.imagepool.info": lambda *pool_filter: "x" * oned.MAX_XML}
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        nothing = oned.Endpoint(f"http://127.0.0.1:{closed.getsockname()[1]}/RPC2", SESSION)
    with fake_oned(tmp_path, methods) as env:
        at = oned.Endpoint(env["ONE_XMLRPC"], SESSION)
        wrong = oned.Endpoint(env["ONE_XMLRPC"], "oneadmin:wrong", "/var/lib/one/.one/one_auth")
        with pytest.raises(ObjectMissing) as gone:
            oned.call("one.vm.info", 42, False, at=at)
        with pytest.raises(OpenNebulaError) as refused:
            oned.call("one.vm.info", 42, False, at=wrong)
        with pytest.raises(OpenNebulaError) as oversize:
            oned.call("one.imagepool.info", -2, -1, -1, at=at)
    with pytest.raises(OnedUnreachable) as unreachable:
        oned.call("one.vm.info", 42, False, at=nothing)
    with pytest.raises(OpenNebulaError) as no_session:
        oned.endpoint({"HOME": str(tmp_path / "nowhere")})

    assert str(gone.value) == "[one.vm.info] Error getting virtual machine [42]."
    assert str(refused.value) == (
        "oned refused the session from /var/lib/one/.one/one_auth: "
        "[one.vm.info] User couldn't be authenticated, aborting call."
    )
    assert str(oversize.value) == "oned answered with more than 16 MiB"
    assert str(unreachable.value).startswith(f"oned does not answer at {nothing.url} (one.vm.info): ")
    assert str(no_session.value).startswith("no OpenNebula credentials: ONE_AUTH names no file")
    assert all("\n" not in str(e.value) for e in (gone, refused, oversize, unreachable, no_session))


def test_each_request_waits_as_long_as_one_xmlrpc_timeout_says_or_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = ApiServer({"one.vm.info": lambda oid, decrypt: "<VM/>"}, SESSION)
    auth = tmp_path / "one_auth"
    auth.write_text(f"{SESSION}\n")
    for name, value in {"ONE_XMLRPC": server.url, "ONE_AUTH": str(auth), "ONE_XMLRPC_TIMEOUT": "1"}.items():
        monkeypatch.setenv(name, value)
    try:
        with server.holding("one.vm.info"), pytest.raises(OnedUnreachable) as late:
            oned.show_vm(42)
    finally:
        server.close()
    default = oned.endpoint({"ONE_AUTH": str(auth)})
    refused = []
    for value in ("soon", "0", "-5", "1.5"):
        with pytest.raises(OpenNebulaError) as bad:
            oned.endpoint({"ONE_AUTH": str(auth), "ONE_XMLRPC_TIMEOUT": value})
        refused.append(str(bad.value))

    assert str(late.value) == f"oned at {server.url} did not answer one.vm.info within 1 s"
    assert default.timeout == ONED_TIMEOUT
    assert refused[0] == "ONE_XMLRPC_TIMEOUT is 'soon', not a whole number of seconds above 0"
    assert all(line.startswith("ONE_XMLRPC_TIMEOUT is ") and "\n" not in line for line in refused)


def test_an_https_endpoint_is_trusted_with_the_ca_in_one_cert_dir_or_unchecked_when_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As OpenNebula's Ruby client: the system's CAs and ONE_CERT_DIR's files, or ONE_DISABLE_SSL_VERIFY."""
    monkeypatch.setattr(oned, "ONEADMIN_FILES", tmp_path / "no-oneadmin")
    methods = {"one.vm.info": lambda oid, decrypt: f"<VM><ID>{oid}</ID></VM>"}
    with fake_oned(tmp_path, methods, self_signed(tmp_path)) as env:
        trusted = oned.endpoint({**env, "ONE_CERT_DIR": str(tmp_path / "ca")})
        unchecked = oned.endpoint({**env, "ONE_DISABLE_SSL_VERIFY": "yes"})
        shown = [oned.call("one.vm.info", 7, False, at=at) for at in (trusted, unchecked)]
        with pytest.raises(OpenNebulaError) as untrusted:
            oned.call("one.vm.info", 7, False, at=oned.endpoint(env))
    refused = []
    for url in ("ftp://127.0.0.1/RPC2", "127.0.0.1:2633/RPC2", "HTTPS://x\nevil"):
        with pytest.raises(OpenNebulaError) as bad:
            oned.call("one.vm.info", 7, False, at=oned.Endpoint(url, SESSION))
        refused.append(str(bad.value))

    assert env["ONE_XMLRPC"].startswith("https://127.0.0.1:")
    assert shown == ["<VM><ID>7</ID></VM>"] * 2
    assert str(untrusted.value).startswith(f"oned's certificate at {env['ONE_XMLRPC']} is not trusted (self")
    assert str(untrusted.value).endswith(
        "certificate): put its CA in the folder ONE_CERT_DIR names, or set ONE_DISABLE_SSL_VERIFY"
    )
    assert (
        refused[0] == "oned's endpoint 'ftp://127.0.0.1/RPC2' is not an http:// or https:// URL (ONE_XMLRPC)"
    )
    assert all("\n" not in line and "is not an http:// or https:// URL" in line for line in refused)
