"""Read ``mailmerge.toml``: the SMTP server and the message defaults.

::

    [smtp]
    provider = "gmail"         # or host, port and security:
    host = "smtp.gmail.com"
    port = 587
    security = "starttls"      # "ssl" | "starttls" | "none"
    username = "me@gmail.com"  # omit for a server without AUTH
    ca_file = "ca.pem"         # optional, for a server with a private CA
    timeout = 30
    [send]
    max_recipients_per_message = 100   # To, Cc and Bcc of one message
    [message]
    from = "Me <me@gmail.com>"
    list_id = "Club news <news.club.example.com>"   # optional: List-Id (RFC 2919)

The file is looked for beside the list, beside the template, then in their
parent folders, then in the current folder (the first found wins), unless
given with ``--config``. Every ``[smtp]`` key can be overridden by an
environment variable ``MAILMERGE_SMTP_<KEY>`` (also from a ``.env`` file
beside the config). The password is never in the file: see ``credentials``.
"""

from __future__ import annotations

import configparser
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..delivery.pacing import Backoff, parse_duration, parse_rate
from ..errors import ConfigError, did_you_mean
from ..mime.listheaders import LIST_ID_FORM, parse_list_id
from .providers import PROVIDERS

CONFIG_NAME = "mailmerge.toml"
SECURITY_PORTS = {"ssl": 465, "starttls": 587, "none": 25}
AUTH_METHODS = ("password", "xoauth2")
# RFC 5321 (4.5.3.1.8) says a server must accept at least 100 recipients in
# one message: a message within that goes through any server. A relay that
# takes more is set with max_recipients_per_message.
DEFAULT_RECIPIENTS_PER_MESSAGE = 100


@dataclass
class SmtpConfig:
    """How to reach and log in to the SMTP server."""

    host: str = ""  # empty: no server configured
    port: int = 587
    security: str = "starttls"
    username: str | None = None
    ca_file: Path | None = None
    timeout: float = 30.0
    allow_insecure_auth: bool = False  # log in without TLS (awdeorio's "PLAIN")
    provider: str | None = None  # a key of providers.PROVIDERS
    auth: str = "password"  # or "xoauth2"
    password_command: str | None = None  # prints the password
    oauth2_token_command: str | None = None  # prints an OAuth2 access token


@dataclass(frozen=True)
class RecipientLimit:
    """At most ``count`` recipients (To, Cc and Bcc together) in one message,
    and whose rule that is, so that a row over it can say what to change."""

    count: int = DEFAULT_RECIPIENTS_PER_MESSAGE  # 0: no limit
    provider: str = ""  # the provider whose published limit this is
    configured: bool = False  # set by max_recipients_per_message

    def exceeded_by(self, recipients: int) -> str | None:
        """Why a message with this many recipients cannot go (None: it can)."""
        if not self.count or recipients <= self.count:
            return None
        if self.configured:
            over = f"more than max_recipients_per_message = {self.count} in [send]"
            what_to_do = "split them over several rows, or raise that setting"
        else:
            if self.provider:
                over = f"more than {self.provider}'s limit of {self.count} a message"
            else:
                over = f"more than the {self.count} a message every server must accept"
            what_to_do = "split them over several rows, or set max_recipients_per_message in [send] if your server takes more"
        return f"{recipients:,} recipients (To, Cc and Bcc), {over}: {what_to_do}"


@dataclass
class SendConfig:
    """How fast to send, and how hard to try: the [send] section."""

    rate: float = 0.0  # seconds between two messages (from "20/min"); 0: no limit
    batch_size: int = 0  # messages per batch; 0: no batches
    batch_pause: float = 0.0  # seconds between batches
    max_messages: int = 0  # stop after this many in one run; 0: no limit
    max_per_connection: int = 0  # start a new session after this many; 0: no limit
    connections: int = 1  # sessions side by side (relays that allow several)
    journal_fsync: bool = False  # sync each in-flight mark to disk: at most once across a power cut
    recipient_limit: RecipientLimit = field(default_factory=RecipientLimit)  # a row over it is invalid
    # 1, 2, 4 ... 32, 60 s: about 2 minutes in all, more than the 60 s window in
    # which servers such as Postfix count a client's messages and connections.
    reconnect: Backoff = field(default_factory=lambda: Backoff(initial=1.0, maximum=60.0, attempts=7))
    retry: Backoff = field(default_factory=lambda: Backoff(initial=30.0, maximum=600.0, attempts=3))


