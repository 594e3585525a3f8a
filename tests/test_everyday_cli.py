"""Everyday use of the command (issue 15): it answers at once, completes file
names in the shell, and ``preview --html`` says what it wrote instead of
printing every message. Each test runs ``python -m mailmerge`` in a new
process, as a user's shell would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_template, write_xlsx

ROOT = Path(__file__).resolve().parent.parent

# What the quick commands must not load: the list readers, the template
# engine, the message builders, IMAP. (The standard library's email.message is
# not in it: Typer's own pydantic loads it through importlib.metadata.)
HEAVY = ("pandas", "jinja2", "email.mime", "imaplib", "markdown_it", "css_inline",
         "mailmerge.campaign", "mailmerge.mime", "mailmerge.render", "mailmerge.sources", "mailmerge.imap")

# Runs mailmerge with the given arguments and prints, when the process ends
# (after the command's own exit), the modules of HEAVY it loaded.
PROBE = """
import atexit, runpy, sys
heavy = {heavy!r}
def loaded():
    print("LOADED:" + " ".join(sorted(m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in heavy))),
          file=sys.stderr)
atexit.register(loaded)
sys.argv = ["mailmerge", *sys.argv[1:]]
runpy.run_module("mailmerge", run_name="__main__")
"""


def mailmerge(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None,
              probe: bool = False) -> subprocess.CompletedProcess[str]:
    """Run ``mailmerge ARGS`` in a new process (this worktree's package)."""
    command = [sys.executable, "-c", PROBE.format(heavy=HEAVY)] if probe else [sys.executable, "-m", "mailmerge"]
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1", "COLUMNS": "100", **(env or {})}
    return subprocess.run([*command, *map(str, args)], cwd=cwd, env=environment, capture_output=True,
                          text=True, timeout=60)


def loaded_modules(run: subprocess.CompletedProcess[str]) -> list[str]:
    line = next(line for line in run.stderr.splitlines() if line.startswith("LOADED:"))
    return line.removeprefix("LOADED:").split()


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["preview", "--help"], ["init", "{tmp}/start"]],
                         ids=["help", "version", "preview-help", "init"])
def test_the_quick_commands_load_nothing_heavy(args: list[str], tmp_path: Path) -> None:
    run = mailmerge(*(a.format(tmp=tmp_path) for a in args), probe=True)

    assert run.returncode == 0, run.stderr
    assert loaded_modules(run) == []
    if args == ["--version"]:
        assert run.stdout.startswith("mailmerge ")


def test_completion_loads_nothing_heavy(tmp_path: Path) -> None:
    (tmp_path / "people.xlsx").touch()
    env = {"_MAILMERGE_COMPLETE": "complete_bash", "COMP_WORDS": "mailmerge send ", "COMP_CWORD": "2"}

    run = mailmerge(cwd=tmp_path, env=env, probe=True)

    assert "people.xlsx" in run.stdout.split()
    assert loaded_modules(run) == []


def test_show_completion_prints_a_bash_script() -> None:
    run = mailmerge("--show-completion", "bash", env={"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"})

    assert run.returncode == 0, run.stderr
    assert "_mailmerge_completion()" in run.stdout
    assert "complete -o default -F _mailmerge_completion mailmerge" in run.stdout
    assert "_MAILMERGE_COMPLETE=complete_bash" in run.stdout


def complete(cwd: Path, line: str) -> list[str]:
    """What bash would be offered for the last word of ``line`` (Click's protocol)."""
    words = line.split(" ")
    env = {"_MAILMERGE_COMPLETE": "complete_bash", "COMP_WORDS": line, "COMP_CWORD": str(len(words) - 1)}
    run = mailmerge(cwd=cwd, env=env)
    assert run.returncode == 0, run.stderr
    return run.stdout.split()


def test_completion_proposes_the_lists_and_templates_of_the_folder(tmp_path: Path) -> None:
    for name in ("people.xlsx", "members.csv", "invoice.pdf", "notes.md", ".hidden.csv"):
        (tmp_path / name).touch()
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "recipients.xlsx").touch()

    assert complete(tmp_path, "mailmerge send ") == ["members.csv", "people.xlsx", "samples/"]
    assert complete(tmp_path, "mailmerge preview pe") == ["people.xlsx"]
    assert complete(tmp_path, "mailmerge preview samples/") == ["samples/recipients.xlsx"]
    assert complete(tmp_path, "mailmerge send people.xlsx -t ") == ["notes.md", "samples/"]


def test_preview_html_says_what_it_wrote_not_every_message(tmp_path: Path) -> None:
    rows = [(f"Person {n}", f"person{n}@example.com") for n in range(50)]
    xlsx = write_xlsx(tmp_path / "list.xlsx", ("name", "email"), rows)
    template = write_template(tmp_path / "t.txt", "From: c@example.com\nTo: {{ email }}\nSubject: Hi {{ name }}\n\n"
                                                  "Dear {{ name }},\nthe news.\n")

    run = mailmerge("preview", xlsx, "-t", template, "--html", tmp_path / "pages")

    assert run.returncode == 0, run.stderr
    output = run.stdout + run.stderr
    assert len(output.splitlines()) <= 4, output
    assert "Dear" not in output and "person7@example.com" not in output
    assert "wrote 50 messages" in run.stdout
    assert str(tmp_path / "pages" / "index.html") in run.stdout
    assert len(list((tmp_path / "pages").glob("*.eml"))) == 50
