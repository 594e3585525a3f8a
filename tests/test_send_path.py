"""The one send loop (issue 14, item 3), fault by fault, for both window
sizes: one command at a time, and pipelined (RFC 2920, every command of a
message in one write).

Each fault is tested once here, through the library (``SmtpSession.send``,
the stream of one that ``--test-to`` uses, and ``SmtpSession.stream``) against
the real aiosmtpd server of tests/smtp_server.py. The faults the CLI tests
already run with both window sizes (a drop, a 421 and a 451 across a long
run; a drop after the end of DATA; a 421 after a 550; a refused sender then
a 421; a 450 to MAIL FROM) are in tests/test_reliability.py and
tests/test_server_replies.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import smtp_server
from smtp_server import Faults, SmtpTestServer

from mailmerge.config.file import SmtpConfig
from mailmerge.delivery.smtp import Job, SmtpSession
from mailmerge.errors import ConnectionLost
from mailmerge.mime.message import EnvelopeRecipient, OutgoingMessage, build_message
from mailmerge.outcome import Outcome
from mailmerge.render.template import Draft, Mailbox

GOOD, GONE, OTHER = "ann@example.org", "gone@example.org", "bob@example.org"


@pytest.fixture(params=[False, True], ids=["one-by-one", "pipelined"])
def pipelining(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def message(row: int, *addresses: str, body: str = "Hello.\n") -> OutgoingMessage:
    draft = Draft(row=row, subject="News", sender=[Mailbox("Club", "club@example.com")],
                  to=[Mailbox("", address) for address in addresses], body=body)
    return build_message(draft)


def session(server: SmtpTestServer) -> SmtpSession:
    return SmtpSession(SmtpConfig(host=server.host, port=server.port, security="none", timeout=10))


def statuses(outcomes: list[Outcome]) -> dict[str, tuple[str, int | None]]:
    return {o.address: (o.status.value, o.code) for o in outcomes}


def stream(smtp: SmtpSession, *messages: OutgoingMessage) -> tuple[list[Outcome], Any]:
    """Every message through SmtpSession.stream; (outcomes, how it ended)."""
    outcomes: list[Outcome] = []
    jobs = iter([Job(m, m.recipients, lambda accepted: None, outcomes.extend) for m in messages])
    return outcomes, smtp.stream(lambda wait: next(jobs, None))


# --- replies that settle a message, and the session goes on --------------------------------


def test_a_554_to_the_end_of_data_refuses_the_accepted_and_keeps_a_550(pipelining: bool) -> None:
    faults = Faults(refuse={GONE}, reject_data_with=b"SPAMWORD")
    with SmtpTestServer(faults=faults, pipelining=pipelining) as server, session(server) as smtp:
        outcomes, end = stream(smtp, message(2, GOOD, GONE, body="SPAMWORD\n"), message(3, OTHER))
    assert end.error is None and end.handled == 2
    assert statuses(outcomes) == {GOOD: ("refused", 554), GONE: ("refused", 550), OTHER: ("sent", 250)}
    assert server.recipients() == [OTHER]


def test_every_recipient_refused_sends_no_content_and_the_next_message_goes(pipelining: bool) -> None:
    with SmtpTestServer(refuse=[GONE], pipelining=pipelining) as server, session(server) as smtp:
        outcomes, end = stream(smtp, message(2, GONE), message(3, GOOD))
    assert end.error is None
    assert statuses(outcomes) == {GONE: ("refused", 550), GOOD: ("sent", 250)}
    assert server.recipients() == [GOOD]
    assert len(server.messages) == 1


def test_a_553_to_mail_from_refuses_every_address(pipelining: bool) -> None:
    faults = Faults(refuse_senders={"club@example.com"})
    with SmtpTestServer(faults=faults, pipelining=pipelining) as server, session(server) as smtp:
        outcomes = smtp.send(message(2, GOOD, OTHER))
    assert statuses(outcomes) == {GOOD: ("refused", 553), OTHER: ("refused", 553)}
    assert server.messages == []


def test_no_smtputf8_refuses_that_message_without_a_word_and_the_next_goes(pipelining: bool) -> None:
    with SmtpTestServer(smtputf8=False, pipelining=pipelining) as server, session(server) as smtp:
        outcomes, end = stream(smtp, message(2, "josé@example.org"), message(3, GOOD))
    assert end.error is None
    assert statuses(outcomes) == {"josé@example.org": ("refused", None), GOOD: ("sent", 250)}
    assert "SMTPUTF8" in outcomes[0].reason
    assert server.recipients() == [GOOD]
    assert server.error_replies == []  # nothing about it was said to the server


# --- faults that end the session: send() raises ConnectionLost with every outcome -------------


def test_a_421_keeps_the_550_before_it_and_the_rest_is_not_sent_yet(pipelining: bool) -> None:
    with SmtpTestServer(refuse=[GONE], faults=Faults(error_limit=1), pipelining=pipelining) as server:
        with session(server) as smtp, pytest.raises(ConnectionLost) as caught:
            smtp.send(message(2, GONE, GOOD, OTHER))
    assert caught.value.code == 421
    assert statuses(caught.value.outcomes) == {
        GONE: ("refused", 550), GOOD: ("not_sent_yet", None), OTHER: ("not_sent_yet", None)}
    assert [o.address for o in caught.value.outcomes] == [GONE, GOOD, OTHER]  # in the envelope's order
    assert server.messages == []


def test_a_450_to_mail_from_ends_the_session_and_nothing_is_sent_yet(pipelining: bool) -> None:
    with SmtpTestServer(faults=Faults(message_rate=(0, 60.0)), pipelining=pipelining) as server, \
            session(server) as smtp:
        with pytest.raises(ConnectionLost) as caught:
            smtp.send(message(2, GOOD, OTHER))
        assert not smtp.is_open  # closed: the caller waits before it connects again
    assert (caught.value.code, caught.value.text) == (450, "4.7.1 Error: too much mail from 127.0.0.1")
    assert statuses(caught.value.outcomes) == {GOOD: ("not_sent_yet", None), OTHER: ("not_sent_yet", None)}


def test_a_drop_after_the_end_of_data_is_unknown(pipelining: bool) -> None:
    with SmtpTestServer(faults=Faults(drop_at_data={1}), pipelining=pipelining) as server:
        with session(server) as smtp, pytest.raises(ConnectionLost) as caught:
            smtp.send(message(2, GOOD, OTHER))
    assert caught.value.code is None
    assert statuses(caught.value.outcomes) == {GOOD: ("unknown", None), OTHER: ("unknown", None)}
    assert server.recipients() == [GOOD, OTHER]  # it did arrive: never sent again on its own


@pytest.fixture
def server_421_at_end_of_data(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The test server answers the end of DATA with 421 and closes (a server
    shutting down): it did not take the message."""

    async def handle_data(self: Any, server: Any, session: Any, envelope: Any) -> str:
        await server.push("421 4.3.2 Shutting down, try again later")
        server.transport.close()
        return "250 never seen by the client"

    monkeypatch.setattr(smtp_server._Handler, "handle_DATA", handle_data)
    yield


@pytest.mark.usefixtures("server_421_at_end_of_data")
def test_a_421_to_the_end_of_data_is_not_sent_yet(pipelining: bool) -> None:
    """Unlike a drop, a 421 is the server's word that it did not take it."""
    with SmtpTestServer(pipelining=pipelining) as server:
        with session(server) as smtp, pytest.raises(ConnectionLost) as caught:
            smtp.send(message(2, GOOD))
    assert caught.value.code == 421
    assert statuses(caught.value.outcomes) == {GOOD: ("not_sent_yet", None)}
    assert "421 4.3.2 Shutting down" in caught.value.outcomes[0].reason


def test_a_narrowed_envelope_goes_only_to_those_addresses(pipelining: bool) -> None:
    """send(recipients=...): a retry of some addresses of a message."""
    outgoing = message(2, GOOD, OTHER)
    with SmtpTestServer(pipelining=pipelining) as server, session(server) as smtp:
        outcomes = smtp.send(outgoing, [EnvelopeRecipient("To", OTHER)])
    assert statuses(outcomes) == {OTHER: ("sent", 250)}
    assert server.recipients() == [OTHER]