@dataclass
class ImapConfig:
    """The [imap] section: how to reach and log in to the IMAP server, a copy
    of each sent message in the Sent folder, and bounces."""

    host: str = ""  # empty: no IMAP
    port: int = 993
    security: str = "ssl"  # "ssl" (TLS from the start, port 993) | "starttls" (port 143)
    username: str | None = None
    ca_file: Path | None = None  # a private certificate authority to trust
    timeout: float = 30.0  # seconds for any one network read or write
    save_sent: bool = False
    sent_folder: str | None = None  # default: the folder flagged \Sent, else the usual names


@dataclass
class MessageConfig:
    """Defaults for every message."""

    sender: str | None = None  # the `from` key
    template: Path | None = None
    unsubscribe: str | None = None  # a mailto: or https: address, Jinja per row
    list_id: str | None = None  # List-Id (RFC 2919): "Club news <news.club.example.com>"
    css: Path | None = None  # a stylesheet inlined into HTML bodies


@dataclass
class Config:
    """The whole configuration, and the file it came from (None: defaults)."""

    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    send: SendConfig = field(default_factory=SendConfig)
    message: MessageConfig = field(default_factory=MessageConfig)
    imap: ImapConfig = field(default_factory=ImapConfig)
    path: Path | None = None
    searched: tuple[Path, ...] = ()  # the folders looked in when no file was found

    def not_found(self) -> str:
        """Where no config file was found, for an error that needs one ("" if one was used)."""
        if self.path is not None:
            return ""
        folders = [str(folder) for folder in self.searched or (Path.cwd(),)]
        listed = folders[0] if len(folders) == 1 else ", ".join(folders[:-1]) + " or " + folders[-1]
        return f"no {CONFIG_NAME} in {listed} (pass --config FILE if it is elsewhere)"

    def require_server(self) -> SmtpConfig:
        """The SMTP settings, or a ConfigError saying how to give them."""
        smtp = self.smtp
        if not smtp.host:
            where = f" in {self.path}:" if self.path else f": {self.not_found()};"
            raise ConfigError(
                f"no SMTP server configured{where} set provider or host in [smtp] (see the "
                "README), or try the whole path locally with --outbox DIR"
            )
        if smtp.security == "none" and smtp.username and not smtp.allow_insecure_auth:
            raise ConfigError(
                f'security = "none" with a username would send the password to {smtp.host} '
                'unencrypted; use security = "starttls" or "ssl", or set allow_insecure_auth = true '
                "if this server is on your own machine or network"
            )
        return smtp


_SMTP_KEYS = (
    "provider", "host", "port", "security", "username", "ca_file", "timeout",
    "auth", "password_command", "oauth2_token_command", "allow_insecure_auth",
)
_MESSAGE_KEYS = ("from", "template", "unsubscribe", "list_id", "css")
_IMAP_KEYS = ("provider", "host", "port", "security", "username", "ca_file", "timeout", "save_sent", "sent_folder")
_SEND_KEYS = (
    "rate", "batch_size", "batch_pause", "max_messages", "max_per_connection", "connections", "journal_fsync",
    "max_recipients_per_message",
    "reconnect_attempts", "reconnect_delay", "reconnect_max_delay",
    "retry_attempts", "retry_delay", "retry_max_delay",
)


def config_folders(list_path: Path | None, template: Path | None = None) -> list[Path]:
    """The folders looked in for the config, in order: beside the list, beside
    the template, their parent folders, then the current folder."""
    beside = [path.resolve().parent for path in (list_path, template) if path is not None]
    folders = [*beside, *(folder.parent for folder in beside), Path.cwd()]
    return list(dict.fromkeys(folders))  # each once, the first place kept


