"""IMAP: a copy of each sent message in the Sent folder, and the bounces that
came back.

One :class:`ImapSession` does all the work over one connection::

    with ImapSession(ImapConfig(host="imap.gmail.com", username="me@gmail.com"), password) as imap:
        folder = imap.sent_folder()                    # the folder flagged \\Sent, else "Sent"...
        imap.append(folder, raw_message, message["Date"])
        for bounce in imap.find_bounces(since=datetime.date(2026, 11, 1)):
            print(bounce.recipient, bounce.status, bounce.diagnostic)

The module has four parts, in this order:

1. mailbox names: IMAP's modified UTF-7 (``보낸메일함`` is ``&vPSwuLpUx3zVaA-`` on
   the wire), quoting, and reading LIST replies;
2. the conversation log (``--verbose``), with the password masked;
3. :class:`ImapSession`: connect, log in, find the Sent folder, APPEND,
   look for bounces (read-only: nothing is marked as read), move them;
4. :func:`parse_bounce`: which recipients a bounce says failed, from a
   standard delivery report (RFC 3464) or from the plain-text kinds that
   Gmail, Postfix and Sendmail also send.

Every failure is an :class:`ImapError` with a message for a person.
"""

from __future__ import annotations

import base64
import datetime
import email.errors
import email.header
import email.policy
import email.utils
import imaplib
import re
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from email.message import EmailMessage, Message
from email.parser import BytesParser, HeaderParser
from types import TracebackType
from typing import Any, Self

from ..config.file import ImapConfig
from ..config.providers import PROVIDERS
from ..errors import MailmergeError


class ImapError(MailmergeError):
    """The IMAP server could not be reached, refused the login, or refused a
    command (exit 1)."""


@dataclass(frozen=True)
class MailInfo:
    """What a mail says of itself: enough for a person to find it in the inbox.
    A stranger's text: escape it before showing it on a terminal."""

    date: str = ""  # its Date header
    sender: str = ""  # its From header
    subject: str = ""


@dataclass(frozen=True)
class Bounce:
    """One recipient that a mail says could not be reached.

    Anyone can send a mail that says so. Only a delivery report (``report``)
    that references a message we sent (``references``) to that recipient is
    proof; archive.py checks that against the journal.
    """

    uid: str  # the bounce's UID in the folder searched ("" from parse_bounce alone)
    recipient: str  # e.g. "x@example.net"
    status: str  # RFC 3463 status code, e.g. "5.1.1"
    diagnostic: str  # what the server said, e.g. "smtp; 550 5.1.1 <x@y>: user unknown"
    # The Message-IDs ("<...>") of the messages it says bounced: from the attached
    # original (message/rfc822 or text/rfc822-headers), In-Reply-To and References.
    references: tuple[str, ...] = ()
    report: bool = False  # from a delivery status report (RFC 3464), not guessed from a text
    mail: MailInfo = field(default=MailInfo(), compare=False)  # the mail it came in


# Folder names that mean "Sent" when no folder carries the \Sent attribute,
# in the order they are preferred (also found under "INBOX." or "INBOX/").
SENT_NAMES = ("Sent", "Sent Items", "Sent Messages", "Sent Mail", "보낸메일함", "보낸편지함")

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
FETCH_BATCH = 50  # messages per UID FETCH in find_bounces
# find_bounces reads only the start of each message: a bounce is far smaller,
# and the original it quotes begins with its headers.
BOUNCE_BYTES = 1 << 20
# The most mailmerge reads in answer to one command (a batch of message starts
# fits with room to spare). More means the server misbehaves: without a limit
# it could announce gigabytes and have them allocated.
MAX_REPLY_BYTES = 64 << 20


# --- 1. mailbox names ------------------------------------------------------------


def mutf7_encode(name: str) -> str:
    """A mailbox name as IMAP sends it: modified UTF-7 (RFC 3501 section 5.1.3).

    Printable ASCII stays as it is, except ``&`` which becomes ``&-``; any other
    run of characters becomes ``&`` + base64 of its UTF-16 (with ``,`` for
    ``/``, no padding) + ``-``. ``"보낸메일함"`` -> ``"&vPSwuLpUx3zVaA-"``.
    """

    def shift(match: re.Match[str]) -> str:
        run = match.group()
        if run == "&":
            return "&-"
        encoded = base64.b64encode(run.encode("utf-16-be")).decode("ascii")
        return "&" + encoded.rstrip("=").replace("/", ",") + "-"

    return re.sub(r"&|[^\x20-\x7e]+", shift, name)


