"""`mailmerge init`: the starter folder works as it is, and nothing is ever overwritten."""
from __future__ import annotations

import os
import struct
import subprocess
import sys
import tomllib
import zlib
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import openpyxl
import pytest

from mailmerge.cli.scaffold import COPIED, FILES, ScaffoldResult, init_folder, logo_png, starter_file
from mailmerge.config.file import load_config
from mailmerge.config.providers import PROVIDERS
from mailmerge.errors import InputError
from mailmerge.sources.recipients import read_recipients

EXPECTED = {
    "mailmerge.toml",
    ".env.example",
    ".gitignore",
    "templates/newsletter.md",
    "templates/logo.png",
    "templates/invoice.txt",
    "samples/recipients.xlsx",
    "samples/recipients.csv",
}
KOREAN = "김민수"
WITH_COMMA = "O'Brien, Jung"


def mailmerge(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the command as a person would, in ``folder``, with no mail settings
    from the environment of the test run."""
    environ = {key: value for key, value in os.environ.items() if not key.startswith("MAILMERGE_")}
    environ["PYTHONIOENCODING"] = "utf-8"
    environ["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "mailmerge", *args],
        check=False, cwd=folder, env=environ, capture_output=True, text=True, encoding="utf-8", timeout=120,
    )


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in folder.rglob("*") if path.is_file()
    }


def relative(paths: list[Path], folder: Path) -> set[str]:
    return {path.relative_to(folder).as_posix() for path in paths}


# --- the starting point works with no edits -------------------------------------


def test_init_writes_every_file(tmp_path: Path) -> None:
    result = init_folder(tmp_path)
    assert isinstance(result, ScaffoldResult)
    assert set(FILES) == EXPECTED
    assert relative(result.written, tmp_path) == EXPECTED
    assert len(result.written) == len(EXPECTED)
    assert result.kept == []
    assert set(snapshot(tmp_path)) == EXPECTED


def test_init_creates_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "new" / "campaign"
    result = init_folder(folder)
    assert relative(result.written, folder) == EXPECTED


def test_preview_and_send_work_right_after_init(tmp_path: Path) -> None:
    init_folder(tmp_path)
    assert not (tmp_path / "samples" / "mailmerge.toml").exists()  # the config is found in the current folder

    preview = mailmerge(tmp_path, "preview", "samples/recipients.xlsx")  # no -t: [message] template
    assert preview.returncode == 0, preview.stdout + preview.stderr
    subjects = [line for line in preview.stdout.splitlines() if line.startswith("Subject:")]
    assert len(subjects) == 4
    assert any(KOREAN in subject for subject in subjects), preview.stdout
    assert f'To: "{WITH_COMMA}" <jung.obrien@example.org>' in preview.stdout  # one recipient, not two
    assert "image/png" in preview.stdout
    assert "4 to send, 0 invalid, of 4 rows" in preview.stderr

    send = mailmerge(tmp_path, "send", "samples/recipients.xlsx", "--outbox", "outbox", "--yes")
    assert send.returncode == 0, send.stdout + send.stderr
    files = sorted((tmp_path / "outbox").glob("*.eml"))
    assert len(files) == 4  # one per row
    subjects = []
    for file in files:
        with file.open("rb") as handle:
            message = BytesParser(policy=policy.default).parse(handle)
        assert isinstance(message, EmailMessage)
        assert message.is_multipart()
        parts = list(message.walk())
        html = [part for part in parts if part.get_content_type() == "text/html"]
        assert len(html) == 1 and "cid:" in html[0].get_content()
        images = [part for part in parts if part.get_content_type() == "image/png"]
        assert len(images) == 1
        assert images[0].get_content() == logo_png()
        assert message["From"] == "Your Name <you@example.com>"
        subjects.append(str(message["Subject"]))
    assert f"{KOREAN}, here is our latest news" in subjects


def test_the_invoice_template_works_with_both_lists(tmp_path: Path) -> None:
    init_folder(tmp_path)
    for name in ("samples/recipients.csv", "samples/recipients.xlsx"):
        run = mailmerge(tmp_path, "preview", name, "-t", "templates/invoice.txt", "--row", "2")
        assert run.returncode == 0, run.stdout + run.stderr
        assert "Subject: Invoice 007 for Ada Lovelace" in run.stdout
        assert "Amount:          120 EUR" in run.stdout
        assert "Due date:        2026-12-01" in run.stdout


# --- never overwrite -----------------------------------------------------------


def test_second_init_keeps_every_file_unchanged(tmp_path: Path) -> None:
    init_folder(tmp_path)
    before = snapshot(tmp_path)
    result = init_folder(tmp_path)
    assert result.written == []
    assert relative(result.kept, tmp_path) == EXPECTED
    assert len(result.kept) == len(EXPECTED)
    assert snapshot(tmp_path) == before


def test_an_existing_config_is_kept_and_the_rest_written(tmp_path: Path) -> None:
    mine = b'[message]\nfrom = "Mine <mine@example.org>"\n'
    (tmp_path / "mailmerge.toml").write_bytes(mine)
    result = init_folder(tmp_path)
    assert result.kept == [tmp_path / "mailmerge.toml"]
    assert relative(result.written, tmp_path) == EXPECTED - {"mailmerge.toml"}
    assert (tmp_path / "mailmerge.toml").read_bytes() == mine


def test_edited_files_survive_a_second_init(tmp_path: Path) -> None:
    init_folder(tmp_path)
    (tmp_path / "templates" / "newsletter.md").write_text("Subject: mine\n\nmine\n", encoding="utf-8")
    (tmp_path / "samples" / "recipients.csv").unlink()
    result = init_folder(tmp_path)
    assert relative(result.written, tmp_path) == {"samples/recipients.csv"}
    assert (tmp_path / "templates" / "newsletter.md").read_text(encoding="utf-8") == "Subject: mine\n\nmine\n"


def test_a_symbolic_link_is_kept_not_written_through(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    folder = tmp_path / "folder"
    (folder / "templates").mkdir(parents=True)
    (folder / "templates" / "invoice.txt").symlink_to(outside)  # dangling
    result = init_folder(folder)
    assert folder / "templates" / "invoice.txt" in result.kept
    assert not outside.exists()


def test_a_file_in_place_of_a_folder_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "templates").write_text("not a folder", encoding="utf-8")
    with pytest.raises(InputError, match="not a folder"):
        init_folder(tmp_path)


# --- what the files hold ------------------------------------------------------


def test_the_config(tmp_path: Path) -> None:
    init_folder(tmp_path)
    path = tmp_path / "mailmerge.toml"
    text = path.read_text(encoding="utf-8")
    data = tomllib.loads(text)
    assert data["smtp"] == {} and data["send"] == {}  # every example is a comment
    assert data["message"] == {"from": "Your Name <you@example.com>", "template": "templates/newsletter.md"}
    lines = text.splitlines()
    assert '# provider = "gmail"' in lines
    presets = next(line for line in lines if line.startswith("# Presets:"))
    assert [name.strip() for name in presets.split(":", 1)[1].split(",")] == list(PROVIDERS)
    for example in ("# host = ", "# port = ", "# security = ", "# username = ",
                    "# rate = ", "# batch_size = ", "# batch_pause = "):
        assert any(line.startswith(example) for line in lines), example
    assert "password =" not in text  # the config refuses one

    config = load_config(path, environ={})
    assert config.message.sender == "Your Name <you@example.com>"
    assert config.message.template == tmp_path / "templates" / "newsletter.md"
    assert config.smtp.host == ""  # nothing is sent anywhere until the user says where


def test_the_env_example(tmp_path: Path) -> None:
    init_folder(tmp_path)
    lines = (tmp_path / ".env.example").read_text(encoding="utf-8").splitlines()
    assert "MAILMERGE_PASSWORD=" in lines
    assert "# MAILMERGE_OAUTH2_TOKEN=" in lines
    assert any("never commit" in line.lower() and ".env" in line for line in lines if line.startswith("#"))
    assert not (tmp_path / ".env").exists()


def test_the_newsletter_template(tmp_path: Path) -> None:
    init_folder(tmp_path)
    text = (tmp_path / "templates" / "newsletter.md").read_text(encoding="utf-8")
    head, body = text.split("\n\n", 1)
    headers = dict(line.split(": ", 1) for line in head.splitlines())
    assert "{{ name }}" in headers["Subject"]
    assert headers["To"] == "{{ name }} <{{ email }}>"
    assert "![Logo](logo.png)" in body
    assert "{{ name }}" in body
    assert "| ---" in body  # a table
    assert "](https://example.com/" in body  # a link


def test_the_invoice_template(tmp_path: Path) -> None:
    init_folder(tmp_path)
    text = (tmp_path / "templates" / "invoice.txt").read_text(encoding="utf-8")
    for name in ("{{ invoice_no }}", "{{ amount }}", "{{ due }}", "{{ name }}"):
        assert name in text


def test_both_lists_hold_the_same_rows(tmp_path: Path) -> None:
    init_folder(tmp_path)
    csv_path, xlsx_path = tmp_path / "samples" / "recipients.csv", tmp_path / "samples" / "recipients.xlsx"
    assert csv_path.read_bytes().startswith(b"\xef\xbb\xbf")  # UTF-8 with BOM, for Excel
    from_csv, from_xlsx = read_recipients(csv_path), read_recipients(xlsx_path)
    assert from_csv.columns == from_xlsx.columns == ["name", "email", "invoice_no", "amount", "due"]
    rows = [recipient.values for recipient in from_xlsx]
    assert rows == [recipient.values for recipient in from_csv]
    assert 3 <= len(rows) <= 4
    names = [row["name"] for row in rows]
    assert KOREAN in names and WITH_COMMA in names
    for row in rows:
        assert row["email"].rsplit("@", 1)[1] in ("example.com", "example.org", "example.kr")
        assert len(row["invoice_no"]) == 3 and row["invoice_no"].startswith("0")
        assert row["amount"].isdigit()
    assert rows[0]["invoice_no"] == "007" and rows[0]["due"] == "2026-12-01"


def test_the_excel_cells_have_their_types(tmp_path: Path) -> None:
    init_folder(tmp_path)
    sheet = openpyxl.load_workbook(tmp_path / "samples" / "recipients.xlsx").active
    assert sheet is not None
    header = [cell.value for cell in sheet[1]]
    for row in sheet.iter_rows(min_row=2):
        cells = dict(zip(header, row, strict=True))
        assert cells["invoice_no"].data_type == "s"
        assert isinstance(cells["amount"].value, int)
        assert cells["due"].is_date


def test_the_logo_is_a_real_png(tmp_path: Path) -> None:
    init_folder(tmp_path)
    data = (tmp_path / "templates" / "logo.png").read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    chunks, offset, image = [], 8, b""
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset:offset + 4])
        kind, body = data[offset + 4:offset + 8], data[offset + 8:offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length:offset + 12 + length])
        assert crc == zlib.crc32(kind + body)
        chunks.append(kind)
        image += body if kind == b"IDAT" else b""
        offset += 12 + length
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND"
    width, height, depth, color = struct.unpack(">IIBB", data[16:26])
    assert (depth, color) == (8, 2)
    assert len(zlib.decompress(image)) == height * (1 + width * 3)


def test_the_starter_files_are_in_the_package() -> None:
    for source in COPIED.values():
        assert starter_file(source).is_file(), source
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    assert "starter/**/*" in pyproject["tool"]["setuptools"]["package-data"]["mailmerge.cli"]
    assert not any(source.startswith(".") for source in COPIED.values())  # package-data globs skip dot files


def test_the_init_command_says_what_it_wrote_and_kept(tmp_path: Path) -> None:
    from conftest import run_cli

    first = run_cli("init", tmp_path / "club")
    second = run_cli("init", tmp_path / "club")

    assert first.exit_code == 0 and second.exit_code == 0
    assert "wrote" in first.stdout and "mailmerge.toml" in first.stdout
    assert "kept" in second.stdout and "wrote" not in second.stdout
    assert "mailmerge preview samples/recipients.xlsx" in first.stdout


def test_the_gitignore_keeps_secrets_and_reports_out(tmp_path: Path) -> None:
    init_folder(tmp_path)
    lines = (tmp_path / ".gitignore").read_text().splitlines()
    ignored = {line for line in lines if line and not line.startswith("#")}  # git has no inline comments
    assert {".env", ".mailmerge/", "*.report.csv", "outbox/"} <= ignored