def find_config(list_path: Path | None, explicit: Path | None = None, template: Path | None = None) -> Path | None:
    """The config file to use: ``explicit``, else the first found in
    :func:`config_folders`; None when there is none."""
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"{explicit}: no such config file")
        return explicit
    for folder in config_folders(list_path, template):
        if (folder / CONFIG_NAME).is_file():
            return folder / CONFIG_NAME
    return None


def load_config(path: Path | None, environ: Mapping[str, str] = os.environ) -> Config:
    """Read the config file (or start from defaults when None) and apply
    ``MAILMERGE_SMTP_*`` overrides from ``environ``."""
    data: dict[str, Any] = {}
    if path is not None and is_awdeorio_config(path):
        return load_awdeorio_config(path, environ)
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8-sig"))
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path}: not valid TOML: {error}") from error
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"{path}: cannot read the config ({error})") from error
    where = str(path) if path else "the environment"
    _check_keys(data, {"smtp": _SMTP_KEYS, "send": _SEND_KEYS, "message": _MESSAGE_KEYS, "imap": _IMAP_KEYS}, where)
    base = path.parent if path else Path.cwd()
    environ = {**dotenv_values(path), **environ}
    send_data = _with_environment(data, "send", _SEND_KEYS, environ)
    config = Config(
        smtp=_smtp_config(_with_environment(data, "smtp", _SMTP_KEYS, environ), base, where),
        send=_send_config(send_data, where),
        path=path,
    )
    config.imap = _imap_config(_with_environment(data, "imap", _IMAP_KEYS, environ), config.smtp, base, where)
    provider = PROVIDERS.get(config.smtp.provider or "")
    if provider is not None:  # its published limits, unless the user set their own
        if "rate" not in send_data and provider.per_minute:
            config.send.rate = 60.0 / provider.per_minute
        if "max_messages" not in send_data and provider.per_day:
            config.send.max_messages = provider.per_day
        if "max_recipients_per_message" not in send_data and provider.recipients_per_message:
            config.send.recipient_limit = RecipientLimit(provider.recipients_per_message, provider=provider.name)
    message = data.get("message", {})
    config.message.sender = _text(message, "from", where)
    config.message.unsubscribe = _text(message, "unsubscribe", where)
    config.message.list_id = _list_id(_text(message, "list_id", where), where)
    template, css = _text(message, "template", where), _text(message, "css", where)
    config.message.template = base / template if template else None
    config.message.css = base / css if css else None
    return config


# --- awdeorio/mailmerge's mailmerge_server.conf --------------------------------

_AWDEORIO_SECURITY = {"ssl/tls": "ssl", "starttls": "starttls", "plain": "none", "never": "none"}


def is_awdeorio_config(path: Path) -> bool:
    """True for an INI file with a [smtp_server] section (awdeorio/mailmerge's format)."""
    if path.suffix.lower() in (".conf", ".ini", ".cfg"):
        return True
    try:
        head = path.read_text(encoding="utf-8-sig")[:4096]
    except (OSError, UnicodeDecodeError):
        return False
    return re.search(r"^\s*\[smtp_server\]", head, re.MULTILINE) is not None


def load_awdeorio_config(path: Path, environ: Mapping[str, str] = os.environ) -> Config:
    """Read awdeorio/mailmerge's server config with its meanings: no security
    (or "Never") is no TLS and no login, "PLAIN" is a login without TLS,
    ratelimit is messages per minute."""
    parser = configparser.RawConfigParser()
    try:
        parser.read_string(path.read_text(encoding="utf-8-sig"), source=str(path))
    except (OSError, UnicodeDecodeError, configparser.Error) as error:
        raise ConfigError(f"{path}: cannot read this server config: {error}") from error
    if not parser.has_section("smtp_server"):
        raise ConfigError(f"{path}: no [smtp_server] section (awdeorio/mailmerge's format)")
    section = parser["smtp_server"]
    raw_security = section.get("security", "Never").strip()
    security = _AWDEORIO_SECURITY.get(raw_security.lower())
    if security is None:
        raise ConfigError(f"{path}: security = {raw_security} is not SSL/TLS, STARTTLS, PLAIN or Never")
    data: dict[str, Any] = {"host": section.get("host", ""), "security": security}
    if "port" in section:
        data["port"] = section["port"]
    if raw_security.lower() in ("ssl/tls", "starttls", "plain"):
        data["username"] = section.get("username")
    data = _with_environment({"smtp": data}, "smtp", _SMTP_KEYS, environ)
    config = Config(smtp=_smtp_config(data, path.parent, str(path)), path=path)
    if raw_security.lower() == "plain":
        config.smtp.allow_insecure_auth = True  # what PLAIN means there (warned at each run)
    ratelimit = section.get("ratelimit", "0").strip()
    if ratelimit not in ("", "0"):
        config.send.rate = parse_rate(f"{ratelimit}/min")
    return config


