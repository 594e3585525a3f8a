"""Issue 15, items 1 and 11: each address gets one message (duplicates are
reported, not sent), and an invalid row's report line keeps its address.

Every test runs ``python -m mailmerge`` as a person would, against a real SMTP
server on 127.0.0.1, and reads what arrived and the CSV report.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from conftest import write_config, write_template
from smtp_server import SmtpTestServer

TEMPLATE = """\
From: Club <club@example.com>
To: {{ name }} <{{ email }}>
Subject: Hello {{ name }}
Attachment: {{ file }}

Hi {{ name }}
"""

# A newsletter merged from two lists: Ann three times (twice the same, once in capitals).
MERGED = [
    ("Ann", "ann@example.com"),
    ("Bob", "bob@example.com"),
    ("Ann again", "ann@example.com"),
    ("ANN", "ANN@example.com"),
]


def write_list(path: Path, rows: list[tuple[str, ...]], header: tuple[str, ...] = ("name", "email", "file")) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def mailmerge(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailmerge", *args], cwd=folder, env=dict(os.environ),
        capture_output=True, text=True, timeout=120,
    )


def report(path: Path) -> dict[int, dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return {int(line["row"]): line for line in csv.DictReader(handle)}


def received(server: SmtpTestServer) -> Counter[str]:
    return Counter(rcpt for message in server.messages for rcpt in message.rcpt_tos)


def setup(tmp_path: Path, server: SmtpTestServer, rows: list[tuple[str, ...]]) -> Path:
    write_config(tmp_path, server, security="none", username=None)
    write_template(tmp_path / "news.txt", TEMPLATE)
    return write_list(tmp_path / "merged.csv", rows)


def test_each_address_receives_one_message_and_the_report_names_the_row_repeated(
    tmp_path: Path, plain_server: SmtpTestServer
) -> None:
    setup(tmp_path, plain_server, [(name, email, "") for name, email in MERGED])

    run = mailmerge(tmp_path, "send", "merged.csv", "-t", "news.txt", "--yes")

    assert run.returncode == 0, run.stderr  # skipped on purpose: nothing went wrong
    assert received(plain_server) == Counter({"ann@example.com": 1, "bob@example.com": 1})
    lines = report(tmp_path / "merged.report.csv")  # rows numbered as in the sheet: data from row 2
    assert [lines[row]["status"] for row in (2, 3, 4, 5)] == ["sent", "sent", "duplicate", "duplicate"]
    assert lines[4]["address"] == "ann@example.com" and "row 2" in lines[4]["reason"]
    assert lines[5]["address"] == "ANN@example.com" and "row 2" in lines[5]["reason"]
    assert "duplicate 2" in run.stdout
    assert "2 rows repeat the To address of an earlier row" in run.stderr

    again = mailmerge(tmp_path, "send", "merged.csv", "-t", "news.txt", "--yes")  # the same duplicates, nothing resent
    assert again.returncode == 0, again.stderr
    assert len(plain_server.messages) == 2
    assert report(tmp_path / "merged.report.csv") == lines


def test_check_preview_and_dry_run_say_how_many_duplicates(tmp_path: Path, plain_server: SmtpTestServer) -> None:
    setup(tmp_path, plain_server, [(name, email, "") for name, email in MERGED])

    check = mailmerge(tmp_path, "check", "merged.csv", "-t", "news.txt")
    preview = mailmerge(tmp_path, "preview", "merged.csv", "-t", "news.txt")
    dry = mailmerge(tmp_path, "send", "merged.csv", "-t", "news.txt", "--dry-run")
    pages = mailmerge(tmp_path, "preview", "merged.csv", "-t", "news.txt", "--html", "pages")

    assert check.returncode == 0, check.stderr
    assert "2 rows can be sent, 0 invalid, 2 duplicates (not sent)" in check.stdout
    assert "2 to send, 0 invalid, 2 duplicates (not sent), of 4 rows" in preview.stderr
    assert "duplicate, will not be sent: same To address as row 2" in preview.stdout
    assert "would send 2 messages" in dry.stdout and "2 duplicates (not sent)" in dry.stdout, dry.stdout
    index = (tmp_path / "pages" / "index.html").read_text(encoding="utf-8")
    assert pages.returncode == 0 and "2 to send, 0 invalid, 2 duplicates, of 4 rows" in index
    assert index.count("duplicate: same To address as row 2") == 2 and "invalid:" not in index
    assert plain_server.messages == []


def test_allow_duplicates_sends_every_row(tmp_path: Path, plain_server: SmtpTestServer) -> None:
    setup(tmp_path, plain_server, [(name, email, "") for name, email in MERGED])

    run = mailmerge(tmp_path, "send", "merged.csv", "-t", "news.txt", "--yes", "--allow-duplicates")

    assert run.returncode == 0, run.stderr
    assert received(plain_server) == Counter({"ann@example.com": 2, "ANN@example.com": 1, "bob@example.com": 1})
    assert {line["status"] for line in report(tmp_path / "merged.report.csv").values()} == {"sent"}


def test_a_resumed_run_finds_the_same_duplicates(tmp_path: Path, plain_server: SmtpTestServer) -> None:
    setup(tmp_path, plain_server, [(name, email, "") for name, email in MERGED])

    first = mailmerge(tmp_path, "send", "merged.csv", "-t", "news.txt", "--yes", "--max-messages", "1")
    assert received(plain_server) == Counter({"ann@example.com": 1}), first.stderr
    rest = mailmerge(tmp_path, "send", "merged.csv", "-t", "news.txt", "--yes")

    assert rest.returncode == 0, rest.stderr
    assert received(plain_server) == Counter({"ann@example.com": 1, "bob@example.com": 1})
    assert "1 of 2 already sent; sending the other 1" in rest.stderr


def test_the_local_part_can_be_case_sensitive_never_the_domain(tmp_path: Path, plain_server: SmtpTestServer) -> None:
    setup(tmp_path, plain_server, [(name, email, "") for name, email in [*MERGED, ("Ann", "ann@EXAMPLE.com")]])

    run = mailmerge(tmp_path, "send", "merged.csv", "-t", "news.txt", "--yes", "--case-sensitive-local-part")

    assert run.returncode == 0, run.stderr
    assert received(plain_server) == Counter({"ann@example.com": 1, "ANN@example.com": 1, "bob@example.com": 1})
    lines = report(tmp_path / "merged.report.csv")
    assert [lines[row]["status"] for row in (4, 5, 6)] == ["duplicate", "sent", "duplicate"]


def test_only_to_is_compared_cc_repeats_are_sent(tmp_path: Path, plain_server: SmtpTestServer) -> None:
    write_config(tmp_path, plain_server, security="none", username=None)
    write_template(tmp_path / "news.txt", "From: club@example.com\nTo: {{ email }}\nCc: {{ cc }}\nSubject: hi\n\nhi\n")
    write_list(tmp_path / "merged.csv", [("Ann", "ann@example.com", "bob@example.com"), ("Bob", "bob@example.com", ""),
                                         ("Cy", "cy@example.com", "bob@example.com")], header=("name", "email", "cc"))

    run = mailmerge(tmp_path, "send", "merged.csv", "-t", "news.txt", "--yes")

    assert run.returncode == 0, run.stderr  # Bob's own row is sent although he was copied on Ann's
    assert received(plain_server) == Counter({"ann@example.com": 1, "bob@example.com": 3, "cy@example.com": 1})


def test_an_invalid_row_keeps_its_address_in_the_report(tmp_path: Path, plain_server: SmtpTestServer) -> None:
    setup(tmp_path, plain_server, [
        ("Ann", "ann@example.com", ""),
        ("Bob", "bob@example.com", "missing.pdf"),  # no such attachment
        ("Cy\x07", "cy@example.com", ""),  # a control character in the subject
        ("Di", "di@@example.com", ""),  # the address itself is broken
        ("Ed", "ed@example.com\nBcc: spy@example.net", ""),  # a header break in the address
        ("=Fay", "=HYPERLINK(\"http://x\")", ""),  # a formula where the address should be
    ])

    run = mailmerge(tmp_path, "send", "merged.csv", "-t", "news.txt", "--yes")

    assert run.returncode == 3, run.stderr
    assert received(plain_server) == Counter({"ann@example.com": 1})
    lines = report(tmp_path / "merged.report.csv")
    assert [lines[row]["status"] for row in range(3, 8)] == ["invalid"] * 5
    assert lines[3]["address"] == "bob@example.com" and "missing.pdf" in lines[3]["reason"]
    assert lines[4]["address"] == "cy@example.com"
    assert lines[5]["address"] == "di@@example.com"
    raw = (tmp_path / "merged.report.csv").read_bytes()
    assert b"ed@example.com" in raw and b"\nBcc: spy" not in raw  # the raw text, its line break written out
    assert lines[6]["address"].startswith("ed@example.com") and "spy@example.net" in lines[6]["address"]
    assert lines[7]["address"].startswith("'=HYPERLINK")  # never a formula in a CSV we write


def test_a_broken_address_is_reported_as_the_list_wrote_it(tmp_path: Path, plain_server: SmtpTestServer) -> None:
    write_config(tmp_path, plain_server, security="none", username=None)
    write_template(tmp_path / "news.txt", "From: club@example.com\nTo: {{ email }}\nSubject: hi\n\nhi\n")
    write_list(tmp_path / "merged.csv", [("Ann", "ann@example.com", ""), ("Di", "di@@example.com", "")])

    run = mailmerge(tmp_path, "send", "merged.csv", "-t", "news.txt", "--yes")

    assert run.returncode == 3, run.stderr
    line = report(tmp_path / "merged.report.csv")[3]
    assert (line["status"], line["address"]) == ("invalid", "di@@example.com")  # not the parser's "@example.com"


def test_a_row_repeating_an_invalid_row_is_sent(tmp_path: Path, plain_server: SmtpTestServer) -> None:
    setup(tmp_path, plain_server, [("Ann", "ann@example.com", "missing.pdf"), ("Ann", "ann@example.com", "")])

    run = mailmerge(tmp_path, "send", "merged.csv", "-t", "news.txt", "--yes")

    assert received(plain_server) == Counter({"ann@example.com": 1}), run.stderr  # the invalid row sent her nothing
    lines = report(tmp_path / "merged.report.csv")
    assert (lines[2]["status"], lines[3]["status"]) == ("invalid", "sent")
