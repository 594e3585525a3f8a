"""List-Unsubscribe and the other list headers, as the bytes arrive (issue 13,
items 1 and 2).

Python's ``email`` decodes RFC 2047 encoded-words when it reads a header, so
a header mangled into ``=?utf-8?q?=3Chttps...`` reads back fine there: these
tests look at the raw header lines instead, and find the URIs the way an
RFC 2369 parser does, by their angle brackets.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import Run, run_cli, write_config, write_template, write_xlsx
from postfix_server import PostfixServer
from smtp_server import SmtpTestServer

from mailmerge.errors import InvalidRow
from mailmerge.mime.listheaders import URI_HEADERS
from mailmerge.mime.message import build_message
from mailmerge.render.template import Draft, Mailbox

SIG = "9f2c" * 16  # a 64-character signature, as a one-click link carries
ONE_CLICK = "https://club.example.com/unsubscribe/one-click?list=news&email={{ email | urlencode }}&sig={{ sig }}"
MAILTO = "mailto:leave@club.example.com?subject=unsubscribe"
PLAIN_TEMPLATE = "Subject: News\nTo: {{ email }}\n\nHello.\n"
RFC2369_URI = re.compile(rb"<([^>]*)>")


def header_lines(raw: bytes, name: str) -> list[list[bytes]]:
    """Each ``name`` header of a raw message as its physical lines (the first,
    then the folded ones), line ends removed; CRLF or LF line ends."""
    head = re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[0]
    found: list[list[bytes]] = []
    current: list[bytes] | None = None
    for line in re.split(rb"\r?\n", head):
        if line[:1] in (b" ", b"\t") and current is not None:
            current.append(line)
        elif line.lower().startswith(name.lower().encode() + b":"):
            current = [line]
            found.append(current)
        else:
            current = None
    return found


def uris(lines: list[bytes]) -> list[str]:
    """The URIs of a header, as an RFC 2369 parser finds them."""
    return [uri.decode("ascii") for uri in RFC2369_URI.findall(b"".join(lines))]


def assert_written_literally(lines: list[bytes]) -> None:
    """No encoded-words, every line within 998 octets, a break only after a comma."""
    assert not any(b"=?" in line for line in lines), lines
    assert all(len(line) <= 998 for line in lines), [len(line) for line in lines]
    assert all(line.endswith(b">,") for line in lines[:-1]), lines
    assert all(line.startswith(b" <") for line in lines[1:]), lines


def add_message_settings(config: Path, **settings: str) -> None:
    """Add keys to [message] of the mailmerge.toml write_config wrote."""
    lines = "".join(f"{key} = {json.dumps(value, ensure_ascii=False)}\n" for key, value in settings.items())
    config.write_text(config.read_text(encoding="utf-8").replace("[message]\n", "[message]\n" + lines), encoding="utf-8")


def send(folder: Path, template: str, rows: list[tuple[str, ...]], *extra: str,
         header: tuple[str, ...] = ("email", "sig"), **message: str) -> tuple[SmtpTestServer, str, int]:
    """Send the rows through a real aiosmtpd server; (server, output, exit code)."""
    xlsx = write_xlsx(folder / "list.xlsx", header, rows)
    path = write_template(folder / "news.txt", template)
    with SmtpTestServer() as server:
        add_message_settings(write_config(folder, server, security="none", username=None), **message)
        run = run_cli("send", xlsx, "-t", path, "--yes", *extra)
    return server, run.output, run.exit_code


# --- item 1: the URIs survive the trip -------------------------------------------------------


def test_a_150_character_one_click_link_arrives_literal_through_postfix(tmp_path: Path, postfix: PostfixServer) -> None:
    address = "ann+news@example.org"
    xlsx = write_xlsx(tmp_path / "list.xlsx", ("email", "sig"), [(address, SIG)])
    template = write_template(tmp_path / "news.txt", PLAIN_TEMPLATE)
    add_message_settings(write_config(tmp_path, postfix), unsubscribe=f"{MAILTO}, {ONE_CLICK}",
                         list_id="Club news <news.club.example.com>")

    run = run_cli("send", xlsx, "-t", template, "--yes")

    assert run.exit_code == 0, run.output
    postfix.wait_for_delivery([address])
    [raw] = postfix.delivered(address)
    [lines] = header_lines(raw, "List-Unsubscribe")
    assert_written_literally(lines)
    assert len(lines) == 2  # over 78 characters: folded once, after the comma
    mailto, one_click = uris(lines)
    assert mailto == MAILTO
    assert len(one_click) >= 150 and one_click.startswith("https://club.example.com/unsubscribe/one-click?")
    assert parse_qs(urlsplit(one_click).query) == {"list": ["news"], "email": [address], "sig": [SIG]}
    assert header_lines(raw, "List-Unsubscribe-Post") == [[b"List-Unsubscribe-Post: List-Unsubscribe=One-Click"]]
    assert header_lines(raw, "List-Id") == [[b"List-Id: Club news <news.club.example.com>"]]


def test_every_rfc_2369_header_in_a_template_is_written_the_same_way(tmp_path: Path) -> None:
    long = "https://club.example.com/" + "x" * 120
    template = "".join(f"{name}: <mailto:{name.lower()}@club.example.com?subject=help>, <{long}/{{{{ sig }}}}>\n"
                       for name in URI_HEADERS) + PLAIN_TEMPLATE

    server, output, code = send(tmp_path, template, [("ann@example.org", "1")])

    assert code == 0, output
    raw = server.messages[0].data
    for name in URI_HEADERS:
        [lines] = header_lines(raw, name)
        assert_written_literally(lines)
        assert uris(lines) == [f"mailto:{name.lower()}@club.example.com?subject=help", f"{long}/1"]


def test_two_short_uris_over_78_characters_fold_after_the_comma(tmp_path: Path) -> None:
    template = "List-Help: <mailto:help@club.example.com?subject=help>, <https://club.example.com/help>\n" + PLAIN_TEMPLATE

    server, output, code = send(tmp_path, template, [("ann@example.org", "1")])

    assert code == 0, output
    assert header_lines(server.messages[0].data, "List-Help") == [[
        b"List-Help: <mailto:help@club.example.com?subject=help>,",
        b" <https://club.example.com/help>",
    ]]


def test_the_header_is_literal_in_a_message_sent_with_smtputf8(tmp_path: Path) -> None:
    server, output, code = send(tmp_path, PLAIN_TEMPLATE, [("josé@example.org", SIG)], unsubscribe=ONE_CLICK)

    assert code == 0, output
    message = server.messages[0]
    assert "SMTPUTF8" in message.mail_options
    [lines] = header_lines(message.data, "List-Unsubscribe")
    assert_written_literally(lines)
    assert uris(lines) == [f"https://club.example.com/unsubscribe/one-click?list=news&email=jos%C3%A9%40example.org&sig={SIG}"]


def test_a_value_from_the_list_stays_inside_its_uri(tmp_path: Path) -> None:
    """A cell cannot close the brackets, add a URI, or put a space or a
    non-ASCII letter into one: it is percent-encoded where it landed."""
    template = "List-Unsubscribe: <https://club.example.com/u?t={{ sig }}>, <mailto:leave@club.example.com>\n" + PLAIN_TEMPLATE
    rows = [("a@example.org", "x> <https://evil.example/"), ("b@example.org", "1, mailto:evil@example.net"),
            ("c@example.org", "Zoë 50%")]

    server, output, code = send(tmp_path, template, rows)

    assert code == 0, output
    found = [uris(header_lines(message.data, "List-Unsubscribe")[0]) for message in server.messages]
    assert found == [
        ["https://club.example.com/u?t=x%3E%20%3Chttps://evil.example/", "mailto:leave@club.example.com"],
        ["https://club.example.com/u?t=1,%20mailto:evil@example.net", "mailto:leave@club.example.com"],
        ["https://club.example.com/u?t=Zo%C3%AB%2050%25", "mailto:leave@club.example.com"],
    ]


def test_a_non_ascii_domain_in_the_template_becomes_idna(tmp_path: Path) -> None:
    template = "List-Help: <https://bücher.example/hilfe/übersicht>\n" + PLAIN_TEMPLATE

    server, output, code = send(tmp_path, template, [("ann@example.org", "1")])

    assert code == 0, output
    [lines] = header_lines(server.messages[0].data, "List-Help")
    assert uris(lines) == ["https://xn--bcher-kva.example/hilfe/%C3%BCbersicht"]


def test_a_uri_longer_than_a_line_makes_the_row_invalid(tmp_path: Path) -> None:
    rows = [("ann@example.org", "s" * 1000), ("bob@example.org", SIG)]
    xlsx = write_xlsx(tmp_path / "list.xlsx", ("email", "sig"), rows)
    template = write_template(tmp_path / "news.txt", PLAIN_TEMPLATE)
    add_message_settings(write_config(tmp_path, SmtpTestServer(), security="none", username=None), unsubscribe=ONE_CLICK)

    run = run_cli("check", xlsx, "-t", template)

    assert run.exit_code == 3, run.output
    assert "1 row can be sent, 1 invalid" in run.output
    length = len(ONE_CLICK.replace("{{ email | urlencode }}", "ann%40example.org").replace("{{ sig }}", "s" * 1000))
    assert f"row 2: invalid: the List-Unsubscribe address is {length:,} characters long, and a line of a " \
           "message may hold at most 998 (RFC 5322); use a shorter URL" in " ".join(run.stderr.split())


def test_text_that_is_no_uri_makes_the_row_invalid(tmp_path: Path) -> None:
    template = "List-Unsubscribe: <https://club.example.com/u> please\n" + PLAIN_TEMPLATE

    server, output, code = send(tmp_path, template, [("ann@example.org", "1")])

    assert code == 3 and not server.messages
    assert "row 2: invalid: the List-Unsubscribe header needs a URI such as https://... or mailto:..., " \
           "not 'please'" in " ".join(output.split())


def test_bare_and_bracketed_uris_may_be_mixed(tmp_path: Path) -> None:
    template = "List-Help: mailto:help@club.example.com, <https://club.example.com/help?a=1,2>\n" + PLAIN_TEMPLATE

    server, output, code = send(tmp_path, template, [("ann@example.org", "1")])

    assert code == 0, output
    [lines] = header_lines(server.messages[0].data, "List-Help")
    assert uris(lines) == ["mailto:help@club.example.com", "https://club.example.com/help?a=1,2"]


# --- item 2: values in URLs, and List-Id ----------------------------------------------------------


def check(folder: Path, unsubscribe: str, rows: list[tuple[str, ...]], *extra: str) -> Run:
    xlsx = write_xlsx(folder / "list.xlsx", ("email", "unsub_url"), rows)
    template = write_template(folder / "news.txt", PLAIN_TEMPLATE)
    add_message_settings(write_config(folder, SmtpTestServer(), security="none", username=None), unsubscribe=unsubscribe)
    return run_cli("check", xlsx, "-t", template, *extra)


ROWS = [("ann+news@example.org", "https://club.example.com/u?id=1&s=2"),
        ("bob@example.org", "https://club.example.com/u?id=2&s=3"),
        ("zoë@example.org", "https://club.example.com/u?id=3&s=4")]


def test_check_warns_when_a_cell_goes_into_a_url_unencoded(tmp_path: Path) -> None:
    run = check(tmp_path, "https://club.example.com/unsubscribe?email={{ email }}", ROWS)

    assert run.exit_code == 0, run.output
    assert ("warning: List-Unsubscribe (unsubscribe in the config) puts {{ email }} into the URL as it is; "
            "row 2's 'ann+news@example.org' has + @, to be encoded in a URL (and 2 more rows): "
            "write {{ email | urlencode }}") in " ".join(run.stderr.split())


def test_preview_shows_the_warning_too(tmp_path: Path) -> None:
    xlsx = write_xlsx(tmp_path / "list.xlsx", ("email", "code"), [("ann@example.org", "a&b")])
    template = write_template(tmp_path / "news.txt", "List-Help: <https://club.example.com/help?c={{ code }}>\n"
                              + PLAIN_TEMPLATE)
    write_config(tmp_path, SmtpTestServer(), security="none", username=None)

    run = run_cli("preview", xlsx, "-t", template)

    assert run.exit_code == 0, run.output
    assert ("warning: List-Help (template line 1) puts {{ code }} into the URL as it is; row 2's 'a&b' has &, "
            "to be encoded in a URL: write {{ code | urlencode }}") in " ".join(run.stderr.split())


def test_the_warning_is_in_the_json_of_check(tmp_path: Path) -> None:
    run = check(tmp_path, "https://club.example.com/unsubscribe?email={{ email }}", ROWS, "--json")

    assert run.exit_code == 0, run.output
    [warning] = json.loads(run.stdout)["warnings"]
    assert "{{ email | urlencode }}" in warning


@pytest.mark.parametrize("unsubscribe", [
    "https://club.example.com/unsubscribe?email={{ email | urlencode }}",  # encoded
    "https://club.example.com/unsubscribe?email={{ email|urlencode|lower }}",
    "{{ unsub_url }}",  # the cell is the whole URL
    "mailto:leave@club.example.com, <{{ unsub_url }}>",
])
def test_no_warning_when_the_value_is_encoded_or_the_whole_url(tmp_path: Path, unsubscribe: str) -> None:
    run = check(tmp_path, unsubscribe, ROWS)

    assert run.exit_code == 0, run.output
    assert "warning" not in run.output


def test_no_warning_when_no_value_needs_encoding(tmp_path: Path) -> None:
    run = check(tmp_path, "https://club.example.com/u/{{ unsub_url }}", [("ann@example.org", "ab-12_x.y~z/9")])

    assert run.exit_code == 0, run.output
    assert "warning" not in run.output


def test_list_id_phrase_may_be_encoded_but_the_id_is_literal(tmp_path: Path) -> None:
    server, output, code = send(tmp_path, PLAIN_TEMPLATE, [("ann@example.org", "1")],
                                list_id="Lesekreis Zürich, Abteilung Bücher und Zeitschriften <news.club.example.com>")

    assert code == 0, output
    [lines] = header_lines(server.messages[0].data, "List-Id")
    assert lines[-1].endswith(b" <news.club.example.com>")
    assert all(len(line) <= 78 for line in lines)
    assert server.messages[0].message["List-Id"] == \
        "Lesekreis Zürich, Abteilung Bücher und Zeitschriften <news.club.example.com>"


def test_a_template_list_id_overrides_the_config_and_is_checked_per_row(tmp_path: Path) -> None:
    template = "List-Id: {{ sig }} <{{ sig }}.club.example.com>\n" + PLAIN_TEMPLATE

    server, output, code = send(tmp_path, template, [("ann@example.org", "chess"), ("bob@example.org", "go club")],
                                list_id="Club news <news.club.example.com>")

    assert code == 3
    assert [header_lines(m.data, "List-Id") for m in server.messages] == [[[b"List-Id: chess <chess.club.example.com>"]]]
    assert ("row 3: invalid: the List-Id header: 'go club.club.example.com' is not a list id "
            "(such as news.club.example.com); write it as") in " ".join(output.split())
    with (tmp_path / "list.report.csv").open(encoding="utf-8-sig") as handle:
        assert [row["status"] for row in csv.DictReader(handle)] == ["sent", "invalid"]


@pytest.mark.parametrize("list_id", ["Club news <club news>", "Club news <news>", "news.club.example.com>"])
def test_a_wrong_list_id_in_the_config_is_an_error_that_shows_the_form(tmp_path: Path, list_id: str) -> None:
    output, code = check_config(tmp_path, list_id)

    assert code == 2
    assert "list_id in [message]:" in output
    assert 'write it as "Club news <news.club.example.com>": a name, then in angle brackets a label, a dot ' \
           "and a domain you own" in " ".join(output.split())
    assert "Traceback" not in output


def check_config(folder: Path, list_id: str) -> tuple[str, int]:
    xlsx = write_xlsx(folder / "list.xlsx", ("email",), [("ann@example.org",)])
    template = write_template(folder / "news.txt", PLAIN_TEMPLATE)
    add_message_settings(write_config(folder, SmtpTestServer(), security="none", username=None), list_id=list_id)
    run = run_cli("check", xlsx, "-t", template)
    return run.output, run.exit_code


def test_a_bare_list_id_in_the_config_gets_its_brackets(tmp_path: Path) -> None:
    server, output, code = send(tmp_path, PLAIN_TEMPLATE, [("ann@example.org", "1")], list_id="news.club.example.com")

    assert code == 0, output
    assert header_lines(server.messages[0].data, "List-Id") == [[b"List-Id: <news.club.example.com>"]]


def test_an_ascii_list_id_name_with_a_comma_is_quoted(tmp_path: Path) -> None:
    server, output, code = send(tmp_path, PLAIN_TEMPLATE, [("ann@example.org", "1")],
                                list_id="Club news, Berlin <news.club.example.com>")

    assert code == 0, output
    assert header_lines(server.messages[0].data, "List-Id") == [[b'List-Id: "Club news, Berlin" <news.club.example.com>']]


def test_a_template_with_its_own_list_unsubscribe_post_gets_it_once(tmp_path: Path) -> None:
    template = ("List-Unsubscribe: <https://club.example.com/u>\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\n"
                + PLAIN_TEMPLATE)

    server, output, code = send(tmp_path, template, [("ann@example.org", "1")])

    assert code == 0, output
    assert header_lines(server.messages[0].data, "List-Unsubscribe-Post") == \
        [[b"List-Unsubscribe-Post: List-Unsubscribe=One-Click"]]


def test_a_message_built_from_a_draft_refuses_a_uri_that_is_not_one() -> None:
    """The message layer's own check, for a Draft not made by a template."""
    draft = Draft(row=2, subject="News", sender=[Mailbox("", "club@example.com")], to=[Mailbox("", "ann@example.org")],
                  other_headers=[("List-Unsubscribe", "<https://club.example.com/u?e=a b>")])

    with pytest.raises(InvalidRow, match="not a URI as it is"):
        build_message(draft)


def test_list_post_no_is_kept_and_a_broken_host_from_a_cell_is_an_invalid_row(tmp_path: Path) -> None:
    template = "List-Post: NO (posting not allowed)\nList-Archive: <https://{{ sig }}/archive>\n" + PLAIN_TEMPLATE

    server, output, code = send(tmp_path, template, [("ann@example.org", "bücher.example"), ("bob@example.org", "[::ü")])

    assert code == 3
    [message] = server.messages
    assert header_lines(message.data, "List-Post") == [[b"List-Post: NO (posting not allowed)"]]
    assert header_lines(message.data, "List-Archive") == [[b"List-Archive: <https://xn--bcher-kva.example/archive>"]]
    assert "row 3: invalid: the List-Archive header has an address that is not valid: 'https://[::ü/archive' " \
           "(Invalid IPv6 URL)" in " ".join(output.split())
    assert "Traceback" not in output