def mutf7_decode(name: str) -> str:
    """The human form of a modified UTF-7 mailbox name; the inverse of
    :func:`mutf7_encode`. A name that is not valid modified UTF-7 comes back
    unchanged (some servers send UTF-8)."""

    def unshift(match: re.Match[str]) -> str:
        run = match.group(1)
        if not run:
            return "&"
        padded = run.replace(",", "/") + "=" * (-len(run) % 4)
        return base64.b64decode(padded).decode("utf-16-be")

    try:
        return re.sub(r"&([A-Za-z0-9+,]*)-", unshift, name)
    except (ValueError, UnicodeDecodeError):
        return name


def quote_folder(name: str) -> str:
    """A mailbox name ready for an IMAP command: encoded, then quoted (imaplib
    sends arguments as they are, so ``Sent Items`` would be two arguments)."""
    encoded = mutf7_encode(name)
    return '"' + encoded.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Folder:
    """One line of a LIST reply."""

    name: str  # the human form (decoded)
    attributes: frozenset[str]  # lower case, e.g. {"\\hasnochildren", "\\sent"}
    delimiter: str  # the hierarchy separator, e.g. "/" or "." ("" when flat)


_LIST_LINE = re.compile(
    rb'\((?P<attributes>[^)]*)\) (?P<delimiter>"(?:[^"\\]|\\.)*"|NIL) (?P<name>.*)$', re.DOTALL | re.IGNORECASE)


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    return text


def parse_list_reply(data: list[Any]) -> list[Folder]:
    """The folders of a LIST reply as imaplib returns it: one bytes line
    per mailbox, or a (line, name) tuple when the server sent the name as a
    literal."""
    folders = []
    for item in data:
        line, literal = (item[0], item[1]) if isinstance(item, tuple) else (item, None)
        match = _LIST_LINE.match(line) if isinstance(line, bytes) else None
        if match is None:
            continue
        raw_name = literal if literal is not None else match["name"]
        name = _unquote(raw_name.decode("utf-8", "replace").strip())
        delimiter = _unquote(match["delimiter"].decode("ascii", "replace"))
        attributes = frozenset(match["attributes"].decode("ascii", "replace").lower().split())
        folders.append(Folder(mutf7_decode(name), attributes, "" if delimiter == "NIL" else delimiter))
    return folders


def find_sent_by_name(folders: list[Folder]) -> str | None:
    """The Sent folder among ``folders`` by one of :data:`SENT_NAMES`
    (also as ``INBOX.Sent``, ``INBOX/Sent``), or None."""
    usable = [box for box in folders if "\\noselect" not in box.attributes]
    for wanted in SENT_NAMES:
        for prefix in ("", "inbox.", "inbox/"):
            for box in usable:
                if box.name.casefold() == prefix + wanted.casefold():
                    return box.name
    return None


# --- 2. the conversation log -----------------------------------------------------


class _ReplyTooBig(Exception):
    """The server sent more than MAX_REPLY_BYTES in answer to one command."""

    def __init__(self, piece: int) -> None:
        super().__init__(piece)
        self.piece = piece  # the size of the line or literal that went over


class _Conversation:
    """Mixin for imaplib's classes: tell ``log`` every line sent and received,
    with the password of LOGIN (or an AUTHENTICATE exchange) masked and a
    message's content summed up in one line; and read no more than
    :data:`MAX_REPLY_BYTES` in answer to one command (imaplib itself limits
    only the length of a line, not a literal)."""

    log: Callable[[str], None] | None = None
    _masking = False  # inside AUTHENTICATE: client lines are secrets
    _received = 0  # bytes read since the last command went out

    def __init__(self, *args: Any, log: Callable[[str], None] | None = None, **kwargs: Any) -> None:
        self.log = log  # set first: the constructor already reads the greeting
        super().__init__(*args, **kwargs)

    def send(self, data: Any) -> None:  # bytes; typed as imaplib's own
        self._received = 0
        if self.log is not None:
            described = self._describe(bytes(data))
            if described:
                self.log("C: " + described)
        super().send(data)  # type: ignore[misc]

    def read(self, size: int) -> bytes:
        self._count(size)  # before reading: the size is the server's word, and it may be gigabytes
        data: bytes = super().read(size)  # type: ignore[misc]
        return data

    def readline(self) -> bytes:
        line: bytes = super().readline()  # type: ignore[misc]
        self._count(len(line))
        if not line.startswith(b"+"):
            self._masking = False
        if self.log is not None:
            self.log("S: " + line.decode("utf-8", "replace").rstrip("\r\n"))
        return line

    def _count(self, size: int) -> None:
        self._received += size
        if self._received > MAX_REPLY_BYTES:
            raise _ReplyTooBig(size)

    def _describe(self, data: bytes) -> str:
        """One line for the log about ``data`` ("" for a bare line end)."""
        text = data.decode("utf-8", "replace").rstrip("\r\n")
        if not text:
            return ""
        words = text.split(" ")  # tag, command, arguments
        command = words[1].upper() if len(words) > 1 else ""
        if self._masking:
            return "********"
        if command == "LOGIN":
            return " ".join(words[:3]) + " ********"
        if command == "AUTHENTICATE":
            self._masking = True
            return " ".join(words[:3])
        if "\n" in text or len(data) > 1000:
            return f"(the message, {len(data)} bytes)"
        return text


