"""The recipient limit of one message: a provider's published limit (Naver
100, Daum 150, ...), else 100 (what RFC 5321 says every server must accept),
else max_recipients_per_message in [send]. A row over it is invalid, found at
plan time (check, preview, --dry-run and send agree); the others go."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import run_cli, write_config, write_template, write_xlsx
from smtp_server import SmtpTestServer

from mailmerge.config.file import load_config
from mailmerge.errors import ConfigError

TEMPLATE = "Subject: Club news\nTo: {{ email }}\n\nHello\n"


def addresses(count: int, prefix: str) -> str:
    """One cell holding ``count`` addresses, as a pasted mailing list would."""
    return ", ".join(f"{prefix}{n}@example.com" for n in range(1, count + 1))


@pytest.fixture
def crowded_list(tmp_path: Path) -> tuple[Path, Path]:
    """Row 2: one address; row 3: 101 in one cell; row 4: 100; row 5: one."""
    rows = [("ann@example.com",), (addresses(101, "big"),), (addresses(100, "full"),), ("bob@example.com",)]
    xlsx = write_xlsx(tmp_path / "list.xlsx", ("email",), rows)
    return xlsx, write_template(tmp_path / "news.txt", TEMPLATE)


def add_to_section(config: Path, section: str, line: str) -> None:
    config.write_text(config.read_text().replace(f"[{section}]", f"[{section}]\n{line}"))


def read_report(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig") as handle:
        return list(csv.DictReader(handle))


def test_a_row_over_the_providers_limit_is_invalid_and_the_others_go(
    tmp_path: Path, tls_server: SmtpTestServer, crowded_list: tuple[Path, Path]
) -> None:
    xlsx, template = crowded_list
    # The Naver preset's limits, but host, port and security point at the test server.
    write_config(tmp_path, tls_server, provider="naver")

    check = run_cli("check", xlsx, "-t", template, "--json")
    dry_run = run_cli("send", xlsx, "-t", template, "--dry-run", "--json")
    preview = run_cli("preview", xlsx, "-t", template, "--json")
    run = run_cli("send", xlsx, "-t", template, "--yes")

    # Found at plan time: every command names the same row, before any network.
    for checked in (check, dry_run):
        assert checked.exit_code == 3, checked.output
        assert [item["row"] for item in json.loads(checked.stdout)["invalid"]] == [3]
    assert [r["row"] for r in json.loads(preview.stdout)["rows"] if not r["valid"]] == [3]
    assert run.exit_code == 3, run.output
    assert "row 3: invalid: row not sent: 101 recipients (To, Cc and Bcc), more than Naver's limit of 100" in run.stderr
    # At the server: one message per valid row, the 100-address row whole.
    assert [len(m.rcpt_tos) for m in tls_server.messages] == [1, 100, 1]
    assert not any(a.startswith("big") for a in tls_server.recipients())
    report = read_report(tmp_path / "list.report.csv")
    row3 = [r for r in report if r["row"] == "3"]
    assert len(row3) == 101 and {r["status"] for r in row3} == {"invalid"}
    assert "Naver's limit of 100 a message" in row3[0]["reason"]
    assert "max_recipients_per_message" in row3[0]["reason"]
    assert {r["status"] for r in report if r["row"] != "3"} == {"sent"}


@pytest.mark.parametrize(("setting", "counts", "invalid"), [(101, [1, 101, 100, 1], []), (50, [1, 1], ["3", "4"])])
def test_max_recipients_per_message_overrides_the_preset(
    tmp_path: Path, tls_server: SmtpTestServer, crowded_list: tuple[Path, Path],
    setting: int, counts: list[int], invalid: list[str],
) -> None:
    xlsx, template = crowded_list
    config = write_config(tmp_path, tls_server, provider="naver")
    add_to_section(config, "send", f"max_recipients_per_message = {setting}")

    run = run_cli("send", xlsx, "-t", template, "--yes")

    assert run.exit_code == (3 if invalid else 0), run.output
    assert [len(m.rcpt_tos) for m in tls_server.messages] == counts  # RCPTs of each message
    report = read_report(tmp_path / "list.report.csv")
    assert sorted({r["row"] for r in report if r["status"] == "invalid"}) == invalid
    for row in report:
        if row["status"] == "invalid":
            assert f"more than max_recipients_per_message = {setting} in [send]" in row["reason"]


def test_without_a_preset_the_limit_is_100(tmp_path: Path, crowded_list: tuple[Path, Path]) -> None:
    xlsx, template = crowded_list
    (tmp_path / "mailmerge.toml").write_text('[message]\nfrom = "club@example.com"\n')

    run = run_cli("send", xlsx, "-t", template, "--outbox", tmp_path / "outbox")

    assert run.exit_code == 3, run.output
    assert "101 recipients (To, Cc and Bcc), more than the 100 a message every server must accept" in run.stderr
    written = sorted(p.name for p in (tmp_path / "outbox").glob("*.eml"))
    assert [int(name.split("-", 1)[0]) for name in written] == [2, 4, 5]


def test_the_limit_counts_to_cc_and_bcc_together(tmp_path: Path, plain_server: SmtpTestServer) -> None:
    rows = [(addresses(2, "to"), addresses(2, "cc"), addresses(1, "bcc")), ("ann@example.com", "", "")]
    xlsx = write_xlsx(tmp_path / "list.xlsx", ("email", "copy", "hidden"), rows)
    template = write_template(tmp_path / "t.txt", "Subject: Hi\nTo: {{ email }}\nCc: {{ copy }}\nBcc: {{ hidden }}\n\nHi\n")
    config = write_config(tmp_path, plain_server, security="none", username=None)
    add_to_section(config, "send", "max_recipients_per_message = 4")

    run = run_cli("send", xlsx, "-t", template, "--yes")

    assert run.exit_code == 3, run.output
    assert "5 recipients (To, Cc and Bcc)" in run.stderr
    assert plain_server.recipients() == ["ann@example.com"]


@pytest.mark.parametrize(
    ("provider", "expected"),
    [("naver", 100), ("daum", 150), ("gmail", 100), ("office365", 500), ("kakao", 100), (None, 100)],
)
def test_each_preset_carries_its_limit(tmp_path: Path, provider: str | None, expected: int) -> None:
    config = tmp_path / "mailmerge.toml"
    config.write_text(f'[smtp]\nprovider = "{provider}"\n' if provider else "[smtp]\n")

    limit = load_config(config, environ={}).send.recipient_limit

    assert limit.count == expected


def test_the_setting_zero_means_no_limit_and_a_negative_one_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "mailmerge.toml"
    config.write_text('[smtp]\nprovider = "daum"\n[send]\nmax_recipients_per_message = 0\n')
    unlimited = load_config(config, environ={}).send.recipient_limit
    from_environment = load_config(config, environ={"MAILMERGE_SEND_MAX_RECIPIENTS_PER_MESSAGE": "300"})

    assert unlimited.exceeded_by(100_000) is None
    assert from_environment.send.recipient_limit.count == 300
    config.write_text("[send]\nmax_recipients_per_message = -1\n")
    with pytest.raises(ConfigError, match=r"\[send\] max_recipients_per_message must be 0 \(no limit\) or more"):
        load_config(config, environ={})


def test_lowering_the_limit_never_turns_a_sent_row_into_one_to_send_again(
    tmp_path: Path, tls_server: SmtpTestServer, crowded_list: tuple[Path, Path]
) -> None:
    xlsx, template = crowded_list
    config = write_config(tmp_path, tls_server)
    settings = config.read_text()
    add_to_section(config, "send", "max_recipients_per_message = 150")
    first = run_cli("send", xlsx, "-t", template, "--yes")  # every row goes, row 3 with its 101
    config.write_text(settings)  # back to the default, 100: row 3 is over it now
    rows = [("ann@example.com",), (addresses(101, "big"),), (addresses(100, "full"),), ("bob@example.com",)]
    write_xlsx(xlsx, ("email",), [*rows, ("carl@example.com",)])  # and a new row to send
    lowered = run_cli("send", xlsx, "-t", template, "--yes")
    after_lowering = read_report(tmp_path / "list.report.csv")
    add_to_section(config, "send", "max_recipients_per_message = 150")
    raised = run_cli("send", xlsx, "-t", template, "--yes")

    assert first.exit_code == 0, first.output
    assert "Nothing left to send" in raised.output, raised.output
    assert [len(m.rcpt_tos) for m in tls_server.messages] == [1, 101, 100, 1, 1]  # row 3 once, never again
    assert lowered.exit_code == 0, lowered.output  # row 3 was sent: what the limit says of it now is moot
    for report in (after_lowering, read_report(tmp_path / "list.report.csv")):
        assert {r["status"] for r in report} == {"sent"} and len(report) == 204
