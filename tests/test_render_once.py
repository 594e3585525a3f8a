"""Each row is rendered once per command and the list file is read once.

Counted for real: the list file's openings by an audit hook on ``open`` (every
``open()`` in Python, pandas' included, raises that event), and the renders by
a counter around the real :meth:`MailTemplate.render`. The messages go to a
real aiosmtpd server (and Sent copies to a real Dovecot), and what arrived is
compared byte for byte with the message built from a fresh render of the row
with the same Message-ID and Date: rendering once changes nothing on the wire.
"""

from __future__ import annotations

import collections
import csv
import email
import email.policy
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import run_cli, write_config, write_template
from imap_server import DovecotServer, dovecot_binary
from smtp_server import SmtpTestServer

from mailmerge.mime.message import build_message
from mailmerge.render.template import MailTemplate, TemplateConfig, load_template
from mailmerge.sources.recipients import read_recipients
from mailmerge.spool import Spool

ROWS = 30
BAD_ROW = 7  # its address is not valid: invalid, never sent
TEMPLATE = """\
From: Club <club@example.com>
To: {{ name }} <{{ email }}>
Subject: News for {{ name }} ({{ number }})

Hello **{{ name }}**, this is [your page](https://example.com/members/{{ number }}).

{{ note }}
"""


def write_list(folder: Path, rows: int = ROWS) -> Path:
    path = folder / "members.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "email", "number", "note"])
        for i in range(rows):
            address = "not an address" if i + 2 == BAD_ROW else f"member{i}@example.com"
            writer.writerow([f"김민수 {i}", address, f"{i:04d}", ".a line that starts with a dot" if i % 5 == 0 else "📚"])
    return path


# --- counting -------------------------------------------------------------------------

_watched: dict[str, list[str]] = {}  # absolute path -> the modes it was opened with
_watch_lock = threading.Lock()


def _on_audit(event: str, args: tuple[object, ...]) -> None:
    if event != "open" or not _watched or not isinstance(args[0], (str, bytes, os.PathLike)):
        return
    opened = os.path.abspath(os.fsdecode(args[0]))  # type: ignore[arg-type]
    with _watch_lock:
        if opened in _watched:
            _watched[opened].append(str(args[1]))


sys.addaudithook(_on_audit)  # hooks stay for the process: this one looks only at _watched


@contextmanager
def openings(path: Path) -> Iterator[list[str]]:
    """The openings of ``path`` (their modes) while the block runs."""
    key = os.path.abspath(path)
    _watched[key] = []
    try:
        yield _watched[key]
    finally:
        del _watched[key]


@contextmanager
def renders(monkeypatch: pytest.MonkeyPatch) -> Iterator[collections.Counter[int]]:
    """How many times each row is rendered (by row number) while the block runs."""
    counted: collections.Counter[int] = collections.Counter()
    real = MailTemplate.render

    def counting(self: MailTemplate, recipient):  # type: ignore[no-untyped-def]
        counted[recipient.row] += 1
        return real(self, recipient)

    with monkeypatch.context() as patch:
        patch.setattr(MailTemplate, "render", counting)
        yield counted


def every_row_once(counted: collections.Counter[int], rows: int = ROWS) -> None:
    assert counted == {row: 1 for row in range(2, rows + 2)}


def fresh(listing: Path, template_path: Path, received: bytes) -> bytes:
    """The message a fresh render of its row makes, with the Message-ID and
    Date that arrived: what a send that rendered again would have sent."""
    message = email.message_from_bytes(received, policy=email.policy.default)
    row = int(str(message["Subject"]).rsplit("(", 1)[1].rstrip(")")) + 2
    template = load_template(template_path, TemplateConfig())
    recipients = read_recipients(listing)
    template.check_columns(recipients.columns, recipients.first_row)
    recipient = next(r for r in recipients if r.row == row)
    built = build_message(template.render(recipient), message_id=str(message["Message-ID"]), date=str(message["Date"]))
    return built.as_bytes()


def same_bytes_as_a_fresh_render(server: SmtpTestServer, listing: Path, template: Path) -> None:
    assert server.messages
    for received in server.messages:
        assert received.data.rstrip(b"\r\n") == fresh(listing, template, received.data).rstrip(b"\r\n")


# --- a send ---------------------------------------------------------------------------


@pytest.fixture
def campaign(tmp_path: Path, plain_server: SmtpTestServer) -> tuple[Path, Path]:
    listing = write_list(tmp_path)
    template = write_template(tmp_path / "news.md", TEMPLATE)
    config = write_config(tmp_path, plain_server, security="none", username=None)
    config.write_text(config.read_text().replace("[send]\n", "[send]\nconnections = 2\n"))  # two threads read the plan
    return listing, template


