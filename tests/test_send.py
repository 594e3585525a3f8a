"""`mailmerge send` end to end against real SMTP servers on 127.0.0.1."""

from __future__ import annotations

import csv
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest
from conftest import (
    PASSWORD,
    REFUSED,
    USER,
    run_cli,
    write_config,
    write_template,
    write_xlsx,
)
from smtp_server import Faults, SmtpTestServer


def read_report(path: Path) -> list[dict[str, str]]:
    """The report as Excel would show it (UTF-8 with BOM)."""
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf"), "Excel needs the BOM to read UTF-8"
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def test_excel_list_arrives_with_korean_subject_and_values_as_in_the_sheet(
    tmp_path: Path, tls_server: SmtpTestServer, sample: tuple[Path, Path]
) -> None:
    xlsx, template = sample
    write_config(tmp_path, tls_server)

    run = run_cli("send", xlsx, "-t", template, "--yes")

    assert run.exit_code == 0, run.output
    assert [m.rcpt_tos for m in tls_server.messages] == [
        ["minsu@example.com"],
        ["jung@example.org"],
        ["zoe@example.fr"],
    ]
    first = tls_server.messages[0].message
    assert first["Subject"] == "김민수님, invoice 007 📚"
    assert first["To"].addresses[0].display_name == "김민수"
    assert first.get_content() == "Dear 김민수,\nyour invoice 007 of 42 is due on 2026-11-27.\n"
    second = tls_server.messages[1].message
    assert [a.display_name for a in second["To"].addresses] == ["O'Brien, Jung"]
    assert "of  is due on 2026-12-01" in second.get_content()  # empty cell: "", not nan
    assert "1250000 is due on 2026-12-24." in tls_server.messages[2].message.get_content()
    assert "sent 3, refused 0, invalid 0" in run.stdout


def test_one_connection_and_one_login_for_the_whole_list(tmp_path: Path, tls_server: SmtpTestServer) -> None:
    rows = [(f"Member {i}", f"member{i}@example.com") for i in range(1000)]
    xlsx = write_xlsx(tmp_path / "members.xlsx", ("name", "email"), rows)
    template = write_template(tmp_path / "t.txt", "Subject: Hello {{ name }}\n\nHi {{ name }}\n")
    write_config(tmp_path, tls_server)

    run = run_cli("send", xlsx, "-t", template, "--yes")

    assert run.exit_code == 0, run.output
    assert len(tls_server.messages) == 1000
    assert tls_server.connections == 1
    assert tls_server.starttls_count == 1
    assert tls_server.auth_attempts == 1
    assert sorted(tls_server.recipients()) == sorted(email for _, email in rows)


def test_refused_and_invalid_addresses_are_in_the_report(tmp_path: Path, tls_server: SmtpTestServer) -> None:
    rows = [
        ("Ann", "ann@example.com", ""),
        ("Ghost", REFUSED, ""),
        ("Broken", "broken@@example", ""),
        ("Bea", "bea@example.com", f"{REFUSED}, carl@example.com"),
    ]
    xlsx = write_xlsx(tmp_path / "list.xlsx", ("name", "email", "copy"), rows)
    template = write_template(
        tmp_path / "t.txt",
        "Subject: Hi\nTo: {{ name }} <{{ email }}>\nCc: {{ copy }}\n\nHello {{ name }}\n",
    )
    write_config(tmp_path, tls_server)

    run = run_cli("send", xlsx, "-t", template, "--yes")

    assert run.exit_code == 3, run.output
    assert "sent 1, refused 2, invalid 1" in run.stdout
    report = read_report(tmp_path / "list.report.csv")
    got = [(r["row"], r["address"], r["field"], r["status"], r["code"]) for r in report]
    assert got == [
        ("2", "ann@example.com", "To", "sent", "250"),
        ("3", REFUSED, "To", "refused", "550"),
        ("4", "broken@@example", "To", "invalid", ""),
        ("5", "bea@example.com", "To", "sent", "250"),
        ("5", REFUSED, "Cc", "refused", "550"),
        ("5", "carl@example.com", "Cc", "sent", "250"),
    ]
    assert "User unknown" in report[1]["reason"]
    assert "broken@@example" in report[2]["reason"]
    # Row 5 still reached its accepted recipients; row 3 reached nobody.
    assert tls_server.recipients() == ["ann@example.com", "bea@example.com", "carl@example.com"]


