"""mailmerge against a real Postfix (tests/postfix_server.py), and what it
makes of a server's greeting: a 4xx is "not now", a 5xx is "not you"."""

from __future__ import annotations

import csv
import re
import smtplib
import socketserver
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import run_cli, write_config, write_template, write_xlsx
from postfix_server import PostfixServer

TEMPLATE = "Subject: {{ name }}님, 안녕하세요\n\nDear {{ name }},\nsee you on Friday.\n"


def make_list(folder: Path, count: int, prefix: str) -> tuple[Path, Path, list[str]]:
    """An Excel list of ``count`` rows (row 8 Korean) and its template."""
    rows = [(f"Member {i}", f"{prefix}{i:03d}@example.com") for i in range(count)]
    if count > 7:
        rows[7] = ("김민수", f"{prefix}-minsu@example.com")
    xlsx = write_xlsx(folder / "list.xlsx", ("name", "email"), rows)
    return xlsx, write_template(folder / "news.txt", TEMPLATE), [email for _, email in rows]


def set_send(config: Path, **settings: float) -> None:
    """Change keys of [send] in the mailmerge.toml write_config wrote."""
    text = config.read_text(encoding="utf-8")
    for key, value in settings.items():
        text, found = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", text)
        if not found:
            text = text.replace("[send]\n", f"[send]\n{key} = {value}\n")
    config.write_text(text, encoding="utf-8")


def report_states(folder: Path) -> dict[str, str]:
    with (folder / "list.report.csv").open(encoding="utf-8-sig", newline="") as handle:
        return {row["address"]: row["status"] for row in csv.DictReader(handle)}


def said(text: str) -> str:
    """The output with its line wrapping undone."""
    return " ".join(text.split())


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def sessions(log: str, listener: str) -> list[str]:
    """What each finished session on ``listener`` did: Postfix's command counts."""
    return re.findall(rf"postfix/{listener}/smtpd\[\d+\]: disconnect from \S+ (.*)", log)


def greet(postfix: PostfixServer, listener: str) -> int:
    """Connect to ``listener`` and say QUIT at once; the greeting's code."""
    client = smtplib.SMTP(timeout=10)
    code, _ = client.connect(postfix.host, postfix.ports[listener])
    client.close()
    return code


def fresh_rate_window(postfix: PostfixServer) -> None:
    """Connect until Postfix lets one in: it opened a new rate window then,
    which lasts at least rate_time_unit - 1 s more, so every connection in
    that time gets a 421 greeting."""
    deadline = time.monotonic() + postfix.rate_time_unit + 5
    while greet(postfix, "connection_rate") != 220:
        assert time.monotonic() < deadline, "the connection rate window never reset"
        time.sleep(0.2)


# --- through Postfix's submission listener --------------------------------------------------


def test_200_rows_in_one_connection_with_one_login(tmp_path: Path, postfix: PostfixServer) -> None:
    xlsx, template, addresses = make_list(tmp_path, 200, "member")
    write_config(tmp_path, postfix)
    log_start = len(postfix.maillog())

    run = run_cli("send", xlsx, "-t", template, "--yes")

    assert run.exit_code == 0, run.output
    assert "sent 200, refused 0, invalid 0" in run.stdout
    postfix.wait_for_delivery(addresses)
    arrived = Counter(to for to in postfix.recipients() if to in addresses)
    assert arrived == Counter(addresses)  # each once, none twice
    wait_for(lambda: bool(sessions(postfix.maillog()[log_start:], "submission")))
    done = sessions(postfix.maillog()[log_start:], "submission")
    assert len(done) == 1 and "ehlo=2 starttls=1 auth=1 mail=200 rcpt=200" in done[0], done

    [raw] = postfix.delivered("member-minsu@example.com")
    head = raw.split(b"\n\n", 1)[0]
    head.decode("ascii")  # the Korean subject travels as encoded words
    message = PostfixServer.parse(raw)
    assert message["Subject"] == "김민수님, 안녕하세요"
    assert message.get_content() == "Dear 김민수,\nsee you on Friday.\n"


# --- the greeting ---------------------------------------------------------------------------


