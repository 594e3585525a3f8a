"""A real IMAP server (Dovecot) on 127.0.0.1 for tests.

Usage::

    with DovecotServer(users={"club@example.com": "pw"}) as srv:
        ...  # point the code under test at srv.host / srv.port, trust srv.ca_file
        srv.put("INBOX", raw_bytes)                  # add a message as the test user
        flags, internal_date, data = srv.messages("Sent")[0]

Modes: IMAPS (``implicit_tls=True``, TLS from the first byte, like port 993) or
plain IMAP where LOGIN is only allowed after STARTTLS (``implicit_tls=False``,
like port 143). ``special_use=True`` flags the Sent folder (named
``sent_name``) with ``\\Sent`` (RFC 6154), and Drafts, Junk and Trash with
theirs; ``special_use=False`` creates the same folders without any attribute,
so a client has to find the Sent folder by its name (``Sent Items``,
``보낸메일함``...).

Everything lives in one temporary folder under /var/tmp: the config, the
``trustme`` certificate (its CA in ``ca_file``), the passwd-file, the Maildirs
and the log (``log_path``, shown when the server does not start). Dovecot runs
as ``dovecot -F -c CONFIG``; started as root it drops privileges to the
``dovecot``/``dovenull`` users (from the Debian package) and keeps mail as
``nobody``, so that folder is world-readable (pytest's own tmp dirs are 0700).

Needs the ``dovecot`` binary: ``apt-get install -y dovecot-imapd`` on Debian.
No pytest import here.

:class:`HostileImapServer` is the opposite: a few lines of Python that
misbehave on purpose (a FETCH answered with a literal of gigabytes), which
Dovecot never does.
"""
from __future__ import annotations

import base64
import contextlib
import datetime as dt
import email.utils
import grp
import imaplib
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import trustme

HOST = "127.0.0.1"
START_TIMEOUT = 15.0  # seconds for Dovecot to accept connections
STOP_TIMEOUT = 10.0  # seconds for Dovecot to exit after SIGTERM

Message = tuple[tuple[str, ...], dt.datetime, bytes]  # (flags, internal date, raw bytes)


