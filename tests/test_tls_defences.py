"""TLS and login defences that must never quietly go away: the server's
certificate is verified for SMTPS (port 465) as for STARTTLS, its name must
be the host we asked for, and --verbose masks an AUTH LOGIN exchange (not
only AUTH PLAIN). Each test runs a real server on 127.0.0.1 with a
certificate that is wrong in one way."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import trustme
from conftest import PASSWORD, USER, Run, run_cli, write_config, write_template, write_xlsx
from smtp_server import SmtpTestServer

TEMPLATE = "From: Club <club@example.com>\nSubject: Hi {{ name }}\nTo: {{ name }} <{{ email }}>\n\nHello {{ name }}\n"
COMMANDS = {"check": ("--smtp",), "send": ("--yes",)}  # check logs in and quits; send sends


def run_command(command: str, xlsx: Path, template: Path, *extra: str) -> Run:
    """``mailmerge check --smtp`` or ``mailmerge send --yes`` on the list."""
    return run_cli(command, xlsx, "-t", template, *COMMANDS[command], *extra)


@pytest.fixture
def small_list(tmp_path: Path) -> tuple[Path, Path]:
    xlsx = write_xlsx(tmp_path / "list.xlsx", ("name", "email"), [("Ann", "ann@example.com"), ("Bob", "bob@example.com")])
    return xlsx, write_template(tmp_path / "t.txt", TEMPLATE)


def tls_server(security: str, **options: Any) -> SmtpTestServer:
    """A server with TLS from the first byte (``ssl``) or after STARTTLS, and AUTH."""
    return SmtpTestServer(tls=security == "starttls", implicit_tls=security == "ssl",
                          auth={USER: PASSWORD}, **options)


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("security", ["ssl", "starttls"])
def test_a_certificate_from_another_authority_is_refused(
    tmp_path: Path, small_list: tuple[Path, Path], security: str, command: str
) -> None:
    xlsx, template = small_list
    trusted = tmp_path / "trusted-ca.pem"  # the CA the config trusts did not sign the server's certificate
    trustme.CA().cert_pem.write_to_path(str(trusted))
    with tls_server(security) as server:
        write_config(tmp_path, server, security=security, ca_file=str(trusted))
        run = run_command(command, xlsx, template)

    assert run.exit_code == 1, run.output
    error = run.stderr.splitlines()[-1]
    assert error.startswith("error: ") and f"certificate of 127.0.0.1:{server.port}" in error
    assert "unable to get local issuer certificate" in error and "ca_file" in error
    assert "Traceback" not in run.output
    assert server.auth_attempts == 0 and server.messages == []  # no password, no message


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(("security", "host"), [("ssl", "127.0.0.1"), ("starttls", "127.0.0.1"), ("ssl", "localhost")])
def test_a_certificate_for_another_name_is_refused(
    tmp_path: Path, small_list: tuple[Path, Path], security: str, host: str, command: str
) -> None:
    xlsx, template = small_list
    # Signed by the CA the config trusts, but for another name than the one we connect to.
    with tls_server(security, cert_names=["other.example"]) as server:
        write_config(tmp_path, server, security=security, host=host)
        run = run_command(command, xlsx, template)

    assert run.exit_code == 1, run.output
    error = run.stderr.splitlines()[-1]
    assert error.startswith("error: ") and f"certificate of {host}:{server.port}" in error
    assert f"mismatch, certificate is not valid for '{host}'" in error
    assert server.auth_attempts == 0 and server.messages == []


def test_the_right_certificate_is_accepted_over_ssl(tmp_path: Path, small_list: tuple[Path, Path]) -> None:
    """The counterpart of the refusals above: the same set-up with a good
    certificate works, so they fail for the reason they say."""
    xlsx, template = small_list
    with tls_server("ssl") as server:
        write_config(tmp_path, server, security="ssl", host="localhost")
        run = run_command("send", xlsx, template)

    assert run.exit_code == 0, run.output
    assert [m.rcpt_tos for m in server.messages] == [["ann@example.com"], ["bob@example.com"]]


def base64_forms(secret: str) -> list[str]:
    """The base64 text that ``secret`` gives wherever it sits in an encoded
    string: at each of the three alignments, the characters that depend on the
    secret alone (an AUTH PLAIN blob holds the password after the username)."""
    data = secret.encode()
    forms = []
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + data).decode()
        first, end = -(-8 * shift // 6), 8 * (shift + len(data)) // 6
        forms.append(encoded[first:end])
    return forms


@pytest.mark.parametrize("command", COMMANDS)
def test_verbose_masks_an_auth_login_exchange(tmp_path: Path, small_list: tuple[Path, Path], command: str) -> None:
    xlsx, template = small_list
    with tls_server("starttls", auth_mechanisms=["LOGIN"]) as server:
        write_config(tmp_path, server)
        run = run_command(command, xlsx, template, "--verbose")

    assert run.exit_code == 0, run.output
    assert server.auth_mechanisms_used == ["LOGIN"] and server.auth_successes == 1
    conversation = [line.strip() for line in run.stderr.splitlines() if line.startswith(("C: ", "S: "))]
    login = conversation.index("C: AUTH LOGIN ********")  # the username's base64 masked too
    # The password's turn: the server asks (334), the client answers; both masked.
    assert conversation[login + 1:login + 4] == ["S: 334 ********", "C: ********", "S: 235 2.7.0 Authentication successful"]
    # The username may show elsewhere (check says "logged in as"); the password never, in any form.
    for secret in (PASSWORD, *base64_forms(PASSWORD)):
        assert secret not in run.output
        for path in (p for p in tmp_path.rglob("*") if p.is_file()):
            assert secret.encode() not in path.read_bytes(), path
