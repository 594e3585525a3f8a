"""Benchmark: 100,000 messages handed to a real, local Postfix that relays them
to smtp-sink: the set-up of "Sending a million" in the README.

    python bench/mta.py [--messages 100000] [--runs 1] [--quick] [--write-results]

The chain, all on 127.0.0.1 and stopped by the script itself::

    mailmerge send ──SMTP──▶ Postfix (private instance) ──SMTP──▶ smtp-sink
                  (plain, loopback)     queue, fsync      (relayhost; discards)

* Postfix: a private instance in a new folder under /var/tmp (its own
  config, queue, maillog; deleted afterwards), Debian's defaults otherwise:
  every message is written to the queue and synced to disk before the 250,
  ``in_flow_delay`` (1 s) slows senders when delivery falls behind, 20
  deliveries at a time to one destination.  Its listener is plain SMTP on
  127.0.0.1, relaying for ``mynetworks`` (127.0.0.0/8) without a login: the
  usual loopback set-up, and the one the README recommends (see there why no
  TLS on loopback).  ``relayhost = [127.0.0.1]:SINK``: Postfix's own smtp
  client delivers to smtp-sink, which discards; so the figures include the
  queue's real work (a queue file per message, the queue manager, delivery).
* Rows (the same queue, emptied between rows; ``--runs`` each, median):
  ``smtp-source -d -N -s 1`` and ``-s 4`` (Postfix's C client: the anchor),
  then ``mailmerge send LIST -t T --yes`` with ``--connections 1`` and ``4``.
  For each: the client's wall time (interpreter start to report, as in
  compare.py), its messages/s, CPU and peak RSS; and from Postfix's maillog
  the time until the last message was relayed (counted from the start of the
  client: "all relayed") and how long that was after the client had
  finished ("drain").  Each run checks that Postfix relayed exactly the
  expected number of messages, none deferred or bounced.

The machine's other work skews every figure: the load average at the start
and the end is printed with the table.  Defaults: 100,000 messages, 1 run a
row, about 13 minutes on 2 cores; ``--quick`` (10,000 messages) is a smoke run
of about a minute.  Needs root (Postfix's master runs as root), Debian's
``postfix``, and the venv compare.py needs.  ``--write-results`` writes the
table into bench/RESULTS.md under "Through a real MTA" (compare.py keeps that
section when it rewrites the file).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from compare import (  # noqa: E402 (compare.py puts tests/ on sys.path)
    BENCH_HOME, HOST, MTA_SECTION, RESULTS, TEMPLATE, ChildResult, Row, RunFailed, cached_list, checked,
    child_env, compile_tool, fmt, fresh_folder, free_port, load_average, log, markdown_table,
    postfix_program, repeat, run_child, smtp_sink, tool_command, tool_config, tool_supports,
)
from postfix_server import MASTER_CF, postfix_binary  # noqa: E402

SECTION = MTA_SECTION  # its part of RESULTS.md
SENDER, RECIPIENT = "bench@example.com", "member@example.com"
DRAIN_TIMEOUT = 900.0  # seconds Postfix may take to relay one row's messages


# --------------------------------------------------------------------------- settings


@dataclass
class Settings:
    """What to run, from the command line."""

    messages: int
    runs: int
    connections: list[int]
    write_results: bool
    timeout: float  # seconds after which a client is killed


def parse_args(argv: list[str] | None = None) -> Settings:
    """Read the options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, help="messages per row (default 100000, --quick 10000)")
    parser.add_argument("--runs", type=int, default=1, help="runs per row, median reported (default 1)")
    parser.add_argument("--connections", default="1,4",
                        help="the tool's --connections (and smtp-source's -s) values, comma separated (default 1,4)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 10,000 messages")
    parser.add_argument("--write-results", action="store_true", help="also write the table into bench/RESULTS.md")
    args = parser.parse_args(argv)
    return Settings(
        messages=args.messages or (10_000 if args.quick else 100_000),
        runs=max(1, args.runs),
        connections=[int(n) for n in args.connections.split(",")],
        write_results=args.write_results,
        timeout=1800.0,
    )