def _with_environment(
    data: dict[str, Any], section: str, keys: tuple[str, ...], environ: Mapping[str, str]
) -> dict[str, Any]:
    """A section's keys, overridden by MAILMERGE_<SECTION>_<KEY> variables."""
    values = dict(data.get(section, {}))
    for key in keys:
        value = environ.get(f"MAILMERGE_{section.upper()}_{key.upper()}")
        if value is not None:
            values[key] = value
    return values


def _send_config(data: dict[str, Any], where: str) -> SendConfig:
    config = SendConfig()
    try:
        if "rate" in data:
            config.rate = parse_rate(str(data["rate"])) if data["rate"] else 0.0
        if "batch_pause" in data:
            config.batch_pause = parse_duration(data["batch_pause"], "batch_pause")
        for key in ("batch_size", "max_messages", "max_per_connection", "connections"):
            if key in data:
                setattr(config, key, int(data[key]))
        config.journal_fsync = _flag(data.get("journal_fsync", False))
        if "max_recipients_per_message" in data:
            count = int(data["max_recipients_per_message"])
            if count < 0:
                raise ConfigError("max_recipients_per_message must be 0 (no limit) or more")
            config.recipient_limit = RecipientLimit(count, configured=True)
        for name in ("reconnect", "retry"):
            default: Backoff = getattr(config, name)
            setattr(config, name, Backoff(
                initial=parse_duration(data.get(f"{name}_delay", default.initial), f"{name}_delay"),
                maximum=parse_duration(data.get(f"{name}_max_delay", default.maximum), f"{name}_max_delay"),
                attempts=int(data.get(f"{name}_attempts", default.attempts)),
            ))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: a value in [send] is not a number ({error})") from error
    except ConfigError as error:
        raise ConfigError(f"{where}: [send] {error}") from error
    return config


def _check_keys(data: dict[str, Any], allowed: dict[str, tuple[str, ...]], where: str) -> None:
    for section, value in data.items():
        if section not in allowed:
            raise ConfigError(f"{where}: unknown section [{section}]{did_you_mean(section, allowed)}")
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: '{section}' must be a section: [{section}]")
        for key in value:
            if key == "password":
                raise ConfigError(
                    f"{where}: remove the password from the file; mailmerge reads it from "
                    "MAILMERGE_PASSWORD, a .env file, password_command or the keyring (mailmerge login)"
                )
            if key not in allowed[section]:
                raise ConfigError(
                    f"{where}: unknown key '{key}' in [{section}]"
                    f"{did_you_mean(key, allowed[section])}"
                )


def _flag(value: object) -> bool:
    """A yes/no setting: a TOML boolean, or text from an INI file or the environment."""
    return value if isinstance(value, bool) else str(value).lower() in ("true", "1", "yes")


def _text(section: Mapping[str, Any], key: str, where: str) -> str | None:
    value = section.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{where}: '{key}' must be text in quotes")
    return value


def _list_id(value: str | None, where: str) -> str | None:
    """[message] list_id, checked now: a List-Id a filter cannot read is worse than none.
    Text with Jinja in it is checked per row, once rendered."""
    if value is None or "{{" in value or "{%" in value:
        return value
    try:
        parse_list_id(value)
    except ValueError as error:
        raise ConfigError(f"{where}: list_id in [message]: {error}; {LIST_ID_FORM}") from error
    return value