class _IMAP4(_Conversation, imaplib.IMAP4):
    pass


class _IMAP4_SSL(_Conversation, imaplib.IMAP4_SSL):
    pass


def _list_special_use(imap: imaplib.IMAP4) -> tuple[str, list[Any]]:
    """LIST (SPECIAL-USE) "" "*" through imaplib's public API: the command
    (``xatom``), then the untagged LIST lines it brought (``response``)."""
    typ, data = imap.xatom("LIST", "(SPECIAL-USE)", '""', '"*"')
    if typ != "OK":
        return typ, data
    _, lines = imap.response("LIST")
    return typ, [line for line in lines if line is not None]


def _too_big(where: str, what: str, error: _ReplyTooBig) -> ImapError:
    """The error for a server that sent more than MAX_REPLY_BYTES."""
    limit = MAX_REPLY_BYTES >> 20
    return ImapError(f"{where} sent or announced more than {limit} MB while trying to {what} (the last piece alone: "
                     f"{error.piece:,} bytes), so mailmerge stopped reading: it reads at most {limit} MB "
                     "per answer. The IMAP server is misbehaving: try again later, or tell its administrator.")


def _error_text(error: BaseException) -> str:
    """The server's words from an imaplib error (which holds bytes)."""
    value = error.args[0] if error.args else str(error)
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _reply_text(data: list[Any]) -> str:
    """The text of a tagged NO/BAD reply as imaplib returns it."""
    last = data[-1] if data else b""
    return last.decode("utf-8", "replace") if isinstance(last, bytes) else str(last)


def _login_hint(host: str) -> str:
    """What to do when this IMAP server refuses the password."""
    known = next((p for p in PROVIDERS.values() if p.imap_host == host.lower()), None)
    if known is not None:
        return known.login_hint
    return "Check username in [imap] and the password (see 'Where the password comes from' in the README)."


def internal_date(date_header: str | None) -> datetime.datetime:
    """The time to file a message under: its Date header (with its own offset;
    a date without a zone counts as UTC), or now when it has none."""
    try:
        when = email.utils.parsedate_to_datetime(date_header or "")
    except (TypeError, ValueError, IndexError):
        return datetime.datetime.now(datetime.UTC)
    return when if when.tzinfo else when.replace(tzinfo=datetime.UTC)


def imap_date(day: datetime.date) -> str:
    """``27-Nov-2026``: a date for SEARCH SINCE (English month names always)."""
    return f"{day.day}-{MONTHS[day.month - 1]}-{day.year}"


# --- 3. the session --------------------------------------------------------------


