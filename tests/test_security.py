"""Security and credentials: where the password comes from, that it never
leaks, TLS that is never skipped, OAuth2, and lists that cannot inject headers."""

from __future__ import annotations

import base64
import csv
from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest
from conftest import PASSWORD, USER, run_cli, write_config, write_template, write_xlsx
from keyring_backend import FileKeyring
from smtp_server import SmtpTestServer

from mailmerge.config.file import load_config

TEMPLATE = "From: Club <club@example.com>\nSubject: Hi {{ name }}\nTo: {{ name }} <{{ email }}>\n\nHello {{ name }}\n"
WRONG = "not-the-password"


@pytest.fixture
def test_keyring(tmp_path: Path) -> Iterator[FileKeyring]:
    """A keyring in a file, in place of the system's, for the test's duration."""
    previous = keyring.get_keyring()
    backend = FileKeyring(tmp_path / "keyring.json")
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


@pytest.fixture
def small_list(tmp_path: Path) -> tuple[Path, Path]:
    xlsx = write_xlsx(tmp_path / "list.xlsx", ("name", "email"), [("Ann", "ann@example.com"), ("Bob", "bob@example.com")])
    return xlsx, write_template(tmp_path / "t.txt", TEMPLATE)


def add_to_config(path: Path, section: str, line: str) -> None:
    path.write_text(path.read_text().replace(f"[{section}]", f"[{section}]\n{line}"))


@pytest.mark.parametrize(
    ("environment", "dotenv", "command", "stored"),
    [
        (PASSWORD, WRONG, WRONG, WRONG),  # the environment comes first
        (None, PASSWORD, WRONG, WRONG),  # then .env beside the config
        (None, None, PASSWORD, WRONG),  # then password_command
        (None, None, None, PASSWORD),  # then the keyring
    ],
    ids=["environment", "dotenv", "password_command", "keyring"],
)
def test_password_sources_in_order(
    tmp_path: Path, tls_server: SmtpTestServer, small_list: tuple[Path, Path], test_keyring: FileKeyring,
    environment: str | None, dotenv: str | None, command: str | None, stored: str,
) -> None:
    xlsx, template = small_list
    config = write_config(tmp_path, tls_server)
    if dotenv:
        (tmp_path / ".env").write_text(f"MAILMERGE_PASSWORD={dotenv}\n")
    if command:
        add_to_config(config, "smtp", f'password_command = "echo {command}"')
    test_keyring.set_password("mailmerge", f"{USER}@{tls_server.host}", stored)

    run = run_cli("send", xlsx, "-t", template, "--yes", password=environment)

    assert run.exit_code == 0, run.output
    assert (tls_server.auth_attempts, tls_server.auth_successes) == (1, 1)


def test_login_stores_in_the_keyring_and_logout_removes(
    tmp_path: Path, tls_server: SmtpTestServer, small_list: tuple[Path, Path], test_keyring: FileKeyring
) -> None:
    xlsx, template = small_list
    config = write_config(tmp_path, tls_server)

    login = run_cli("login", "--config", config, password=None, stdin=f"{PASSWORD}\n")
    sent = run_cli("send", xlsx, "-t", template, "--yes", password=None)
    logout = run_cli("logout", "--config", config)
    again = run_cli("send", xlsx, "-t", template, "--yes", "--restart", password=None)

    assert login.exit_code == 0 and "stored the password" in login.stdout
    assert PASSWORD not in login.output
    assert sent.exit_code == 0, sent.output
    assert logout.exit_code == 0 and "removed the password" in logout.stdout
    assert again.exit_code == 2 and "mailmerge login" in again.stderr


def test_no_password_anywhere_names_every_source(tmp_path: Path, tls_server: SmtpTestServer, small_list: tuple[Path, Path], test_keyring: FileKeyring) -> None:
    xlsx, template = small_list
    write_config(tmp_path, tls_server)

    run = run_cli("send", xlsx, "-t", template, "--yes", password=None)

    assert run.exit_code == 2
    for source in ("MAILMERGE_PASSWORD", ".env", "password_command", "mailmerge login"):
        assert source in run.stderr
    assert tls_server.connections == 0


def test_a_login_without_tls_must_be_allowed_explicitly(tmp_path: Path, small_list: tuple[Path, Path]) -> None:
    xlsx, template = small_list
    with SmtpTestServer(auth={USER: PASSWORD}) as server:
        config = write_config(tmp_path, server, security="none")
        refused = run_cli("send", xlsx, "-t", template, "--yes")
        assert server.connections == 0
        add_to_config(config, "smtp", "allow_insecure_auth = true")
        allowed = run_cli("send", xlsx, "-t", template, "--yes")

    assert refused.exit_code == 2 and "allow_insecure_auth" in refused.stderr
    assert allowed.exit_code == 0, allowed.output
    assert "without encryption" in allowed.stderr