# --------------------------------------------------------------------------- Postfix


class RelayPostfix:
    """A private Postfix on 127.0.0.1: takes mail from 127.0.0.0/8 without a
    login and relays all of it to ``[127.0.0.1]:relay_port``."""

    def __init__(self, relay_port: int) -> None:
        self.relay_port = relay_port
        self.port = 0  # set by start()
        self.root = Path("/nonexistent")
        self._started = False
        self.log_offset = 0  # how far read_log() has read the maillog
        self.relayed = 0  # "status=sent" lines read from the maillog so far
        self.not_relayed: list[str] = []  # deferred / bounced lines

    etc = property(lambda self: self.root / "etc")
    queue = property(lambda self: self.root / "queue")
    maillog_path = property(lambda self: self.root / "maillog")

    def __enter__(self) -> RelayPostfix:
        if os.geteuid() != 0 or postfix_binary() is None:
            raise SystemExit("bench/mta.py needs root and Debian's postfix (a private instance's master runs as root)")
        self.root = Path(tempfile.mkdtemp(prefix="postfix-bench-", dir="/var/tmp"))
        try:
            self._write_files()
            self._postfix("check")  # creates the queue folders
            self._started = True
            self._postfix("start")
            self._wait_for_greeting()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        log(f"Postfix on {HOST}:{self.port} -> relayhost [{HOST}]:{self.relay_port} ({self.root})")
        return self

    def __exit__(self, *_: object) -> None:
        """Stop Postfix (waiting for its master to end) and delete its folder."""
        if self._started:
            self._started = False
            master = self._master_pid()
            with contextlib.suppress(RuntimeError, OSError, subprocess.SubprocessError):
                self._postfix("stop")
            wait_for_exit(master)
            log("Postfix stopped")
        if self.root.name.startswith("postfix-bench-"):
            shutil.rmtree(self.root, ignore_errors=True)

    def _write_files(self) -> None:
        for folder in (self.etc, self.queue, self.root / "data"):
            folder.mkdir(parents=True)
        self.root.chmod(0o755)  # Postfix's own user must get through it
        shutil.chown(self.root / "data", "postfix")
        self.port = free_port()
        (self.etc / "main.cf").write_text(f"""\
# Written by bench/mta.py for one benchmark run; deleted after it.
compatibility_level = 3.6
queue_directory = {self.queue}
data_directory = {self.root}/data
maillog_file = {self.maillog_path}
maillog_file_prefixes = {self.root}
myhostname = relay.mailmerge.test
mydestination =
local_transport = error:no local delivery
alias_maps =
alias_database =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
relayhost = [{HOST}]:{self.relay_port}
""", encoding="utf-8")
        listener = f"{HOST}:{self.port} inet n - n - - smtpd\n"
        (self.etc / "master.cf").write_text(MASTER_CF + listener, encoding="utf-8")

    def _postfix(self, command: str) -> None:
        done = subprocess.run([str(postfix_binary()), "-c", str(self.etc), command],
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"postfix {command} failed ({done.returncode}): "
                               f"{done.stdout}{done.stderr}{self.maillog_tail()}")

    def _master_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.queue / "pid" / "master.pid").read_text().split()[0])
        return None

    def _wait_for_greeting(self, seconds: float = 20.0) -> None:
        deadline = time.monotonic() + seconds
        while True:
            with contextlib.suppress(OSError):
                with socket.create_connection((HOST, self.port), timeout=5) as sock:
                    if sock.recv(512).startswith(b"220"):
                        sock.sendall(b"QUIT\r\n")
                        return
            if time.monotonic() > deadline:
                raise RuntimeError(f"Postfix did not greet on {HOST}:{self.port}: {self.maillog_tail()}")
            time.sleep(0.05)

    def maillog_tail(self, size: int = 2000) -> str:
        """The end of the maillog, for error messages."""
        with contextlib.suppress(OSError):
            return self.maillog_path.read_text("utf-8", "replace")[-size:]
        return ""

    def read_log(self) -> None:
        """Count the relayed messages (and note the others) logged since the last call."""
        with contextlib.suppress(FileNotFoundError), self.maillog_path.open("rb") as maillog:
            maillog.seek(self.log_offset)
            chunk = maillog.read()
            complete = chunk.rfind(b"\n") + 1  # a line being written is read next time
            self.log_offset += complete
            for line in chunk[:complete].splitlines():
                if b" status=sent " in line:
                    self.relayed += 1
                elif b" status=deferred " in line or b" status=bounced " in line:
                    self.not_relayed.append(line.decode("utf-8", "replace"))

    def sessions_since(self, offset: int) -> list[str]:
        """smtpd's "disconnect from ..." command counts logged after ``offset``."""
        with self.maillog_path.open("rb") as maillog:
            maillog.seek(offset)
            text = maillog.read().decode("utf-8", "replace")
        return re.findall(r"postfix/smtpd\[\d+\]: disconnect from \S+ (.*)", text)

    def cpu_seconds(self) -> float:
        """User + system seconds used so far by Postfix's master and every
        daemon it started (ended ones are in the master's children's times)."""
        master = self._master_pid()
        if master is None:
            return 0.0
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                pid, rest = stat.read_text().split(" ", 1)
                fields = rest.rsplit(")", 1)[1].split()  # after "(command)"
                if int(pid) == master or int(fields[1]) == master:  # fields[1]: the parent's pid
                    total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
        return total / os.sysconf("SC_CLK_TCK")

    def delete_queue(self) -> None:
        """Delete every message still queued (``postsuper -d ALL``) and forget
        the failures read so far."""
        subprocess.run(["postsuper", "-c", str(self.etc), "-d", "ALL"], capture_output=True, timeout=120)
        self.read_log()
        self.not_relayed.clear()
        log("  deleted what was left in Postfix's queue")

    def queue_is_empty(self) -> bool:
        """No message in maildrop, incoming, active or deferred."""
        for name in ("maildrop", "incoming", "active", "deferred"):
            for _, _, files in os.walk(self.queue / name):
                if files:
                    return False
        return True