class ImapSession:
    """One IMAP session for all the work. Use as a context manager::

        with ImapSession(config, password, log=print) as imap:
            imap.append(imap.sent_folder(), raw, date_header)

    ``log`` receives the conversation (``--verbose``); the password never
    appears in it nor in any error.
    """

    def __init__(self, config: ImapConfig, password: str, *,
                 log: Callable[[str], None] | None = None) -> None:
        self.config = config
        self._password = password
        self._log = log
        self._imap: imaplib.IMAP4 | None = None
        self._examined: str | None = None  # the folder find_bounces last read
        self.capabilities: frozenset[str] = frozenset()  # upper case, refreshed after login

    @property
    def where(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    # --- opening and closing ------------------------------------------------------

    def open(self) -> None:
        """Connect, secure the connection (verified TLS) and log in, once;
        raise :class:`ImapError` with what to do."""
        config = self.config
        if config.security not in ("ssl", "starttls"):
            raise ImapError(f"[imap] security = '{config.security}' is not ssl or starttls")
        if not config.username:
            raise ImapError("set username in [imap] (or in [smtp]): IMAP always needs a login")
        if config.ca_file is not None and not config.ca_file.is_file():
            raise ImapError(f"ca_file {config.ca_file} (in [imap]) does not exist")
        context = ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else None)
        try:
            imap = self._connect(context)
            self._login(imap)
            self._refresh_capabilities(imap)
        except ImapError:
            self.abort()
            raise
        except _ReplyTooBig as error:
            self.abort()
            raise _too_big(self.where, "connect and log in", error) from None
        except ssl.SSLCertVerificationError as error:
            self.abort()
            raise ImapError(
                f"the certificate of {self.where} could not be verified ({error.verify_message}); "
                "if your server uses a private certificate authority, set ca_file in [imap]"
            ) from None
        except ssl.SSLError as error:
            self.abort()
            raise ImapError(
                f"TLS with {self.where} failed ({error.reason}); port 993 wants "
                'security = "ssl", port 143 wants security = "starttls"'
            ) from None
        except socket.gaierror:
            self.abort()
            raise ImapError(f"cannot find the server '{config.host}'; check host in [imap]") from None
        except TimeoutError:
            self.abort()
            raise ImapError(f"{self.where} did not answer within {config.timeout:g} s; "
                            "check host and port in [imap]") from None
        except (OSError, imaplib.IMAP4.error) as error:
            self.abort()
            raise ImapError(f"cannot connect to {self.where}: {_error_text(error)}; "
                            "check host, port and security in [imap]") from None

    def _connect(self, context: ssl.SSLContext) -> imaplib.IMAP4:
        """The TCP connection, with TLS from the start or after STARTTLS
        (kept in ``self._imap`` as soon as it exists, so abort() closes it)."""
        config = self.config
        if config.security == "ssl":
            self._imap = _IMAP4_SSL(config.host, config.port, ssl_context=context,
                                    timeout=config.timeout, log=self._log)
            return self._imap
        self._imap = imap = _IMAP4(config.host, config.port, timeout=config.timeout, log=self._log)
        if "STARTTLS" not in imap.capabilities:
            raise ImapError(f"{self.where} does not offer STARTTLS, so the connection cannot be "
                            'encrypted; no password was sent. Use security = "ssl" (port 993).')
        imap.starttls(ssl_context=context)
        return imap

    def _login(self, imap: imaplib.IMAP4) -> None:
        """LOGIN once (AUTHENTICATE PLAIN for a non-ASCII name or password,
        which LOGIN cannot carry); a refused password is never tried twice."""
        username, password = self.config.username or "", self._password
        try:
            if (username + password).isascii():
                imap.login(_quote(username), password)
            elif "AUTH=PLAIN" in imap.capabilities:
                imap.authenticate("PLAIN", lambda challenge: f"\0{username}\0{password}".encode())
            else:
                raise ImapError(f"{self.config.host} cannot take a user name or password with "
                                "non-ASCII characters (it offers no AUTH=PLAIN)")
        except imaplib.IMAP4.abort:
            raise  # the connection broke: reported by open()
        except imaplib.IMAP4.error as error:
            raise ImapError(
                f"{self.config.host} refused the login for {username}: {_error_text(error)}. "
                f"{_login_hint(self.config.host)}"
            ) from None

    def _refresh_capabilities(self, imap: imaplib.IMAP4) -> None:
        """Ask CAPABILITY again: servers announce more (MOVE, SPECIAL-USE...)
        once logged in."""
        typ, data = imap.capability()
        if typ == "OK" and data and isinstance(data[-1], bytes):
            imap.capabilities = tuple(data[-1].decode("ascii", "replace").upper().split())
        self.capabilities = frozenset(str(word).upper() for word in imap.capabilities)

    def close(self) -> None:
        """Say LOGOUT and close; never raises."""
        imap, self._imap = self._imap, None
        if imap is not None:
            try:
                imap.logout()
            except (imaplib.IMAP4.error, OSError):
                self._shutdown(imap)

    def abort(self) -> None:
        """Close the socket without LOGOUT (after an error)."""
        imap, self._imap = self._imap, None
        if imap is not None:
            self._shutdown(imap)

    @staticmethod
    def _shutdown(imap: imaplib.IMAP4) -> None:
        try:
            imap.shutdown()
        except (OSError, AttributeError):  # AttributeError: never got a socket
            pass

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    # --- commands -----------------------------------------------------------------

    def _command(self, what: str, run: Callable[[imaplib.IMAP4], tuple[str, list[Any]]]) -> list[Any]:
        """Run one imaplib call; an error or a NO becomes an ImapError saying ``what``."""
        if self._imap is None:
            raise ImapError("the IMAP session is not open")
        try:
            typ, data = run(self._imap)
        except _ReplyTooBig as error:
            self.abort()
            raise _too_big(self.where, what, error) from None
        except imaplib.IMAP4.abort as error:
            self.abort()
            raise ImapError(f"the connection to {self.where} broke while trying to {what}: "
                            f"{_error_text(error)}") from None
        except (imaplib.IMAP4.error, OSError) as error:
            raise ImapError(f"{self.config.host} could not {what}: {_error_text(error)}") from None
        if typ != "OK":
            raise ImapError(f"{self.config.host} could not {what}: {_reply_text(data)}")
        return data

    def _select(self, folder: str, *, readonly: bool) -> None:
        """SELECT (or EXAMINE, which can change nothing) ``folder``."""
        verb = "read" if readonly else "open"
        self._command(f"{verb} the folder '{folder}'",
                      lambda imap: imap.select(quote_folder(folder), readonly=readonly))

    def list_folders(self, *, special_use: bool = False) -> list[Folder]:
        """Every mailbox (LIST "" "*"), or only those with a special use
        (LIST (SPECIAL-USE) "" "*", RFC 6154)."""
        if special_use:  # imaplib's list() cannot send selection options
            data = self._command("list the special folders", _list_special_use)
        else:
            data = self._command("list the folders", lambda imap: imap.list('""', '"*"'))
        return parse_list_reply(data)

    def sent_folder(self, override: str | None = None) -> str:
        """The folder to save sent messages in (its human name): ``override``
        when given; else the folder flagged ``\\Sent``; else one with a usual
        name (:data:`SENT_NAMES`); else an ImapError."""
        if override:
            return override
        if "SPECIAL-USE" in self.capabilities:
            flagged = _flagged_sent(self.list_folders(special_use=True))
            if flagged is not None:
                return flagged
        folders = self.list_folders()  # servers without SPECIAL-USE may still flag it
        found = _flagged_sent(folders) or find_sent_by_name(folders)
        if found is not None:
            return found
        names = ", ".join(box.name for box in folders) or "none"
        raise ImapError(
            f"cannot tell which folder on {self.config.host} holds sent messages: none is flagged "
            f"\\Sent and none is named {', '.join(SENT_NAMES)}. Its folders: {names}. "
            "Name it with --sent-folder NAME (or sent_folder in [imap])."
        )

    def append(self, folder: str, message: bytes, date_header: str) -> None:
        """Store ``message`` in ``folder``, marked as read (``\\Seen``), dated
        (INTERNALDATE) by its Date header as a mail program would."""
        when = imaplib.Time2Internaldate(internal_date(date_header))
        try:
            self._command(f"save the message in '{folder}'",
                          lambda imap: imap.append(quote_folder(folder), r"(\Seen)", when, message))
        except ImapError as error:
            if "TRYCREATE" in str(error).upper():
                raise ImapError(f"{error}; the folder does not exist: check --sent-folder "
                                "(or sent_folder in [imap])") from None
            raise

    def find_bounces(self, since: datetime.date, folder: str = "INBOX") -> list[Bounce]:
        """The failed recipients of every bounce in ``folder`` that arrived
        on or after ``since``. Read-only: EXAMINE and BODY.PEEK[], so no
        message gets marked as read. Reads the first :data:`BOUNCE_BYTES` of
        each message, :data:`FETCH_BATCH` messages at a time."""
        self._select(folder, readonly=True)
        self._examined = folder
        data = self._command(f"search '{folder}'", lambda imap: imap.uid("SEARCH", "SINCE", imap_date(since)))
        uids = [uid.decode("ascii") for uid in (data[0] or b"").split()] if data else []
        bounces: list[Bounce] = []
        for start in range(0, len(uids), FETCH_BATCH):
            bounces += self._bounces_in(folder, ",".join(uids[start:start + FETCH_BATCH]))
        return bounces

    def _bounces_in(self, folder: str, uid_set: str) -> list[Bounce]:
        """FETCH BODY.PEEK[] (which leaves \\Seen alone) of ``uid_set``, the
        first BOUNCE_BYTES of each; their bounces."""
        fetched = self._command(f"read messages in '{folder}'",
                                lambda imap: imap.uid("FETCH", uid_set, f"(BODY.PEEK[]<0.{BOUNCE_BYTES}>)"))
        return [replace(bounce, uid=uid) for uid, raw in _fetched_bodies(fetched) for bounce in _parse_raw(raw)]

    def move(self, uids: list[str], folder: str, *, source: str | None = None) -> None:
        """Move messages (by UID) from ``source`` (default: the folder that
        :meth:`find_bounces` read, else INBOX) to ``folder``: UID MOVE when the
        server has MOVE (RFC 6851), else COPY, flag \\Deleted and expunge them."""
        if not uids:
            return
        source = source or self._examined or "INBOX"
        self._select(source, readonly=False)
        target, uid_set = quote_folder(folder), ",".join(uids)
        what = f"move messages to '{folder}'"
        if "MOVE" in self.capabilities:
            self._command(what, lambda imap: imap.uid("MOVE", uid_set, target))
            return
        self._command(what, lambda imap: imap.uid("COPY", uid_set, target))
        self._command(what, lambda imap: imap.uid("STORE", uid_set, "+FLAGS.SILENT", r"(\Deleted)"))
        if "UIDPLUS" in self.capabilities:  # expunge only these, not what the user marked
            self._command(what, lambda imap: imap.uid("EXPUNGE", uid_set))
        else:
            self._command(what, lambda imap: imap.expunge())


