"""A real, throwaway Postfix on 127.0.0.1 for tests.

Usage::

    with PostfixServer() as mta:
        ...  # mailmerge to mta.host / mta.port, STARTTLS trusting mta.ca_file,
             # AUTH as mta.username / mta.password
        mta.wait_for_delivery(["minsu@example.com"])
        raw = mta.delivered("minsu@example.com")[0]  # the bytes in the Maildir
        assert "auth=1 mail=1" in mta.maillog()

Everything lives in one new folder under /var/tmp (``root``, deleted by
:meth:`stop`): Postfix's ``config_directory``
(``etc``), ``queue_directory``, ``data_directory``, its ``maillog`` and the
Maildirs, plus a Dovecot of its own that only answers Postfix's SASL questions
(no IMAP; its ``instance_name`` and ``base_dir`` are its own, so it never meets
the IMAP test Dovecot). Every listener demands STARTTLS (a ``trustme``
certificate, its CA in ``ca_file``) and AUTH before MAIL, and delivers mail
for any address, through Postfix's ``virtual`` agent, into one Maildir
(:meth:`delivered` tells the messages apart by their Delivered-To).

One listener per behaviour, each with its own port in ``ports``:

- ``submission`` (also ``port``): a normal submission server;
- ``hard_error_limit``: ``smtpd_hard_error_limit = 1``, so the first error
  reply (a 550 to RCPT...) is followed by ``421`` and the end of the session;
- ``blocked``: refuses the client at once, a ``554`` greeting;
- ``connection_rate``: one connection per ``rate_time_unit`` seconds; the
  next ones get a ``421`` greeting;
- ``message_rate``: ``message_rate_limit`` messages per ``rate_time_unit``;
  the next MAIL FROM gets ``450 4.7.1``.

:meth:`refuse` and :meth:`defer` add a recipient to the access map (550 or
450 to its RCPT, on every listener). Each ``smtpd`` serves one connection
(``max_use = 1``) and reads the map when it starts, so an entry holds for
every connection opened after it was added, without a ``postfix reload``.

Needs Debian's ``postfix`` and ``dovecot-core`` and root (Postfix's master
runs as root); :func:`unavailable` says why not. No pytest import here.
"""
from __future__ import annotations

import atexit
import email.policy
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterable
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from types import TracebackType
from typing import Self, cast

import trustme

HOST = "127.0.0.1"
START_TIMEOUT = 20.0  # seconds for Dovecot's socket and Postfix's listener
RATE_TIME_UNIT = 2  # seconds: anvil's window for the rate limits, not the real minute
MESSAGE_RATE_LIMIT = 3  # messages per window on the message_rate listener
MAILDIR = "all"  # under root/mail: every delivered message
LISTENERS = ("submission", "hard_error_limit", "blocked", "connection_rate", "message_rate")

# Every service Postfix needs to take mail by SMTP and deliver it into Maildirs;
# no chroot (the instance folder is not a jail), each smtpd serves ONE connection.
MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command + args
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

LISTENER_OPTIONS = {
    "submission": "",
    "hard_error_limit": "-o smtpd_hard_error_limit=1",
    "blocked": "-o smtpd_client_restrictions=reject -o smtpd_delay_reject=no",
    "connection_rate": "-o smtpd_client_connection_rate_limit=1",
    "message_rate": f"-o smtpd_client_message_rate_limit={MESSAGE_RATE_LIMIT}",
}


def postfix_binary() -> str | None:
    """The path of ``postfix``, or None when it is not installed."""
    return shutil.which("postfix") or next(
        (p for p in ("/usr/sbin/postfix", "/usr/local/sbin/postfix") if os.access(p, os.X_OK)), None)


