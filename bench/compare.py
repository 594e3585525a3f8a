"""Benchmark: this tool side by side with Postfix's smtp-source, awdeorio/mailmerge
and a plain smtplib loop, all on 127.0.0.1, measured in the same run, one table.

    python bench/compare.py [--rows 10000] [--runs 3] [--quick] [--write-results]

It sets everything up itself (as root it installs what is missing):

* Debian packages ``postfix`` (for ``smtp-sink`` / ``smtp-source``; preseeded
  "No configuration", so no mail system is configured or started) and
  ``stunnel4``; ``apt-get update`` first only when apt knows no candidate.
* awdeorio/mailmerge (PyPI ``mailmerge``, pinned) in its own venv,
  /tmp/mailmerge-bench/peer-venv, created once and reused.

Rows of the table (median of --runs runs; a row makes no further run once
more than --budget seconds would be spent on it at its mean run time, and
shows how many runs it made; "CPU s" is the user + system time of the
measured command, the client only: the servers' work is not in it):

1. Sink: ``smtp-sink -u nobody -a 127.0.0.1:PORT 256`` (discards mail, offers
   PIPELINING, no AUTH); killed when the script ends.
2. Ceiling: ``smtp-source -d -s 1`` and ``-s 4`` sending --rows messages of
   the size of one rendered message (measured with ``send --outbox``).
3. Peer: awdeorio/mailmerge sending the same CSV with the same template, plain
   to smtp-sink, then STARTTLS + AUTH to an aiosmtpd server
   (tests/smtp_server.py, offering PIPELINING as smtp-sink and the big
   providers do; smtplib never uses it).  It opens one connection (and one login) per
   message.  Its password prompt (getpass) is fed on stdin: the peer runs in
   a new session without a controlling terminal, so getpass falls back to
   reading stdin.  Its STARTTLS uses smtplib's default unverified context, so
   it needs no CA file.  Its per-message output goes to /dev/null.
4. This tool: ``mailmerge send LIST -t TEMPLATE --yes`` end to end, a fresh
   folder each run (empty journal): CSV and XLSX plain to smtp-sink, then CSV
   with STARTTLS + AUTH (``ca_file``, MAILMERGE_PASSWORD) to the same aiosmtpd
   server as the peer.  ``mailmerge/`` is byte-compiled first, as pip does
   for an installed package (the peer's venv is installed that way).
5. Far server: bench/latency_proxy.py in front of smtp-sink, +10 ms per chunk
   each way (20 ms round trip): this tool (one session), a plain smtplib loop
   over one session (sendmail per message: 4 round trips a message), and this
   tool with ``--connections 4`` ("n/a" when ``send --help`` lacks it).
6. Scale: time and peak RSS (``/usr/bin/time -v``) of ``send --dry-run`` and
   ``send --outbox DIR`` for 10k, 100k and (not with --quick) 1M rows, and
   the time to read a 100k-row .xlsx with ``read_recipients``.  A size whose
   time, extrapolated from the size before, would exceed --scale-limit is
   skipped (and said so); a scale run over 1.5 x --scale-limit is killed,
   any other run after 300 s.

Then the ratios, each against its target, PASS/FAIL.  Progress goes to
stderr, the table to stdout; --write-results also writes it, with the date,
``uname -a``, the CPU model and the Python version, to bench/RESULTS.md.
Defaults take about 20 minutes on 2 cores (the 1M-row outbox alone about 10); --quick (2,000 rows, no 1M rows,
shorter budgets) is a smoke run of a few minutes.  Needs the test extras
(trustme, aiosmtpd): pip install -e '.[test]'.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import importlib.metadata
import logging
import os
import platform
import shutil
import signal
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import openpyxl
import trustme

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(HERE))
from latency_proxy import LatencyProxy  # noqa: E402
from smtp_server import SmtpTestServer, free_port  # noqa: E402

HOST = "127.0.0.1"
BENCH_HOME = Path("/tmp/mailmerge-bench")
PEER_VENV = BENCH_HOME / "peer-venv"
PEER_REQUIREMENT = "mailmerge==2.3.0"
DATA_CACHE = BENCH_HOME / "data-v1"  # generated lists, reused between runs
RESULTS = HERE / "RESULTS.md"
MTA_SECTION = "## Through a real MTA (bench/mta.py)"  # written by bench/mta.py; kept here
TIME_BIN = "/usr/bin/time" if Path("/usr/bin/time").exists() else None
USER, PASSWORD = "bench@example.com", "bench-password"
SENDER, ONE_RECIPIENT = "from@example.com", "to@example.com"
FAR_DELAY = 0.010  # seconds each way
COLUMNS = ["name", "email", "invoice_no", "amount", "due"]
SECTIONS = ["Ceiling", "Peer", "This tool", "Far server", "Scale"]  # the table's order
FILLER = (
    "Thank you for your order. This message is a benchmark sample, written to be about as "
    "long as a real invoice notice: a greeting, the amount and the date, a few lines about "
    "how to pay, and a signature. Payment can be made by bank transfer to the account shown "
    "on the invoice, quoting the invoice number, or by card on our website. If you have "
    "already paid, please ignore this reminder; payments take up to three working days to "
    "appear in our books. Questions about this invoice can be sent in reply to this message, "
    "and our accounts team answers within one working day. We keep your details only to "
    "send you invoices and reminders, and you can ask us to change or remove them at any time."
)
TEMPLATE = f"""\
From: Bench <bench@example.com>
To: {{{{ name }}}} <{{{{ email }}}}>
Subject: Invoice {{{{ invoice_no }}}} for {{{{ name }}}}

Dear {{{{ name }}}},

your invoice {{{{ invoice_no }}}} of {{{{ amount }}}} EUR is due on {{{{ due }}}}.

{FILLER}