def dovecot_binary() -> str | None:
    """The path of ``dovecot``, or None when it is not installed."""
    return shutil.which("dovecot") or next(
        (path for path in ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot") if os.access(path, os.X_OK)), None)


def free_port() -> int:
    """Return a currently free TCP port on 127.0.0.1 (bind to port 0, then close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def mailbox_name(name: str) -> str:
    """``name`` as IMAP wants it on the wire: modified UTF-7 (RFC 3501 5.1.3),
    then quoted. Written here again, on purpose, so the tests do not trust
    mailmerge's own encoder to check it."""
    def shift(match: re.Match[str]) -> str:
        run = match.group()
        if run == "&":
            return "&-"
        return "&" + base64.b64encode(run.encode("utf-16-be")).decode().rstrip("=").replace("/", ",") + "-"

    encoded = re.sub(r"&|[^\x20-\x7e]+", shift, name)
    return '"' + encoded.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _internal_date(text: str) -> dt.datetime:
    """'27-Nov-2025 10:00:00 +0900' (the day may start with a space) -> aware datetime."""
    return dt.datetime.strptime(text.strip(), "%d-%b-%Y %H:%M:%S %z")


class DovecotServer:
    """A Dovecot IMAP server in a subprocess; see the module docstring.

    ``port``, ``ca_file`` and ``log_path`` are set by :meth:`start`.
    """

    host: str = HOST

    def __init__(self, *, users: dict[str, str] | None = None, special_use: bool = True,
                 sent_name: str = "Sent", implicit_tls: bool = True) -> None:
        self.users = dict(users if users is not None else {"club@example.com": "pw"})
        for user, password in self.users.items():
            if ":" in user + password or "\n" in user + password:
                raise ValueError("a passwd-file cannot hold ':' or a line break")
        self.special_use = special_use
        self.sent_name = sent_name
        self.implicit_tls = implicit_tls
        self.port = 0
        self.root: Path | None = None
        self.ca_file: Path | None = None
        self.log_path: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    # --- start and stop ---------------------------------------------------------

    def start(self) -> Self:
        """Write the config, start Dovecot and wait until it accepts; returns ``self``."""
        if self._process is not None:
            raise RuntimeError("server already started")
        binary = dovecot_binary()
        if binary is None:
            raise RuntimeError("dovecot is not installed (apt-get install -y dovecot-imapd)")
        self.root = Path(tempfile.mkdtemp(prefix="imap-test-", dir="/var/tmp"))
        self.root.chmod(0o755)  # Dovecot's unprivileged processes must get through it
        self.log_path = self.root / "dovecot.log"
        self.port = free_port()
        config = self._write_files()
        with self.log_path.open("ab") as output:  # what Dovecot says before its log is open
            self._process = subprocess.Popen(
                [binary, "-F", "-c", str(config)], stdin=subprocess.DEVNULL,
                stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_until_ready()
            self._create_plain_folders()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop Dovecot and delete its folder. SIGKILL to its process group (its
        own session: its children only) at once: a graceful stop takes a second
        or more, and nothing of a throwaway server needs to be kept."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> Self:
        """Start the server (see :meth:`start`)."""
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None,
                 exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def log(self) -> str:
        """What Dovecot wrote to its log so far."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text("utf-8", "replace")

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        assert self._process is not None
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"dovecot exited with {self._process.returncode}:\n{self.log()}")
            try:
                with socket.create_connection((HOST, self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"dovecot did not listen on {HOST}:{self.port} "
                                       f"within {START_TIMEOUT:g} s:\n{self.log()}") from None
                time.sleep(0.05)

    # --- the files --------------------------------------------------------------

    def _accounts(self) -> tuple[str, str, str, str]:
        """(internal user, its group, login user, mail user): Debian's users
        when run as root, the current user otherwise (Dovecot's non-root mode)."""
        if os.geteuid() == 0:
            return "dovecot", "dovecot", "dovenull", "nobody"
        me = pwd.getpwuid(os.geteuid()).pw_name
        return me, grp.getgrgid(os.getegid()).gr_name, me, me

    def _write_files(self) -> Path:
        assert self.root is not None
        root = self.root
        ca = trustme.CA()
        self.ca_file = root / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        cert = ca.issue_cert(HOST, "localhost")
        cert.cert_chain_pems[0].write_to_path(str(root / "server.pem"))
        for extra in cert.cert_chain_pems[1:]:
            extra.write_to_path(str(root / "server.pem"), append=True)
        cert.private_key_pem.write_to_path(str(root / "server.key"))
        # Dovecot reads the key as root before dropping privileges.
        (root / "server.key").chmod(0o600)

        passwd = root / "passwd"
        passwd.write_text("".join(f"{user}:{{PLAIN}}{password}::::::\n"
                                  for user, password in self.users.items()), encoding="utf-8")
        passwd.chmod(0o644)  # read by the auth process, which runs as the internal user

        internal, internal_group, login, mail_user = self._accounts()
        mail = root / "mail"
        mail.mkdir()
        if os.geteuid() == 0:
            entry = pwd.getpwnam(mail_user)
            os.chown(mail, entry.pw_uid, entry.pw_gid)
        mail_group = grp.getgrgid(pwd.getpwnam(mail_user).pw_gid).gr_name

        plain_port, ssl_port = (0, self.port) if self.implicit_tls else (self.port, 0)
        mailboxes = ""
        if self.special_use:
            for name, use in ((self.sent_name, "\\Sent"), ("Drafts", "\\Drafts"),
                              ("Junk", "\\Junk"), ("Trash", "\\Trash")):
                mailboxes += f'  mailbox "{name}" {{\n    special_use = {use}\n    auto = subscribe\n  }}\n'
        config = root / "dovecot.conf"
        config.write_text(f"""\
# Written by tests/imap_server.py for one test; deleted after it.
base_dir = {root}/run
state_dir = {root}/state
instance_name = mailmerge-test-{self.port}
log_path = {self.log_path}
protocols = imap
listen = {HOST}
default_internal_user = {internal}
default_internal_group = {internal_group}
default_login_user = {login}
first_valid_uid = 1
first_valid_gid = 1
mail_uid = {mail_user}
mail_gid = {mail_group}
mail_location = maildir:{mail}/%u
ssl = required
ssl_cert = <{root}/server.pem
ssl_key = <{root}/server.key
disable_plaintext_auth = yes
auth_mechanisms = plain login
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {passwd}
}}
userdb {{
  driver = static
  args = uid={mail_user} gid={mail_group} home={mail}/%u
}}
namespace inbox {{
  inbox = yes
{mailboxes}}}
service imap-login {{
  inet_listener imap {{
    address = {HOST}
    port = {plain_port}
  }}
  inet_listener imaps {{
    address = {HOST}
    port = {ssl_port}
    ssl = yes
  }}
}}
""", encoding="utf-8")
        return config

    def _create_plain_folders(self) -> None:
        """Without special_use: the same folders, made by CREATE, with no attribute."""
        if self.special_use:
            return
        for user in self.users:
            with self.connect(user) as imap:
                for name in (self.sent_name, "Drafts", "Junk", "Trash"):
                    self._check(imap.create(mailbox_name(name)))
                    self._check(imap.subscribe(mailbox_name(name)))

    # --- helpers for tests ------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts this server's certificate."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def connect(self, user: str | None = None) -> imaplib.IMAP4:
        """An imaplib connection, logged in as ``user`` (the first user by default)."""
        user = user or next(iter(self.users))
        imap: imaplib.IMAP4
        if self.implicit_tls:
            imap = imaplib.IMAP4_SSL(HOST, self.port, ssl_context=self.ssl_context(), timeout=10)
        else:
            imap = imaplib.IMAP4(HOST, self.port, timeout=10)
            imap.starttls(ssl_context=self.ssl_context())
        imap.login(user, self.users[user])
        return imap

    @staticmethod
    def _check(response: tuple[str, Sequence[Any]]) -> list[Any]:
        typ, data = response
        if typ != "OK":
            raise RuntimeError(f"IMAP said {typ}: {data!r}")
        return list(data)

    def create(self, folder: str, user: str | None = None) -> None:
        """Create (and subscribe) a folder with no attribute."""
        with self.connect(user) as imap:
            self._check(imap.create(mailbox_name(folder)))
            self._check(imap.subscribe(mailbox_name(folder)))

    def put(self, folder: str, raw: bytes, flags: Iterable[str] = (), user: str | None = None) -> None:
        """APPEND ``raw`` to ``folder`` with ``flags`` (e.g. ``["\\\\Seen"]``); the
        internal date is the message's Date header when it has one."""
        match = re.search(rb"^Date:[ \t]*(.+)$", raw.split(b"\r\n\r\n")[0].split(b"\n\n")[0], re.MULTILINE | re.IGNORECASE)
        when = None
        if match:
            try:
                when = email.utils.parsedate_to_datetime(match.group(1).decode("ascii", "replace").strip())
            except (TypeError, ValueError):
                when = None
        date_time = imaplib.Time2Internaldate(when) if when and when.tzinfo else None
        flag_list = "(" + " ".join(flags) + ")" if flags else None
        with self.connect(user) as imap:
            self._check(imap.append(mailbox_name(folder), flag_list, date_time, raw))

    def messages(self, folder: str, user: str | None = None) -> list[Message]:
        """Every message of ``folder`` in order: (flags, internal date, raw bytes).

        Read with EXAMINE and BODY.PEEK[], so reading changes no flag."""
        with self.connect(user) as imap:
            [count] = self._check(imap.select(mailbox_name(folder), readonly=True))
            if int(count or b"0") == 0:
                return []
            fetched = self._check(imap.fetch("1:*", "(FLAGS INTERNALDATE BODY.PEEK[])"))
        found: list[Message] = []
        for item in fetched:
            if not isinstance(item, tuple):
                continue
            head = item[0].decode("ascii", "replace")
            flags = re.search(r"FLAGS \(([^)]*)\)", head)
            date = re.search(r'INTERNALDATE "([^"]+)"', head)
            assert flags and date, head
            found.append((tuple(flags.group(1).split()), _internal_date(date.group(1)), item[1]))
        return found

    def folders(self, user: str | None = None) -> dict[str, tuple[str, ...]]:
        """Every mailbox (its name as on the wire) and its LIST attributes."""
        with self.connect(user) as imap:
            data = self._check(imap.list())
        result: dict[str, tuple[str, ...]] = {}
        for line in data:
            assert isinstance(line, bytes)
            match = re.match(rb'\(([^)]*)\) (?:"[^"]*"|NIL) (.*)$', line)
            assert match, line
            name = match.group(2).decode("ascii")
            if name.startswith('"'):
                name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
            result[name] = tuple(match.group(1).decode("ascii").split())
        return result


class HostileImapServer:
    """A tiny IMAP server (IMAPS, a ``trustme`` certificate, one client at a
    time) that misbehaves on purpose, as Dovecot never does.

    It greets, accepts any LOGIN, EXAMINE and SEARCH, and answers the first
    FETCH with ``count`` literals, each announced as ``announce`` bytes, of
    which it sends ``send`` bytes. When it sent less than it announced, it
    closes the connection right after; else it ends the FETCH with OK. Each
    client line it received is kept in ``commands``.

        with HostileImapServer(announce=2_000_000_000, send=65536) as server:
            ...  # point the client at server.host / server.port, trust server.ca_file
    """

    host: str = HOST

    def __init__(self, *, announce: int, send: int, count: int = 1) -> None:
        self.announce, self.send, self.count = announce, min(send, announce), count
        self.commands: list[str] = []
        self.port = 0
        self.ca_file: Path | None = None
        self._root: Path | None = None
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._context: ssl.SSLContext | None = None

    def __enter__(self) -> Self:
        self._root = Path(tempfile.mkdtemp(prefix="hostile-imap-"))
        ca = trustme.CA()
        self.ca_file = self._root / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(HOST, "localhost").configure_cert(self._context)
        self._listener = socket.create_server((HOST, 0))
        self._listener.settimeout(0.2)  # so the thread notices stop()
        self.port = int(self._listener.getsockname()[1])
        self._thread = threading.Thread(target=self._serve, name="hostile-imap", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None,
                 exc: BaseException | None, traceback: TracebackType | None) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)

    def _serve(self) -> None:
        while self._listener is not None:
            try:
                connection, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            assert self._context is not None
            try:
                with self._context.wrap_socket(connection, server_side=True) as client:
                    client.settimeout(10)
                    self._talk(client)
            except OSError:  # the client hung up, as it should when it gives up
                pass

    def _talk(self, client: ssl.SSLSocket) -> None:
        reader = client.makefile("rb")
        client.sendall(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hostile server ready\r\n")
        for raw in reader:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self.commands.append(line)
            tag, _, rest = line.partition(" ")
            command = rest.upper()
            if command.startswith("CAPABILITY"):
                client.sendall(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n" + tag.encode() + b" OK done\r\n")
            elif command.startswith(("EXAMINE", "SELECT")):
                client.sendall(b"* 1 EXISTS\r\n* OK [UIDVALIDITY 1] ok\r\n" + tag.encode() + b" OK [READ-ONLY] done\r\n")
            elif command.startswith("UID SEARCH"):
                client.sendall(b"* SEARCH 1\r\n" + tag.encode() + b" OK done\r\n")
            elif command.startswith("UID FETCH"):
                for number in range(1, self.count + 1):
                    client.sendall(f"* {number} FETCH (UID {number} BODY[]<0> {{{self.announce}}}\r\n".encode())
                    left = self.send
                    while left:
                        chunk = min(left, 1 << 16)
                        client.sendall(b"x" * chunk)
                        left -= chunk
                    if self.send < self.announce:
                        return  # and the connection closes
                    client.sendall(b")\r\n")
                client.sendall(tag.encode() + b" OK done\r\n")
            elif command.startswith("LOGOUT"):
                client.sendall(b"* BYE bye\r\n" + tag.encode() + b" OK done\r\n")
                return
            else:  # LOGIN and the rest
                client.sendall(tag.encode() + b" OK done\r\n")
