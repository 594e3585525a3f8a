"""One state model: what a row is, said with one word everywhere (the report,
``--json``, the summary, ``status``), the latest attempt of a row winning.
Every test runs the command against a real SMTP server on 127.0.0.1."""

from __future__ import annotations

import collections
import csv
import json
import signal
import sqlite3
import subprocess
import sys
import os
import time
from pathlib import Path

import pytest
from conftest import PASSWORD, REFUSED, run_cli, write_config, write_template, write_xlsx
from smtp_server import Faults, SmtpTestServer

from mailmerge.outcome import Status, row_status
from mailmerge.state.journal import JOURNAL_FILE

TEMPLATE = (
    "From: Club <club@example.com>\nSubject: Invoice for {{ name }}\nTo: {{ name }} <{{ email }}>\n"
    "Attachment: {{ file }}\n\nHello {{ name }}\n"
)


def make(folder: Path, rows: list[tuple[str, str, str]]) -> tuple[Path, Path]:
    """A list (name, email, file) and the template that attaches each row's file."""
    xlsx = write_xlsx(folder / "list.xlsx", ("name", "email", "file"), rows)
    return xlsx, write_template(folder / "invoice.txt", TEMPLATE)


def report(folder: Path) -> list[dict[str, str]]:
    """The report's lines, as a spreadsheet shows them."""
    with (folder / "list.report.csv").open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def lines_of(folder: Path, row: int) -> list[tuple[str, str]]:
    return [(line["address"], line["status"]) for line in report(folder) if line["row"] == str(row)]


def status_counts(xlsx: Path, template: Path) -> dict[str, int]:
    run = run_cli("status", xlsx, "-t", template, "--json")
    assert run.exit_code == 0, run.output
    return {state: count for state, count in json.loads(run.stdout)["counts"].items() if count}


ROWS = [("Ann", "ann@example.com", "ann.pdf"), ("Bob", "bob@example.com", "bob.pdf"),
        ("Cho", "cho@example.com", "cho.pdf")]


def test_a_row_invalid_then_fixed_is_sent_once_and_reported_sent(tmp_path: Path, plain_server: SmtpTestServer) -> None:
    xlsx, template = make(tmp_path, ROWS)
    for name in ("ann.pdf", "cho.pdf"):
        (tmp_path / name).write_bytes(b"%PDF-1.4 invoice")
    write_config(tmp_path, plain_server, security="none", username=None)

    first = run_cli("send", xlsx, "-t", template, "--yes")
    assert first.exit_code == 3 and "invalid 1" in first.stdout
    assert lines_of(tmp_path, 3)[0][1] == "invalid"

    (tmp_path / "bob.pdf").write_bytes(b"%PDF-1.4 invoice")  # the fix the README recommends
    second = run_cli("send", xlsx, "-t", template, "--yes")
    third = run_cli("send", xlsx, "-t", template, "--yes")

    assert second.exit_code == 0, second.output
    assert "sent 3, refused 0, invalid 0" in second.stdout
    assert lines_of(tmp_path, 3) == [("bob@example.com", "sent")]  # one line: the latest attempt
    assert status_counts(xlsx, template) == {"sent": 3}
    assert third.exit_code == 0 and "Nothing left to send" in third.stderr
    assert collections.Counter(plain_server.recipients()) == {a: 1 for _, a, _ in ROWS}