def wait_for_exit(pid: int | None, seconds: float = 20.0) -> None:
    """Wait until ``pid`` is gone or a zombie (its parent, not us, reaps it); then SIGKILL it."""
    if pid is None:
        return
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                return
        except OSError:
            return
        time.sleep(0.05)
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------- rows


@dataclass
class MtaRow(Row):
    """A table row with Postfix's side: when the last message was relayed."""

    relayed_s: list[float] = field(default_factory=list)  # from the client's start
    drain_s: list[float] = field(default_factory=list)  # after the client ended
    postfix_cpu: list[float] = field(default_factory=list)  # Postfix's CPU seconds in the run


def median(values: list[float]) -> float | None:
    """The median, or None for no values."""
    return statistics.median(values) if values else None


def measured_run(row: MtaRow, postfix: RelayPostfix, expected: int, start_client: Callable[[], ChildResult]) -> ChildResult:
    """Run one client (``start_client()``) into ``postfix``; then wait until
    Postfix has relayed ``expected`` more messages and its queue is empty."""
    postfix.read_log()
    if not postfix.queue_is_empty():
        raise RunFailed("Postfix's queue is not empty before the run")
    before, log_offset, cpu_before = postfix.relayed, postfix.log_offset, postfix.cpu_seconds()
    try:
        return relayed_run(row, postfix, expected, start_client, before, log_offset, cpu_before)
    except RunFailed:
        postfix.delete_queue()  # so that the next row starts as this one did
        raise