def test_a_send_renders_each_row_once_and_reads_the_list_once(
    campaign: tuple[Path, Path], plain_server: SmtpTestServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    listing, template = campaign
    with openings(listing) as opened, renders(monkeypatch) as counted:
        run = run_cli("send", listing, "-t", template, "--yes")

    assert run.exit_code == 3, run.output  # row 7 is invalid; every other row went
    assert len(plain_server.messages) == ROWS - 1
    assert sorted(plain_server.recipients()) == sorted(f"member{i}@example.com" for i in range(ROWS) if i + 2 != BAD_ROW)
    every_row_once(counted)
    assert len(opened) == 1, opened
    report = list(csv.DictReader(listing.with_suffix(".report.csv").open(encoding="utf-8-sig")))
    assert collections.Counter(line["status"] for line in report) == {"sent": ROWS - 1, "invalid": 1}
    same_bytes_as_a_fresh_render(plain_server, listing, template)


def test_a_run_that_resumes_renders_each_row_once_and_sends_nothing_twice(
    campaign: tuple[Path, Path], plain_server: SmtpTestServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    listing, template = campaign
    first = run_cli("send", listing, "-t", template, "--yes", "--max-messages", "10")
    with openings(listing) as opened, renders(monkeypatch) as counted:
        later = run_cli("send", listing, "-t", template, "--yes")

    assert first.exit_code != 0 and "limit of 10 messages" in first.output, first.output
    assert later.exit_code == 3, later.output
    every_row_once(counted)
    assert len(opened) == 1, opened
    assert len(plain_server.messages) == ROWS - 1
    assert len(set(plain_server.recipients())) == ROWS - 1  # nobody twice
    same_bytes_as_a_fresh_render(plain_server, listing, template)


def test_status_and_the_html_preview_render_each_row_once(
    campaign: tuple[Path, Path], plain_server: SmtpTestServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    listing, template = campaign
    with openings(listing) as opened, renders(monkeypatch) as counted:
        status = run_cli("status", listing, "-t", template)
    every_row_once(counted)
    assert len(opened) == 1, opened
    assert "not sent yet" in status.output, status.output

    with openings(listing) as opened, renders(monkeypatch) as counted:
        preview = run_cli("preview", listing, "-t", template, "--html", tmp_path / "html")
    every_row_once(counted)
    assert len(opened) == 1, opened
    assert preview.exit_code == 0, preview.output
    page = next((tmp_path / "html").glob(f"{BAD_ROW:04d}-*.html")).read_text(encoding="utf-8")
    assert "News for 김민수 5 (0005)" in page  # the invalid row's subject, from its one render


# --- Sent copies ----------------------------------------------------------------------

IMAP_USER, IMAP_PASSWORD = "club@example.com", "imap-Pa55!"


@pytest.mark.skipif(dovecot_binary() is None, reason="dovecot is not installed (apt-get install -y dovecot-imapd)")
def test_sent_copies_are_built_from_the_one_render(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    listing = write_list(tmp_path, rows=8)  # row 7 invalid
    template = write_template(tmp_path / "news.md", TEMPLATE)
    with SmtpTestServer() as smtp, DovecotServer(users={IMAP_USER: IMAP_PASSWORD}) as imap:
        config = write_config(tmp_path, smtp, security="none", username=None)
        config.write_text(config.read_text() + "\n".join([
            "", "[imap]", f'host = "{imap.host}"', f"port = {imap.port}", 'security = "ssl"',
            f'username = "{IMAP_USER}"', f'ca_file = "{imap.ca_file}"', "timeout = 5", "save_sent = true", "",
        ]))
        with openings(listing) as opened, renders(monkeypatch) as counted:
            run = run_cli("send", listing, "-t", template, "--yes", env={"MAILMERGE_IMAP_PASSWORD": IMAP_PASSWORD})
        saved = [data for _, _, data in imap.messages("Sent")]

    assert run.exit_code == 3, run.output
    assert "saved 7 copies in the folder 'Sent'" in run.output
    every_row_once(counted, rows=8)
    assert len(opened) == 1, opened
    sent = {m.message["Message-ID"]: m.data.rstrip(b"\r\n") for m in smtp.messages}
    copies = {email.message_from_bytes(raw, policy=email.policy.default)["Message-ID"]: raw for raw in saved}
    assert sent.keys() == copies.keys() and len(sent) == 7
    for message_id, data in sent.items():
        assert copies[message_id].replace(b"\r\n", b"\n").replace(b"\n", b"\r\n").rstrip(b"\r\n") == data


# --- the spool ------------------------------------------------------------------------


def test_the_spool_gives_back_every_record_in_order_to_each_reader(tmp_path: Path) -> None:
    spool: Spool[tuple[int, str]] = Spool(tmp_path)
    big = "x" * (3 << 20)  # longer than a block read at once
    records = [(i, big if i == 500 else f"row {i} ✓") for i in range(2000)]
    for record in records:
        spool.append(record)

    assert list(tmp_path.iterdir()) == []  # no file beside the list, even while in use
    first, second = iter(spool), iter(spool)
    interleaved = [(a, b) for a, b in zip(first, second)]
    assert [a for a, _ in interleaved] == records and [b for _, b in interleaved] == records
    assert list(spool) == records and len(spool) == 2000
    spool.close()
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_while_spooling_is_said_plainly(tmp_path: Path) -> None:
    """A real write failure: the process may write files of 64 KB at most."""
    listing = write_list(tmp_path, rows=200)  # about 130 KB of drafts
    template = write_template(tmp_path / "news.md", TEMPLATE)
    script = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"  # a write past the limit fails (EFBIG) instead of killing
        "resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))\n"
        "from mailmerge.cli import app\n"
        "sys.argv = ['mailmerge', 'send', sys.argv[1], '-t', sys.argv[2], '--dry-run']\n"
        "app()\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(listing), str(template)], capture_output=True,
                          text=True, cwd=tmp_path, timeout=60)

    assert done.returncode == 1, done.stderr
    assert "cannot write the temporary file that holds the checked rows (File too large)" in done.stderr
    assert "free some space on that disk" in done.stderr
    assert "Traceback" not in done.stderr
    assert list(tmp_path.glob(".mailmerge-*")) == []
