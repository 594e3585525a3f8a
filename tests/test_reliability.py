"""A send survives crashes, dropped connections and busy servers, and never
sends a message twice: faults injected into a real SMTP server on 127.0.0.1,
real processes killed with real signals."""

from __future__ import annotations

import base64
import collections
import csv
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import PASSWORD, USER, run_cli, write_config, write_template, write_xlsx
from smtp_server import Faults, SmtpTestServer

from mailmerge.config.file import load_config
from mailmerge.state.journal import JOURNAL_FILE, Journal, campaign_id


@pytest.fixture(autouse=True, params=[False, True], ids=["one-by-one", "pipelined"])
def pipelining(request: pytest.FixtureRequest) -> Iterator[bool]:
    """Every fault, with and without PIPELINING: both ways of sending must survive it."""
    SmtpTestServer.pipelining_default = request.param
    yield request.param
    SmtpTestServer.pipelining_default = False


TEMPLATE = "From: Club <club@example.com>\nSubject: News for {{ name }}\nTo: {{ name }} <{{ email }}>\n\nHello {{ name }}\n"


def make_list(folder: Path, count: int) -> tuple[Path, Path, list[str]]:
    addresses = [f"member{i:03d}@example.com" for i in range(count)]
    xlsx = write_xlsx(folder / "list.xlsx", ("name", "email"), [(f"Member {i}", a) for i, a in enumerate(addresses)])
    return xlsx, write_template(folder / "news.txt", TEMPLATE), addresses


def report_states(folder: Path) -> dict[str, str]:
    with (folder / "list.report.csv").open(encoding="utf-8-sig", newline="") as handle:
        return {row["address"]: row["status"] for row in csv.DictReader(handle)}


def journal_states(folder: Path) -> dict[str, str]:
    with sqlite3.connect(folder / ".mailmerge" / JOURNAL_FILE) as db:
        return dict(db.execute("SELECT address, state FROM deliveries"))


def arrivals(server: SmtpTestServer) -> collections.Counter[str]:
    return collections.Counter(server.recipients())


def test_every_recipient_arrives_once_across_a_drop_a_421_and_a_451(tmp_path: Path) -> None:
    xlsx, template, addresses = make_list(tmp_path, 200)
    faults = Faults(
        drop_after=70,  # the network goes away after 70 messages of a session
        session_limit=50,  # ...and the server allows 50 a session anyway (421)
        defer_once={addresses[10], addresses[120]},  # greylisting: 451 once
    )
    with SmtpTestServer(faults=faults) as server:
        write_config(tmp_path, server, security="none", username=None)
        run = run_cli("send", xlsx, "-t", template, "--yes")

    assert run.exit_code == 0, run.output
    assert arrivals(server) == collections.Counter(addresses)  # each exactly once
    assert server.connections >= 4  # it reconnected by itself
    assert set(report_states(tmp_path).values()) == {"sent"}
    assert "sent 200, refused 0, invalid 0" in run.stdout


def test_a_drop_after_the_end_of_data_is_unknown_and_never_resent(tmp_path: Path) -> None:
    xlsx, template, addresses = make_list(tmp_path, 20)
    with SmtpTestServer(faults=Faults(drop_at_data={5})) as server:
        write_config(tmp_path, server, security="none", username=None)
        first = run_cli("send", xlsx, "-t", template, "--yes")
        second = run_cli("send", xlsx, "-t", template, "--yes")

        assert arrivals(server) == collections.Counter(addresses)  # the 5th arrived once
        states = report_states(tmp_path)
        assert states[addresses[4]] == "unknown"
        assert [a for a, s in states.items() if s != "sent"] == [addresses[4]]
        assert first.exit_code == 3 and "unknown 1" in first.stdout
        assert second.exit_code == 3 and "Nothing left to send" in second.stderr

        again = run_cli("send", xlsx, "-t", template, "--yes", "--resend-unknown")
        assert again.exit_code == 0, again.output
        assert arrivals(server)[addresses[4]] == 2  # only because it was asked for
        assert sum(arrivals(server).values()) == 21