Kind regards,
The Bench accounts team
"""
READ_XLSX_SNIPPET = (
    "import sys, time\n"
    "from mailmerge.sources.recipients import read_recipients\n"
    "start = time.perf_counter()\n"
    "rows = read_recipients(sys.argv[1])\n"
    "print(f'{time.perf_counter() - start:.6f} {len(rows)}')\n"
)

_STARTED = time.monotonic()


# --------------------------------------------------------------------------- settings


@dataclass
class Settings:
    """What to run, from the command line."""

    rows: int
    runs: int
    quick: bool
    write_results: bool
    peer_tls_rows: int
    far_rows: int
    scale_sizes: list[int]
    xlsx_read_rows: int
    budget: float  # seconds a table row may spend repeating runs
    scale_limit: float  # seconds a scale run is expected to stay under
    timeout: float  # seconds after which a send run is killed (scale runs: 1.5 x scale_limit)


def parse_args(argv: list[str] | None = None) -> Settings:
    """Read the options; --quick changes the defaults of the others."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, help="messages per send row (default 10000, --quick 2000)")
    parser.add_argument("--runs", type=int, default=3, help="runs per row, median reported (default 3)")
    parser.add_argument("--quick", action="store_true", help="a short smoke run: fewer rows, no 1M rows")
    parser.add_argument("--write-results", action="store_true", help=f"also write {RESULTS.relative_to(REPO)}")
    parser.add_argument("--peer-tls-rows", type=int,
                        help="messages for awdeorio with TLS+AUTH, one login each (default min(rows, 1000), --quick 300)")
    parser.add_argument("--far-rows", type=int,
                        help="messages through the 20 ms proxy (default 1000, --quick 100)")
    parser.add_argument("--budget", type=float,
                        help="no further run when a row would pass this many seconds (default 60, --quick 20)")
    parser.add_argument("--scale-limit", type=float,
                        help="skip a scale size expected to take longer (default 1500 s, --quick 45 s)")
    args = parser.parse_args(argv)
    rows = args.rows or (2000 if args.quick else 10000)
    scale_limit = args.scale_limit or (45.0 if args.quick else 1500.0)
    return Settings(
        rows=rows,
        runs=max(1, args.runs),
        quick=args.quick,
        write_results=args.write_results,
        peer_tls_rows=args.peer_tls_rows or min(rows, 300 if args.quick else 1000),
        # 1,000: at 300 the start-up (Python, imports, the first connection) was a
        # fifth of the one-session time, which a real newsletter never sees.
        far_rows=args.far_rows or (100 if args.quick else 1000),
        scale_sizes=[10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000],
        xlsx_read_rows=100_000,
        budget=args.budget or (20.0 if args.quick else 60.0),
        scale_limit=scale_limit,
        timeout=300.0,
    )


def log(message: str) -> None:
    """A progress line on stderr, with the seconds since the start."""
    print(f"[{time.monotonic() - _STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- set-up


def apt_has_candidate(package: str) -> bool:
    """Whether apt knows an installable version of ``package``."""
    out = subprocess.run(["apt-cache", "policy", package], capture_output=True, text=True).stdout
    return "Candidate:" in out and "Candidate: (none)" not in out


def ensure_debian_packages() -> None:
    """Install postfix (smtp-sink, smtp-source) and stunnel4 if missing; needs root."""
    wanted = {"postfix": "smtp-sink", "stunnel4": "stunnel4"}
    missing = [pkg for pkg, program in wanted.items() if shutil.which(program) is None
               and not Path("/usr/sbin", program).exists()]
    if not missing:
        return
    if os.geteuid() != 0:
        raise SystemExit(f"missing Debian packages {missing}: run as root, or "
                         f"apt-get install {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log(f"installing Debian packages: {' '.join(missing)}")
    subprocess.run(["debconf-set-selections"], check=True, text=True,
                   input="postfix postfix/main_mailer_type select No configuration\n")
    if not all(apt_has_candidate(pkg) for pkg in missing):
        subprocess.run(["apt-get", "update"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *missing],
                   check=True, env=env, stdout=subprocess.DEVNULL)


def postfix_program(name: str) -> str:
    """The path of a Postfix test program (they live in /usr/sbin)."""
    found = shutil.which(name) or str(Path("/usr/sbin", name))
    if not Path(found).exists():
        raise SystemExit(f"{name} not found (Debian package postfix)")
    return found


def peer_version() -> str | None:
    """The installed awdeorio/mailmerge version in the peer venv, if any."""
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        return None
    done = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('mailmerge'))"],
        capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def ensure_peer_venv() -> str:
    """Create /tmp/mailmerge-bench/peer-venv with awdeorio/mailmerge once; its version."""
    wanted = PEER_REQUIREMENT.split("==")[1]
    if peer_version() == wanted:
        return wanted
    log(f"installing {PEER_REQUIREMENT} (awdeorio) into {PEER_VENV}")
    BENCH_HOME.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(PEER_VENV)], check=True)
    subprocess.run([str(PEER_VENV / "bin" / "pip"), "install", "-q", PEER_REQUIREMENT],
                   check=True, stdout=subprocess.DEVNULL)
    version = peer_version()
    if version is None:
        raise SystemExit("awdeorio/mailmerge did not install")
    return version


def compile_tool() -> None:
    """Byte-compile mailmerge/ once, as pip does when it installs a package: an
    editable install under PYTHONDONTWRITEBYTECODE=1 would compile it at every start."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "mailmerge")], check=False)


def tool_command() -> list[str]:
    """How to start this tool: the venv's ``mailmerge`` script, else ``python -m``."""
    script = Path(sys.executable).parent / "mailmerge"
    return [str(script)] if script.exists() else [sys.executable, "-m", "mailmerge"]