def test_a_row_made_invalid_after_it_was_sent_stays_sent(tmp_path: Path, plain_server: SmtpTestServer) -> None:
    xlsx, template = make(tmp_path, ROWS)
    for _, _, name in ROWS:
        (tmp_path / name).write_bytes(b"%PDF-1.4 invoice")
    write_config(tmp_path, plain_server, security="none", username=None)
    assert run_cli("send", xlsx, "-t", template, "--yes").exit_code == 0

    (tmp_path / "bob.pdf").unlink()  # tidied up after the send
    dan = ("Dan", "dan@example.com", "ann.pdf")
    write_xlsx(xlsx, ("name", "email", "file"), [*ROWS, dan])  # and a new row: this run sends something
    later = run_cli("send", xlsx, "-t", template, "--yes")
    (tmp_path / "bob.pdf").write_bytes(b"%PDF-1.4 invoice")
    restored = run_cli("send", xlsx, "-t", template, "--yes")

    assert later.exit_code == 0, later.output
    assert lines_of(tmp_path, 3) == [("bob@example.com", "sent")]
    assert status_counts(xlsx, template) == {"sent": 4}
    assert restored.exit_code == 0 and "Nothing left to send" in restored.stderr
    assert collections.Counter(plain_server.recipients()) == {a: 1 for _, a, _ in [*ROWS, dan]}  # never sent again


def test_a_refused_address_corrected_in_the_list_is_sent_and_leaves_the_report(
    tmp_path: Path, plain_server: SmtpTestServer
) -> None:
    rows = [("Ann", "ann@example.com", "a.pdf"), ("Bob", REFUSED, "a.pdf"), ("Cho", "cho@example.com", "a.pdf")]
    xlsx, template = make(tmp_path, rows)
    (tmp_path / "a.pdf").write_bytes(b"%PDF-1.4")
    write_config(tmp_path, plain_server, security="none", username=None)
    first = run_cli("send", xlsx, "-t", template, "--yes")
    assert first.exit_code == 3 and lines_of(tmp_path, 3) == [(REFUSED, "refused")]

    rows[1] = ("Bob", "bob@example.com", "a.pdf")  # the address fixed in the list: not a list change
    write_xlsx(xlsx, ("name", "email", "file"), rows)
    second = run_cli("send", xlsx, "-t", template, "--yes")

    assert second.exit_code == 0, second.output
    assert lines_of(tmp_path, 3) == [("bob@example.com", "sent")]
    assert REFUSED not in (tmp_path / "list.report.csv").read_text(encoding="utf-8-sig")
    assert status_counts(xlsx, template) == {"sent": 3}
    assert plain_server.recipients() == ["ann@example.com", "cho@example.com", "bob@example.com"]


def test_a_refused_row_edited_but_not_its_address_is_not_sent_again(
    tmp_path: Path, plain_server: SmtpTestServer
) -> None:
    rows = [("Ann", "ann@example.com", "a.pdf"), ("Bob", REFUSED, "a.pdf")]
    xlsx, template = make(tmp_path, rows)
    (tmp_path / "a.pdf").write_bytes(b"%PDF-1.4")
    write_config(tmp_path, plain_server, security="none", username=None)
    run_cli("send", xlsx, "-t", template, "--yes")

    write_xlsx(xlsx, ("name", "email", "file"), [rows[0], ("Bobby", REFUSED, "a.pdf")])  # only the name fixed
    dry = json.loads(run_cli("send", xlsx, "-t", template, "--dry-run", "--json").stdout)
    second = run_cli("send", xlsx, "-t", template, "--yes")

    assert dry["counts"]["to_send"] == 0 and dry["counts"]["already_sent"] == 2
    assert second.exit_code == 3 and "Nothing left to send" in second.stderr
    assert lines_of(tmp_path, 3) == [(REFUSED, "refused")]
    assert plain_server.recipients() == ["ann@example.com"]  # a refused address is not tried again