def test_a_554_greeting_says_the_server_refuses_this_client(tmp_path: Path, postfix: PostfixServer) -> None:
    xlsx, template, addresses = make_list(tmp_path, 3, "blocked")
    write_config(tmp_path, postfix, port=postfix.ports["blocked"])
    log_start = len(postfix.maillog())

    run = run_cli("send", xlsx, "-t", template, "--yes")

    assert run.exit_code == 1, run.output
    error = said(run.stderr)
    assert (f"error: {postfix.host}:{postfix.ports['blocked']} refuses connections from this computer: "
            "554 5.7.1 <unknown[127.0.0.1]>: Client host rejected: Access denied (this is about your "
            "network address or its reputation, not your settings") in error
    assert "STARTTLS" not in error and "check host and port" not in error
    assert not set(addresses) & set(postfix.recipients())
    wait_for(lambda: len(sessions(postfix.maillog()[log_start:], "blocked")) == 1)
    assert sessions(postfix.maillog()[log_start:], "blocked") == ["quit=1 commands=1"]  # no EHLO after it


def test_check_smtp_does_not_call_a_refusing_server_connected(tmp_path: Path, postfix: PostfixServer) -> None:
    xlsx, template, _ = make_list(tmp_path, 1, "check")
    write_config(tmp_path, postfix, port=postfix.ports["blocked"])

    run = run_cli("check", xlsx, "-t", template, "--smtp")

    assert run.exit_code == 1, run.output
    assert "connected to" not in run.output
    assert "refuses connections from this computer: 554 5.7.1" in said(run.stderr)


def test_a_421_greeting_is_waited_out_and_then_reported_with_the_servers_words(
        tmp_path: Path, postfix: PostfixServer) -> None:
    xlsx, template, addresses = make_list(tmp_path, 3, "busy")
    config = write_config(tmp_path, postfix, port=postfix.ports["connection_rate"])
    set_send(config, reconnect_attempts=2, reconnect_delay=0.01)
    fresh_rate_window(postfix)
    log_start = len(postfix.maillog())

    run = run_cli("send", xlsx, "-t", template, "--yes")

    assert run.exit_code == 1, run.output
    output = said(run.stderr)
    busy = (f"{postfix.host}:{postfix.ports['connection_rate']} is refusing connections for now: "
            "421 4.7.0 mx.mailmerge.test Error: too many connections from 127.0.0.1 "
            "(a temporary limit: wait and try again)")
    assert f"{busy}; reconnecting in 0.01 s (attempt 1 of 2)" in output
    assert f"{busy}; reconnecting in 0.02 s (attempt 2 of 2)" in output
    assert f"error: gave up after 2 reconnection attempts: {busy}" in output
    assert "check host and port" not in output
    assert set(report_states(tmp_path).values()) == {"not_sent_yet"}
    log = postfix.maillog()[log_start:]
    assert log.count("warning: Connection rate limit exceeded") == 3, log


def test_after_a_421_greeting_the_send_goes_through_once_the_server_lets_it(
        tmp_path: Path, postfix: PostfixServer) -> None:
    xlsx, template, addresses = make_list(tmp_path, 3, "patient")
    config = write_config(tmp_path, postfix, port=postfix.ports["connection_rate"])
    set_send(config, reconnect_attempts=10, reconnect_delay=0.5, reconnect_max_delay=0.5)
    fresh_rate_window(postfix)

    run = run_cli("send", xlsx, "-t", template, "--yes")

    assert run.exit_code == 0, run.output
    assert "421 4.7.0 mx.mailmerge.test Error: too many connections" in said(run.stderr)
    assert "reconnecting in 0.5 s (attempt 1 of 10)" in said(run.stderr)
    postfix.wait_for_delivery(addresses)
    assert set(report_states(tmp_path).values()) == {"sent"}


# --- the fixture's other listeners do what they say (for the tests that use them) ------------


def test_the_listeners_behave_as_documented(postfix: PostfixServer) -> None:
    postfix.refuse("gone@example.com")
    postfix.defer("later@example.com")

    def session(listener: str) -> smtplib.SMTP:
        client = smtplib.SMTP(postfix.host, postfix.ports[listener], timeout=10)
        client.starttls(context=postfix.ssl_context())
        client.login(postfix.username, postfix.password)
        return client

    with session("submission") as client:
        client.mail("club@example.com")
        assert client.rcpt("gone@example.com")[0] == 550
        assert client.rcpt("later@example.com")[0] == 450
        assert client.rcpt("fine@example.com")[0] == 250

    client = session("hard_error_limit")
    client.mail("club@example.com")
    assert client.rcpt("gone@example.com")[0] == 550
    assert client.rcpt("fine@example.com")[0] == 421  # the first error ends the session
    client.close()

    assert greet(postfix, "blocked") == 554

    with session("message_rate") as client:
        for _ in range(postfix.message_rate_limit):
            client.sendmail("club@example.com", ["fine@example.com"], b"Subject: x\r\n\r\nx\r\n")
        code, reply = client.mail("club@example.com")
        assert (code, reply[:5]) == (450, b"4.7.1"), reply