def test_a_missing_variable_stops_before_anything_is_sent(
    tmp_path: Path, tls_server: SmtpTestServer, sample: tuple[Path, Path]
) -> None:
    xlsx, _ = sample
    template = write_template(tmp_path / "t.txt", "Subject: Hi {{ nmae }}\n\nHello\n")
    write_config(tmp_path, tls_server)

    run = run_cli("send", xlsx, "-t", template, "--yes")

    assert run.exit_code == 2
    assert "'nmae' is not a column" in run.stderr
    assert "did you mean 'name'?" in run.stderr
    assert "row 2" in run.stderr and "line 1" in run.stderr
    assert tls_server.connections == 0
    assert not (tmp_path / "list.report.csv").exists()


def test_bcc_is_delivered_but_never_transmitted_as_a_header(tmp_path: Path, tls_server: SmtpTestServer) -> None:
    xlsx = write_xlsx(tmp_path / "l.xlsx", ("email",), [("ann@example.com",)])
    template = write_template(tmp_path / "t.txt", "Subject: Hi\nBcc: archive@example.com\n\nHello\n")
    write_config(tmp_path, tls_server)

    run = run_cli("send", xlsx, "-t", template, "--yes")

    assert run.exit_code == 0, run.output
    (received,) = tls_server.messages
    assert received.rcpt_tos == ["ann@example.com", "archive@example.com"]
    assert b"archive@example.com" not in received.data
    assert received.message["Bcc"] is None
    report = read_report(tmp_path / "l.report.csv")
    assert [(r["address"], r["field"], r["status"]) for r in report] == [
        ("ann@example.com", "To", "sent"),
        ("archive@example.com", "Bcc", "sent"),
    ]


def test_preview_and_dry_run_touch_no_network(
    tmp_path: Path, tls_server: SmtpTestServer, sample: tuple[Path, Path]
) -> None:
    xlsx, template = sample
    write_config(tmp_path, tls_server)

    preview = run_cli("preview", xlsx, "-t", template)
    dry = run_cli("send", xlsx, "-t", template, "--dry-run")

    assert preview.exit_code == 0, preview.output
    assert "Subject: 김민수님, invoice 007 📚" in preview.stdout
    assert 'To: "O\'Brien, Jung" <jung@example.org>' in preview.stdout
    assert dry.exit_code == 0, dry.output
    assert "would send 3 messages" in dry.stdout
    assert tls_server.connections == 0
    assert not (tmp_path / "list.report.csv").exists()


def test_preview_one_row_and_a_limit(tmp_path: Path, sample: tuple[Path, Path]) -> None:
    xlsx, template = sample

    one = run_cli("preview", xlsx, "-t", template, "--row", "3")
    limited = run_cli("preview", xlsx, "-t", template, "--limit", "2")
    missing = run_cli("preview", xlsx, "-t", template, "--row", "9")

    assert one.stdout.count("Subject:") == 1 and "O'Brien" in one.stdout
    assert limited.stdout.count("Subject:") == 2
    assert missing.exit_code == 2 and "no row 9" in missing.stderr