def _flagged_sent(folders: list[Folder]) -> str | None:
    return next((box.name for box in folders
                 if "\\sent" in box.attributes and "\\noselect" not in box.attributes), None)


def _fetched_bodies(data: list[Any]) -> Iterator[tuple[str, bytes]]:
    """(uid, raw message) from a UID FETCH ... (BODY.PEEK[]) reply. imaplib
    gives (b'7 (UID 42 BODY[]<0> {1234}', raw) tuples; the UID may also come
    after the literal, in the bytes item that follows."""
    for index, item in enumerate(data):
        if not isinstance(item, tuple):
            continue
        head, raw = item[0], item[1]
        after = data[index + 1] if index + 1 < len(data) and isinstance(data[index + 1], bytes) else b""
        match = re.search(rb"UID (\d+)", head) or re.search(rb"UID (\d+)", after)
        if match:
            yield match.group(1).decode("ascii"), raw


def _parse_raw(raw: bytes) -> list[Bounce]:
    """parse_bounce on raw bytes; a message too broken to read is not a bounce."""
    try:
        message = BytesParser(policy=email.policy.default).parsebytes(raw)
        assert isinstance(message, EmailMessage)
        return parse_bounce(message)
    except (email.errors.MessageError, ValueError, LookupError):
        return []


