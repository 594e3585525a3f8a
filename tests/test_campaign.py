"""The library's contract: ``Campaign.send`` keeps the promises of ``mailmerge
send`` on its own (no CLI), against a real SMTP server on 127.0.0.1."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import PASSWORD, USER, write_config, write_template, write_xlsx
from smtp_server import SmtpTestServer

from mailmerge import Campaign, Events, ListChanged, Status, Template
from mailmerge.config.file import SendConfig
from mailmerge.errors import EXIT_CODES, AuthenticationError, ConnectionLost, InputError, Interrupted, exit_code_of
from mailmerge.outcome import Outcome
from mailmerge.state.journal import Journal, row_hash

TEMPLATE = """\
Subject: Hello {{ name }}
To: {{ name }} <{{ email }}>

Dear {{ name }}.
"""
PEOPLE = [("Ann", "ann@example.com"), ("Bob", "bob@example.com"), ("Carol", "carol@example.com"),
          ("Dan", "dan@example.com"), ("Eve", "eve@example.com")]


@pytest.fixture(autouse=True)
def password(monkeypatch: pytest.MonkeyPatch) -> None:
    """The password as a script would give it: in the environment."""
    monkeypatch.setenv("MAILMERGE_PASSWORD", PASSWORD)


def make_list(folder: Path, people: list[tuple[str, str]]) -> tuple[Path, Path]:
    xlsx = write_xlsx(folder / "list.xlsx", ("name", "email"), people)
    return xlsx, write_template(folder / "hello.txt", TEMPLATE)


def open_campaign(folder: Path, server: SmtpTestServer, people: list[tuple[str, str]]) -> Campaign:
    xlsx, template = make_list(folder, people)
    return Campaign.open(xlsx, template, config=write_config(folder, server))


def journal_states(campaign: Campaign) -> dict[str, str]:
    """The journal's state of each address, read as a later run would."""
    return {o.address: o.status.value for o in campaign.outcomes()}


def test_a_row_inserted_at_the_top_after_a_partial_send_stops_the_send(tmp_path: Path, tls_server: SmtpTestServer) -> None:
    campaign = open_campaign(tmp_path, tls_server, PEOPLE[:3])
    campaign.send(pace=SendConfig(max_messages=2))
    assert tls_server.recipients() == ["ann@example.com", "bob@example.com"]

    # Someone inserts a row at the top: Ann's row (2) now holds Zed, Bob is row 4, Carol row 5.
    changed = open_campaign(tmp_path, tls_server, [("Zed", "zed@example.com"), *PEOPLE[:3]])
    with pytest.raises(ListChanged, match=r"row 2 changed since it was sent \(ann@example.com\)"):
        changed.send()
    assert tls_server.recipients() == ["ann@example.com", "bob@example.com"]  # nobody twice, nobody skipped


def test_an_unrecovered_in_flight_mark_is_unknown_and_not_sent_again(tmp_path: Path, tls_server: SmtpTestServer) -> None:
    campaign = open_campaign(tmp_path, tls_server, PEOPLE[:3])
    # What a run killed between the end of DATA and the server's reply leaves: Ann's row
    # marked in flight (and the marker beside the list written), nothing else.
    ann = campaign.plan.recipients.rows[0]
    with Journal(campaign.folder, campaign.name, marker=campaign.marker) as journal:
        journal.register(campaign.list_path, campaign.plan.template.path)
        journal.mark_in_flight([Outcome(ann.row, "To", "ann@example.com", Status.UNKNOWN, None, "", "<1@x>")],
                               date="Mon, 1 Dec 2025 10:00:00 +0000", fingerprint=row_hash(ann.values))

    heard: list[Any] = []

    class Listen(Events):
        def starting(self, start: Any) -> bool:
            heard.append(start)
            return True

    result = campaign.send(events=Listen())
    assert tls_server.recipients() == ["bob@example.com", "carol@example.com"]
    assert heard[0].recovered == 1 and result.recovered == 1
    assert journal_states(campaign) == {"ann@example.com": "unknown", "bob@example.com": "sent",
                                        "carol@example.com": "sent"}


def test_two_sends_in_one_process_send_each_row_once(tmp_path: Path, tls_server: SmtpTestServer) -> None:
    campaign = open_campaign(tmp_path, tls_server, PEOPLE[:3])
    first = campaign.send()
    second = campaign.send()
    assert first.messages == 3 and first.error is None
    assert second.messages == 0 and second.work is not None
    assert (second.work.done, second.work.to_send) == (3, 0)  # "nothing left to send"
    assert tls_server.recipients() == ["ann@example.com", "bob@example.com", "carol@example.com"]
    assert campaign.status().counts[Status.SENT] == 3