def test_a_refused_row_invalid_for_a_while_keeps_its_refusal(tmp_path: Path, plain_server: SmtpTestServer) -> None:
    rows = [("Ann", "ann@example.com", "a.pdf"), ("Bob", REFUSED, "b.pdf")]
    xlsx, template = make(tmp_path, rows)
    for name in ("a.pdf", "b.pdf"):
        (tmp_path / name).write_bytes(b"%PDF-1.4")
    write_config(tmp_path, plain_server, security="none", username=None)
    run_cli("send", xlsx, "-t", template, "--yes")

    (tmp_path / "b.pdf").unlink()
    write_xlsx(xlsx, ("name", "email", "file"), [*rows, ("Cho", "cho@example.com", "a.pdf")])
    while_invalid = run_cli("send", xlsx, "-t", template, "--yes")  # sends Cho; Bob's row is invalid now
    assert while_invalid.exit_code == 3 and lines_of(tmp_path, 3)[0][1] == "invalid"
    (tmp_path / "b.pdf").write_bytes(b"%PDF-1.4")
    restored = run_cli("send", xlsx, "-t", template, "--yes")

    assert restored.exit_code == 3 and "Nothing left to send" in restored.stderr  # the refusal is not tried again
    assert lines_of(tmp_path, 3) == [(REFUSED, "refused")]


def test_a_row_partly_sent_then_edited_is_still_a_list_change(tmp_path: Path, plain_server: SmtpTestServer) -> None:
    template = write_template(tmp_path / "t.txt", "From: club@example.com\nSubject: Hi\nTo: {{ email }}\n"
                                                  "Cc: {{ cc }}\n\nHello\n")
    xlsx = write_xlsx(tmp_path / "list.xlsx", ("email", "cc"), [("ann@example.com", REFUSED)])
    write_config(tmp_path, plain_server, security="none", username=None)
    first = run_cli("send", xlsx, "-t", template, "--yes")
    assert first.exit_code == 3 and lines_of(tmp_path, 2) == [("ann@example.com", "sent"), (REFUSED, "refused")]

    write_xlsx(xlsx, ("email", "cc"), [("ann@example.com", "bob@example.com")])  # Ann already has it
    second = run_cli("send", xlsx, "-t", template, "--yes")

    assert second.exit_code == 2
    assert "row 2 changed since it was sent" in second.stderr
    assert plain_server.recipients() == ["ann@example.com"]


NEWS = "From: Club <club@example.com>\nSubject: News\nTo: {{ name }} <{{ email }}>\n\nHello {{ name }}\n"


def news_list(folder: Path, count: int) -> tuple[Path, Path]:
    rows = [(f"Member {i}", f"member{i}@example.com") for i in range(count)]
    return write_xlsx(folder / "list.xlsx", ("name", "email"), rows), write_template(folder / "news.txt", NEWS)


def assert_not_sent_yet_everywhere(folder: Path, xlsx: Path, template: Path, sent: int, left: int) -> None:
    """The report, ``status`` and ``status --json`` say not sent yet (never "failed")."""
    assert [line["status"] for line in report(folder)] == ["sent"] * sent + ["not_sent_yet"] * left
    said = run_cli("status", xlsx, "-t", template)
    assert f"not sent yet{left:>9,}" in said.stdout and "failed" not in said.output.lower()
    document = json.loads(run_cli("status", xlsx, "-t", template, "--json").stdout)
    assert document["counts"]["not_sent_yet"] == left and "failed" not in document["counts"]
    assert [entry["status"] for entry in document["entries"]] == ["sent"] * sent + ["not_sent_yet"] * left


def test_rows_left_by_max_messages_are_not_sent_yet_in_every_output(tmp_path: Path, plain_server: SmtpTestServer) -> None:
    xlsx, template = news_list(tmp_path, 4)
    write_config(tmp_path, plain_server, security="none", username=None)

    human = run_cli("send", xlsx, "-t", template, "--yes", "--max-messages", "1")
    assert human.exit_code == 3
    assert "sent 1, refused 0, invalid 0, not sent yet 3" in human.stdout
    assert any(line.split() == ["not", "sent", "yet", "3"] for line in human.stdout.splitlines())  # the table
    assert "failed" not in human.output.lower()
    assert_not_sent_yet_everywhere(tmp_path, xlsx, template, sent=1, left=3)

    machine = json.loads(run_cli("send", xlsx, "-t", template, "--yes", "--max-messages", "1", "--json").stdout)
    assert machine["counts"]["not_sent_yet"] == 2 and machine["counts"]["sent"] == 2
    assert [row["status"] for row in machine["rows"]] == ["sent", "sent", "not_sent_yet", "not_sent_yet"]
    assert "failed" not in json.dumps(machine)