def relayed_run(row: MtaRow, postfix: RelayPostfix, expected: int, start_client: Callable[[], ChildResult],
                before: int, log_offset: int, cpu_before: float) -> ChildResult:
    """The body of :func:`measured_run`: the client, then the wait for Postfix."""
    started = time.perf_counter()
    result = start_client()  # blocks until the client has ended
    client_ended = started + result.seconds
    sessions = postfix.sessions_since(log_offset)
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while True:
        postfix.read_log()
        if postfix.not_relayed:
            first = postfix.not_relayed[0]
            raise RunFailed(f"Postfix did not relay everything: {first[first.find(' to=<'):].strip()[:200]}")
        if postfix.relayed - before >= expected and postfix.queue_is_empty():
            break
        if time.monotonic() > deadline:
            raise RunFailed(f"Postfix relayed {postfix.relayed - before:,} of {expected:,} "
                            f"in {DRAIN_TIMEOUT:g} s after the client ended")
        time.sleep(0.05)
    relayed_at = time.perf_counter()
    if postfix.relayed - before != expected:
        raise RunFailed(f"Postfix relayed {postfix.relayed - before:,} messages, not {expected:,}")
    row.relayed_s.append(relayed_at - started)
    row.postfix_cpu.append(postfix.cpu_seconds() - cpu_before)
    row.drain_s.append(max(0.0, relayed_at - client_ended))
    mails = [int(m) for s in sessions for m in re.findall(r"\bmail=(\d+)", s)]  # not the start-up probe
    row.note = f"{len(mails)} session(s), {sum(mails):,} MAIL FROM"
    log(f"  relayed all {expected:,} {relayed_at - started:.1f} s after the start "
        f"({relayed_at - client_ended:.1f} s after the client ended); {row.note}")
    return result


def measure_source(postfix: RelayPostfix, settings: Settings, work: Path, sessions: int, size: int) -> MtaRow:
    """smtp-source into Postfix: ``settings.messages`` messages of ``size`` bytes."""
    n = settings.messages
    row = MtaRow(f"source{sessions}", "Anchor", f"smtp-source -d -N -s {sessions} -l {size}", n)
    cmd = [postfix_program("smtp-source"), "-d", "-N", "-s", str(sessions), "-m", str(n), "-l", str(size),
           "-f", SENDER, "-t", RECIPIENT, f"{HOST}:{postfix.port}"]
    log(f"anchor: smtp-source -s {sessions}, {n:,} messages")
    return repeat(row, settings.runs, float("inf"), lambda: measured_run(
        row, postfix, n, lambda: checked(run_child(cmd, work=work, timeout=settings.timeout), "smtp-source")))


def measure_tool(postfix: RelayPostfix, settings: Settings, work: Path, list_path: Path, template: Path,
                 connections: int) -> MtaRow:
    """``mailmerge send LIST -t T --yes --connections N`` into Postfix, a fresh folder each run."""
    n = settings.messages
    row = MtaRow(f"tool{connections}", "This tool", f"send, CSV, --connections {connections}", n)
    config = tool_config(HOST, postfix.port)  # security = "none", no login: loopback
    log(f"this tool: --connections {connections}, {n:,} messages")

    def client() -> ChildResult:
        with fresh_folder(work, list_path, template) as folder:
            (folder / "mailmerge.toml").write_text(config, encoding="utf-8")
            return checked(run_child(
                [*tool_command(), "send", str(folder / list_path.name), "-t", str(folder / template.name),
                 "--yes", "--connections", str(connections)],
                work=work, timeout=settings.timeout, env=child_env()), "mailmerge send")

    return repeat(row, settings.runs, float("inf"), lambda: measured_run(row, postfix, n, client))


def message_size(work: Path, list_path: Path, template: Path) -> int:
    """The size of one rendered message (``send --outbox`` of the list's first rows)."""
    small = work / "first-rows.csv"
    small.write_text("".join(list_path.open(encoding="utf-8").readlines()[:4]), encoding="utf-8")
    with fresh_folder(work, small, template) as folder:
        checked(run_child([*tool_command(), "send", str(folder / small.name), "-t", str(folder / template.name),
                           "--outbox", str(folder / "outbox"), "--yes"], work=work, timeout=120), "send --outbox")
        sizes = [path.stat().st_size for path in (folder / "outbox").glob("*.eml")]
    return round(sum(sizes) / len(sizes))


# --------------------------------------------------------------------------- report