def test_oauth2_token_is_sent_as_xoauth2_and_a_bad_one_fails_cleanly(tmp_path: Path, small_list: tuple[Path, Path]) -> None:
    xlsx, template = small_list
    with SmtpTestServer(tls=True, oauth2_tokens={USER: "ya29.good-token"}) as server:
        config = write_config(tmp_path, server)
        add_to_config(config, "smtp", 'auth = "xoauth2"')
        good = run_cli("send", xlsx, "-t", template, "--yes", password=None,
                       env={"MAILMERGE_OAUTH2_TOKEN": "ya29.good-token"})
        add_to_config(config, "smtp", 'oauth2_token_command = "echo ya29.expired"')
        bad = run_cli("send", xlsx, "-t", template, "--yes", "--restart", password=None)

    assert good.exit_code == 0, good.output
    assert len(server.messages) == 2
    assert bad.exit_code == 1
    assert "refused the login" in bad.stderr and "535" in bad.stderr
    assert "ya29" not in bad.output


def test_a_row_injecting_headers_is_never_transmitted(tmp_path: Path, tls_server: SmtpTestServer) -> None:
    rows = [("Ann", "ann@example.com"), ("Kim\r\nBcc: everyone@example.com", "kim@example.com"), ("Bob", "bob@example.com")]
    xlsx = write_xlsx(tmp_path / "list.xlsx", ("name", "email"), rows)
    template = write_template(tmp_path / "t.txt", TEMPLATE)
    write_config(tmp_path, tls_server)

    run = run_cli("send", xlsx, "-t", template, "--yes")

    assert run.exit_code == 3
    assert tls_server.recipients() == ["ann@example.com", "bob@example.com"]
    assert not any(b"everyone@example.com" in m.data or b"Kim" in m.data for m in tls_server.messages)
    with (tmp_path / "list.report.csv").open(encoding="utf-8-sig") as handle:
        row3 = [r for r in csv.DictReader(handle) if r["row"] == "3"]
    assert row3 and row3[0]["status"] == "invalid" and "line break" in row3[0]["reason"]


def test_verbose_masks_the_login_and_no_file_or_output_holds_the_password(
    tmp_path: Path, tls_server: SmtpTestServer, small_list: tuple[Path, Path]
) -> None:
    xlsx, template = small_list
    write_config(tmp_path, tls_server)

    run = run_cli("send", xlsx, "-t", template, "--yes", "--verbose")

    assert run.exit_code == 0, run.output
    assert "C: AUTH PLAIN ********" in run.stderr
    assert "S: 235" in run.stderr and "C: MAIL FROM:<club@example.com>" in run.stderr
    secrets = [PASSWORD, base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode(),
               base64.b64encode(PASSWORD.encode()).decode()]
    assert not any(secret in run.output for secret in secrets)
    for path in (p for p in tmp_path.rglob("*") if p.is_file()):
        data = path.read_bytes()
        assert not any(secret.encode() in data for secret in secrets), path


def test_check_smtp_reports_each_step_and_sends_nothing(
    tmp_path: Path, tls_server: SmtpTestServer, small_list: tuple[Path, Path]
) -> None:
    xlsx, template = small_list
    write_config(tmp_path, tls_server)

    run = run_cli("check", xlsx, "-t", template, "--smtp")

    assert run.exit_code == 0, run.output
    steps = [line.strip() for line in run.stdout.splitlines() if line.strip().startswith("ok")]
    assert steps[0] == f"ok  connected to {tls_server.host}:{tls_server.port}"
    assert "certificate verified for 127.0.0.1" in steps[1]
    assert steps[2] == f"ok  logged in as {USER} (PLAIN)" and steps[3] == "ok  QUIT"
    assert tls_server.messages == [] and tls_server.auth_successes == 1


def test_a_provider_fills_the_server_and_its_limits(tmp_path: Path) -> None:
    config = tmp_path / "mailmerge.toml"
    config.write_text('[smtp]\nprovider = "office365"\nusername = "me@contoso.com"\n')
    loaded = load_config(config, environ={})
    assert (loaded.smtp.host, loaded.smtp.port, loaded.smtp.security) == ("smtp.office365.com", 587, "starttls")
    assert loaded.send.rate == 2.0 and loaded.send.max_messages == 10000  # 30 a minute, 10,000 a day

    config.write_text('[smtp]\nprovider = "naver"\n[send]\nrate = "10/min"\n')
    naver = load_config(config, environ={})
    assert (naver.smtp.host, naver.smtp.port, naver.smtp.security) == ("smtp.naver.com", 465, "ssl")
    assert naver.send.rate == 6.0  # the user's own setting wins

    config.write_text('[smtp]\nprovider = "gmai"\n')
    with pytest.raises(Exception, match="did you mean 'gmail'"):
        load_config(config, environ={})


def test_a_refused_login_gets_the_providers_hint(tmp_path: Path, tls_server: SmtpTestServer, small_list: tuple[Path, Path]) -> None:
    xlsx, template = small_list
    config = write_config(tmp_path, tls_server)
    add_to_config(config, "smtp", 'provider = "gmail"')  # host and port below still win

    run = run_cli("send", xlsx, "-t", template, "--yes", password=WRONG)

    assert run.exit_code == 1
    assert "app password" in run.stderr and "2-step verification" in run.stderr
    assert tls_server.auth_attempts == 1
