"""Every reply of the server is read and obeyed.

- A ``421`` that cuts a message short (after a ``550`` to one of its RCPTs)
  loses nothing: that address is refused, the others of the message go after
  reconnecting, exactly once, and the run finishes.
- A ``4xx`` to MAIL FROM (a sender rate limit) stops sending on that
  connection; the tool waits, reconnects and goes on, and sends no RCPT or
  DATA behind a MAIL FROM that may fail again.

Against a real Postfix (tests/postfix_server.py) and against the aiosmtpd
server, with and without PIPELINING.
"""

from __future__ import annotations

import collections
import csv
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run_cli, write_config, write_template, write_xlsx
from postfix_server import PostfixServer
from smtp_server import Faults, SmtpTestServer

TEMPLATE = "Subject: News for {{ name }}\nTo: {{ name }} <{{ email }}>\nCc: {{ cc }}\n\nHello {{ name }}\n"
SENDER = "club@example.com"


def make_list(folder: Path, count: int, prefix: str, refused: str = "") -> tuple[Path, Path, list[str]]:
    """``count`` rows, each to one address and Cc one more; row 3 (the second
    row) is Cc ``refused`` too, between two others. Returns every address."""
    rows = [(f"Member {i}", f"{prefix}{i}@example.com", f"{prefix}{i}-cc@example.com") for i in range(count)]
    if refused:
        name, email, cc = rows[1]
        rows[1] = (name, email, f"{refused}, {cc}")
    xlsx = write_xlsx(folder / "list.xlsx", ("name", "email", "cc"), rows)
    addresses = [a.strip() for _, email, cc in rows for a in [email, *cc.split(",")]]
    return xlsx, write_template(folder / "news.txt", TEMPLATE), addresses


def set_send(config: Path, **settings: float) -> None:
    """Set these keys of [send] (in place of the fixture's quick delays)."""
    lines = [line for line in config.read_text().splitlines() if line.split(" = ")[0] not in settings]
    at = lines.index("[send]") + 1
    config.write_text("\n".join(lines[:at] + [f"{k} = {v}" for k, v in settings.items()] + lines[at:]) + "\n")


def report(folder: Path) -> dict[str, tuple[str, str]]:
    """address -> (status, code), as the report says."""
    with (folder / "list.report.csv").open(encoding="utf-8-sig", newline="") as handle:
        return {row["address"]: (row["status"], row["code"]) for row in csv.DictReader(handle)}