def test_outbox_writes_one_eml_per_row(tmp_path: Path, sample: tuple[Path, Path]) -> None:
    xlsx, template = sample
    outbox = tmp_path / "outbox"

    run = run_cli("send", xlsx, "-t", template, "--outbox", outbox, password=None)

    assert run.exit_code == 0, run.output
    files = sorted(outbox.glob("*.eml"))
    assert [f.name for f in files] == [  # by the row of the sheet
        "0002-minsu@example.com.eml",
        "0003-jung@example.org.eml",
        "0004-zoe@example.fr.eml",
    ]
    parsed = BytesParser(policy=policy.default).parsebytes(files[0].read_bytes())
    assert parsed["Subject"] == "김민수님, invoice 007 📚"
    assert "written 3" in run.stdout  # files written, not messages sent


def test_outbox_resumes_and_names_a_folder_it_cannot_write(tmp_path: Path, sample: tuple[Path, Path]) -> None:
    xlsx, template = sample
    outbox = tmp_path / "outbox"
    first = run_cli("send", xlsx, "-t", template, "--outbox", outbox, password=None)
    (outbox / "0003-jung@example.org.eml").unlink()
    second = run_cli("send", xlsx, "-t", template, "--outbox", outbox, password=None)  # all done already
    blocked = tmp_path / "blocked"
    blocked.write_text("a file, not a folder")
    refused = run_cli("send", xlsx, "-t", template, "--outbox", blocked, password=None)

    assert first.exit_code == 0 and second.exit_code == 0, second.output
    assert "Nothing left to send" in second.stderr
    assert len(list(outbox.glob("*.eml"))) == 2  # the journal, not the folder, says what was written
    assert refused.exit_code == 2 and f"--outbox {blocked} is a file: give a folder" in refused.stderr


def test_wrong_password_stops_before_sending_with_a_hint(
    tmp_path: Path, tls_server: SmtpTestServer, sample: tuple[Path, Path]
) -> None:
    xlsx, template = sample
    write_config(tmp_path, tls_server, host="127.0.0.1")
    wrong = "wr0ng-Pa55word"

    run = run_cli("send", xlsx, "-t", template, "--yes", password=wrong)

    assert run.exit_code == 1
    assert "refused the login for club@example.com: 535" in run.stderr
    assert tls_server.auth_attempts == 1  # one mechanism, one attempt
    assert tls_server.messages == []
    assert wrong not in run.output and PASSWORD not in run.output


def test_starttls_missing_means_no_password_is_sent(tmp_path: Path, sample: tuple[Path, Path]) -> None:
    xlsx, template = sample
    with SmtpTestServer(auth={USER: PASSWORD}) as server:  # offers AUTH, no STARTTLS
        write_config(tmp_path, server)
        run = run_cli("send", xlsx, "-t", template, "--yes")
        assert run.exit_code == 1
        assert "does not offer STARTTLS" in run.stderr
        assert server.auth_attempts == 0 and server.messages == []


def test_an_untrusted_certificate_is_refused(
    tmp_path: Path, tls_server: SmtpTestServer, sample: tuple[Path, Path]
) -> None:
    xlsx, template = sample
    write_config(tmp_path, tls_server, ca_file=None)  # the test CA is not trusted

    run = run_cli("send", xlsx, "-t", template, "--yes")

    assert run.exit_code == 1
    assert "certificate" in run.stderr and "ca_file" in run.stderr
    assert tls_server.auth_attempts == 0 and tls_server.messages == []


def test_ssl_from_the_start(tmp_path: Path, sample: tuple[Path, Path]) -> None:
    xlsx, template = sample
    with SmtpTestServer(implicit_tls=True, auth={USER: PASSWORD}) as server:
        write_config(tmp_path, server, security="ssl")
        run = run_cli("send", xlsx, "-t", template, "--yes")
        assert run.exit_code == 0, run.output
        assert len(server.messages) == 3 and server.connections == 1


def test_no_terminal_and_no_yes_refuses_to_send(
    tmp_path: Path, plain_server: SmtpTestServer, sample: tuple[Path, Path]
) -> None:
    xlsx, template = sample
    write_config(tmp_path, plain_server, security="none", username=None)

    run = run_cli("send", xlsx, "-t", template)

    assert run.exit_code == 2
    assert "--yes" in run.stderr
    assert plain_server.connections == 0


