"""Where the password (or the OAuth2 token) comes from, in this order:

1. the ``MAILMERGE_PASSWORD`` environment variable;
2. a ``.env`` file beside the config (``MAILMERGE_PASSWORD=...``);
3. ``password_command`` in ``[smtp]`` (its output, e.g. ``pass show mail/gmail``);
4. the system keyring (``mailmerge login`` stores it there, ``logout`` removes it);
5. a prompt, when there is a terminal.

With ``auth = "xoauth2"`` no password is looked for: the access token comes
from ``MAILMERGE_OAUTH2_TOKEN`` (environment or ``.env``) or
``oauth2_token_command``. Nothing here ever writes a secret anywhere.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from .file import ImapConfig, SmtpConfig, dotenv_values

PASSWORD_VARIABLE = "MAILMERGE_PASSWORD"
TOKEN_VARIABLE = "MAILMERGE_OAUTH2_TOKEN"
KEYRING_SERVICE = "mailmerge"


@dataclass(frozen=True)
class Secret:
    """A password or token, and where it came from (for messages, never the value)."""

    value: str
    source: str

    def __repr__(self) -> str:  # never shown, even in a traceback's locals
        return f"Secret(source={self.source!r})"


def _variable(name: str, config_path: Path | None, environ: Mapping[str, str]) -> Secret | None:
    """The first two sources: the environment, then the .env file beside the config."""
    if environ.get(name):
        return Secret(environ[name], name)
    value = dotenv_values(config_path).get(name)
    return Secret(value, ".env") if value else None


def _keyring_key(smtp: SmtpConfig) -> str:
    return f"{smtp.username}@{smtp.host}"


def _run_command(command: str, what: str) -> str:
    try:
        done = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError) as error:
        raise ConfigError(f"{what} '{command}' could not run: {error}") from None
    if done.returncode != 0:
        # Its stderr may say why; its stdout may be the secret itself, so never show that.
        raise ConfigError(f"{what} '{command}' failed (exit {done.returncode}): {done.stderr.strip()[:200]}")
    value = done.stdout.rstrip("\r\n")
    if not value:
        raise ConfigError(f"{what} '{command}' printed nothing")
    return value


def keyring_password(smtp: SmtpConfig) -> str | None:
    """The password stored by ``mailmerge login``, or None (also with no keyring)."""
    import keyring
    from keyring.errors import KeyringError

    try:
        return keyring.get_password(KEYRING_SERVICE, _keyring_key(smtp))
    except KeyringError:
        return None  # no keyring on this machine (a server, a container)


def store_password(smtp: SmtpConfig, password: str) -> None:
    """``mailmerge login``: keep the password in the system keyring."""
    import keyring
    from keyring.errors import KeyringError

    try:
        keyring.set_password(KEYRING_SERVICE, _keyring_key(smtp), password)
    except KeyringError as error:
        raise ConfigError(
            f"no system keyring to store the password in ({type(error).__name__}); use "
            f"{PASSWORD_VARIABLE}, a .env file or password_command instead"
        ) from None


def forget_password(smtp: SmtpConfig) -> bool:
    """``mailmerge logout``: remove the stored password; False when there was none."""
    import keyring
    from keyring.errors import KeyringError, PasswordDeleteError

    try:
        keyring.delete_password(KEYRING_SERVICE, _keyring_key(smtp))
    except PasswordDeleteError:
        return False
    except KeyringError as error:
        raise ConfigError(f"no system keyring on this machine ({type(error).__name__})") from None
    return True


def find_secret(
    smtp: SmtpConfig,
    config_path: Path | None,
    environ: Mapping[str, str] = os.environ,
    prompt: Callable[[str], str] | None = None,
) -> Secret | None:
    """The password or token for ``smtp``, from the first source that has it.

    Returns None when the server needs no login.
    """
    if smtp.auth == "xoauth2":
        return _find_token(smtp, config_path, environ)
    if not smtp.username:
        return None
    found = _variable(PASSWORD_VARIABLE, config_path, environ)
    if found:
        return found
    if smtp.password_command:
        return Secret(_run_command(smtp.password_command, "password_command"), "password_command")
    return _keyring_or_prompt(
        smtp, "Password", prompt,
        f"no password for {smtp.username}: set {PASSWORD_VARIABLE}, put it in a .env file, "
        "set password_command, store it with 'mailmerge login', or run in a terminal to be asked",
    )


def _keyring_or_prompt(account: SmtpConfig, what: str, prompt: Callable[[str], str] | None, missing: str) -> Secret:
    """The last two sources: the system keyring, then a prompt (``missing`` when there is no terminal)."""
    stored = keyring_password(account)
    if stored:
        return Secret(stored, "keyring")
    if prompt is None:
        raise ConfigError(missing)
    return Secret(prompt(f"{what} for {account.username} at {account.host}"), "prompt")


def _find_token(smtp: SmtpConfig, config_path: Path | None, environ: Mapping[str, str]) -> Secret:
    if not smtp.username:
        raise ConfigError('auth = "xoauth2" needs username in [smtp] (the account\'s address)')
    found = _variable(TOKEN_VARIABLE, config_path, environ)
    if found:
        return found
    if smtp.oauth2_token_command:
        return Secret(_run_command(smtp.oauth2_token_command, "oauth2_token_command"), "oauth2_token_command")
    raise ConfigError(
        f'auth = "xoauth2" needs an access token: set {TOKEN_VARIABLE} or oauth2_token_command in [smtp]'
    )


IMAP_PASSWORD_VARIABLE = "MAILMERGE_IMAP_PASSWORD"


def find_imap_secret(
    imap: ImapConfig,
    smtp: SmtpConfig,
    config_path: Path | None,
    environ: Mapping[str, str] = os.environ,
    prompt: Callable[[str], str] | None = None,
) -> Secret:
    """The IMAP password: ``MAILMERGE_IMAP_PASSWORD`` (environment or .env),
    else the SMTP password when the account is the same, else the keyring,
    else a prompt."""
    found = _variable(IMAP_PASSWORD_VARIABLE, config_path, environ)
    if found:
        return found
    if imap.username and imap.username == smtp.username and smtp.auth == "password":
        secret = find_secret(smtp, config_path, environ, prompt)
        if secret is not None:
            return secret
    return _keyring_or_prompt(
        SmtpConfig(host=imap.host, username=imap.username), "IMAP password", prompt,
        f"no IMAP password for {imap.username}: set {IMAP_PASSWORD_VARIABLE} (or use the same "
        "username as for SMTP), or run in a terminal to be asked",
    )
