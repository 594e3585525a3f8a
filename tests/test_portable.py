"""A tool that runs on Windows (issue 14, item 6), as far as Linux can tell.

The sends here run in a child Python where the POSIX-only modules cannot be
imported (``fcntl``, ``resource``, ``termios``, ``pwd``, ``grp``) and
``signal.SIGTERM`` does not exist. That proves no POSIX-only import or signal
is left on the way from ``import mailmerge`` to a sent message; it does not
prove that Windows works (no Windows machine runs these tests). File names
the tool makes are checked against Windows' rules with ``PureWindowsPath``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path, PureWindowsPath

import pytest
from conftest import write_config, write_template, write_xlsx
from smtp_server import SmtpTestServer

from mailmerge.cli.htmlpreview import file_stem
from mailmerge.delivery.pacing import StopSignal, stop_signals
from mailmerge.state.journal import JOURNAL_FOLDER, campaign_id, journal_folder, lock_name
from mailmerge.state.marker import SentMarker
from mailmerge.state.report import default_report_path

TEMPLATE = """\
From: Book Club <club@example.com>
To: {{ name }} <{{ email }}>
Subject: News for {{ name }}

Hello {{ name }}.
"""

# Run first in the child: what a Python without POSIX looks like to the package.
WITHOUT_POSIX = """\
import sys, signal
for name in ("fcntl", "resource", "termios", "pwd", "grp"):
    sys.modules[name] = None  # "import fcntl" now raises ImportError