def dovecot_binary() -> str | None:
    """The path of ``dovecot``, or None when it is not installed."""
    return shutil.which("dovecot") or next(
        (p for p in ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot") if os.access(p, os.X_OK)), None)


def unavailable() -> str | None:
    """Why a Postfix cannot run here (a reason to skip), or None when it can."""
    if postfix_binary() is None:
        return "postfix is not installed (.ci/run installs it: apt-get install postfix)"
    if dovecot_binary() is None:
        return "dovecot is not installed (SASL AUTH for Postfix; apt-get install dovecot-core)"
    if os.geteuid() != 0:
        return "a private Postfix instance needs root (its master runs as root)"
    return None


def free_port() -> int:
    """Return a currently free TCP port on 127.0.0.1 (bind to port 0, then close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class PostfixServer:
    """A private Postfix instance and its SASL Dovecot; see the module docstring.

    ``ports``, ``port`` and ``ca_file`` are set by :meth:`start`.
    """

    host: str = HOST
    rate_time_unit: int = RATE_TIME_UNIT
    message_rate_limit: int = MESSAGE_RATE_LIMIT

    def __init__(self, *, username: str = "club@example.com", password: str = "s3cret-Pa55word!") -> None:
        if re.search(r"[:\s]", username + password):
            raise ValueError("a passwd-file cannot hold ':' or white space")
        self.username, self.password = username, password
        self.root = Path("/nonexistent")  # made by start()
        self.ports: dict[str, int] = {}
        self._dovecot: subprocess.Popen[bytes] | None = None
        self._postfix_started = False

    @property
    def port(self) -> int:
        """The normal submission listener (STARTTLS, AUTH)."""
        return self.ports["submission"]

    # The instance's places, all under root.
    etc = property(lambda self: self.root / "etc", doc="config_directory")
    queue = property(lambda self: self.root / "queue", doc="queue_directory")
    mail = property(lambda self: self.root / "mail", doc="virtual_mailbox_base")
    maillog_path = property(lambda self: self.root / "maillog", doc="maillog_file")
    access_map = property(lambda self: self.root / "etc" / "access", doc="the recipient access map")
    ca_file = property(lambda self: self.root / "ca.pem", doc="the CA of the STARTTLS certificate")

    # --- start and stop ---------------------------------------------------------

    def start(self) -> Self:
        """Write the instance, start Dovecot then Postfix; returns ``self``."""
        reason = unavailable()
        if reason:
            raise RuntimeError(reason)
        # Not under pytest's temporary folder: each pytest run closes its base
        # (/tmp/pytest-of-USER) to 0700 again, which locks Postfix out mid-session.
        self.root = Path(tempfile.mkdtemp(prefix="postfix-test-", dir="/var/tmp"))
        atexit.register(self.stop)  # should the caller never get to stop() itself
        try:
            self._write_files()
            self._postfix("check")  # also creates the queue folders
            self._start_dovecot()
            self._postfix("start")
            self._wait_for_greeting()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop Postfix and Dovecot, whatever state they are in, and delete the
        folder; never raises."""
        dovecot, self._dovecot = self._dovecot, None
        if dovecot is not None and dovecot.poll() is None:
            dovecot.terminate()  # it takes a second to go: meanwhile, Postfix stops
        if self._postfix_started:
            self._postfix_started = False
            master = self._master_pid()
            try:
                self._postfix("stop")
            except (RuntimeError, OSError, subprocess.SubprocessError):
                pass
            self._kill(master)
        if dovecot is not None:
            try:
                dovecot.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(dovecot.pid, signal.SIGKILL)  # its own session: its children only
                    dovecot.wait(timeout=10)
                except (OSError, subprocess.TimeoutExpired):
                    pass
        atexit.unregister(self.stop)
        if self.root.name.startswith("postfix-test-"):
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Self:
        """Start the instance (see :meth:`start`)."""
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None,
                 exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def _postfix(self, command: str) -> None:
        """``postfix -c etc COMMAND``; RuntimeError with what it said if it failed."""
        logged = len(self.maillog())
        if command == "start":
            self._postfix_started = True  # even if it fails half-way: stop() cleans up
        done = subprocess.run([cast(str, postfix_binary()), "-c", str(self.etc), command],
                              capture_output=True, text=True, timeout=60)
        said = done.stdout + done.stderr + self.maillog()[logged:]
        # `postfix check` warns (in the maillog) about whatever it finds odd: a
        # test instance has nothing odd.
        if done.returncode != 0 or (command == "check" and "warning" in said):
            raise RuntimeError(f"postfix {command} failed ({done.returncode}):\n{said}")

    def _master_pid(self) -> int | None:
        try:
            return int((self.queue / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    @staticmethod
    def _kill(pid: int | None, timeout: float = 10.0) -> None:
        """Wait for ``pid`` to end; SIGKILL it after ``timeout``. Never raises."""
        if pid is None:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                    return  # a zombie: stopped; its parent (not us) reaps it
            except OSError:
                return  # gone
            time.sleep(0.05)
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass

    def _start_dovecot(self) -> None:
        log = self.root / "dovecot" / "dovecot.log"
        with log.open("ab") as output:
            self._dovecot = subprocess.Popen(
                [cast(str, dovecot_binary()), "-F", "-c", str(self.root / "dovecot" / "dovecot.conf")],
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        socket_path = self.queue / "private" / "auth"
        deadline = time.monotonic() + START_TIMEOUT
        while not socket_path.exists():
            if self._dovecot.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dovecot (SASL for Postfix) did not start:\n{log.read_text('utf-8', 'replace')}")
            time.sleep(0.02)

    def _wait_for_greeting(self) -> None:
        """Read the submission listener's 220 (`postfix start` returns once the
        master listens; this proves an smtpd answers too)."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with socket.create_connection((HOST, self.port), timeout=5) as sock:
                    greeting = sock.recv(512)
                    sock.sendall(b"QUIT\r\n")
                    if greeting.startswith(b"220"):
                        return
                    raise RuntimeError(f"postfix greeted with {greeting!r}:\n{self.maillog()}")
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postfix did not answer on {HOST}:{self.port}:\n{self.maillog()}") from None
                time.sleep(0.05)

    # --- the files --------------------------------------------------------------

    def _write_files(self) -> None:
        root = self.root
        for folder in (self.etc, self.queue, root / "data", self.mail, root / "dovecot"):
            folder.mkdir(parents=True)
        root.chmod(0o755)  # Postfix's and delivery's own users must get through it
        shutil.chown(root / "data", "postfix")
        shutil.chown(self.mail, "nobody", "nogroup")
        self.ports = {name: free_port() for name in LISTENERS}

        ca = trustme.CA()
        ca.cert_pem.write_to_path(str(self.ca_file))
        chain = self.etc / "server.pem"  # the key first, then the certificates
        ca.issue_cert(HOST, "localhost").private_key_and_cert_chain_pem.write_to_path(str(chain))
        chain.chmod(0o600)  # smtpd reads it as root, before it drops privileges

        self.access_map.write_text("", encoding="utf-8")
        (self.etc / "main.cf").write_text(f"""\
# Written by tests/postfix_server.py for one test session; deleted after it.
compatibility_level = 3.6
queue_directory = {self.queue}
data_directory = {root}/data
maillog_file = {self.maillog_path}
maillog_file_prefixes = {root}
myhostname = mx.mailmerge.test
mydomain = mailmerge.test
myorigin = $mydomain
mydestination =
relay_domains =
local_transport = error:no local delivery in tests
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
smtp_dns_support_level = disabled
smtpd_peername_lookup = no
biff = no
in_flow_delay = 0
# The rate limits count in a window of seconds, not the real minute; and
# 127.0.0.1 ($mynetworks) would be exempt from them by default.
anvil_rate_time_unit = {RATE_TIME_UNIT}s
smtpd_client_event_limit_exceptions =
smtpd_tls_chain_files = {chain}
smtpd_tls_security_level = encrypt
smtpd_tls_auth_only = yes
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = private/auth
smtpd_relay_restrictions = permit_sasl_authenticated, reject
smtpd_recipient_restrictions = check_recipient_access texthash:{self.access_map}
virtual_mailbox_domains = static:all
virtual_mailbox_base = {self.mail}
# One Maildir (the final /) for every address: `virtual` allows no $1 in a
# regexp map here; Delivered-To tells the recipient of each message.
virtual_mailbox_maps = static:{MAILDIR}/
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
""", encoding="utf-8")
        listeners = "".join(
            f"{HOST}:{port} inet n - n - - smtpd -o max_use=1 -o syslog_name=postfix/{name} "
            f"{LISTENER_OPTIONS[name]}\n" for name, port in self.ports.items())
        (self.etc / "master.cf").write_text(MASTER_CF + listeners, encoding="utf-8")

        dovecot = root / "dovecot"
        passwd = dovecot / "passwd"
        passwd.write_text(f"{self.username}:{{PLAIN}}{self.password}::::::\n", encoding="utf-8")
        passwd.chmod(0o644)  # read by the auth process, which runs as the dovecot user
        (dovecot / "dovecot.conf").write_text(f"""\
# SASL for the test Postfix only: no mail protocol.
instance_name = mailmerge-postfix-sasl-{self.port}
base_dir = {dovecot}/run
state_dir = {dovecot}/state
log_path = {dovecot}/dovecot.log
protocols = none
ssl = no
auth_mechanisms = plain login
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {passwd}
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home=/nonexistent
}}
service auth {{
  unix_listener {self.queue}/private/auth {{
    mode = 0660
    user = postfix
    group = postfix
  }}
}}
""", encoding="utf-8")

    # --- helpers for tests ------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts this server's certificate."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def refuse(self, address: str, reply: str = "550 5.1.1 User unknown") -> None:
        """Answer RCPT TO ``address`` with ``reply`` (a 5xx), from the next connection on."""
        self._access(address, reply)

    def defer(self, address: str, reply: str = "450 4.2.0 Greylisted, try again later") -> None:
        """Answer RCPT TO ``address`` with ``reply`` (a 4xx), from the next connection on."""
        self._access(address, reply)

    def _access(self, address: str, reply: str) -> None:
        if not re.fullmatch(r"[45]\d\d [^\r\n]*", reply) or re.search(r"\s", address):
            raise ValueError(f"not an access map entry: {address} {reply}")
        with self.access_map.open("a", encoding="utf-8") as access:
            access.write(f"{address} {reply}\n")
        # Postfix waits (about 2 s) before it reads a table changed in the last second.
        past = time.time() - 10
        os.utime(self.access_map, (past, past))

    def maillog(self) -> str:
        """What Postfix logged so far (``disconnect from ... auth=1 mail=200``...)."""
        try:
            return self.maillog_path.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def messages(self) -> list[tuple[str, bytes]]:
        """Every delivered message, oldest first: (its Delivered-To address,
        lower case; its raw bytes). Postfix's ``virtual`` stores the bytes with
        LF line ends, after the Return-Path, Delivered-To and Received it adds."""
        maildir = self.mail / MAILDIR
        files = sorted((f for sub in ("new", "cur") for f in (maildir / sub).glob("*")),
                       key=lambda f: (f.stat().st_mtime_ns, f.name))
        found = []
        for file in files:
            raw = file.read_bytes()
            match = re.search(rb"^Delivered-To: *(\S+)$", raw.split(b"\n\n", 1)[0], re.MULTILINE | re.IGNORECASE)
            found.append((match.group(1).decode("utf-8", "replace").lower() if match else "", raw))
        return found

    def delivered(self, address: str) -> list[bytes]:
        """The raw bytes of every message delivered to ``address``, oldest first."""
        return [raw for to, raw in self.messages() if to == address.lower()]

    def recipients(self) -> list[str]:
        """The Delivered-To address of every delivered message, oldest first."""
        return [to for to, _ in self.messages()]

    def wait_for_delivery(self, addresses: Iterable[str], timeout: float = 30.0) -> None:
        """Wait until each of ``addresses`` got a message and the queue is
        empty; RuntimeError (with the maillog's end) after ``timeout``."""
        waiting = {address.lower() for address in addresses}
        deadline = time.monotonic() + timeout
        while True:
            waiting -= set(self.recipients())
            if not waiting and self.queue_is_empty():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(waiting)} addresses got nothing after {timeout:g} s "
                                   f"(such as {sorted(waiting)[:3]}):\n{self.maillog()[-4000:]}")
            time.sleep(0.1)

    def queue_is_empty(self) -> bool:
        """True when no message waits in the incoming, active or deferred queue."""
        return not any(f.is_file() for name in ("incoming", "active", "deferred")
                       for f in (self.queue / name).rglob("*"))

    @staticmethod
    def parse(raw: bytes) -> EmailMessage:
        """A delivered message, parsed with ``email.policy.default``."""
        return cast(EmailMessage, BytesParser(policy=email.policy.default).parsebytes(raw))
