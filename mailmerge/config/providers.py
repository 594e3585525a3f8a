"""Mail providers: their SMTP settings, their published sending limits, and
what a user of each must do when the login is refused.

``provider = "gmail"`` in ``[smtp]`` fills host, port and security; the
limits become the defaults of ``rate``, ``max_messages`` and
``max_recipients_per_message`` unless set (see ``config.file.load_config``).
"""

from __future__ import annotations

from dataclasses import dataclass

APP_PASSWORD = (
    "{name} needs an app password, not your account password: turn on 2-step "
    "verification, then create one in {where}."
)
SMTP_SWITCH = "{name} needs SMTP switched on: in the web mail, {where}."


@dataclass(frozen=True)
class Provider:
    """One provider's settings and limits (None: not published)."""

    name: str
    host: str
    port: int
    security: str
    per_day: int | None  # messages a day
    per_minute: int | None  # messages a minute
    recipients_per_message: int | None
    login_hint: str
    imap_host: str = ""  # IMAP over TLS on port 993, for Sent copies and bounces


PROVIDERS: dict[str, Provider] = {
    "gmail": Provider(
        "Gmail", "smtp.gmail.com", 587, "starttls", 2000, None, 100,
        APP_PASSWORD.format(name="Gmail", where="Google Account > Security > App passwords")
        + " (Google ended 'less secure apps' in 2022 for personal accounts, in September 2024 for Workspace.)",
        imap_host="imap.gmail.com",
    ),
    "outlook": Provider(
        "Outlook.com", "smtp-mail.outlook.com", 587, "starttls", 300, None, 100,
        "Microsoft turns basic SMTP AUTH off by default from the end of December 2026: "
        'use OAuth2 (auth = "xoauth2" with an access token), or an app password where it is still allowed.',
        imap_host="outlook.office365.com",
    ),
    "office365": Provider(
        "Microsoft 365", "smtp.office365.com", 587, "starttls", 10000, 30, 500,
        "Microsoft 365 turns basic SMTP AUTH off by default from the end of December 2026: "
        'use OAuth2 (auth = "xoauth2" with an access token), or ask your admin to allow SMTP AUTH for this mailbox.',
        imap_host="outlook.office365.com",
    ),
    "naver": Provider(
        "Naver", "smtp.naver.com", 465, "ssl", None, None, 100,
        APP_PASSWORD.format(name="Naver", where="네이버 > 보안설정 > 2단계 인증 > 애플리케이션 비밀번호")
        + " Also switch on 'IMAP/SMTP 사용' in the mail settings.",
        imap_host="imap.naver.com",
    ),
    "daum": Provider(
        "Daum", "smtp.daum.net", 465, "ssl", 10000, None, 150,
        SMTP_SWITCH.format(name="Daum", where="환경설정 > IMAP/SMTP > IMAP/SMTP 사용"),
        imap_host="imap.daum.net",
    ),
    "kakao": Provider(
        "Kakao Mail", "smtp.kakao.com", 465, "ssl", None, None, None,
        SMTP_SWITCH.format(name="Kakao Mail", where="환경설정 > IMAP/SMTP > IMAP/SMTP 사용"),
        imap_host="imap.kakao.com",
    ),
    "yahoo": Provider(
        "Yahoo Mail", "smtp.mail.yahoo.com", 465, "ssl", 500, None, 100,
        APP_PASSWORD.format(name="Yahoo", where="Account Info > Account Security > Generate app password"),
        imap_host="imap.mail.yahoo.com",
    ),
}


def provider_for_host(host: str) -> Provider | None:
    """The provider whose server this is, for the hint after a refused login."""
    host = host.lower()
    return next((p for p in PROVIDERS.values() if p.host == host), None)


def login_hint(host: str, provider: str | None) -> str:
    """What to do when this server refuses the login."""
    known = PROVIDERS.get(provider or "") or provider_for_host(host)
    if known is not None:
        return known.login_hint
    return "Check username in [smtp] and the password (see 'Where the password comes from' in the README)."