def test_rows_left_by_ctrl_c_are_not_sent_yet_in_every_output(tmp_path: Path) -> None:
    xlsx, template = news_list(tmp_path, 40)
    with SmtpTestServer(faults=Faults(reply_delay=0.05)) as server:
        write_config(tmp_path, server, security="none", username=None)
        child = subprocess.Popen(
            [sys.executable, "-m", "mailmerge", "send", str(xlsx), "-t", str(template), "--yes"],
            env={**os.environ, "MAILMERGE_PASSWORD": PASSWORD}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        while len(server.messages) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=20)
        sent = len(server.messages)

    assert child.returncode == 130, err
    assert f"not sent yet {40 - sent}" in out and "failed" not in (out + err).lower()
    assert_not_sent_yet_everywhere(tmp_path, xlsx, template, sent=sent, left=40 - sent)


def test_a_journal_of_the_previous_version_reads_failed_as_not_sent_yet(
    tmp_path: Path, plain_server: SmtpTestServer
) -> None:
    xlsx, template = news_list(tmp_path, 3)
    write_config(tmp_path, plain_server, security="none", username=None)
    run_cli("send", xlsx, "-t", template, "--yes", "--max-messages", "2")
    with sqlite3.connect(tmp_path / ".mailmerge" / JOURNAL_FILE) as db:  # as 0.1 wrote a lost connection's row
        db.execute("INSERT INTO deliveries (campaign, row, address, field, state, reason, updated) "
                   "SELECT campaign, 4, 'member2@example.com', 'To', 'failed', 'not sent: connection lost', 0 "
                   "FROM deliveries LIMIT 1")
    db.close()

    before = json.loads(run_cli("status", xlsx, "-t", template, "--json").stdout)
    assert before["counts"]["sent"] == 2 and before["counts"]["not_sent_yet"] == 1
    assert before["entries"][2]["addresses"][0]["status"] == "not_sent_yet"
    assert before["entries"][2]["addresses"][0]["reason"] == "not sent: connection lost"  # the line, read as it was
    again = run_cli("send", xlsx, "-t", template, "--yes")

    assert again.exit_code == 0, again.output
    assert [line["status"] for line in report(tmp_path)] == ["sent"] * 3
    assert collections.Counter(plain_server.recipients()) == {f"member{i}@example.com": 1 for i in range(3)}


def test_every_state_has_one_word_one_label_and_a_place_in_the_precedence() -> None:
    from mailmerge.outcome import Outcome

    assert Status.NOT_SENT_YET.value == "not_sent_yet" and Status.NOT_SENT_YET.label == "not sent yet"
    assert Status("failed") is Status.NOT_SENT_YET  # the previous version's word, read from old journals
    # Exit 0 only when every row is sent, or skipped on purpose as a duplicate of a row sent.
    assert {s for s in Status if s.done} == {Status.SENT, Status.DUPLICATE}
    for state in Status:
        assert state.label and " " not in state.value
        # A row with one address in this state and one sent is in this state (sent is the weakest).
        both = [Outcome(2, "To", "a@example.com", Status.SENT), Outcome(2, "Cc", "b@example.com", state)]
        assert row_status(both) is state
    assert row_status([Outcome(2, "To", "a@example.com", Status.NOT_SENT_YET),
                       Outcome(2, "Cc", "b@example.com", Status.REFUSED)]) is Status.REFUSED


@pytest.mark.parametrize("state", ["sent", "refused", "unknown", "bounced"])
def test_states_a_later_run_never_sends_again(state: str) -> None:
    assert not Status(state).sends_again