def said(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(params=[False, True], ids=["one-by-one", "pipelined"])
def pipelining(request: pytest.FixtureRequest) -> Iterator[bool]:
    """The aiosmtpd server with and without PIPELINING: both ways must read every reply."""
    SmtpTestServer.pipelining_default = request.param
    yield request.param
    SmtpTestServer.pipelining_default = False


# --- a 421 right after a 550 ------------------------------------------------------------------


def test_postfix_a_421_after_a_550_keeps_the_refusal_and_the_run_finishes(
        tmp_path: Path, postfix: PostfixServer) -> None:
    gone = "gone-then-421@example.com"
    postfix.refuse(gone)  # 550 5.1.1; the listener then says 421 to the next command
    xlsx, template, addresses = make_list(tmp_path, 5, "hardlimit", refused=gone)
    write_config(tmp_path, postfix, port=postfix.ports["hard_error_limit"])
    log_start = len(postfix.maillog())

    run = run_cli("send", xlsx, "-t", template, "--yes")

    assert run.exit_code == 3, run.output  # finished, one address refused
    assert "sent 4, refused 1, invalid 0" in run.stdout  # rows: the one with the refused address is refused
    states = report(tmp_path)
    assert states.pop(gone) == ("refused", "550")
    assert set(states.values()) == {("sent", "250")}
    delivered = [a for a in addresses if a != gone]
    postfix.wait_for_delivery(delivered)
    assert collections.Counter(to for to in postfix.recipients() if to.startswith("hardlimit")) \
        == collections.Counter(delivered)  # the refused one's neighbours too: each exactly once
    assert "too many errors after RCPT" in postfix.maillog()[log_start:]  # the 421 did come


def test_a_421_after_a_refused_rcpt_keeps_the_refusal(tmp_path: Path, pipelining: bool) -> None:
    gone = "gone@example.com"
    xlsx, template, addresses = make_list(tmp_path, 5, "member", refused=gone)
    with SmtpTestServer(refuse=[gone], faults=Faults(error_limit=1)) as server:
        write_config(tmp_path, server, security="none", username=None)
        run = run_cli("send", xlsx, "-t", template, "--yes")

    assert run.exit_code == 3, run.output
    states = report(tmp_path)
    assert states.pop(gone) == ("refused", "550")
    assert set(states.values()) == {("sent", "250")}
    assert collections.Counter(server.recipients()) == collections.Counter(a for a in addresses if a != gone)
    assert any(reply.startswith("RCPT 421") for reply in server.error_replies)  # the fault happened
    assert server.connections == 2  # one reconnection, for the rest of that message and the rows after


def test_a_refused_sender_then_421_refuses_every_row_and_the_run_finishes(tmp_path: Path, pipelining: bool) -> None:
    # Each session ends after its first message (553 to MAIL FROM, then 421):
    # the 553 is kept, and a session that settled something counts as progress,
    # so even 2 reconnection attempts are enough for any number of rows.
    xlsx, template, addresses = make_list(tmp_path, 6, "member")
    with SmtpTestServer(faults=Faults(error_limit=1, refuse_senders={SENDER})) as server:
        set_send(write_config(tmp_path, server, security="none", username=None),
                 reconnect_delay=0.01, reconnect_attempts=2)
        run = run_cli("send", xlsx, "-t", template, "--yes")

    assert run.exit_code == 3, run.output
    assert "gave up" not in run.stderr
    assert set(report(tmp_path).values()) == {("refused", "553")}
    assert len(report(tmp_path)) == len(addresses) and server.messages == []
    assert server.connections == 6


# --- a 450 to MAIL FROM: too much mail -------------------------------------------------------


def test_postfix_a_450_to_mail_from_is_waited_out_without_503s(tmp_path: Path, postfix: PostfixServer) -> None:
    xlsx, template, addresses = make_list(tmp_path, 10, "ratelimit")
    config = write_config(tmp_path, postfix, port=postfix.ports["message_rate"])
    # Postfix's window here is 2 s (anvil_rate_time_unit): 0.5, 1, 2 s of waiting cover it.
    set_send(config, reconnect_delay=0.5, reconnect_max_delay=2, reconnect_attempts=5)
    log_start = len(postfix.maillog())

    run = run_cli("send", xlsx, "-t", template, "--yes")

    assert run.exit_code == 0, run.output
    assert "sent 10, refused 0, invalid 0" in run.stdout
    postfix.wait_for_delivery(addresses)
    assert collections.Counter(to for to in postfix.recipients() if to.startswith("ratelimit")) \
        == collections.Counter(addresses)

    log = postfix.maillog()[log_start:]
    sessions = [dict(re.findall(r"(\w+)=(\d+(?:/\d+)?)", line))
                for line in re.findall(r"postfix/message_rate/smtpd\[\d+\]: disconnect from \S+ (.*)", log)]
    assert sessions and all(s.get("quit") == "1" for s in sessions)  # each one ended by us, politely

    def failed(session: dict[str, str], command: str) -> int:
        done, _, tried = session.get(command, "0").partition("/")
        return int(tried or done) - int(done)

    # Only the first refused MAIL FROM came with its RCPTs and DATA (pipelined:
    # nobody knew yet); after it, no RCPT or DATA is ever sent behind a MAIL
    # that may fail, so Postfix answers no "503 need MAIL" again.
    first = next(i for i, s in enumerate(sessions) if failed(s, "mail"))
    assert [failed(s, "rcpt") + failed(s, "data") for s in sessions] == [0] * first + [3] + [0] * (len(sessions) - first - 1)
    assert all(failed(s, "mail") == 1 for s in sessions[first:-1])  # one refusal a session: then it waits
    assert len(sessions) <= 12, sessions  # 10 messages, 3 a window: a few sessions, not one per attempt
    assert f"{postfix.host} asks to slow down: 450 4.7.1 Error: too much mail from 127.0.0.1; " \
           "reconnecting in 0.5 s" in said(run.stderr)
    assert "deferred" not in run.stderr  # the rows are not to blame: none is put off for later


def test_a_450_to_mail_from_is_waited_out(tmp_path: Path, pipelining: bool) -> None:
    xlsx, template, addresses = make_list(tmp_path, 10, "member")
    with SmtpTestServer(faults=Faults(message_rate=(3, 0.5))) as server:
        set_send(write_config(tmp_path, server, security="none", username=None),
                 reconnect_delay=0.1, reconnect_max_delay=0.4, reconnect_attempts=5)
        run = run_cli("send", xlsx, "-t", template, "--yes")

    assert run.exit_code == 0, run.output
    assert collections.Counter(server.recipients()) == collections.Counter(addresses)  # each once
    refused_mail = [r for r in server.error_replies if r.startswith("MAIL 450")]
    others = [r.split()[:2] for r in server.error_replies if not r.startswith("MAIL 450")]
    # Pipelined, the first refused MAIL had its RCPT and DATA behind it already; never again.
    assert others == ([["RCPT", "503"], ["RCPT", "503"], ["DATA", "503"]] if pipelining else [])
    assert 3 <= len(refused_mail) <= 10, refused_mail  # 10 messages, 3 a window: it waited each time
    assert server.connections == len(refused_mail) + 1  # each refusal ended its session
    assert "asks to slow down: 450 4.7.1 Error: too much mail" in said(run.stderr)
    assert "deferred" not in run.stderr