del signal.SIGTERM
"""

SEND = WITHOUT_POSIX + """\
import runpy
sys.argv = ["mailmerge", *sys.argv[1:]]
runpy.run_module("mailmerge", run_name="__main__")
"""

HOLD_LOCK = WITHOUT_POSIX + """\
import time
from pathlib import Path
from mailmerge.state.journal import Journal
journal = Journal(Path(sys.argv[1]), sys.argv[2])
journal.lock()
print("locked", flush=True)
time.sleep(60)
"""


def without_posix(script: str, *args: str | Path) -> list[str]:
    return [sys.executable, "-c", script, *(str(a) for a in args)]


def send(xlsx: Path, template: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """``mailmerge send`` in a child Python that has no POSIX-only modules."""
    return subprocess.run(
        without_posix(SEND, "send", xlsx, "-t", template, "--yes", *extra),
        capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONWARNINGS": "default"},
    )


def make_list(folder: Path, addresses: list[str]) -> tuple[Path, Path]:
    xlsx = write_xlsx(folder / "list.xlsx", ("name", "email"), [(f"Member {i}", a) for i, a in enumerate(addresses)])
    return xlsx, write_template(folder / "news.txt", TEMPLATE)


ADDRESSES = ["ann@example.com", "bob@example.com", "carol@example.com"]


def test_the_package_imports_and_sends_without_posix_modules(tmp_path: Path) -> None:
    xlsx, template = make_list(tmp_path, ADDRESSES)
    with SmtpTestServer() as server:
        write_config(tmp_path, server, security="none", username=None)
        run = send(xlsx, template)

    assert run.returncode == 0, run.stderr
    assert "sent 3, refused 0, invalid 0" in run.stdout
    assert "soft file lock" not in run.stderr  # filelock's warning that only a soft lock exists: never shown
    assert sorted(server.recipients()) == ADDRESSES
    assert [m.message["Subject"] for m in server.messages] == ["News for Member 0", "News for Member 1",
                                                                    "News for Member 2"]


def test_without_fcntl_a_second_run_is_refused_until_the_first_is_killed(tmp_path: Path) -> None:
    xlsx, template = make_list(tmp_path, ADDRESSES)
    folder = tmp_path / JOURNAL_FOLDER
    folder.mkdir()
    name = campaign_id(xlsx, template.read_text(encoding="utf-8"))
    with SmtpTestServer() as server:
        write_config(tmp_path, server, security="none", username=None)
        holder = subprocess.Popen(without_posix(HOLD_LOCK, folder, name), stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
            refused = send(xlsx, template)
        finally:
            holder.kill()  # SIGKILL: the holder has no chance to release anything itself
            holder.wait(timeout=10)
        refused_sent = list(server.messages)
        after_kill = send(xlsx, template)

    assert refused.returncode == 1, refused.stderr
    assert "this campaign is being sent by another run" in refused.stderr and "Traceback" not in refused.stderr
    assert refused_sent == []
    assert after_kill.returncode == 0, after_kill.stderr  # the killed run's lock went with it
    assert sorted(server.recipients()) == ADDRESSES
    # Without fcntl, filelock has only a soft lock: SQLite's own lock stood in for it.
    assert (folder / f"{lock_name(name)}.sqlite3").exists() and not (folder / lock_name(name)).exists()


def test_without_any_real_lock_the_send_is_refused_and_nothing_goes(tmp_path: Path) -> None:
    xlsx, template = make_list(tmp_path, ADDRESSES)
    folder = tmp_path / JOURNAL_FOLDER
    name = campaign_id(xlsx, template.read_text(encoding="utf-8"))
    # A folder where SQLite's database would be: SQLite cannot lock it either.
    (folder / f"{lock_name(name)}.sqlite3").mkdir(parents=True)
    with SmtpTestServer() as server:
        write_config(tmp_path, server, security="none", username=None)
        run = send(xlsx, template)

    assert run.returncode == 1, run.stderr
    assert "cannot lock the campaign" in run.stderr and "nothing was sent" in run.stderr
    assert "Traceback" not in run.stderr
    assert server.messages == []


# --- signals -------------------------------------------------------------------------


def test_stop_signals_are_those_the_platform_has(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(signal, "SIGTERM")  # as where SIGTERM cannot be handled
    before = signal.getsignal(signal.SIGINT)
    stop = StopSignal()

    with stop.installed():
        signal.raise_signal(signal.SIGINT)  # the first Ctrl-C: finish the message in flight
        assert stop.requested and stop.reason == "interrupted (Ctrl-C)"
        with pytest.raises(KeyboardInterrupt):  # the second: at once
            signal.raise_signal(signal.SIGINT)

    assert signal.getsignal(signal.SIGINT) is before  # put back
    assert set(stop_signals()) == {"SIGINT"}


def test_sigterm_is_handled_where_it_exists() -> None:
    before = signal.getsignal(signal.SIGTERM)
    stop = StopSignal()

    with stop.installed():
        signal.raise_signal(signal.SIGTERM)
        time.sleep(0)  # the handler runs between two bytecodes

    assert stop.requested and stop.reason == "stopped (SIGTERM)"
    assert signal.getsignal(signal.SIGTERM) is before


# --- file names Windows accepts ----------------------------------------------------------

_FORBIDDEN = set('<>:"/\\|?*') | {chr(c) for c in range(32)}
_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}


def windows_accepts(name: str) -> bool:
    """Whether Windows lets a file in a folder be called ``name``."""
    return (
        bool(name)
        and not _FORBIDDEN & set(name)
        and not name.endswith((".", " "))
        and name.split(".")[0].rstrip(" ").upper() not in _RESERVED
        and PureWindowsPath(name).name == name
    )


# Valid addresses whose local part holds characters Windows forbids in a file name.
HOSTILE_ADDRESSES = ["a/b@example.com", "what?@example.com", "pipe|star*@example.com", "민수.김@example.com", "CON@example.com"]


def test_outbox_files_have_names_windows_accepts(tmp_path: Path) -> None:
    xlsx, template = make_list(tmp_path, HOSTILE_ADDRESSES)
    outbox = tmp_path / "outbox"

    run = send(xlsx, template, "--outbox", outbox)

    assert run.returncode == 0, run.stderr
    names = sorted(p.name for p in outbox.glob("*.eml"))
    assert len(names) == len(HOSTILE_ADDRESSES), (names, run.stdout)
    assert [n for n in names if not windows_accepts(n)] == []
    assert len({n.lower() for n in names}) == len(names)  # distinct where case does not count


@pytest.mark.parametrize("address", [*HOSTILE_ADDRESSES, '"a:b\\\\c"@example.com', "dot.@example.com", "", "..."])
def test_preview_pages_have_names_windows_accepts(address: str) -> None:
    stem = file_stem(7, address)
    assert windows_accepts(f"{stem}.html") and windows_accepts(f"{stem}.eml"), stem


@pytest.mark.parametrize("campaign", ["CON", "a:b", "x.", " ", "..", "c:\\windows\\x", "a|b?*", "가을 소식 🍂"])
def test_lock_files_have_names_windows_accepts(campaign: str) -> None:
    name = lock_name(campaign)
    assert windows_accepts(name) and windows_accepts(f"{name}.sqlite3"), name


def test_files_beside_a_list_on_a_drive_letter_stay_beside_it() -> None:
    documents = PureWindowsPath(r"C:\Users\민수\Documents")
    sheet = documents / "회원 명단.xlsx"

    assert journal_folder(sheet) == documents / ".mailmerge"  # type: ignore[arg-type]
    assert default_report_path(sheet) == documents / "회원 명단.report.csv"  # type: ignore[arg-type]
    assert SentMarker(sheet).path == documents / ".회원 명단.xlsx.mailmerge-sent"  # type: ignore[arg-type]
    assert windows_accepts(SentMarker(sheet).path.name)  # type: ignore[arg-type]