# --- 4. bounces --------------------------------------------------------------------

_STATUS = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")
_MESSAGE_ID = re.compile(r"<\s*([^<>\s]+)\s*>")
_ADDRESS = r"[^\s<>()\"',;:]+@[^\s<>()\"',;:]+[^\s<>()\"',;:.]"
_BOUNCE_SENDERS = ("mailer-daemon", "mailerdaemon", "mail-daemon", "postmaster")
_BOUNCE_SUBJECTS = ("delivery status notification (failure)", "undelivered mail returned to sender",
                    "undeliverable", "delivery failure", "mail delivery failed", "returned mail",
                    "failure notice", "delivery has failed", "undelivered mail")
_NOT_FAILURE_SUBJECTS = ("delay", "warning", "still being retried", "will retry")


def parse_bounce(message: EmailMessage) -> list[Bounce]:
    """The recipients that ``message`` reports as failed (``uid`` is ``""``);
    an empty list when it is not a bounce.

    A delivery report (RFC 3464: ``multipart/report`` with a
    ``message/delivery-status`` part) gives one entry per recipient with
    ``Action: failed``; delayed, delivered, relayed and expanded recipients are
    not failures. A bounce without that part (old Gmail, Sendmail, qmail...)
    is recognised by its sender, subject or ``X-Failed-Recipients`` header,
    and read from its text. Ordinary replies are never bounces.

    Only the first kind has ``report`` set, and ``references`` come only from
    where a report puts them: a mail's text and subject prove nothing.
    """
    report = next((part for part in _own_parts(message)
                   if part.get_content_type() in ("message/delivery-status", "message/global-delivery-status")),
                  None)
    if report is not None:
        bounces = _from_delivery_status(message, report)
    elif _looks_like_bounce(message):
        bounces = _from_text(message)
    else:
        return []
    mail = _mail_info(message)
    return [replace(bounce, mail=mail) for bounce in bounces]


def _own_parts(message: Message) -> Iterator[Message]:
    """The message and its parts, not looking inside attached messages (a
    bounce attaches the original; a forwarded bounce is not ours)."""
    yield message
    payload = message.get_payload()
    if message.get_content_maintype() == "multipart" and isinstance(payload, list):
        for part in payload:
            if isinstance(part, Message):
                yield from _own_parts(part)


def _one_line(text: object) -> str:
    return " ".join(str(text or "").split())


