"""Which mailmerge.toml is used: beside the list, beside the template, their
parent folders, then the current folder; and where it was looked for when
none is found. Run as a user would: the installed command, real files."""
from __future__ import annotations

import os
import subprocess
import sys
from email import policy
from email.parser import BytesParser
from pathlib import Path

TEMPLATE = "To: {{ email }}\nSubject: Hello {{ name }}\n\nHi {{ name }}\n"


def mailmerge(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The command in ``folder``, with no mail settings from the test run's environment."""
    environ = {key: value for key, value in os.environ.items() if not key.startswith("MAILMERGE_")}
    environ.update(PYTHONIOENCODING="utf-8", COLUMNS="300")
    return subprocess.run([sys.executable, "-m", "mailmerge", *args], check=False, cwd=folder, env=environ,
                          capture_output=True, text=True, encoding="utf-8", timeout=120)


def one_line(text: str) -> str:
    return " ".join(text.split())


def test_init_layout_works_from_another_folder(tmp_path: Path) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert mailmerge(tmp_path, "init", str(project)).returncode == 0
    recipients = str(project / "samples" / "recipients.xlsx")

    preview = mailmerge(elsewhere, "preview", recipients)
    assert preview.returncode == 0, preview.stderr
    assert "From: Your Name <you@example.com>" in preview.stdout  # [message] from of the project's config

    sent = mailmerge(elsewhere, "send", recipients, "--outbox", "out", "--yes", "--verbose")
    assert sent.returncode == 0, sent.stderr
    assert f"config: {project / 'mailmerge.toml'}" in one_line(sent.stderr)
    files = sorted((elsewhere / "out").glob("*.eml"))
    assert len(files) == 4
    message = BytesParser(policy=policy.default).parsebytes(files[0].read_bytes())
    assert message["From"] == "Your Name <you@example.com>"


def test_the_first_found_wins_list_before_template_before_parents_before_here(tmp_path: Path) -> None:
    here, lists, templates = tmp_path / "here", tmp_path / "top" / "lists", tmp_path / "top" / "templates"
    for folder in (here, lists, templates):
        folder.mkdir(parents=True)
    (lists / "people.csv").write_text("email,name\nann@example.com,Ann\n", encoding="utf-8")
    (templates / "hello.txt").write_text(TEMPLATE, encoding="utf-8")
    places = [lists, templates, tmp_path / "top", here]
    for place in places:
        (place / "mailmerge.toml").write_text(f'[message]\nfrom = "{place.name} <x@example.com>"\n', encoding="utf-8")
    for place in places:
        shown = mailmerge(here, "preview", str(lists / "people.csv"), "-t", str(templates / "hello.txt"))
        assert shown.returncode == 0, shown.stderr
        assert f"From: {place.name} <x@example.com>" in shown.stdout
        (place / "mailmerge.toml").unlink()


def test_no_config_says_where_it_looked(tmp_path: Path) -> None:
    lists, elsewhere = tmp_path / "top" / "lists", tmp_path / "elsewhere"
    lists.mkdir(parents=True)
    elsewhere.mkdir()
    (lists / "people.csv").write_text("email,name\nann@example.com,Ann\n", encoding="utf-8")
    (lists / "hello.txt").write_text(TEMPLATE, encoding="utf-8")
    looked = f"no mailmerge.toml in {lists}, {tmp_path / 'top'} or {elsewhere}"

    no_template = mailmerge(elsewhere, "preview", str(lists / "people.csv"))
    assert no_template.returncode == 2
    assert "which template?" in one_line(no_template.stderr) and looked in one_line(no_template.stderr)

    no_from = mailmerge(elsewhere, "preview", str(lists / "people.csv"), "-t", str(lists / "hello.txt"))
    assert no_from.returncode == 2
    assert "no 'From:' header" in one_line(no_from.stderr) and looked in one_line(no_from.stderr)

    (lists / "hello.txt").write_text("From: me@example.com\n" + TEMPLATE, encoding="utf-8")
    no_server = mailmerge(elsewhere, "send", str(lists / "people.csv"), "-t", str(lists / "hello.txt"), "--yes")
    assert no_server.returncode == 2
    assert "no SMTP server configured" in one_line(no_server.stderr) and looked in one_line(no_server.stderr)
    assert "Traceback" not in no_server.stderr
