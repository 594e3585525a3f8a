"""Connection mistakes a newcomer makes in the first hour, run as a user runs
the command (a child process, real files, a real server on 127.0.0.1):

- STARTTLS set for a port that wants TLS from the first byte (465): such a
  port says nothing to a plain connection; the answer must come in seconds,
  not after the 30-second timeout, and say to use security = "ssl";
- a provider preset while offline: the user never wrote the host, so the
  message says where the name came from and to check the connection. Run
  under ``unshare -n`` (a network namespace with no network at all), so no
  test reaches a real DNS server.
"""

from __future__ import annotations

import os
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import PASSWORD, USER, write_config
from smtp_server import SmtpTestServer

TEMPLATE = """\
From: Book Club <club@example.com>
To: {{ email }}
Subject: Hello {{ name }}

Hi {{ name }}.
"""


def _files(folder: Path) -> tuple[Path, Path]:
    (folder / "list.csv").write_text("name,email\nAnn,ann@example.com\n", encoding="utf-8")
    (folder / "hello.txt").write_text(TEMPLATE, encoding="utf-8")
    return folder / "list.csv", folder / "hello.txt"


def _send(folder: Path, *prefix: str) -> subprocess.CompletedProcess[str]:
    """`mailmerge send list.csv -t hello.txt --yes` in ``folder``, as a child process."""
    csv, template = _files(folder)
    command = [*prefix, sys.executable, "-m", "mailmerge", "send", str(csv), "-t", str(template), "--yes"]
    env = {**os.environ, "MAILMERGE_PASSWORD": PASSWORD, "COLUMNS": "200"}
    return subprocess.run(command, env=env, cwd=folder, capture_output=True, text=True, timeout=60)


def test_starttls_on_a_tls_only_port_answers_in_seconds_with_the_fix(tmp_path: Path) -> None:
    with SmtpTestServer(implicit_tls=True, auth={USER: PASSWORD}) as server:
        write_config(tmp_path, server, security="starttls", timeout=30)
        started = time.monotonic()
        run = _send(tmp_path)
        elapsed = time.monotonic() - started
    output = run.stdout + run.stderr
    assert run.returncode == 1, output
    assert elapsed < 10, f"took {elapsed:.1f} s"
    assert f"{server.host}:{server.port} expects TLS from the first byte" in output
    assert 'set security = "ssl" in [smtp]' in output
    assert "timed out" not in output and "Traceback" not in output
    assert server.messages == []


@contextmanager
def slow_greeting(server: SmtpTestServer, delay: float) -> Iterator[int]:
    """A port on 127.0.0.1 that forwards to ``server`` after ``delay`` seconds
    of silence: a plain SMTP server that greets late (some do, against spam)."""

    class Forward(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            time.sleep(delay)
            with socket.create_connection((server.host, server.port)) as upstream:
                pipes = [(self.request, upstream), (upstream, self.request)]
                threads = [threading.Thread(target=_pipe, args=pair, daemon=True) for pair in pipes]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()

    with socketserver.ThreadingTCPServer((server.host, 0), Forward) as relay:
        relay.daemon_threads = True
        threading.Thread(target=relay.serve_forever, daemon=True).start()
        try:
            yield relay.server_address[1]
        finally:
            relay.shutdown()


def _pipe(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
        target.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def test_a_plain_server_that_greets_late_is_still_used(tmp_path: Path) -> None:
    """The TLS check after a few silent seconds must not give up on a server
    that is only slow: the message goes out once it greets."""
    with SmtpTestServer() as server, slow_greeting(server, 4.5) as port:
        write_config(tmp_path, server, port=port, security="none", username=None, ca_file=None)
        run = _send(tmp_path)
        assert run.returncode == 0, run.stdout + run.stderr
        assert server.recipients() == ["ann@example.com"]


def _no_network() -> str:
    try:
        probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unshare cannot run here: {error}"
    return "" if probe.returncode == 0 else "unshare -n is not allowed here (it needs root or user namespaces)"


@pytest.mark.skipif(bool(_no_network()), reason=_no_network() or "-")
def test_offline_with_a_provider_preset_says_where_the_name_came_from(tmp_path: Path) -> None:
    (tmp_path / "mailmerge.toml").write_text(
        '[smtp]\nprovider = "naver"\nusername = "club@naver.com"\n\n'
        '[message]\nfrom = "Book Club <club@naver.com>"\n',
        encoding="utf-8",
    )
    run = _send(tmp_path, "unshare", "-n")
    output = run.stdout + run.stderr
    assert run.returncode == 1, output
    assert "the name smtp.naver.com could not be resolved" in output
    assert '(it comes from provider = "naver" in [smtp])' in output
    assert "check its internet connection" in output
    assert "check host" not in output and "Traceback" not in output