def _report_fields(report: Message) -> list[Message]:
    """The header blocks of a delivery-status part: per-message first, then
    one per recipient. The email package splits message/delivery-status
    itself; message/global-delivery-status (RFC 6533) it reads as one
    message, whose body holds the recipients' blocks: split here."""
    payload = report.get_payload()
    if report.get_content_type() == "message/delivery-status" and isinstance(payload, list):
        return [block for block in payload if isinstance(block, Message)]
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        inner = payload[0]
        text = "".join(f"{name}: {value}\n" for name, value in inner.items()) + "\n" + str(inner.get_payload())
    else:
        raw = report.get_payload(decode=True)
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(payload)
    blocks = re.split(r"\r?\n[ \t]*\r?\n", text.strip())
    return [HeaderParser().parsestr(block.strip() + "\n") for block in blocks if block.strip()]


def _from_delivery_status(message: EmailMessage, report: Message) -> list[Bounce]:
    """The failed recipients of an RFC 3464 report."""
    blocks = _report_fields(report)
    references = _references(message)
    bounces = []
    for block in blocks[1:]:
        recipient = _address_field(block.get("Final-Recipient") or block.get("Original-Recipient"))
        status_match = _STATUS.search(str(block.get("Status", "")))
        status = status_match.group(1) if status_match else ""
        action = (str(block.get("Action", "")).split() or [""])[0].lower()
        failed = action == "failed" if action else status.startswith("5")
        if not (failed and recipient):
            continue
        diagnostic = _one_line(block.get("Diagnostic-Code")) or _text_diagnostic(_body_text(message), recipient)
        bounces.append(Bounce("", recipient, status or "5.0.0", diagnostic, references, report=True))
    return bounces


def _address_field(value: object) -> str:
    """``rfc822; <x@y>`` -> ``x@y``."""
    text = _one_line(value)
    if ";" in text:
        text = text.split(";", 1)[1]
    return text.strip().strip("<>").strip()


def _message_ids(value: object) -> list[str]:
    """Every ``<id>`` in a header value, as ``<id>`` (spaces inside the
    brackets dropped; the case kept: it matters)."""
    return ["<" + found + ">" for found in _MESSAGE_ID.findall(str(value or ""))]


def _references(message: EmailMessage) -> tuple[str, ...]:
    """The Message-IDs of the messages ``message`` says bounced, from where a
    delivery report puts them: the attached original (message/rfc822 or
    text/rfc822-headers), then In-Reply-To, then References (last first).
    Never from its text, in which anyone can quote anything."""
    found: list[str] = []
    for part in _own_parts(message):
        kind = part.get_content_type()
        if kind in ("message/rfc822", "message/global"):
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                found += _message_ids(inner[0].get("Message-ID"))[:1]
        elif kind in ("text/rfc822-headers", "message/global-headers"):
            headers = HeaderParser().parsestr(_decoded(part), headersonly=True)
            found += _message_ids(headers.get("Message-ID"))[:1]
    found += _message_ids(message.get("In-Reply-To"))
    found += reversed(_message_ids(message.get("References")))
    return tuple(dict.fromkeys(found))


def _mail_info(message: EmailMessage) -> MailInfo:
    """The Date, From and Subject of ``message`` as it wrote them (encoded
    words decoded), each on one line. Not the email package's parsed form:
    a broken From header would lose its address there."""
    def header(name: str) -> str:
        raw = next((value for key, value in message.raw_items() if key.lower() == name.lower()), "")
        text = raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")  # raw UTF-8 headers
        try:
            text = str(email.header.make_header(email.header.decode_header(text)))
        except (email.errors.MessageError, ValueError, LookupError):
            pass  # an encoded word that does not decode: shown as it is
        return _one_line(text)

    return MailInfo(date=header("Date"), sender=header("From"), subject=header("Subject"))


def _decoded(part: Message) -> str:
    """A text part's content as str, whatever its transfer encoding and charset."""
    raw = part.get_payload(decode=True)
    if not isinstance(raw, bytes):
        return str(part.get_payload())
    charset = part.get_content_charset() or "utf-8"
    try:
        text = raw.decode(charset, "replace")
    except LookupError:
        text = raw.decode("utf-8", "replace")
    return text.replace("\r\n", "\n")


def _body_text(message: EmailMessage) -> str:
    """The readable text of the message itself (not of attached messages):
    its text/plain parts, else its HTML with the tags taken out."""
    parts = list(_own_parts(message))
    plain = [_decoded(part) for part in parts if part.get_content_type() == "text/plain"]
    if plain:
        return "\n\n".join(plain)
    html = [_decoded(part) for part in parts if part.get_content_type() == "text/html"]
    return re.sub(r"<[^>]+>", " ", "\n\n".join(html))