# --- the greeting, without Postfix --------------------------------------------------------


class GreetingServer(socketserver.ThreadingTCPServer):
    """A TCP server on 127.0.0.1 that greets with ``greeting``, closes at once
    after a 421 (as servers do), answers QUIT with 221 and anything else with
    503; it keeps every command it got."""

    daemon_threads = True
    allow_reuse_address = True
    host, ca_file = "127.0.0.1", None  # what write_config reads

    def __init__(self, greeting: bytes) -> None:
        self.greeting = greeting
        self.commands: list[bytes] = []
        self.connections = 0
        super().__init__(("127.0.0.1", 0), _Greeter)
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _Greeter(socketserver.StreamRequestHandler):
    server: GreetingServer

    def handle(self) -> None:
        self.server.connections += 1
        self.wfile.write(self.server.greeting + b"\r\n")
        if self.server.greeting.startswith(b"421"):
            return
        for line in self.rfile:
            self.server.commands.append(line.strip())
            if line.strip().upper() == b"QUIT":
                self.wfile.write(b"221 2.0.0 Bye\r\n")
                return
            self.wfile.write(b"503 5.5.1 Error: access denied\r\n")


@pytest.fixture
def greeting_server(request: pytest.FixtureRequest) -> Iterator[GreetingServer]:
    server = GreetingServer(request.param)
    yield server
    server.shutdown()
    server.server_close()


def plain_config(folder: Path, server: GreetingServer) -> Path:
    """mailmerge.toml for ``server``: no TLS, no login (the greeting is all there is)."""
    return write_config(folder, server, security="none", username=None)  # type: ignore[arg-type]


@pytest.mark.parametrize("greeting_server", [b"554 5.7.1 Service unavailable; client [127.0.0.1] blocked using zen.spamhaus.org"],
                         indirect=True)
def test_a_5xx_greeting_is_not_retried_and_quit_is_said(tmp_path: Path, greeting_server: GreetingServer) -> None:
    xlsx, template, _ = make_list(tmp_path, 2, "spamhaus")
    plain_config(tmp_path, greeting_server)

    run = run_cli("send", xlsx, "-t", template, "--yes", password=None)

    assert run.exit_code == 1, run.output
    assert ("refuses connections from this computer: 554 5.7.1 Service unavailable; client [127.0.0.1] "
            "blocked using zen.spamhaus.org (this is about your network address") in said(run.stderr)
    assert greeting_server.connections == 1
    assert [c.upper() for c in greeting_server.commands] == [b"QUIT"]


@pytest.mark.parametrize("greeting_server", [b"421 4.3.2 System not accepting network messages"], indirect=True)
def test_a_4xx_greeting_is_retried_per_the_reconnect_settings(tmp_path: Path, greeting_server: GreetingServer) -> None:
    xlsx, template, _ = make_list(tmp_path, 2, "maintenance")
    set_send(plain_config(tmp_path, greeting_server), reconnect_attempts=3)

    run = run_cli("send", xlsx, "-t", template, "--yes", password=None)

    assert run.exit_code == 1, run.output
    assert greeting_server.connections == 4  # the first try and 3 more
    assert ("gave up after 3 reconnection attempts: 127.0.0.1:"
            f"{greeting_server.port} is refusing connections for now: 421 4.3.2 System not accepting "
            "network messages (a temporary limit: wait and try again)") in said(run.stderr)


@pytest.mark.parametrize("greeting_server", [b"* OK [CAPABILITY IMAP4rev1] Dovecot ready."], indirect=True)
def test_a_server_that_is_not_smtp_says_check_host_and_port(tmp_path: Path, greeting_server: GreetingServer) -> None:
    xlsx, template, _ = make_list(tmp_path, 2, "imap")
    plain_config(tmp_path, greeting_server)

    run = run_cli("send", xlsx, "-t", template, "--yes", password=None)

    assert run.exit_code == 1, run.output
    assert f"127.0.0.1:{greeting_server.port} did not greet like an SMTP server" in said(run.stderr)
    assert "check host and port in [smtp]" in said(run.stderr)