@pytest.mark.parametrize("kind", ["dataframe", "dicts"])
def test_a_send_from_rows_given_in_python(tmp_path: Path, tls_server: SmtpTestServer, kind: str) -> None:
    records = [{"name": name, "email": email, "amount": amount}
               for (name, email), amount in zip(PEOPLE[:2], [42, 7.0])]
    rows: Any = pd.DataFrame(records) if kind == "dataframe" else records
    template = Template.from_string(TEMPLATE.replace("Dear {{ name }}.", "Dear {{ name }}, {{ amount }} EUR."))
    campaign = Campaign.open(rows=rows, template=template, config=write_config(tmp_path, tls_server),
                             journal=tmp_path / "journal", name="python-rows")
    result = campaign.send()
    assert result.messages == 2 and result.error is None
    got = [m.message for m in tls_server.messages]
    assert [m["Subject"] for m in got] == ["Hello Ann", "Hello Bob"]
    assert [m["To"] for m in got] == ["Ann <ann@example.com>", "Bob <bob@example.com>"]
    assert "Dear Bob, 7 EUR." in got[1].get_content()  # 7.0 is the text a sheet shows: 7
    summary = campaign.write_report(tmp_path / "report.csv")
    assert summary.counts[Status.SENT] == 2
    report = (tmp_path / "report.csv").read_text(encoding="utf-8-sig")
    assert re.search(r"^1,ann@example.com,To,sent", report, re.M) and re.search(r"^2,bob@example.com,To,sent", report, re.M)
    assert (tmp_path / ".mailmerge-sent").is_file()  # the marker, beside the journal's folder
    assert campaign.send().messages == 0  # the name is the identity: the next run sends nothing


def test_rows_from_python_need_a_journal_folder_and_a_name(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="journal= .* and name="):
        Campaign.open(rows=[{"email": "ann@example.com"}], template=TEMPLATE)


def test_a_keyboard_interrupt_inside_send_leaves_a_consistent_journal(tmp_path: Path, tls_server: SmtpTestServer) -> None:
    campaign = open_campaign(tmp_path, tls_server, PEOPLE)

    class InterruptOnThird(Events):
        rows = 0

        def row(self, outcomes: list[Outcome]) -> None:
            self.rows += 1
            if self.rows == 3:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        campaign.send(events=InterruptOnThird())
    received = tls_server.recipients()
    states = journal_states(campaign)
    sent = sorted(address for address, state in states.items() if state == "sent")
    assert sent == sorted(received) and len(received) == 3  # what the server got = what the journal says
    assert all(states[a] == "not_sent_yet" for a in states if a not in received)

    again = campaign.send()  # the lock was released; a rerun sends only the rest
    assert again.messages == 2
    assert sorted(tls_server.recipients()) == sorted(email for _, email in PEOPLE)  # everyone, once


def test_an_smtp_error_carries_the_reply_code_and_text(tmp_path: Path, tls_server: SmtpTestServer) -> None:
    campaign = open_campaign(tmp_path, tls_server, PEOPLE[:1])
    with pytest.raises(AuthenticationError) as caught:
        campaign.send(password="wrong")
    assert caught.value.code == 535 and "Authentication" in caught.value.text
    assert tls_server.messages == []


def test_exit_codes_come_from_one_table_walked_by_class() -> None:
    assert exit_code_of(ListChanged("x")) == EXIT_CODES[InputError] == 2
    assert exit_code_of(ConnectionLost("x", code=421, text="bye")) == 1
    assert exit_code_of(Interrupted("x")) == 130
    assert ListChanged("x").exit_code == 2  # what the CLI's error path reads


def test_import_and_help_do_not_load_pandas() -> None:
    code = (
        "import sys, mailmerge\n"
        "assert 'pandas' not in sys.modules, 'import mailmerge'\n"
        "sys.argv = ['mailmerge', '--help']\n"
        "from mailmerge.cli import app\n"
        "try:\n    app()\nexcept SystemExit:\n    pass\n"
        "assert 'pandas' not in sys.modules, 'mailmerge --help'\n"
        "mailmerge.Campaign\n"
        "assert 'mailmerge.campaign' in sys.modules\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Usage" in done.stdout


def readme_examples() -> list[str]:
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Use from Python", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_readme_examples_run_as_written(tmp_path: Path, tls_server: SmtpTestServer,
                                             monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    examples = readme_examples()
    assert len(examples) == 2
    write_xlsx(tmp_path / "list.xlsx", ("name", "email", "invoice_no"), [("Ann", "ann@example.com", "007")])
    write_template(tmp_path / "invoice.txt", "Subject: Invoice {{ invoice_no }}\nTo: {{ name }} <{{ email }}>\n\nDear {{ name }}.\n")
    write_config(tmp_path, tls_server)
    monkeypatch.chdir(tmp_path)
    for example in examples:
        exec(compile(example, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "2 Invoice 007" in printed and "sent 1, refused 0, invalid 0" in printed
    assert "2 sent; sent 2" in printed
    assert tls_server.recipients() == ["ann@example.com", "ann@example.com", "bob@example.com"]
    assert (tmp_path / "list.report.csv").is_file() and (tmp_path / ".mailmerge-sent").is_file()
    assert USER  # the config the examples read logs in as USER with MAILMERGE_PASSWORD