def tool_supports(option: str) -> bool:
    """Whether ``mailmerge send --help`` lists ``option``."""
    done = subprocess.run([*tool_command(), "send", "--help"], capture_output=True, text=True,
                          env={**child_env(), "COLUMNS": "200"})
    return option in done.stdout


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child: ours without MAILMERGE_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILMERGE_")}
    env.update(extra)
    return env


# --------------------------------------------------------------------------- lists


def list_values(i: int) -> list[str | int]:
    """The cells of data row ``i`` (0-based); CSV and XLSX hold the same text."""
    return [f"Member {i}", f"member{i}@example.com", f"INV-{i:07d}", 1000 + 7 * i, "2026-12-01"]


def write_csv(path: Path, rows: int) -> None:
    """A UTF-8 CSV list of ``rows`` rows (plain csv writer: fast enough for 1M)."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerows(list_values(i) for i in range(rows))


def write_xlsx(path: Path, rows: int) -> None:
    """The same list as an Excel workbook (openpyxl write-only mode); ``due`` is a date."""
    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet()
    sheet.append(COLUMNS)
    due = dt.date(2026, 12, 1)
    for i in range(rows):
        sheet.append([*list_values(i)[:4], due])
    book.save(path)


def cached_list(suffix: str, rows: int) -> Path:
    """A generated list with ``rows`` rows, made once and kept in DATA_CACHE."""
    DATA_CACHE.mkdir(parents=True, exist_ok=True)
    path = DATA_CACHE / f"list-{rows}.{suffix}"
    if not path.exists():
        log(f"writing {path} ({rows:,} rows)")
        partial = DATA_CACHE / f"partial-{os.getpid()}.{suffix}"
        (write_csv if suffix == "csv" else write_xlsx)(partial, rows)
        partial.rename(path)
    return path


@contextlib.contextmanager
def fresh_folder(parent: Path, *files: Path) -> Iterator[Path]:
    """A new empty folder holding (hard links to) ``files``; removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="run-", dir=parent))
    try:
        for source in files:
            target = folder / source.name
            try:
                os.link(source, target)
            except OSError:
                shutil.copy2(source, target)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def tool_config(host: str, port: int, *, ca_file: Path | None = None, ssl_only: bool = False) -> str:
    """mailmerge.toml: no TLS and no login, STARTTLS + login trusting ``ca_file``,
    or (``ssl_only``) SMTPS trusting ``ca_file`` without a login."""
    lines = ["[smtp]", f'host = "{host}"', f"port = {port}", "timeout = 30"]
    if ca_file is None:
        lines.append('security = "none"')
    elif ssl_only:
        lines += ['security = "ssl"', f'ca_file = "{ca_file}"']
    else:
        lines += ['security = "starttls"', f'username = "{USER}"', f'ca_file = "{ca_file}"']
    return "\n".join(lines) + "\n"