def _smtp_config(data: dict[str, Any], base: Path, where: str) -> SmtpConfig:
    provider_name = _text(data, "provider", where)
    preset = None
    if provider_name:
        preset = PROVIDERS.get(provider_name.lower())
        if preset is None:
            raise ConfigError(
                f"{where}: provider = '{provider_name}' is not one of {', '.join(PROVIDERS)}"
                f"{did_you_mean(provider_name, PROVIDERS)}"
            )
    security = str(data.get("security", preset.security if preset else "starttls")).lower()
    if security not in SECURITY_PORTS:
        raise ConfigError(
            f"{where}: security = '{security}' is not one of ssl, starttls, none"
            f"{did_you_mean(security, SECURITY_PORTS)}"
        )
    default_port = preset.port if preset and "security" not in data else SECURITY_PORTS[security]
    config = SmtpConfig(security=security, port=default_port, provider=provider_name and provider_name.lower())
    config.host = str(data.get("host", preset.host if preset else config.host))
    config.username = _text(data, "username", where)
    config.password_command = _text(data, "password_command", where)
    config.oauth2_token_command = _text(data, "oauth2_token_command", where)
    config.auth = (_text(data, "auth", where) or "password").lower()
    if config.auth not in AUTH_METHODS:
        raise ConfigError(f"{where}: auth = '{config.auth}' is not one of {', '.join(AUTH_METHODS)}")
    config.allow_insecure_auth = _flag(data.get("allow_insecure_auth", False))
    ca_file = _text(data, "ca_file", where)
    if ca_file:
        config.ca_file = base / Path(ca_file).expanduser()
    for key, kind in (("port", int), ("timeout", float)):
        if key in data:
            try:
                setattr(config, key, kind(data[key]))
            except (TypeError, ValueError) as error:
                raise ConfigError(f"{where}: {key} must be a number, not '{data[key]}'") from error
    return config


def _imap_config(data: dict[str, Any], smtp: SmtpConfig, base: Path, where: str) -> ImapConfig:
    """[imap]: a provider preset (or the SMTP provider's) fills host and port;
    the username defaults to the SMTP one."""
    name = (_text(data, "provider", where) or smtp.provider or "").lower()
    preset = PROVIDERS.get(name)
    if name and preset is None:
        raise ConfigError(f"{where}: [imap] provider = '{name}' is not one of {', '.join(PROVIDERS)}"
                          f"{did_you_mean(name, PROVIDERS)}")
    settings = ImapConfig(host=str(data.get("host", preset.imap_host if preset else "")))
    settings.security = str(data.get("security", "ssl")).lower()
    if settings.security not in ("ssl", "starttls"):
        raise ConfigError(f"{where}: [imap] security = '{settings.security}' is not ssl or starttls")
    settings.port = 993 if settings.security == "ssl" else 143
    settings.username = _text(data, "username", where) or smtp.username
    settings.sent_folder = _text(data, "sent_folder", where)
    ca_file = _text(data, "ca_file", where)
    settings.ca_file = base / Path(ca_file).expanduser() if ca_file else smtp.ca_file
    settings.save_sent = _flag(data.get("save_sent", False))
    for key, kind in (("port", int), ("timeout", float)):
        if key in data:
            try:
                setattr(settings, key, kind(data[key]))
            except (TypeError, ValueError) as error:
                raise ConfigError(f"{where}: [imap] {key} must be a number, not '{data[key]}'") from error
    if settings.save_sent and not settings.host:
        raise ConfigError(f"{where}: save_sent = true needs host (or provider) in [imap]")
    return settings


def dotenv_values(config_path: Path | None) -> dict[str, str]:
    """The variables of the ``.env`` file beside the config (or here), if any."""
    folder = config_path.parent if config_path else Path.cwd()
    path = folder / ".env"
    if not path.is_file():
        return {}
    from dotenv import dotenv_values as read

    return {key: value for key, value in read(path).items() if value is not None}