def table(rows: list[MtaRow]) -> str:
    """The rows as one Markdown table."""
    header = ["section", "what", "msgs", "runs", "client s", "per s", "CPU s", "peak RSS MB",
              "all relayed s", "drain s",
              "Postfix CPU s", "notes"]
    lines = []
    for row in rows:
        runs = f"{len(row.seconds)}/{row.runs_wanted}"
        note = "; ".join(part for part in (row.problem, row.note) if part)
        lines.append([row.section, row.name, fmt(row.messages), runs, fmt(row.median_s, 1), fmt(row.rate),
                      fmt(row.median_cpu, 1), fmt(row.peak_mb), fmt(median(row.relayed_s), 1),
                      fmt(median(row.drain_s), 1), fmt(median(row.postfix_cpu), 1), note])
    return markdown_table(header, lines, right={2, 3, 4, 5, 6, 7, 8, 9, 10})


def system_info(settings: Settings, load_at_start: str, size: int) -> str:
    """Date, machine, versions and settings."""
    postfix = subprocess.run(["postconf", "-d", "-h", "mail_version"], capture_output=True, text=True).stdout.strip()
    commit = subprocess.run(["git", "-C", str(Path(__file__).resolve().parent.parent), "describe", "--always",
                             "--dirty"], capture_output=True, text=True).stdout.strip()
    cpus = sum(line.startswith("model name") for line in Path("/proc/cpuinfo").read_text().splitlines())
    return "\n".join([
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}; {cpus} CPUs; Python "
        f"{platform.python_version()}; Postfix {postfix or '?'}; jinja-mailmerge git {commit or '?'}",
        f"- load average (1 min): {load_at_start} at the start, {load_average()} at the end "
        "(other work on the machine shares its 2 cores and skews every figure)",
        f"- command: `{' '.join(['python bench/mta.py', *sys.argv[1:]])}`; {settings.messages:,} messages a "
        f"row, {settings.runs} run(s) a row (median), messages of {size:,} bytes",
        "- chain: client -> Postfix (plain SMTP on 127.0.0.1, relay for mynetworks, Debian defaults: "
        "fsync per message, in_flow_delay 1s) -> relayhost smtp-sink (discards); "
        "\"client s\" is the client's wall time (interpreter start to report), \"all relayed s\" from "
        "the client's start until Postfix had relayed the last message and its queue was empty, "
        "\"drain s\" how long that was after the client ended; CPU s and peak RSS of the client only",
    ])


def write_results(info: str, text: str) -> None:
    """Put the section into bench/RESULTS.md, replacing an older one."""
    old = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# bench results\n"
    head = old.split(SECTION)[0].rstrip("\n")
    RESULTS.write_text(f"{head}\n\n{SECTION}\n\n{info}\n\n{text}\n", encoding="utf-8")
    log(f"wrote the section into {RESULTS}")


# --------------------------------------------------------------------------- main


def main() -> None:
    """Set up the chain, measure every row, print the table."""
    settings = parse_args()
    load_at_start = load_average()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-ups
    compile_tool()
    if not tool_supports("--connections"):
        raise SystemExit("this version of the tool has no --connections")
    BENCH_HOME.mkdir(parents=True, exist_ok=True)
    list_path = cached_list("csv", settings.messages)
    work = Path(tempfile.mkdtemp(prefix="mta-", dir=BENCH_HOME))
    rows: list[MtaRow] = []
    try:
        template = work / "template.txt"
        template.write_text(TEMPLATE, encoding="utf-8")
        size = message_size(work, list_path, template)
        log(f"one rendered message is {size} bytes")
        with smtp_sink(work) as sink_port, RelayPostfix(sink_port) as postfix:
            for sessions in settings.connections:
                rows.append(measure_source(postfix, settings, work, sessions, size))
            for connections in settings.connections:
                rows.append(measure_tool(postfix, settings, work, list_path, template, connections))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    info = system_info(settings, load_at_start, size)
    text = table(rows)
    print(f"{info}\n\n{text}")
    if settings.write_results:
        write_results(info, text)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # the clean-ups have run: Postfix and smtp-sink are stopped
        log("stopped (Ctrl-C)")
        sys.exit(130)