def peer_config(path: Path, host: str, port: int, *, starttls: bool) -> Path:
    """awdeorio's INI server config: no security, or STARTTLS with a username."""
    lines = ["[smtp_server]", f"host = {host}", f"port = {port}"]
    if starttls:
        lines += ["security = STARTTLS", f"username = {USER}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- children


class RunFailed(Exception):
    """A run that did not do its job (exit code, timeout, wrong count)."""


@dataclass
class ChildResult:
    """How one child process went."""

    seconds: float
    returncode: int
    timed_out: bool
    peak_rss_mb: float | None
    cpu_seconds: float | None  # user + system time of the child (and its children)
    output: Path  # its stderr (and stdout unless sent elsewhere)

    def tail(self, lines: int = 3) -> str:
        """The last lines of its output, on one line."""
        text = self.output.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        return " | ".join(text[-lines:])


def time_v_report(path: Path) -> tuple[float | None, float | None]:
    """(peak RSS in MB, user + system seconds) from a ``/usr/bin/time -v -o`` report."""
    fields: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            name, _, value = line.strip().rpartition(": ")
            fields[name] = value
    try:
        peak = int(fields["Maximum resident set size (kbytes)"]) / 1024
        cpu = float(fields["User time (seconds)"]) + float(fields["System time (seconds)"])
    except (KeyError, ValueError):
        return None, None
    return peak, cpu


class _Waiter(threading.Thread):
    """Reaps one child with os.wait4: exact end time, exit status and rusage."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.status = 0
        self.max_rss_kb = 0
        self.cpu_seconds = 0.0
        self.ended = 0.0

    def run(self) -> None:
        """Block until the child ends."""
        _, self.status, usage = os.wait4(self.pid, 0)
        self.ended = time.perf_counter()
        self.max_rss_kb = usage.ru_maxrss
        self.cpu_seconds = usage.ru_utime + usage.ru_stime


def run_child(cmd: list[str], *, work: Path, timeout: float, env: dict[str, str] | None = None,
              cwd: Path | None = None, stdin_text: str | None = None,
              stdout: Path | None = None, quiet_stdout: bool = False) -> ChildResult:
    """Run ``cmd`` in its own session (killed as a group on timeout or Ctrl-C), timed.

    Its stderr, and its stdout unless ``stdout`` (a file) or ``quiet_stdout``
    (/dev/null) says otherwise, go to ``work/child.log``.  Peak RSS comes from
    ``/usr/bin/time -v`` when present, else from the child's rusage (os.wait4).
    """
    output, time_file = work / "child.log", work / "time-v.txt"
    time_file.unlink(missing_ok=True)
    full = [TIME_BIN, "-v", "-o", str(time_file), *cmd] if TIME_BIN else cmd
    with contextlib.ExitStack() as files:
        err = files.enter_context(output.open("wb"))
        out = err
        if quiet_stdout or stdout is not None:
            out = files.enter_context(open(os.devnull if quiet_stdout else str(stdout), "wb"))
        started = time.perf_counter()
        proc = subprocess.Popen(full, cwd=cwd, env=env or child_env(), stdout=out, stderr=err,
                                stdin=subprocess.PIPE if stdin_text else subprocess.DEVNULL,
                                start_new_session=True)
        waiter = _Waiter(proc.pid)
        waiter.start()
        try:
            if stdin_text and proc.stdin is not None:
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.write(stdin_text.encode())
                    proc.stdin.close()
            waiter.join(timeout)
            timed_out = waiter.is_alive()
            if timed_out:
                kill_group(proc.pid)
                waiter.join()
        except BaseException:
            kill_group(proc.pid)
            waiter.join()
            raise
    proc.returncode = os.waitstatus_to_exitcode(waiter.status)  # reaped by the waiter
    if TIME_BIN:
        peak, cpu = time_v_report(time_file)
    else:
        peak, cpu = waiter.max_rss_kb / 1024, waiter.cpu_seconds
    return ChildResult(waiter.ended - started, proc.returncode, timed_out, peak, cpu, output)


def kill_group(pid: int) -> None:
    """SIGKILL the process group that run_child started (its id is the child's pid)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def checked(result: ChildResult, what: str) -> ChildResult:
    """``result`` if the child exited 0 in time, else RunFailed naming ``what``."""
    if result.timed_out:
        raise RunFailed(f"{what}: killed after {result.seconds:.0f} s (timeout)")
    if result.returncode != 0:
        raise RunFailed(f"{what}: exit {result.returncode}: {result.tail(1)[:160]}")
    return result


# --------------------------------------------------------------------------- table rows


@dataclass
class Row:
    """One line of the table and the runs behind it."""

    key: str
    section: str
    name: str
    messages: int = 0
    runs_wanted: int = 0
    seconds: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    note: str = ""
    problem: str = ""  # why there is no figure (error, skipped, n/a)

    @property
    def median_s(self) -> float | None:
        """Median seconds of the runs made."""
        return statistics.median(self.seconds) if self.seconds else None

    @property
    def rate(self) -> float | None:
        """Messages (or rows) per second at the median."""
        median = self.median_s
        return self.messages / median if median else None

    @property
    def median_cpu(self) -> float | None:
        """Median CPU seconds (user + system) of the measured process."""
        return statistics.median(self.cpu_seconds) if self.cpu_seconds else None

    @property
    def peak_mb(self) -> float | None:
        """Highest peak RSS over the runs."""
        return max(self.rss_mb) if self.rss_mb else None


def repeat(row: Row, runs: int, budget: float, once: Callable[[], ChildResult | float]) -> Row:
    """Run ``once`` up to ``runs`` times: at least once, and no run that would
    (at the mean time so far) end past ``budget`` seconds for the row."""
    row.runs_wanted = runs
    spent = 0.0
    for number in range(1, runs + 1):
        if number > 1 and spent + spent / (number - 1) > budget:
            break
        try:
            result = once()
        except RunFailed as error:
            row.problem = str(error)
            log(f"  {row.name}: FAILED: {error}")
            break
        seconds = result if isinstance(result, float) else result.seconds
        if isinstance(result, ChildResult) and result.peak_rss_mb is not None:
            row.rss_mb.append(result.peak_rss_mb)
        if isinstance(result, ChildResult) and result.cpu_seconds is not None:
            row.cpu_seconds.append(result.cpu_seconds)
        row.seconds.append(seconds)
        spent += seconds
        rate = f", {row.messages / seconds:,.0f}/s" if row.messages and seconds else ""
        log(f"  {row.name}: run {number}: {seconds:.2f} s{rate}")
    return row


# --------------------------------------------------------------------------- servers


def wait_for_port(port: int, seconds: float = 10.0) -> None:
    """Wait until something accepts connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextlib.contextmanager
def smtp_sink(work: Path) -> Iterator[int]:
    """Run Postfix's smtp-sink on a free loopback port; yield the port; kill it after."""
    port = free_port()
    cmd = [postfix_program("smtp-sink"), "-u", "nobody", "-a", f"{HOST}:{port}", "256"]
    with (work / "smtp-sink.log").open("wb") as sink_log:
        proc = subprocess.Popen(cmd, stdout=sink_log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_for_port(port)
        log(f"smtp-sink listening on {HOST}:{port} (pid {proc.pid})")
        yield port
    finally:
        proc.kill()
        proc.wait()
        log("smtp-sink stopped")


@contextlib.contextmanager
def stunnel_smtps(work: Path, sink_port: int) -> Iterator[tuple[int, Path]]:
    """stunnel4 in SMTPS mode in front of smtp-sink, with a certificate made here
    (trustme); yield (port, CA file); kill it after."""
    ca = trustme.CA()
    ca_file, server_pem = work / "stunnel-ca.pem", work / "stunnel-server.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    ca.issue_cert(HOST, "localhost").private_key_and_cert_chain_pem.write_to_path(str(server_pem))
    port = free_port()
    conf = work / "stunnel.conf"
    conf.write_text("\n".join([
        "foreground = yes", "pid =", "debug = 3", "[smtps]",
        f"accept = {HOST}:{port}", f"connect = {HOST}:{sink_port}", f"cert = {server_pem}", "",
    ]), encoding="utf-8")
    with (work / "stunnel.log").open("wb") as stunnel_log:
        proc = subprocess.Popen([shutil.which("stunnel4") or "stunnel", str(conf)], stdout=stunnel_log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(port)
        log(f"stunnel (SMTPS) on {HOST}:{port} -> smtp-sink (pid {proc.pid})")
        yield port, ca_file
    finally:
        proc.kill()
        proc.wait()


# --------------------------------------------------------------------------- measurements


@dataclass
class Bench:
    """What every measurement needs: settings, scratch folder, files, collected rows."""

    settings: Settings
    work: Path
    template: Path
    csv_list: Path
    xlsx_list: Path
    message_size: int = 1024
    rows: list[Row] = field(default_factory=list)

    def add(self, row: Row) -> Row:
        """Keep ``row`` for the table."""
        self.rows.append(row)
        return row

    def find(self, key: str) -> Row | None:
        """The row with ``key``."""
        return next((row for row in self.rows if row.key == key), None)


def calibrate_message_size(bench: Bench) -> None:
    """Measure one rendered message (``send --outbox`` of 3 rows) for smtp-source -l."""
    small = bench.work / "list-3.csv"
    write_csv(small, 3)
    with fresh_folder(bench.work, small, bench.template) as folder:
        outbox = folder / "outbox"
        result = run_child([*tool_command(), "send", str(folder / small.name), "-t",
                            str(folder / bench.template.name), "--outbox", str(outbox), "--yes"],
                           work=bench.work, timeout=120)
        sizes = [path.stat().st_size for path in outbox.glob("*.eml")]
    if result.returncode == 0 and sizes:
        bench.message_size = round(sum(sizes) / len(sizes))
        log(f"one rendered message is {bench.message_size} bytes")
    else:
        log(f"could not measure the message size ({result.tail(1)}); using {bench.message_size}")


def measure_ceiling(bench: Bench, port: int, sessions: int) -> Row:
    """smtp-source: --rows messages of the rendered size over ``sessions`` sessions."""
    n = bench.settings.rows
    row = bench.add(Row(f"source{sessions}", "Ceiling",
                        f"smtp-source -d -s {sessions} -l {bench.message_size}", n,
                        note=f"{sessions} session{'s' if sessions > 1 else ''}, Postfix's C client"))
    cmd = [postfix_program("smtp-source"), "-d", "-s", str(sessions), "-m", str(n),
           "-l", str(bench.message_size), "-f", SENDER, "-t", ONE_RECIPIENT, f"{HOST}:{port}"]
    log(f"ceiling: smtp-source -s {sessions}, {n:,} messages")
    return repeat(row, bench.settings.runs, bench.settings.budget,
                  lambda: checked(run_child(cmd, work=bench.work, timeout=bench.settings.timeout),
                                  "smtp-source"))


def measure_peer(bench: Bench, key: str, name: str, port: int, rows: int,
                 server: SmtpTestServer | None = None) -> Row:
    """awdeorio/mailmerge on the first ``rows`` rows; STARTTLS + AUTH when ``server``."""
    csv_path = bench.csv_list if rows == bench.settings.rows else bench.work / f"peer-{rows}.csv"
    if not csv_path.exists():
        write_csv(csv_path, rows)
    config = peer_config(bench.work / f"{key}.conf", HOST, port, starttls=server is not None)
    cmd = [str(PEER_VENV / "bin" / "mailmerge"), "--no-dry-run", "--no-limit",
           "--template", str(bench.template), "--database", str(csv_path),
           "--config", str(config), "--output-format", "raw"]
    row = bench.add(Row(key, "Peer", name, rows))
    log(f"peer: {name}, {rows:,} messages")

    def once() -> ChildResult:
        before = server_counts(server)
        result = checked(run_child(cmd, work=bench.work, timeout=bench.settings.timeout,
                                   stdin_text=f"{PASSWORD}\n" if server else None,
                                   quiet_stdout=True), "awdeorio/mailmerge")
        if server is not None:
            row.note = verify_server(server, before, rows)
        return result

    repeat(row, bench.settings.runs, bench.settings.budget, once)
    if server is None and not row.problem:
        row.note = f"{rows:,} connections (one per message)"
    return row


def server_counts(server: SmtpTestServer | None) -> tuple[int, int, int]:
    """(messages, connections, logins) the aiosmtpd server has counted so far."""
    if server is None:
        return (0, 0, 0)
    return (len(server.messages), server.connections, server.auth_successes)


def verify_server(server: SmtpTestServer, before: tuple[int, int, int], expected: int) -> str:
    """Check the server got ``expected`` messages in this run; describe the run."""
    messages, connections, logins = (now - then for now, then in zip(server_counts(server), before))
    server.messages.clear()
    if messages != expected:
        raise RunFailed(f"the server received {messages} messages, not {expected}")
    return f"server saw {connections:,} connection(s), {logins:,} login(s)"


def measure_tool(bench: Bench, key: str, section: str, name: str, list_path: Path, port: int,
                 *, rows: int, server: SmtpTestServer | None = None, extra: tuple[str, ...] = (),
                 smtps_ca: Path | None = None, note: str = "") -> Row:
    """``mailmerge send LIST -t T --yes`` in a fresh folder per run (SMTPS
    without a login when ``smtps_ca`` is given)."""
    row = bench.add(Row(key, section, name, rows, note=note))
    if smtps_ca is not None:
        config = tool_config(HOST, port, ca_file=smtps_ca, ssl_only=True)
    else:
        config = tool_config(HOST, port, ca_file=server.ca_file if server else None)
    env = child_env(MAILMERGE_PASSWORD=PASSWORD) if server else child_env()
    log(f"this tool: {name}, {rows:,} messages")

    def once() -> ChildResult:
        with fresh_folder(bench.work, list_path, bench.template) as folder:
            (folder / "mailmerge.toml").write_text(config, encoding="utf-8")
            before = server_counts(server)
            result = checked(run_child(
                [*tool_command(), "send", str(folder / list_path.name), "-t",
                 str(folder / bench.template.name), "--yes", *extra],
                work=bench.work, timeout=bench.settings.timeout, env=env), "mailmerge send")
            if server is not None:
                row.note = verify_server(server, before, rows)
            return result

    return repeat(row, bench.settings.runs, bench.settings.budget, once)


def smtplib_loop(port: int, count: int, size: int) -> float:
    """Seconds to send ``count`` messages of ``size`` bytes over one smtplib session."""
    head = "From: Bench <bench@example.com>\r\nTo: {to}\r\nSubject: Invoice {i}\r\n\r\n"
    messages = []
    for i in range(count):
        to = f"member{i}@example.com"
        text = head.format(to=to, i=i).encode()
        body = (b"x" * 74 + b"\r\n") * max(1, (size - len(text)) // 76)
        messages.append((to, text + body))
    started = time.perf_counter()
    with smtplib.SMTP(HOST, port, timeout=30) as smtp:
        smtp.ehlo()
        for to, data in messages:
            smtp.sendmail(SENDER, [to], data)
    return time.perf_counter() - started


def measure_far(bench: Bench, sink_port: int, connections_option: bool) -> None:
    """The three rows through the latency proxy in front of smtp-sink."""
    n = bench.settings.far_rows
    far_list = bench.work / "far" / bench.csv_list.name
    far_list.parent.mkdir(exist_ok=True)
    write_csv(far_list, n)
    rtt = f"{2 * FAR_DELAY * 1000:g} ms round trip"
    with LatencyProxy(HOST, sink_port, delay=FAR_DELAY) as proxy:
        log(f"latency proxy {HOST}:{proxy.port} -> smtp-sink, {rtt}")
        before = proxy.connections
        one = measure_tool(bench, "far_tool", "Far server", "this tool, CSV, 1 session", far_list,
                           proxy.port, rows=n)
        one.note = far_note(rtt, one, proxy.connections - before)
        log(f"far: smtplib loop, {n:,} messages")
        loop_row = bench.add(Row("far_smtplib", "Far server", "smtplib loop, 1 session", n,
                                 note=f"{rtt}; sendmail() per message, in-process, no rendering"))
        repeat(loop_row, bench.settings.runs, bench.settings.budget,
               lambda: smtplib_loop(proxy.port, n, bench.message_size))
        if connections_option:
            before = proxy.connections
            four = measure_tool(bench, "far_tool4", "Far server", "this tool, CSV, --connections 4",
                                far_list, proxy.port, rows=n, extra=("--connections", "4"))
            four.note = far_note(rtt, four, proxy.connections - before)
        else:
            bench.add(Row("far_tool4", "Far server", "this tool, CSV, --connections 4", n,
                          problem="n/a (not implemented: `send --help` has no --connections)"))


def far_note(rtt: str, row: Row, connections: int) -> str:
    """The note of a far row: the round trip and the connections a run opened."""
    if not row.seconds:
        return rtt
    return f"{rtt}; {connections / len(row.seconds):,.0f} connection(s) a run"


def measure_scale(bench: Bench) -> None:
    """send --dry-run / --outbox on growing CSV lists; skip sizes that would take too long."""
    settings = bench.settings
    for mode in ("dry-run", "outbox"):
        previous: Row | None = None
        for size in settings.scale_sizes:
            row = bench.add(Row(f"scale_{mode}_{size}", "Scale", f"send --{mode}, {size:,} rows CSV", size))
            row.problem = scale_skip_reason(previous, size, settings.scale_limit)
            if row.problem:
                log(f"scale: {row.name}: {row.problem}")
                previous = row
                continue
            list_path = cached_list("csv", size)
            log(f"scale: {row.name}")
            repeat(row, settings.runs, settings.budget, lambda: scale_once(bench, mode, list_path))
            previous = row
    measure_xlsx_read(bench)


def scale_skip_reason(previous: Row | None, size: int, limit: float) -> str:
    """Why ``size`` rows should not run: the smaller size failed or predicts > ``limit`` s."""
    if previous is None:
        return ""
    if previous.problem.startswith("skipped"):
        return "skipped, as the smaller size"
    if previous.median_s is None:
        return "skipped: the smaller size failed"
    estimate = previous.median_s * size / previous.messages
    if estimate > limit:
        return (f"skipped: ~{estimate:,.0f} s expected from {previous.messages:,} rows "
                f"> --scale-limit {limit:g} s")
    return ""


def scale_once(bench: Bench, mode: str, list_path: Path) -> ChildResult:
    """One ``send --dry-run`` or ``send --outbox`` of ``list_path`` in a fresh folder."""
    with fresh_folder(bench.work, list_path, bench.template) as folder:
        option = ["--dry-run"] if mode == "dry-run" else ["--outbox", str(folder / "outbox")]
        return checked(run_child(
            [*tool_command(), "send", str(folder / list_path.name), "-t",
             str(folder / bench.template.name), "--yes", *option],
            work=bench.work, timeout=1.5 * bench.settings.scale_limit), f"send --{mode}")


def measure_xlsx_read(bench: Bench) -> None:
    """Seconds read_recipients takes for a 100k-row .xlsx (imports not counted)."""
    n = bench.settings.xlsx_read_rows
    row = bench.add(Row("xlsx_read", "Scale", f"read_recipients, {n:,} rows .xlsx", n,
                        note="read only (python -c; interpreter and imports not counted)"))
    path = cached_list("xlsx", n)
    log(f"scale: {row.name}")
    out = bench.work / "read.out"

    def once() -> float:
        result = checked(run_child([sys.executable, "-c", READ_XLSX_SNIPPET, str(path)],
                                   work=bench.work, timeout=bench.settings.timeout, stdout=out),
                         "read_recipients")
        seconds_text, count = out.read_text().split()
        if int(count) != n:
            raise RunFailed(f"read {count} rows, not {n}")
        if result.peak_rss_mb is not None:
            row.rss_mb.append(result.peak_rss_mb)
        return float(seconds_text)

    repeat(row, bench.settings.runs, bench.settings.budget, once)


# --------------------------------------------------------------------------- report


@dataclass
class Target:
    """A ratio (or a size) and the bound it should meet."""

    name: str
    value: float | None
    bound: float
    higher_is_better: bool
    unit: str = "x"
    why_missing: str = ""

    @property
    def verdict(self) -> str:
        """PASS, FAIL, or n/a when the figure could not be measured."""
        if self.value is None:
            return "n/a"
        ok = self.value >= self.bound if self.higher_is_better else self.value <= self.bound
        return "PASS" if ok else "FAIL"


def ratio(bench: Bench, top: str, bottom: str) -> tuple[float | None, str]:
    """rate(top) / rate(bottom), or None and which row is missing."""
    a, b = bench.find(top), bench.find(bottom)
    for key, row in ((top, a), (bottom, b)):
        if row is None or row.rate is None:
            return None, f"no figure for {row.name if row else key}"
    assert a is not None and b is not None and a.rate is not None and b.rate is not None
    return a.rate / b.rate, ""


def targets(bench: Bench) -> list[Target]:
    """The ratios of the brief, each with its target."""
    found: list[Target] = []
    for name, top, bottom, bound in (
        ("this tool plain / smtp-source -s 1", "tool_csv", "source1", 0.5),
        ("this tool plain / awdeorio plain", "tool_csv", "peer_plain", 2.0),
        ("this tool TLS+AUTH / awdeorio TLS+AUTH", "tool_tls", "peer_tls", 20.0),
        ("far: this tool / smtplib loop", "far_tool", "far_smtplib", 3.0),
        ("far: --connections 4 / one session", "far_tool4", "far_tool", 2.5),
    ):
        value, why = ratio(bench, top, bottom)
        found.append(Target(name, value, bound, True, why_missing=why))
    big, small = 1_000_000, 100_000
    peaks = [bench.find(f"scale_{mode}_{big}") for mode in ("dry-run", "outbox")]
    measured = [row.peak_mb for row in peaks if row is not None and row.peak_mb is not None]
    missing = [row.name for row in peaks if row is not None and row.peak_mb is None]
    reasons = "; ".join(f"{row.name}: {row.problem}" for row in peaks if row is not None and row.problem)
    why_big = ("no 1M-row run with --quick" if bench.settings.quick else
               f"{' and '.join(row.name.split(',')[0] for row in peaks if row and row.peak_mb)} only "
               f"({reasons})" if missing and measured else
               f"not measured ({reasons})" if missing else "")
    found.append(Target("peak RSS, 1M rows (MB, worst mode)", max(measured) if measured else None,
                        400, False, unit=" MB", why_missing=why_big))
    ratios = []
    for mode in ("dry-run", "outbox"):
        a, b = bench.find(f"scale_{mode}_{big}"), bench.find(f"scale_{mode}_{small}")
        if a and b and a.peak_mb and b.peak_mb:
            ratios.append(a.peak_mb / b.peak_mb)
    found.append(Target("peak RSS 1M / 100k rows (worst mode)", max(ratios) if ratios else None,
                        1.5, False, why_missing=why_big if not ratios or missing else ""))
    return found


def fmt(value: float | None, digits: int = 0) -> str:
    """A number with thousands separators, or '-'."""
    return "-" if value is None else f"{value:,.{digits}f}"


def markdown_table(header: list[str], lines: list[list[str]], right: set[int]) -> str:
    """A padded Markdown table (readable as plain text too)."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines)]
    def render(cells: list[str]) -> str:
        padded = [cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(cells, widths))]
        return "| " + " | ".join(padded) + " |"
    rule = "|" + "|".join(("-" * (w + 1) + ":") if i in right else ("-" * (w + 2))
                          for i, w in enumerate(widths)) + "|"
    return "\n".join([render(header), rule, *(render(line) for line in lines)])


def results_table(bench: Bench, sink_note: str) -> str:
    """The one table: every row, then the ratios against their targets."""
    header = ["section", "what", "msgs/rows", "runs", "median s", "per s", "CPU s", "peak RSS MB", "notes"]
    lines = [["Sink", "smtp-sink -a 127.0.0.1:PORT 256", "", "", "", "", "", "", sink_note]]
    for row in sorted(bench.rows, key=lambda row: SECTIONS.index(row.section)):
        runs = f"{len(row.seconds)}/{row.runs_wanted}" if row.runs_wanted else "-"
        note = "; ".join(part for part in (row.problem, row.note) if part)
        digits = 3 if (row.median_s or 0) < 10 else 1
        cpu_digits = 3 if (row.median_cpu or 0) < 10 else 1
        lines.append([row.section, row.name, fmt(row.messages), runs, fmt(row.median_s, digits),
                      fmt(row.rate), fmt(row.median_cpu, cpu_digits), fmt(row.peak_mb), note])
    table = markdown_table(header, lines, right={2, 3, 4, 5, 6, 7})
    target_lines = []
    for target in targets(bench):
        value = "-" if target.value is None else (
            f"{target.value:,.0f}{target.unit}" if target.unit == " MB" else f"{target.value:.2f}x")
        sign = ">=" if target.higher_is_better else ("<" if target.unit == " MB" else "<=")
        bound = f"{target.bound:g}{target.unit if target.unit == ' MB' else 'x'}"
        target_lines.append([target.name, value, f"{sign} {bound}", target.verdict, target.why_missing])
    ratios = markdown_table(["ratio", "value", "target", "result", "note"], target_lines, right={1})
    return f"{table}\n\n{ratios}\n"


def load_average() -> str:
    """The 1-minute load average (other work on the machine skews every figure)."""
    with contextlib.suppress(OSError):
        return Path("/proc/loadavg").read_text().split()[0]
    return "?"


def system_info(settings: Settings, peer: str, load_at_start: str) -> str:
    """Date, machine, versions and the settings, for RESULTS.md and the table's head."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        models = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")]
        cpu = f"{models[0]} x {len(models)}" if models else cpu
    uname = subprocess.run(["uname", "-a"], capture_output=True, text=True).stdout.strip()
    postfix = subprocess.run(["postconf", "-d", "-h", "mail_version"], capture_output=True,
                             text=True).stdout.strip() or "?"
    commit = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                            capture_output=True, text=True).stdout.strip() or "?"
    try:
        ours = importlib.metadata.version("jinja-mailmerge")
    except importlib.metadata.PackageNotFoundError:
        ours = "?"
    return "\n".join([
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"- `uname -a`: {uname}",
        f"- CPU: {cpu}",
        f"- Python: {platform.python_version()} ({sys.executable})",
        f"- load average (1 min): {load_at_start} at the start, {load_average()} at the end "
        f"(on {os.cpu_count()} CPUs; anything else running skews the figures)",
        f"- jinja-mailmerge {ours} (git {commit}); awdeorio/mailmerge {peer}; Postfix {postfix}; "
        f"aiosmtpd {importlib.metadata.version('aiosmtpd')}",
        f"- command: `{' '.join(['python bench/compare.py', *sys.argv[1:]])}`",
        f"- rows {settings.rows:,}, awdeorio TLS rows {settings.peer_tls_rows:,}, far rows "
        f"{settings.far_rows:,}, runs {settings.runs} (budget {settings.budget:g} s a row), "
        f"scale limit {settings.scale_limit:g} s; peak RSS from "
        f"{'/usr/bin/time -v' if TIME_BIN else 'os.wait4 rusage'}; CPU s = user + system seconds "
        f"of the measured command (the client; servers not counted)",
    ])


def write_results(info: str, table: str) -> None:
    """bench/RESULTS.md: the machine, then the table; bench/mta.py's section, if
    the file has one, is kept after it."""
    kept = ""
    with contextlib.suppress(OSError):
        old = RESULTS.read_text(encoding="utf-8")
        if MTA_SECTION in old:
            kept = "\n" + MTA_SECTION + old.split(MTA_SECTION, 1)[1]
    RESULTS.write_text(f"# bench/compare.py results\n\n{info}\n\n{table}{kept}", encoding="utf-8")
    log(f"wrote {RESULTS}")


# --------------------------------------------------------------------------- main


def run_all(bench: Bench, connections_option: bool) -> str:
    """Every measurement, with the servers they need; returns the sink's note."""
    settings = bench.settings
    with smtp_sink(bench.work) as sink_port:
        measure_ceiling(bench, sink_port, 1)
        measure_ceiling(bench, sink_port, 4)
        measure_peer(bench, "peer_plain", "awdeorio/mailmerge, CSV, plain", sink_port, settings.rows)
        measure_tool(bench, "tool_csv", "This tool", "send, CSV, plain", bench.csv_list, sink_port,
                     rows=settings.rows)
        measure_tool(bench, "tool_xlsx", "This tool", "send, XLSX, plain", bench.xlsx_list, sink_port,
                     rows=settings.rows)
        # PIPELINING offered, as smtp-sink and the big providers do (smtplib, and so
        # awdeorio/mailmerge, never uses it).
        with SmtpTestServer(tls=True, auth={USER: PASSWORD}, pipelining=True) as server:
            log(f"aiosmtpd STARTTLS+AUTH server on {HOST}:{server.port}")
            measure_peer(bench, "peer_tls", "awdeorio/mailmerge, CSV, STARTTLS+AUTH", server.port,
                         settings.peer_tls_rows, server=server)
            measure_tool(bench, "tool_tls", "This tool", "send, CSV, STARTTLS+AUTH", bench.csv_list,
                         server.port, rows=settings.rows, server=server)
        if shutil.which("stunnel4") or shutil.which("stunnel"):
            with stunnel_smtps(bench.work, sink_port) as (smtps_port, smtps_ca):
                measure_tool(bench, "tool_smtps", "This tool", "send, CSV, SMTPS (stunnel), no AUTH",
                             bench.csv_list, smtps_port, rows=settings.rows, smtps_ca=smtps_ca,
                             note="stunnel4 -> smtp-sink: TLS with a server in C (awdeorio's SSL/TLS needs AUTH, "
                                  "which smtp-sink -a lacks)")
        measure_far(bench, sink_port, connections_option)
    measure_scale(bench)
    return ("Postfix's sink: discards, offers PIPELINING, no AUTH (-a); TLS rows use aiosmtpd "
            "(STARTTLS, AUTH, PIPELINING offered) instead")


def main() -> None:
    """Set up, measure, print the table (and write RESULTS.md when asked)."""
    settings = parse_args()
    load_at_start = load_average()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks
    logging.getLogger("mail.log").setLevel(logging.ERROR)  # aiosmtpd's per-login deprecation notes
    ensure_debian_packages()
    peer = ensure_peer_venv()
    compile_tool()
    connections_option = tool_supports("--connections")
    log(f"this tool {'has' if connections_option else 'has no'} --connections")
    BENCH_HOME.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="work-", dir=BENCH_HOME))
    try:
        template = work / "template.txt"
        template.write_text(TEMPLATE, encoding="utf-8")
        csv_list, xlsx_list = work / "list.csv", work / "list.xlsx"
        log(f"writing the {settings.rows:,}-row lists")
        write_csv(csv_list, settings.rows)
        write_xlsx(xlsx_list, settings.rows)
        bench = Bench(settings, work, template, csv_list, xlsx_list)
        calibrate_message_size(bench)
        sink_note = run_all(bench, connections_option)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    info = system_info(settings, peer, load_at_start)
    table = results_table(bench, sink_note)
    print(f"{info}\n\n{table}", end="")
    if settings.write_results:
        write_results(info, table)


if __name__ == "__main__":
    main()
