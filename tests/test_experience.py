"""What a person (or a script) sees: --json documents, the test send to
yourself, plain progress lines, --quiet, the summary table, and errors that
say what, where and what to do."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_cli, write_config, write_template, write_xlsx
from smtp_server import SmtpTestServer

TEMPLATE = "From: Club <club@example.com>\nSubject: Hello {{ name }}\nTo: {{ name }} <{{ email }}>\n\nHi {{ name }}\n"
ROWS = [("김민수", "minsu@example.com"), ("Ann", "ann@example.com"), ("Broken", "not an address"), ("Bob", "bob@example.com")]


def make(folder: Path) -> tuple[Path, Path]:
    return write_xlsx(folder / "list.xlsx", ("name", "email"), ROWS), write_template(folder / "t.txt", TEMPLATE)


def test_send_json_is_one_object_with_counts_and_rows(tmp_path: Path, plain_server: SmtpTestServer) -> None:
    xlsx, template = make(tmp_path)
    write_config(tmp_path, plain_server, security="none", username=None)

    run = run_cli("send", xlsx, "-t", template, "--yes", "--json")

    document = json.loads(run.stdout)  # stdout is exactly one JSON object
    assert run.exit_code == 3
    assert document["command"] == "send" and document["exit_code"] == 3
    assert document["counts"]["sent"] == 3 and document["counts"]["invalid"] == 1
    assert [r["status"] for r in document["rows"]] == ["sent", "sent", "invalid", "sent"]
    assert document["rows"][0]["addresses"][0] == {
        "address": "minsu@example.com", "field": "To", "status": "sent", "code": 250,
        "reason": "OK", "message_id": document["rows"][0]["addresses"][0]["message_id"],
    }
    assert document["report"].endswith("list.report.csv")


def test_preview_check_and_status_json(tmp_path: Path, plain_server: SmtpTestServer) -> None:
    xlsx, template = make(tmp_path)
    write_config(tmp_path, plain_server, security="none", username=None)

    preview = json.loads(run_cli("preview", xlsx, "-t", template, "--json").stdout)
    check = json.loads(run_cli("check", xlsx, "-t", template, "--smtp", "--json").stdout)
    before = json.loads(run_cli("status", xlsx, "-t", template, "--json").stdout)
    run_cli("send", xlsx, "-t", template, "--yes", "--quiet")
    after = json.loads(run_cli("status", xlsx, "-t", template, "--json").stdout)

    assert preview["counts"] == {"rows": 4, "to_send": 3, "invalid": 1, "duplicates": 0}
    assert preview["rows"][0]["subject"] == "Hello 김민수" and preview["rows"][0]["to"] == ["minsu@example.com"]
    assert preview["rows"][2] == {"row": 4, "valid": False, "status": "invalid",
                                  "reason": preview["rows"][2]["reason"]} and "not an address" in preview["rows"][2]["reason"]
    assert check["invalid"][0]["row"] == 4 and check["smtp"]["steps"][-1] == "QUIT"
    assert before["counts"]["not_sent_yet"] == 3 and after["counts"]["sent"] == 3


def test_a_json_error_is_json_too(tmp_path: Path) -> None:
    xlsx, _ = make(tmp_path)
    template = write_template(tmp_path / "bad.txt", "From: c@example.com\nSubject: {{ nmae }}\n\nx\n")

    run = run_cli("preview", xlsx, "-t", template, "--json")

    assert run.exit_code == 2
    document = json.loads(run.stdout)
    assert "'nmae' is not a column" in document["error"] and document["exit_code"] == 2


def test_test_send_goes_only_to_me_and_leaves_the_real_send_whole(tmp_path: Path) -> None:
    xlsx, template = make(tmp_path)
    with SmtpTestServer() as server:
        write_config(tmp_path, server, security="none", username=None)
        test = run_cli("send", xlsx, "-t", template, "--yes", "--test-to", "me@example.org", "--limit", "2")
        assert [m.rcpt_tos for m in server.messages] == [["me@example.org"], ["me@example.org"]]
        first = server.messages[0].message
        assert first["Subject"] == "[TEST] Hello 김민수"
        assert first["To"].addresses[0].addr_spec == "minsu@example.com"  # headers as they will go out
        real = run_cli("send", xlsx, "-t", template, "--yes")

    assert test.exit_code == 0, test.output
    assert "the real recipients got nothing" in test.stdout
    assert real.exit_code == 3  # the invalid row
    assert [m.rcpt_tos for m in server.messages[2:]] == [["minsu@example.com"], ["ann@example.com"], ["bob@example.com"]]


def test_test_send_with_json_gives_one_document(tmp_path: Path, plain_server: SmtpTestServer) -> None:
    xlsx, template = make(tmp_path)
    write_config(tmp_path, plain_server, security="none", username=None)

    run = run_cli("send", xlsx, "-t", template, "--yes", "--test-to", "me@example.org", "--limit", "2", "--json")

    assert run.exit_code == 0, run.output
    document = json.loads(run.stdout)
    assert document["test_to"] == "me@example.org" and document["counts"] == {"sent": 2, "not_sent": 0}
    assert [row["status"] for row in document["rows"]] == ["sent", "sent"]


def test_without_a_terminal_one_line_per_message_and_a_summary_table(tmp_path: Path, plain_server: SmtpTestServer) -> None:
    xlsx, template = make(tmp_path)
    write_config(tmp_path, plain_server, security="none", username=None)

    run = run_cli("send", xlsx, "-t", template, "--yes")
    quiet = run_cli("send", xlsx, "-t", template, "--yes", "--quiet", "--restart")

    assert "row 2: sent minsu@example.com" in run.stderr and "row 5: sent bob@example.com" in run.stderr
    for label in ("sent", "refused", "invalid", "deferred", "unknown", "time", "messages/s", "report"):
        assert label in run.stdout
    assert "duplicate" not in run.stdout and "bounced" not in run.stdout  # states this list never had
    assert "row 2: sent" not in quiet.stderr
    assert quiet.stdout.strip().splitlines()[-2] == "sent 3, refused 0, invalid 1"


def test_errors_say_where_and_what_to_do(tmp_path: Path) -> None:
    xlsx, _ = make(tmp_path)
    typo = write_template(tmp_path / "typo.txt", "From: c@example.com\nTo: {{ emial }}\n\nHello\n")
    syntax = write_template(tmp_path / "syntax.txt", "From: c@example.com\nSubject: Hi\n\nHello {{ name }\n")

    missing_column = run_cli("preview", xlsx, "-t", typo)
    broken = run_cli("preview", xlsx, "-t", syntax)
    no_list = run_cli("preview", tmp_path / "lsit.xlsx", "-t", typo)

    assert missing_column.exit_code == 2
    assert f"{typo}: line 2: 'emial' is not a column" in missing_column.stderr
    assert "did you mean 'email'?" in missing_column.stderr
    assert broken.exit_code == 2 and f"{syntax}: line 4" in broken.stderr
    assert no_list.exit_code == 2 and "lsit.xlsx: no such file" in no_list.stderr
    for run in (missing_column, broken, no_list):
        assert "Traceback" not in run.output and len(run.stderr.strip().splitlines()) == 1
