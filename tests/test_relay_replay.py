"""A transaction the sender believes in survives the downstream connection it lived on
(issue 11 round 2, relay items 1 and 2), through the real proxy and a scripted downstream.

The sender got 250 for some recipients; the downstream then drops the connection mid-
envelope, and the replay of the transaction on a new connection fails too. The recipients
already told 250 must never be silently left out of the transaction the message goes to:
the transaction is replayed again, and the message gets 250 only when the downstream has it
for exactly the recipients the sender was told 250 for.
"""

from __future__ import annotations

import socket
import struct
import time

import pytest

from tests.support.mail import message, text
from tests.support.net import RawSession
from tests.support.scripted import Act, ScriptedDownstream


def start(make_proxy, ds: ScriptedDownstream):
    return make_proxy({"downstream": {"command_timeout": 20, "data_timeout": 20, "pool_size": 2}},
                      downstream_port=ds.port)


def drop_y_then(replay_fault: str):
    """Connection 1 drops on RCPT y; the replay on connection 2 fails as `replay_fault` says."""
    seen: dict[tuple[int, str, str], int] = {}

    def decide(conn, verb, arg) -> Act:
        n = seen[conn.n, verb, arg] = seen.get((conn.n, verb, arg), 0) + 1
        if conn.n == 1 and verb == "RCPT" and arg == "y@example.com":
            return Act("drop")
        if conn.n == 2 and n == 1:
            if replay_fault == "mail_451" and verb == "MAIL":
                return Act("refuse", 451)
            if replay_fault == "rcpt_450" and verb == "RCPT" and arg == "x@example.com":
                return Act("refuse", 450)
            if replay_fault == "mail_drop" and verb == "MAIL":
                return Act("drop")
        return Act()

    return decide


def body(token: str) -> bytes:
    return message(text(f"{token}\r\n"), subject=token) + b".\r\n"


@pytest.mark.parametrize("replay_fault,z_reply", [("mail_451", b"451 4.4.1 "), ("rcpt_450", b"451 4.4.3 "),
                                                  ("mail_drop", b"451 4.4.1 ")])
def test_a_failed_replay_keeps_the_recipients_told_250(make_proxy, scripted, replay_fault, z_reply):
    """x got 250; the downstream drops on y; z's replay fails; w must join x's transaction,
    not open a new one without x (which then got 250 for DATA and delivered to w alone)."""
    ds = scripted(drop_y_then(replay_fault))
    proxy = start(make_proxy, ds)
    with RawSession(proxy.smtp_port) as s:
        s.command(b"EHLO client.test")
        assert s.command(b"MAIL FROM:<a@sender.test>").startswith(b"250 ")
        assert s.command(b"RCPT TO:<x@example.com>").startswith(b"250 ")
        assert s.command(b"RCPT TO:<y@example.com>").startswith(b"451 4.4.1 ")
        reply = s.command(b"RCPT TO:<z@example.com>")
        assert reply.startswith(z_reply), reply
        reply = s.command(b"RCPT TO:<w@example.com>")  # the transaction is replayed again, with x
        assert reply.startswith(b"250 "), reply
        assert s.command(b"DATA").startswith(b"354")
        s.send(body("TOKEN-kept"))
        final = s.reply()
    assert final.startswith(b"250 "), final
    assert [(d.sender, d.rcpts, d.token) for d in ds.deliveries] == \
        [("a@sender.test", ["x@example.com", "w@example.com"], "TOKEN-kept")]
    (ev,) = proxy.events("message")
    assert ev["recipients"] == ["x@example.com", "w@example.com"] and ev["outcome"] == "relayed"


def test_a_replay_that_keeps_failing_defers_every_later_command_until_the_sender_starts_over(make_proxy, scripted):
    """Every new connection refuses x (450): no later RCPT nor the message may get 250 for a
    transaction without x. After the message's 451 the sender starts over, and a transaction
    without x is then what it asks for."""
    def decide(conn, verb, arg) -> Act:
        if conn.n == 1 and verb == "RCPT" and arg == "y@example.com":
            return Act("drop")
        if conn.n >= 2 and verb == "RCPT" and arg == "x@example.com":
            return Act("refuse", 450)
        return Act()

    ds = scripted(decide)
    proxy = start(make_proxy, ds)
    with RawSession(proxy.smtp_port) as s:
        s.command(b"EHLO client.test")
        assert s.command(b"MAIL FROM:<a@sender.test>").startswith(b"250 ")
        assert s.command(b"RCPT TO:<x@example.com>").startswith(b"250 ")
        assert s.command(b"RCPT TO:<y@example.com>").startswith(b"451 4.4.1 ")
        for rcpt in (b"z", b"w"):
            reply = s.command(b"RCPT TO:<" + rcpt + b"@example.com>")
            assert reply.startswith(b"451 4.4.3 "), (rcpt, reply)
        assert s.command(b"DATA").startswith(b"354")
        s.send(body("TOKEN-deferred"))
        final = s.reply()
        assert final.startswith(b"451 4.4.3 "), final
        # The sender starts over (after DATA the transaction is gone, as after RSET).
        assert s.command(b"MAIL FROM:<a@sender.test>").startswith(b"250 ")
        assert s.command(b"RCPT TO:<w@example.com>").startswith(b"250 ")
        assert s.command(b"DATA").startswith(b"354")
        s.send(body("TOKEN-again"))
        final = s.reply()
        assert final.startswith(b"250 "), final
    assert [(d.rcpts, d.token) for d in ds.deliveries] == [(["w@example.com"], "TOKEN-again")]
    first, second = proxy.events("message")
    assert first["outcome"] == "deferred" and first["recipients"] == ["x@example.com"]
    assert second["outcome"] == "relayed" and second["recipients"] == ["w@example.com"]


