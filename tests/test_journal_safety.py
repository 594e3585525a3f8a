"""The journal can't be lost, faked or misused: a lost journal does not mean
"send everyone again", a damaged one is an error and never a fresh start, a
campaign name is never a path, and journal_fsync really syncs. Real sends to
a real SMTP server on 127.0.0.1; real files broken on purpose."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PASSWORD, run_cli, write_config, write_template, write_xlsx
from smtp_server import SmtpTestServer

from mailmerge.state.journal import JOURNAL_FILE, Journal, campaign_id

TEMPLATE = "From: Club <club@example.com>\nSubject: News for {{ name }}\nTo: {{ name }} <{{ email }}>\n\nHello {{ name }}\n"


def make_list(folder: Path, count: int) -> tuple[Path, Path, list[str]]:
    addresses = [f"member{i:03d}@example.com" for i in range(count)]
    xlsx = write_xlsx(folder / "list.xlsx", ("name", "email"), [(f"Member {i}", a) for i, a in enumerate(addresses)])
    return xlsx, write_template(folder / "news.txt", TEMPLATE), addresses


def one_error_line(stderr: str) -> str:
    """The error a person sees: one line, no traceback."""
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    return errors[0]


# --- a lost journal (item 6) ------------------------------------------------------------


def _delete_folder(journal: Path) -> None:
    shutil.rmtree(journal.parent)


def _truncate(journal: Path) -> None:
    journal.write_bytes(b"")


def _replace_with_an_empty_database(journal: Path) -> None:
    journal.unlink()
    sqlite3.connect(journal).execute("CREATE TABLE unrelated (x)").connection.close()


@pytest.mark.parametrize("lose", [_delete_folder, _truncate, _replace_with_an_empty_database],
                         ids=["folder-deleted", "truncated", "empty-database"])
def test_a_lost_journal_stops_the_next_send_and_restart_sends_again(tmp_path: Path, tls_server: SmtpTestServer, lose) -> None:
    xlsx, template, addresses = make_list(tmp_path, 3)
    write_config(tmp_path, tls_server)
    first = run_cli("send", xlsx, "-t", template, "--yes")
    assert first.exit_code == 0, first.output
    assert len(tls_server.messages) == 3
    report_before = (tmp_path / "list.report.csv").read_bytes()

    lose(tmp_path / ".mailmerge" / JOURNAL_FILE)
    second = run_cli("send", xlsx, "-t", template, "--yes")

    assert second.exit_code == 2
    assert len(tls_server.messages) == 3  # nobody got a second copy
    line = one_error_line(second.stderr)
    assert str(tmp_path / ".mailmerge" / JOURNAL_FILE) in line  # what was found, where
    assert str(tmp_path / ".list.xlsx.mailmerge-sent") in line  # the evidence
    assert "backup" in line and "--restart" in line  # what to do
    assert (tmp_path / "list.report.csv").read_bytes() == report_before  # the report still tells the truth

    # Everything that reads the journal says the same instead of "not sent yet".
    dry = run_cli("send", xlsx, "-t", template, "--dry-run")
    status = run_cli("status", xlsx, "-t", template)
    assert dry.exit_code == status.exit_code == 2
    assert "--restart" in one_error_line(dry.stderr) and "--restart" in one_error_line(status.stderr)

    again = run_cli("send", xlsx, "-t", template, "--yes", "--restart")
    assert again.exit_code == 0, again.output
    assert sorted(tls_server.recipients()) == sorted(addresses * 2)  # asked for: everyone once more
    third = run_cli("send", xlsx, "-t", template, "--yes")
    assert third.exit_code == 0 and len(tls_server.messages) == 6  # the new journal is kept again


def test_the_tutorial_outbox_run_then_a_real_send_still_sends(tmp_path: Path, tls_server: SmtpTestServer) -> None:
    xlsx, template, addresses = make_list(tmp_path, 3)
    write_config(tmp_path, tls_server)
    tried = run_cli("send", xlsx, "-t", template, "--outbox", tmp_path / "outbox")
    assert tried.exit_code == 0, tried.output
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 3
    shutil.rmtree(tmp_path / "outbox")  # cleaning up after trying: still no evidence of a real send

    real = run_cli("send", xlsx, "-t", template, "--yes")

    assert real.exit_code == 0, real.output
    assert sorted(tls_server.recipients()) == addresses


def test_only_a_real_message_leaves_evidence(tmp_path: Path, tls_server: SmtpTestServer) -> None:
    xlsx, template, addresses = make_list(tmp_path, 3)
    marker = tmp_path / ".list.xlsx.mailmerge-sent"
    write_config(tmp_path, tls_server)
    assert run_cli("send", xlsx, "-t", template, "--dry-run").exit_code == 0
    assert run_cli("send", xlsx, "-t", template, "--outbox", tmp_path / "outbox").exit_code == 0
    assert run_cli("send", xlsx, "-t", template, "--yes", "--test-to", "me@example.org").exit_code == 0
    refused = run_cli("send", xlsx, "-t", template, "--yes", password="wrong")  # stops at the login
    assert refused.exit_code == 1
    assert not marker.exists()
    assert len(tls_server.messages) == 3  # the test messages, to me@example.org only

    shutil.rmtree(tmp_path / ".mailmerge")  # a journal of a run that sent nothing: not evidence
    real = run_cli("send", xlsx, "-t", template, "--yes")

    assert real.exit_code == 0, real.output
    assert sorted(tls_server.recipients()[3:]) == addresses
    name = campaign_id(xlsx, TEMPLATE)
    assert f'"campaign": "{name}"' in marker.read_text(encoding="utf-8")


def test_a_restart_stopped_at_the_login_is_not_mistaken_for_a_lost_journal(tmp_path: Path, tls_server: SmtpTestServer) -> None:
    xlsx, template, addresses = make_list(tmp_path, 3)
    write_config(tmp_path, tls_server)
    assert run_cli("send", xlsx, "-t", template, "--yes").exit_code == 0
    restarted = run_cli("send", xlsx, "-t", template, "--yes", "--restart", password="wrong")
    assert restarted.exit_code == 1  # the journal forgot the campaign's lines, nothing was sent

    again = run_cli("send", xlsx, "-t", template, "--yes")

    assert again.exit_code == 0, again.output
    assert sorted(tls_server.recipients()) == sorted(addresses * 2)


# --- a damaged journal (items 6 and 9) -------------------------------------------------


def _garbage_page_in_the_middle(journal: Path) -> None:
    pages = journal.stat().st_size // 4096
    assert pages >= 8  # a journal of a real size, not a header
    with journal.open("r+b") as handle:
        handle.seek(pages // 2 * 4096)
        handle.write(os.urandom(4096))


def _random_bytes(journal: Path) -> None:
    journal.write_bytes(os.urandom(journal.stat().st_size))


@pytest.mark.parametrize("damage", [_garbage_page_in_the_middle, _random_bytes], ids=["page", "whole-file"])
def test_a_damaged_journal_is_a_one_line_error_for_every_command(tmp_path: Path, plain_server: SmtpTestServer, damage) -> None:
    xlsx, template, addresses = make_list(tmp_path, 300)
    write_config(tmp_path, plain_server, security="none", username=None)
    config = tmp_path / "mailmerge.toml"
    config.write_text(config.read_text() + '\n[imap]\nhost = "127.0.0.1"\nport = 9\nsecurity = "ssl"\n')
    first = run_cli("send", xlsx, "-t", template, "--yes", "--max-messages", "250")
    assert first.exit_code == 3, first.output
    journal = tmp_path / ".mailmerge" / JOURNAL_FILE
    damage(journal)
    damaged = journal.read_bytes()

    for args in (("send", "--yes"), ("send", "--yes", "--resend-unknown"), ("send", "--dry-run"),
                 ("status",), ("bounces",)):
        run = run_cli(args[0], xlsx, "-t", template, *args[1:])
        line = one_error_line(run.stderr)
        assert run.exit_code == 2, (args, run.output)
        assert f"the journal {journal} is damaged" in line, args
        assert "backup" in line, args
    assert len(plain_server.messages) == 250  # nothing sent
    assert journal.read_bytes() == damaged  # never started afresh, never "repaired"


# --- campaign names are not paths (item 8) ---------------------------------------------


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


@pytest.mark.parametrize("name", ["../../x", "/abs/x", "..", "a/../../../b\\c:d"])
def test_a_campaign_name_creates_nothing_outside_the_journal_folder(tmp_path: Path, plain_server: SmtpTestServer,
                                                                    name: str) -> None:
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    xlsx, template, addresses = make_list(work, 2)
    write_config(work, plain_server, security="none", username=None)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    name = name.replace("/abs/x", str(victim))
    before = _files(tmp_path)

    run = run_cli("send", xlsx, "-t", template, "--yes", "--campaign", name)

    assert run.exit_code == 0, run.output
    created = _files(tmp_path) - before
    outside = {p for p in created if work / ".mailmerge" not in p.parents and p != work / ".mailmerge"}
    assert outside == {work / "list.report.csv", work / ".list.xlsx.mailmerge-sent"}, outside
    assert victim.read_text() == "precious" and not victim.with_name("victim.lock").exists()
    with sqlite3.connect(work / ".mailmerge" / JOURNAL_FILE) as db:
        assert {row[0] for row in db.execute("SELECT campaign FROM deliveries")} == {name}  # kept as given


def test_a_korean_and_emoji_campaign_name_works(tmp_path: Path, plain_server: SmtpTestServer) -> None:
    xlsx, template, addresses = make_list(tmp_path, 2)
    write_config(tmp_path, plain_server, security="none", username=None)
    name = "가을 소식 🍂 2026"

    first = run_cli("send", xlsx, "-t", template, "--yes", "--campaign", name, "--json")
    second = run_cli("send", xlsx, "-t", template, "--yes", "--campaign", name)
    status = run_cli("status", xlsx, "-t", template, "--campaign", name)

    assert first.exit_code == 0, first.output
    assert f'"campaign": "{name}"' in first.stdout
    assert second.exit_code == 0 and "Nothing left to send" in second.stderr
    assert f"campaign {name}: 2 rows" in status.stdout
    assert sorted(plain_server.recipients()) == addresses
    locks = list((tmp_path / ".mailmerge").glob("*.lock"))
    assert [p.name.startswith("가을_소식_2026-") for p in locks] == [True]  # readable, and safe


# --- journal_fsync really syncs (item 11) ----------------------------------------------


def _fsync_config(folder: Path, server: SmtpTestServer, fsync: bool) -> None:
    config = write_config(folder, server, security="none", username=None)
    config.write_text(config.read_text().replace("[send]\n", f"[send]\njournal_fsync = {str(fsync).lower()}\n"))


@pytest.mark.parametrize("fsync, expected", [(False, 1), (True, 2)], ids=["NORMAL", "FULL"])
def test_journal_fsync_sets_synchronous_full_on_the_journal_of_a_send(
    tmp_path: Path, plain_server: SmtpTestServer, monkeypatch: pytest.MonkeyPatch, fsync: bool, expected: int
) -> None:
    xlsx, template, _ = make_list(tmp_path, 3)
    _fsync_config(tmp_path, plain_server, fsync)
    seen: list[int] = []

    class Watched(Journal):  # the real journal; its setting read on its own connection at the end of the run
        def close(self) -> None:
            seen.append(self._db.execute("PRAGMA synchronous").fetchone()[0])
            super().close()

    monkeypatch.setattr("mailmerge.state.journal.Journal", Watched)
    run = run_cli("send", xlsx, "-t", template, "--yes")

    assert run.exit_code == 0, run.output
    assert seen == [expected]  # 1 NORMAL, 2 FULL


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
@pytest.mark.parametrize("fsync", [False, True], ids=["NORMAL", "FULL"])
def test_journal_fsync_syncs_the_journal_once_a_message(tmp_path: Path, plain_server: SmtpTestServer, fsync: bool) -> None:
    xlsx, template, _ = make_list(tmp_path, 60)
    _fsync_config(tmp_path, plain_server, fsync)
    trace = tmp_path / "syscalls.txt"
    child = subprocess.run(
        ["strace", "-f", "-qq", "-e", "trace=fsync,fdatasync", "-o", str(trace),
         sys.executable, "-m", "mailmerge", "send", str(xlsx), "-t", str(template), "--yes"],
        env={**os.environ, "MAILMERGE_PASSWORD": PASSWORD}, capture_output=True, text=True, timeout=120,
    )
    if "Operation not permitted" in child.stderr and not trace.exists():
        pytest.skip("ptrace is not allowed here")
    assert child.returncode == 0, child.stderr
    assert len(plain_server.messages) == 60
    syncs = trace.read_text().count("sync(")
    if fsync:
        assert syncs >= 60, syncs  # every in-flight mark on the disk before its end of DATA
    else:
        assert syncs < 20, syncs  # checkpoints and the marker: a few a run, none a message