def _looks_like_bounce(message: EmailMessage) -> bool:
    """A bounce without a delivery report: from a mailer daemon, with a
    bounce's subject or an X-Failed-Recipients header, and not a delay warning."""
    sender = str(message.get("From", "")).lower()
    subject = _one_line(message.get("Subject")).lower()
    if any(word in subject for word in _NOT_FAILURE_SUBJECTS):
        return False
    return (message.get("X-Failed-Recipients") is not None
            or any(word in sender for word in _BOUNCE_SENDERS)
            or any(words in subject for words in _BOUNCE_SUBJECTS))


def _from_text(message: EmailMessage) -> list[Bounce]:
    """The failed recipients of a plain-text bounce (no delivery report)."""
    text = _body_text(message)
    named = [address for address in re.findall(_ADDRESS, str(message.get("X-Failed-Recipients", "")))]
    recipients = list(dict.fromkeys(named or _text_recipients(text)))
    references = _references(message)
    bounces = []
    for recipient in recipients:
        diagnostic = _text_diagnostic(text, recipient)
        status_match = _STATUS.search(diagnostic) or _STATUS.search(text)
        status = status_match.group(1) if status_match else "5.0.0"
        if status.startswith("5"):  # 4.x.x: only delayed, it may still arrive
            bounces.append(Bounce("", recipient, status, diagnostic, references))
    return bounces


# Where plain-text bounces name the failed addresses.
_RECIPIENT_PATTERNS = (
    # Gmail: "Your message wasn't delivered to x@y because the address couldn't be found"
    re.compile(rf"(?:wasn't|wasn’t|was not) delivered to\s+<?({_ADDRESS})>?", re.IGNORECASE),
    # old Gmail: "Delivery to the following recipient failed permanently:\n\n     x@y"
    re.compile(rf"following recipients? failed permanently:\s+<?({_ADDRESS})>?", re.IGNORECASE),
    # Postfix, qmail: "<x@y>: host mx.example.net[192.0.2.1] said: 550 ..."
    re.compile(rf"^[ \t]*<({_ADDRESS})>:", re.MULTILINE),
    # Sendmail: "----- The following addresses had permanent fatal errors -----\n<x@y>"
    re.compile(rf"permanent fatal errors\s*-*\s*\n[ \t]*<?({_ADDRESS})>?", re.IGNORECASE),
    # Exim: "This message has been rejected ... The following address(es) failed:\n\n  x@y"
    re.compile(rf"following address(?:\(es\)|es)? failed:\s+<?({_ADDRESS})>?", re.IGNORECASE),
)


def _text_recipients(text: str) -> list[str]:
    """The failed addresses a plain-text bounce names, in order."""
    found: list[str] = []
    for pattern in _RECIPIENT_PATTERNS:
        found += pattern.findall(text)
    return found


def _text_diagnostic(text: str, recipient: str) -> str:
    """What the server said about ``recipient``, found in a bounce's text:
    Postfix's "<x@y>: ... said: 550 ..." paragraph, Sendmail's "(reason: ...)",
    Gmail's "The response was: ...", else the first line with an SMTP reply
    code, else the sentence naming the address."""
    address = re.escape(recipient)
    paragraph = re.MULTILINE | re.DOTALL | re.IGNORECASE  # "." crosses lines, up to a blank line
    patterns = (
        (rf"^[ \t]*<{address}>:[ \t]*(.+?)(?:\n[ \t]*\n|\Z)", paragraph),  # Postfix / qmail
        (rf"{address}>?[ \t]*\n[ \t]*\(reason:[ \t]*(.+?)\)[ \t]*$", re.MULTILINE | re.IGNORECASE),  # Sendmail
        ((r"(?:The response(?: from the remote server)? was|The error that the other server returned was)"
          r":?[ \t]*\n(?:[ \t]*\n)?(.+?)(?:\n[ \t]*\n|\Z)"), paragraph),  # Gmail
        (r"^[ \t]*(?:<<<[ \t]*)?([45]\d\d[ -][245]\.\d{1,3}\.\d{1,3}.*)$", re.MULTILINE),  # an SMTP reply
        (rf"([^.\n]*{address}[^\n]*)", re.IGNORECASE),  # the sentence naming it
    )
    for pattern, flags in patterns:
        match = re.search(pattern, text, flags)
        if match:
            return _one_line(match.group(1))
    return ""