@pytest.mark.parametrize("journal_fsync", [False, True], ids=["normal", "journal_fsync"])
def test_a_killed_run_is_finished_by_the_next_one_without_duplicates(tmp_path: Path, journal_fsync: bool) -> None:
    xlsx, template, addresses = make_list(tmp_path, 200)
    with SmtpTestServer(tls=True, auth={USER: PASSWORD}, faults=Faults(reply_delay=0.01)) as server:
        config = write_config(tmp_path, server)
        if journal_fsync:  # each in-flight mark synced to disk: the same guarantee, and a power cut too
            config.write_text(config.read_text().replace("[send]\n", "[send]\njournal_fsync = true\n"))
        child = start_send(xlsx, template)
        wait_for(lambda: len(server.messages) >= 40)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        killed_at = len(server.messages)
        assert killed_at < 200

        second = run_cli("send", xlsx, "-t", template, "--yes")

    received = arrivals(server)
    assert max(received.values()) == 1  # nobody twice
    states = report_states(tmp_path)
    unknown = [a for a, s in states.items() if s == "unknown"]
    assert len(unknown) <= 1  # at most the message in flight at the kill
    assert set(received) | set(unknown) == set(addresses)
    assert second.exit_code == (3 if unknown else 0), second.output
    assert "already sent" in second.stderr


def test_ctrl_c_finishes_the_message_in_flight_and_exits_130(tmp_path: Path) -> None:
    xlsx, template, addresses = make_list(tmp_path, 100)
    with SmtpTestServer(faults=Faults(reply_delay=0.05)) as server:
        write_config(tmp_path, server, security="none", username=None)
        child = start_send(xlsx, template)
        wait_for(lambda: len(server.messages) >= 10)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=20)
        received = arrivals(server)

        assert child.returncode == 130, err
        assert "run the same command again" in err
        journal = journal_states(tmp_path)
        assert "in_flight" not in journal.values() and "unknown" not in journal.values()
        assert {a for a, s in journal.items() if s == "sent"} == set(received)
        assert len(received) < 100

        second = run_cli("send", xlsx, "-t", template, "--yes")
        assert second.exit_code == 0, second.output
        assert arrivals(server) == collections.Counter(addresses)


def test_ctrl_c_wakes_a_long_batch_pause_at_once(tmp_path: Path) -> None:
    xlsx, template, _ = make_list(tmp_path, 10)
    with SmtpTestServer() as server:
        child = start_send_until_paused(tmp_path, server, xlsx, template, batch_size=2)
        started = time.monotonic()
        child.send_signal(signal.SIGINT)
        child.communicate(timeout=20)

    assert child.returncode == 130
    assert time.monotonic() - started < 5
    assert len(server.messages) == 2


def test_results_are_in_the_journal_before_a_pause_even_if_the_run_is_killed_in_it(tmp_path: Path) -> None:
    # A result is committed with the next message's in-flight mark: before any
    # wait it must be written on its own, or a kill in a long pause would turn
    # messages that were sent into "unknown".
    xlsx, template, addresses = make_list(tmp_path, 6)
    with SmtpTestServer() as server:
        child = start_send_until_paused(tmp_path, server, xlsx, template, batch_size=3)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)

    assert sorted(server.recipients()) == addresses[:3]
    assert journal_states(tmp_path) == {address: "sent" for address in addresses[:3]}


def test_rate_spaces_messages_evenly(tmp_path: Path) -> None:
    xlsx, template, _ = make_list(tmp_path, 6)
    with SmtpTestServer() as server:
        write_config(tmp_path, server, security="none", username=None)
        run = run_cli("send", xlsx, "-t", template, "--yes", "--rate", "10/s")

    assert run.exit_code == 0, run.output
    times = [m.received_at for m in server.messages]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert len(gaps) == 5 and min(gaps) >= 0.08, gaps  # 0.1 s apart, generous bound


def test_batches_pause_between_them(tmp_path: Path) -> None:
    xlsx, template, _ = make_list(tmp_path, 5)
    with SmtpTestServer() as server:
        write_config(tmp_path, server, security="none", username=None)
        run = run_cli("send", xlsx, "-t", template, "--yes", "--batch-size", "2", "--batch-pause", "0.4s")

    assert run.exit_code == 0, run.output
    times = [m.received_at for m in server.messages]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps[1] >= 0.35 and gaps[3] >= 0.35, gaps  # after messages 2 and 4
    assert gaps[0] < 0.3 and gaps[2] < 0.3, gaps