def test_internationalized_address_needs_smtputf8(tmp_path: Path, sample: tuple[Path, Path]) -> None:
    _, template = sample
    rows = [("José", "josé@example.com", "1", 1, "x"), ("Ann", "ann@example.com", "2", 2, "y")]
    xlsx = write_xlsx(tmp_path / "intl.xlsx", ("name", "email", "invoice_no", "amount", "due"), rows)
    with SmtpTestServer(smtputf8=True) as modern, SmtpTestServer(smtputf8=False) as old:
        write_config(tmp_path, modern, security="none", username=None)
        ok = run_cli("send", xlsx, "-t", template, "--yes")
        write_config(tmp_path, old, security="none", username=None)
        refused = run_cli("send", xlsx, "-t", template, "--yes", "--report", tmp_path / "old.csv", "--campaign", "old")

    assert ok.exit_code == 0, ok.output
    assert modern.messages[0].rcpt_tos == ["josé@example.com"]
    assert "SMTPUTF8" in modern.messages[0].mail_options
    assert modern.messages[0].message["To"].addresses[0].username == "josé"
    assert refused.exit_code == 3
    assert [m.rcpt_tos for m in old.messages] == [["ann@example.com"]]
    report = read_report(tmp_path / "old.csv")
    assert report[0]["status"] == "refused" and "SMTPUTF8" in report[0]["reason"]


def test_a_refused_sender_or_message_is_reported_and_the_run_goes_on(tmp_path: Path) -> None:
    rows = [("a@example.com", "ok", "club@example.com"), ("b@example.com", "SPAMWORD", "club@example.com"),
            ("c@example.com", "ok", "stranger@example.com"), ("d@example.com", "ok", "club@example.com")]
    xlsx = write_xlsx(tmp_path / "l.xlsx", ("email", "word", "sender"), rows)
    template = write_template(tmp_path / "t.txt", "From: {{ sender }}\nSubject: Hi\n\n{{ word }}\n")
    faults = Faults(refuse_senders={"stranger@example.com"}, reject_data_with=b"SPAMWORD")
    with SmtpTestServer(faults=faults) as server:
        write_config(tmp_path, server, security="none", username=None)
        run = run_cli("send", xlsx, "-t", template, "--yes")

    assert run.exit_code == 3
    assert server.recipients() == ["a@example.com", "d@example.com"]
    report = read_report(tmp_path / "l.report.csv")
    assert [(r["address"], r["status"], r["code"]) for r in report] == [
        ("a@example.com", "sent", "250"),
        ("b@example.com", "refused", "554"),
        ("c@example.com", "refused", "553"),
        ("d@example.com", "sent", "250"),
    ]
    assert "spam" in report[1]["reason"] and "Sender address rejected" in report[2]["reason"]
    assert "sent 2, refused 2, invalid 0" in run.stdout


@pytest.mark.parametrize("pipelining", [False, True], ids=["one-by-one", "pipelined"])
def test_lines_starting_with_a_dot_arrive_as_written(tmp_path: Path, pipelining: bool) -> None:
    body = ".\n.hidden line\n..two dots\nend\n"  # a lone "." would end DATA if not doubled
    xlsx = write_xlsx(tmp_path / "list.xlsx", ("name", "email"), [("Ann", "ann@example.com"), ("Bo", "bo@example.com")])
    template = write_template(tmp_path / "dots.txt", "From: club@example.com\nSubject: Dots\n\n{{ name }}\n" + body)
    with SmtpTestServer(pipelining=pipelining) as server:
        write_config(tmp_path, server, security="none", username=None)
        run = run_cli("send", xlsx, "-t", template, "--yes")

    assert run.exit_code == 0, run.output
    texts = [m.message.get_content().replace("\r\n", "\n") for m in server.messages]
    assert texts == ["Ann\n" + body, "Bo\n" + body]
