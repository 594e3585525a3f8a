"""What the person sees for each input: the right rows sent, or one clear error
line (what, where, what to do) with exit code 2 and nothing sent."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import PASSWORD, run_cli, write_config, write_template, write_xlsx
from smtp_server import SmtpTestServer

from mailmerge.config.file import load_config

TEMPLATE = "From: Club <club@example.com>\nSubject: Hi {{ name }}\nTo: {{ name }} <{{ email }}>\n\nHello {{ name }}, you owe {{ amount }}.\n"


def test_korean_excel_csv_in_cp949_arrives_intact(tmp_path: Path, plain_server: SmtpTestServer) -> None:
    csv_file = tmp_path / "명단.csv"
    csv_file.write_bytes("name,email,amount\n박똠,ddom@example.kr,\"30,000\"\n김민수,minsu@example.kr,5\n".encode("cp949"))
    template = write_template(tmp_path / "t.txt", TEMPLATE)
    write_config(tmp_path, plain_server, security="none", username=None)

    run = run_cli("send", csv_file, "-t", template, "--yes")

    assert run.exit_code == 0, run.output
    assert "read it as cp949" in run.stderr and "--encoding" in run.stderr
    first = plain_server.messages[0].message
    assert first["Subject"] == "Hi 박똠"
    assert first.get_content() == "Hello 박똠, you owe 30,000.\n"
    assert (tmp_path / "명단.report.csv").exists()


def test_semicolon_csv_with_bom_from_western_excel(tmp_path: Path, plain_server: SmtpTestServer) -> None:
    csv_file = tmp_path / "list.csv"
    csv_file.write_bytes("\ufeffname;email;amount\nZoë;zoe@example.fr;1,5\nMüller;mueller@example.de;2\n".encode("utf-8"))
    template = write_template(tmp_path / "t.txt", TEMPLATE)
    write_config(tmp_path, plain_server, security="none", username=None)

    run = run_cli("send", csv_file, "-t", template, "--yes")

    assert run.exit_code == 0, run.output
    assert [m.message["Subject"] for m in plain_server.messages] == ["Hi Zoë", "Hi Müller"]
    assert plain_server.messages[0].message.get_content() == "Hello Zoë, you owe 1,5.\n"


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("list.pdf", b"%PDF-1.4", "cannot read '.pdf' files; save the list as .xlsx or .csv"),
        ("absent.xlsx", None, "absent.xlsx: no such file"),
        ("broken.xlsx", b"this is not a zip file", "cannot read this Excel file"),
        ("empty.csv", b"", "the list is empty"),
        ("header_only.csv", b"name,email\n", "has column names but no rows"),
        ("twice.csv", b"email,name,email\na@example.com,A,b@example.com\n", "'email' appears twice (column 1 and column 3)"),
    ],
)
def test_unreadable_lists_give_one_line_and_exit_2(tmp_path: Path, name: str, content: bytes | None, expected: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    template = write_template(tmp_path / "t.txt", TEMPLATE)

    run = run_cli("preview", path, "-t", template)

    assert run.exit_code == 2
    assert expected in run.stderr
    assert "Traceback" not in run.output
    assert len(run.stderr.strip().splitlines()) == 1


def test_wrong_sheet_name_lists_the_sheets(tmp_path: Path) -> None:
    xlsx = write_xlsx(tmp_path / "l.xlsx", ("name", "email", "amount"), [("A", "a@example.com", 1)])
    template = write_template(tmp_path / "t.txt", TEMPLATE)

    run = run_cli("preview", xlsx, "-t", template, "--sheet", "sheet")

    assert run.exit_code == 2
    assert "no sheet named 'sheet'; did you mean 'Sheet'?" in run.stderr


def test_missing_template_and_missing_server(tmp_path: Path, sample: tuple[Path, Path]) -> None:
    xlsx, template = sample

    no_template = run_cli("send", xlsx, "-t", tmp_path / "nope.txt", "--yes")
    no_server = run_cli("send", xlsx, "-t", template, "--yes")

    assert no_template.exit_code == 2 and "nope.txt: no such template file" in no_template.stderr
    assert no_server.exit_code == 2
    assert "no SMTP server configured" in no_server.stderr and "--outbox" in no_server.stderr


def test_config_mistakes_are_named(tmp_path: Path, sample: tuple[Path, Path]) -> None:
    xlsx, template = sample
    config = tmp_path / "mailmerge.toml"

    config.write_text('[smtp]\nhots = "smtp.example.com"\n', encoding="utf-8")
    typo = run_cli("send", xlsx, "-t", template, "--yes")
    config.write_text('[smtp]\nhost = "smtp.example.com"\npassword = "hunter2"\n', encoding="utf-8")
    stored_password = run_cli("send", xlsx, "-t", template, "--yes")
    config.write_text('[smtp]\nsecurity = "tls"\n', encoding="utf-8")
    bad_security = run_cli("send", xlsx, "-t", template, "--yes")

    assert typo.exit_code == 2 and "unknown key 'hots' in [smtp]; did you mean 'host'?" in typo.stderr
    assert stored_password.exit_code == 2 and "remove the password from the file" in stored_password.stderr
    assert "hunter2" not in stored_password.output
    assert bad_security.exit_code == 2 and "not one of ssl, starttls, none" in bad_security.stderr


def test_environment_overrides_the_config_file(tmp_path: Path, plain_server: SmtpTestServer, sample: tuple[Path, Path]) -> None:
    xlsx, template = sample
    config = tmp_path / "mailmerge.toml"
    config.write_text('[smtp]\nhost = "mail.invalid"\nsecurity = "none"\n', encoding="utf-8")

    run = run_cli(
        "send", xlsx, "-t", template, "--yes",
        env={"MAILMERGE_SMTP_HOST": plain_server.host, "MAILMERGE_SMTP_PORT": str(plain_server.port)},
    )

    assert run.exit_code == 0, run.output
    assert len(plain_server.messages) == 3


def test_config_is_found_beside_the_list_and_given_explicitly(tmp_path: Path, plain_server: SmtpTestServer, sample: tuple[Path, Path]) -> None:
    xlsx, template = sample
    elsewhere = tmp_path / "conf"
    elsewhere.mkdir()
    config = write_config(elsewhere, plain_server, security="none", username=None)

    beside = run_cli("send", xlsx, "-t", template, "--yes")
    explicit = run_cli("send", xlsx, "-t", template, "--yes", "--config", config)

    assert beside.exit_code == 2  # nothing beside the list, nothing in the cwd
    assert explicit.exit_code == 0, explicit.output
    assert len(plain_server.messages) == 3


def test_password_is_asked_for_when_not_in_the_environment(tmp_path: Path, tls_server: SmtpTestServer, sample: tuple[Path, Path]) -> None:
    xlsx, template = sample
    write_config(tmp_path, tls_server)

    run = run_cli("send", xlsx, "-t", template, "--yes", password=None)

    assert run.exit_code == 2  # no terminal to ask on
    assert "set MAILMERGE_PASSWORD" in run.stderr
    assert tls_server.connections == 0


def test_help_shows_examples_and_no_secret(tmp_path: Path) -> None:
    for args in ([], ["send"], ["preview"]):
        run = run_cli(*args, "--help")
        assert run.exit_code == 0
        assert "Example" in run.stdout
        assert PASSWORD not in run.stdout


def test_dry_run_lists_invalid_rows_and_exits_3(tmp_path: Path) -> None:
    xlsx = write_xlsx(
        tmp_path / "l.xlsx", ("name", "email", "amount"),
        [("A", "a@example.com", 1), ("B", "not an address", 2), ("C\r\nBcc: all@example.com", "c@example.com", 3)],
    )
    template = write_template(tmp_path / "t.txt", TEMPLATE)

    run = run_cli("send", xlsx, "-t", template, "--dry-run")

    assert run.exit_code == 3
    assert "would send 1 messages" in run.stdout
    assert "row 3: invalid: 'not an address' is not a valid address" in run.stderr
    assert "row 4: invalid:" in run.stderr and "line break" in run.stderr


def test_journal_fsync_is_off_unless_asked_for_in_the_file_or_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "mailmerge.toml"
    config.write_text('[smtp]\nhost = "smtp.example.com"\n', encoding="utf-8")
    default = load_config(config, environ={})
    from_environment = load_config(config, environ={"MAILMERGE_SEND_JOURNAL_FSYNC": "yes"})
    config.write_text('[smtp]\nhost = "smtp.example.com"\n[send]\njournal_fsync = true\n', encoding="utf-8")
    from_file = load_config(config, environ={})

    assert default.send.journal_fsync is False
    assert from_environment.send.journal_fsync is True
    assert from_file.send.journal_fsync is True


def test_a_journal_that_cannot_be_made_is_named_and_nothing_is_sent(
    tmp_path: Path, plain_server: SmtpTestServer, sample: tuple[Path, Path]
) -> None:
    xlsx, template = sample
    write_config(tmp_path, plain_server, security="none", username=None)
    (tmp_path / ".mailmerge").write_text("a file where the journal's folder should be")

    run = run_cli("send", xlsx, "-t", template, "--yes")

    assert run.exit_code == 1
    assert f"cannot open the journal {tmp_path / '.mailmerge' / 'journal.sqlite3'}" in run.stderr
    assert "must be writable" in run.stderr and "Traceback" not in run.output
    assert plain_server.messages == []