def wait_for_events(proxy, names: tuple[str, ...], count: int, timeout: float = 20) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        events = [e for e in proxy.events() if e.get("event") in names and str(e.get("rcpt", "")).startswith("slow")]
        if len(events) >= count:
            return events
        assert time.monotonic() < deadline, f"only {events} of {count} {names} events"
        time.sleep(0.05)


@pytest.mark.parametrize("hang_up", ["reset", "close"])
def test_a_client_hanging_up_during_a_slow_rcpt_is_no_downstream_outage(make_proxy, scripted, hang_up):
    """The downstream takes its time over RCPT; the client goes away meanwhile (a reset, as a
    crashed client; or a close). That is logged as the client's doing (client_gone, info), not
    as downstream_unavailable (a warning operators read as an outage); a real fault still is."""
    ds = scripted(lambda conn, verb, arg: Act(delay=5) if verb == "RCPT" and arg.startswith("slow") else
                  Act("drop") if verb == "RCPT" and arg.startswith("drop") else Act())
    proxy = start(make_proxy, ds)
    for i in range(3):
        s = RawSession(proxy.smtp_port)
        s.command(b"EHLO client.test")
        assert s.command(b"MAIL FROM:<a@sender.test>").startswith(b"250 ")
        assert s.command(b"RCPT TO:<ok@example.com>").startswith(b"250 ")
        s.send(b"RCPT TO:<slow%d@example.com>\r\n" % i)
        ds.wait_for(lambda: ds.saw(b"RCPT TO:<slow%d@example.com>" % i), "the proxy's RCPT")
        if hang_up == "reset":
            s.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.file.close()  # its reader holds the descriptor open too: only both close the socket
        s.close()
    events = wait_for_events(proxy, ("client_gone", "downstream_unavailable"), 3)
    assert {(e["event"], e["level"]) for e in events} == {("client_gone", "info")}, events
    assert sorted(e["rcpt"] for e in events) == ["slow0@example.com", "slow1@example.com", "slow2@example.com"]
    with RawSession(proxy.smtp_port) as s:
        s.command(b"EHLO client.test")
        assert s.command(b"MAIL FROM:<a@sender.test>").startswith(b"250 ")
        assert s.command(b"RCPT TO:<drop@example.com>").startswith(b"451 4.4.1 ")
    (ev,) = proxy.events("downstream_unavailable")
    assert ev["rcpt"] == "drop@example.com" and ev["level"] == "warning"
    assert len(proxy.events("client_gone")) == 3  # the session that got 451 did not go away
    # The interrupted connections were closed (their late answers then go nowhere).
    ds.wait_for(lambda: all(c.closed for c in ds.conns), "every downstream connection to end")


def test_a_downstream_closing_between_commands_is_replayed_not_refused(make_proxy, scripted):
    """The downstream answers, then closes the connection (its idle timeout, a restart) while
    the sender is between two commands. The next RCPT, and DATA, must replay the transaction
    on a new connection: a RCPT or DATA alone there gets "503 need MAIL", a 5xx for a good
    recipient and a bounce for a message whose recipients were told 250."""
    def decide(conn, verb, arg) -> Act:
        if verb == "RCPT" and conn.n <= 2 and arg == ("x@example.com", "y@example.com")[conn.n - 1]:
            return Act(close_after=True)
        return Act()

    ds = scripted(decide)
    proxy = start(make_proxy, ds)
    with RawSession(proxy.smtp_port) as s:
        s.command(b"EHLO client.test")
        assert s.command(b"MAIL FROM:<a@sender.test>").startswith(b"250 ")
        assert s.command(b"RCPT TO:<x@example.com>").startswith(b"250 ")
        ds.wait_for(lambda: ds.conns[0].closed, "the downstream to close its first connection")
        reply = s.command(b"RCPT TO:<y@example.com>")  # replayed on connection 2: MAIL, x, then y
        assert reply.startswith(b"250 "), reply
        ds.wait_for(lambda: ds.conns[1].closed, "the downstream to close its second connection")
        assert s.command(b"DATA").startswith(b"354")  # replayed on connection 3: MAIL, x, y, DATA
        s.send(body("TOKEN-between"))
        final = s.reply()
    assert final.startswith(b"250 "), final
    assert [(d.conn, d.sender, d.rcpts, d.token) for d in ds.deliveries] == \
        [(3, "a@sender.test", ["x@example.com", "y@example.com"], "TOKEN-between")]