def test_max_messages_stops_cleanly_and_the_next_run_goes_on(tmp_path: Path) -> None:
    xlsx, template, addresses = make_list(tmp_path, 7)
    with SmtpTestServer() as server:
        write_config(tmp_path, server, security="none", username=None)
        first = run_cli("send", xlsx, "-t", template, "--yes", "--max-messages", "3")
        assert len(server.messages) == 3
        second = run_cli("send", xlsx, "-t", template, "--yes", "--max-messages", "3")
        third = run_cli("send", xlsx, "-t", template, "--yes", "--max-messages", "3")

    assert first.exit_code == 3 and "limit of 3 messages" in first.stderr
    assert "3 of 7 already sent; sending the other 4" in second.stderr
    assert third.exit_code == 0, third.output
    assert arrivals(server) == collections.Counter(addresses)


def test_a_recipient_deferred_every_time_ends_deferred_and_is_tried_next_run(tmp_path: Path) -> None:
    xlsx, template, addresses = make_list(tmp_path, 3)
    grey = addresses[1]
    with SmtpTestServer(faults=Faults(defer={grey})) as server:
        write_config(tmp_path, server, security="none", username=None)
        first = run_cli("send", xlsx, "-t", template, "--yes")
        server.faults.defer.clear()  # the greylisting ends
        second = run_cli("send", xlsx, "-t", template, "--yes")

    assert first.exit_code == 3 and "deferred 1" in first.stdout
    assert "451" in first.stderr
    assert second.exit_code == 0, second.output
    assert arrivals(server) == collections.Counter(addresses)


def test_two_runs_of_one_campaign_at_once_are_refused(tmp_path: Path) -> None:
    xlsx, template, _ = make_list(tmp_path, 3)
    with SmtpTestServer() as server:
        write_config(tmp_path, server, security="none", username=None)
        name = campaign_id(xlsx, template.read_text(encoding="utf-8"))
        with Journal(tmp_path / ".mailmerge", name) as running:
            running.lock()
            run = run_cli("send", xlsx, "-t", template, "--yes")
        assert run.exit_code == 1
        assert "being sent by another run" in run.stderr and str(os.getpid()) in run.stderr
        assert server.messages == []


def test_restart_sends_everyone_again_and_status_counts(tmp_path: Path) -> None:
    xlsx, template, addresses = make_list(tmp_path, 4)
    with SmtpTestServer(refuse=[addresses[3]]) as server:
        write_config(tmp_path, server, security="none", username=None)
        before = run_cli("status", xlsx, "-t", template)
        run_cli("send", xlsx, "-t", template, "--yes")
        after = run_cli("status", xlsx, "-t", template)
        restarted = run_cli("send", xlsx, "-t", template, "--yes", "--restart")

    assert "not sent yet        4" in before.stdout
    assert "sent                3" in after.stdout and "refused             1" in after.stdout
    assert restarted.exit_code == 3
    assert sum(arrivals(server).values()) == 6


def test_a_list_reordered_after_a_partial_send_is_stopped(tmp_path: Path) -> None:
    xlsx, template, addresses = make_list(tmp_path, 4)
    with SmtpTestServer() as server:
        write_config(tmp_path, server, security="none", username=None)
        run_cli("send", xlsx, "-t", template, "--yes", "--max-messages", "2")
        rows = [(f"Member {i}", a) for i, a in enumerate(addresses)]
        write_xlsx(xlsx, ("name", "email"), rows[::-1])  # sorted the other way
        run = run_cli("send", xlsx, "-t", template, "--yes")

    assert run.exit_code == 2
    assert "row 2 changed since it was sent" in run.stderr
    assert len(server.messages) == 2


def test_the_journal_never_holds_the_password(tmp_path: Path) -> None:
    xlsx, template, _ = make_list(tmp_path, 5)
    with SmtpTestServer(tls=True, auth={USER: PASSWORD}) as server:
        write_config(tmp_path, server)
        run = run_cli("send", xlsx, "-t", template, "--yes")
    assert run.exit_code == 0, run.output
    secrets = [PASSWORD.encode(), base64.b64encode(PASSWORD.encode()),
               base64.b64encode(f"\0{USER}\0{PASSWORD}".encode())]
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == JOURNAL_FILE for p in written)
    for path in written:
        data = path.read_bytes()
        assert not any(secret in data for secret in secrets), path
    assert PASSWORD not in run.output


# --- helpers for the tests that run the command as a real process --------------


def start_send(xlsx: Path, template: Path, *extra: str) -> subprocess.Popen[str]:
    """`mailmerge send` as a child process, as a person runs it (no terminal)."""
    return subprocess.Popen(
        [sys.executable, "-m", "mailmerge", "send", str(xlsx), "-t", str(template), "--yes", *extra],
        env={**os.environ, "MAILMERGE_PASSWORD": PASSWORD},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def start_send_until_paused(folder: Path, server: SmtpTestServer, xlsx: Path, template: Path, *,
                            batch_size: int) -> subprocess.Popen[str]:
    """A send whose first batch went out and which is now in a 10-minute batch pause."""
    write_config(folder, server, security="none", username=None)
    child = start_send(xlsx, template, "--batch-size", str(batch_size), "--batch-pause", "10m")
    wait_for(lambda: len(server.messages) >= batch_size)
    time.sleep(0.4)  # the last reply read, the journal written: now in the pause
    return child


def wait_for(condition: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting for the server")
        time.sleep(0.01)


def test_max_per_connection_starts_a_new_session(tmp_path: Path) -> None:
    xlsx, template, addresses = make_list(tmp_path, 7)
    with SmtpTestServer(tls=True, auth={USER: PASSWORD}) as server:
        write_config(tmp_path, server)
        (tmp_path / "mailmerge.toml").write_text(
            (tmp_path / "mailmerge.toml").read_text().replace("[send]", "[send]\nmax_per_connection = 3"))
        run = run_cli("send", xlsx, "-t", template, "--yes")

    assert run.exit_code == 0, run.output
    assert (server.connections, server.auth_attempts) == (3, 3)  # 3 + 3 + 1 messages
    assert arrivals(server) == collections.Counter(addresses)


def test_sigterm_stops_like_ctrl_c(tmp_path: Path) -> None:
    xlsx, template, _ = make_list(tmp_path, 50)
    with SmtpTestServer(faults=Faults(reply_delay=0.05)) as server:
        write_config(tmp_path, server, security="none", username=None)
        child = start_send(xlsx, template)
        wait_for(lambda: len(server.messages) >= 5)
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=20)

    assert child.returncode == 130, err
    journal = journal_states(tmp_path)
    assert sorted(a for a, s in journal.items() if s == "sent") == sorted(server.recipients())


def test_a_server_that_stays_away_stops_the_run_with_a_hint(tmp_path: Path) -> None:
    xlsx, template, addresses = make_list(tmp_path, 10)
    server = SmtpTestServer(faults=Faults(drop_after=3)).start()
    write_config(tmp_path, server, security="none", username=None)

    def go_away() -> None:  # the connection drops after 3 messages; the server is gone
        wait_for(lambda: len(server.messages) >= 3)
        server.stop()

    threading.Thread(target=go_away, daemon=True).start()
    try:
        run = run_cli("send", xlsx, "-t", template, "--yes")
    finally:
        server.stop()

    assert run.exit_code == 1
    assert "gave up after 7 reconnection attempts" in run.stderr
    assert "run the same command again" in run.stderr
    states = report_states(tmp_path)
    assert [states[a] for a in addresses[:3]] == ["sent"] * 3
    assert {states[a] for a in addresses[3:]} == {"not_sent_yet"}


def test_several_connections_share_the_work_and_one_journal(tmp_path: Path) -> None:
    xlsx, template, addresses = make_list(tmp_path, 60)
    with SmtpTestServer(tls=True, auth={USER: PASSWORD}, refuse=[addresses[7]],
                        faults=Faults(reply_delay=0.005, defer_once={addresses[20]})) as server:
        write_config(tmp_path, server)
        run = run_cli("send", xlsx, "-t", template, "--yes", "--connections", "3")

    assert run.exit_code == 3, run.output
    assert (server.connections, server.auth_attempts) == (3, 3)
    assert arrivals(server) == collections.Counter(a for a in addresses if a != addresses[7])
    states = report_states(tmp_path)
    assert states[addresses[7]] == "refused" and list(states.values()).count("sent") == 59
    assert "sent 59, refused 1, invalid 0" in run.stdout


# --- the backoff schedules a send really uses ------------------------------------


def _set_send(config: Path, **settings: object) -> None:
    """Replace the fixture's quick test delays in [send] with these settings."""
    lines = [line for line in config.read_text().splitlines() if not line.startswith(("reconnect_", "retry_"))]
    extra = [f"{key} = {value}" for key, value in settings.items()]
    at = lines.index("[send]") + 1
    config.write_text("\n".join(lines[:at] + extra + lines[at:]) + "\n")


def test_reconnections_wait_longer_and_longer_up_to_the_maximum(tmp_path: Path) -> None:
    xlsx, template, _ = make_list(tmp_path, 2)
    with SmtpTestServer(faults=Faults(drop_after=0)) as server:  # every session drops at its first MAIL
        _set_send(write_config(tmp_path, server, security="none", username=None),
                  reconnect_delay=0.2, reconnect_max_delay=0.6, reconnect_attempts=5)
        connected: list[float] = []

        def watch() -> None:  # when the server sees each new connection
            while not stop.is_set():
                if server.connections > len(connected):
                    connected.append(time.monotonic())
                time.sleep(0.001)

        stop = threading.Event()
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        run = run_cli("send", xlsx, "-t", template, "--yes")
        stop.set()
        watcher.join()

    assert run.exit_code == 1 and "gave up after 5 reconnection attempts" in run.stderr
    assert server.connections == len(connected) == 6  # the first, then 5 attempts
    gaps = [b - a for a, b in zip(connected, connected[1:])]
    # Doubling, then capped (uncapped, the 4th gap would be 1.6 s). The upper bound
    # leaves half a second for a reconnection on a loaded machine.
    for gap, delay in zip(gaps, [0.2, 0.4, 0.6, 0.6, 0.6]):
        assert delay * 0.95 <= gap <= delay + 0.5, gaps


def test_the_default_reconnection_delay_is_a_second(tmp_path: Path) -> None:
    xlsx, template, addresses = make_list(tmp_path, 2)
    with SmtpTestServer(faults=Faults(drop_after=1)) as server:  # one message a session, then a drop
        _set_send(write_config(tmp_path, server, security="none", username=None))  # no delays set
        run = run_cli("send", xlsx, "-t", template, "--yes")

    assert run.exit_code == 0, run.output
    assert server.recipients() == addresses
    first, second = (m.received_at for m in server.messages)
    assert 1.0 <= second - first < 2.0  # not at once: a server that is struggling gets a second


class _AskedAt(set[str]):
    """A set of addresses the test server defers, noting when it is asked about each."""

    times: list[float]

    def __contains__(self, address: object) -> bool:
        found = super().__contains__(address)
        if found:
            self.times.append(time.monotonic())
        return found


def test_a_deferred_address_is_retried_after_longer_and_longer_waits(tmp_path: Path) -> None:
    xlsx, template, addresses = make_list(tmp_path, 1)
    deferred = _AskedAt({addresses[0]})
    deferred.times = []
    with SmtpTestServer(faults=Faults()) as server:
        server.faults.defer = deferred  # 451 every time
        _set_send(write_config(tmp_path, server, security="none", username=None),
                  retry_delay=0.1, retry_max_delay=10, retry_attempts=3)
        run = run_cli("send", xlsx, "-t", template, "--yes")

    assert run.exit_code == 3 and "deferred 1" in run.stdout
    gaps = [b - a for a, b in zip(deferred.times, deferred.times[1:])]
    assert len(gaps) == 3, gaps  # the first try, then 3 retries
    for gap, delay in zip(gaps, [0.1, 0.2, 0.4]):
        assert delay * 0.95 <= gap <= delay + 0.3, gaps


def test_the_default_backoff_schedules(tmp_path: Path) -> None:
    config = tmp_path / "mailmerge.toml"
    config.write_text('[smtp]\nhost = "127.0.0.1"\n', encoding="utf-8")
    settings = load_config(config).send

    assert [settings.reconnect.delay(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert settings.reconnect.attempts == 7
    # Longer than the 60 s in which Postfix counts a client's messages
    # (anvil_rate_time_unit): a rate limit is waited out, not given up on.
    assert settings.reconnect.total == 123 >= 60
    assert [settings.retry.delay(n) for n in range(1, 6)] == [30, 60, 120, 240, 480]
    assert settings.retry.attempts == 3
