"""A pooled downstream connection never carries a reply into another session, and a reply
that breaks the protocol never becomes a 250 (issue 11, items 1 and 2).

The downstream is tests/support/scripted.py: every reply names what it answers (`rcpt:<addr>`,
`dot:<token>` ...), so a client can check that each reply it reads is its own.
"""

from __future__ import annotations

import re
import ssl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtp_offload.smtp.sink import Recorder
from tests.support.mail import message, text
from tests.support.net import RawSession, self_signed
from tests.support.proc import Sink
from tests.support.scripted import TAG, Act, ScriptedDownstream


def token_message(token: str) -> bytes:
    return message(text(f"{token}\r\n.a line with a leading dot\r\n"), subject=token)


def start(make_proxy, ds: ScriptedDownstream):
    return make_proxy({"downstream": {"command_timeout": 10, "data_timeout": 10, "pool_size": 4}},
                      downstream_port=ds.port)


def tags(reply: bytes) -> list[tuple[str, str]]:
    return [(k.decode(), v.decode()) for k, v in TAG.findall(reply)]


def own_session(proxy, ds: ScriptedDownstream, name: str) -> bytes:
    """A whole session that checks each reply is its own; returns the final reply."""
    sender, rcpt, token = f"{name}@sender.test", f"{name}@example.com", f"TOKEN-{name}"
    with RawSession(proxy.smtp_port) as s:
        s.command(b"EHLO client.test")
        assert s.command(f"MAIL FROM:<{sender}>".encode()).startswith(b"250 ")
        reply = s.command(f"RCPT TO:<{rcpt}>".encode())
        assert reply.startswith(b"250 ") and tags(reply) == [("rcpt", rcpt)], reply
        assert s.command(b"DATA").startswith(b"354")
        s.send(token_message(token) + b".\r\n")
        final = s.reply()
        s.command(b"QUIT")
    if final.startswith(b"250 "):
        got = [d for d in ds.deliveries if d.token == token]
        assert len(got) == 1 and got[0].sender == sender and got[0].rcpts == [rcpt], got
    return final


def hang_up_while(proxy, ds: ScriptedDownstream, name: str, waiting_for: str) -> None:
    """A session that hangs up while the proxy waits for the downstream's answer."""
    sender, rcpt = f"{name}@sender.test", f"{name}@example.com"
    s = RawSession(proxy.smtp_port)
    s.command(b"EHLO client.test")
    s.command(f"MAIL FROM:<{sender}>".encode())
    if waiting_for in ("mail", "rcpt"):
        if waiting_for == "rcpt":
            assert s.command(f"RCPT TO:<first-{rcpt}>".encode()).startswith(b"250")
        s.send(f"RCPT TO:<{rcpt}>\r\n".encode())
        ds.wait_for(lambda: ds.saw(f"RCPT TO:<{rcpt}>".encode()) if waiting_for == "rcpt"
                    else ds.saw(f"MAIL FROM:<{sender}>".encode()), f"the proxy's {waiting_for}")
    elif waiting_for == "rset":
        assert s.command(f"RCPT TO:<{rcpt}>".encode()).startswith(b"250")
        s.send(b"RSET\r\n")
        ds.wait_for(lambda: ds.saw(b"RSET"), "the proxy's RSET")
    else:
        assert s.command(f"RCPT TO:<{rcpt}>".encode()).startswith(b"250")
        assert s.command(b"DATA").startswith(b"354")
        s.send(token_message(f"TOKEN-{name}") + b".\r\n")
        if waiting_for == "data":
            ds.wait_for(lambda: ds.saw(b"DATA"), "the proxy's DATA")
        else:
            ds.wait_for(lambda: any(d.token == f"TOKEN-{name}" for d in ds.deliveries), "the message")
    s.close()


@pytest.mark.parametrize("waiting_for", ["mail", "rcpt", "rset", "data", "dot"])
def test_client_hanging_up_mid_command_leaves_no_reply_for_the_next_session(make_proxy, scripted, waiting_for):
    """The downstream answers the first session's command only once the next command on the
    same connection arrives: a pooled connection would hand that answer to the next session
    (its RCPT got the previous sender's reply, its DATA a 250 for nothing sent)."""
    verb, arg = {"mail": ("MAIL", "gone@sender.test"), "rcpt": ("RCPT", "gone@example.com"), "rset": ("RSET", ""),
                 "data": ("DATA", "gone@sender.test"), "dot": ("DOT", "TOKEN-gone")}[waiting_for]
    ds = scripted(lambda conn, v, a: Act("defer") if (v, a) == (verb, arg) and conn.n == 1 else Act())
    proxy = start(make_proxy, ds)
    hang_up_while(proxy, ds, "gone", waiting_for)
    for name in ("next", "then"):
        assert own_session(proxy, ds, name).startswith(b"250 ")
    assert [d.token for d in ds.deliveries if d.token != "TOKEN-gone"] == ["TOKEN-next", "TOKEN-then"]
    ds.wait_for(lambda: ds.conns[0].closed, "the interrupted downstream connection to be closed")
    assert len(ds.conns) == 2  # the interrupted one was replaced once; the new one is pooled and reused


@pytest.mark.parametrize("code", [250, 251, 334, 220])
def test_downstream_answering_DATA_with_anything_but_354_gives_451_4_4_2(make_proxy, scripted, code):
    ds = scripted(lambda conn, verb, arg: Act("wrong", code) if verb == "DATA" and "bad" in arg else Act())
    proxy = start(make_proxy, ds)
    final = own_session(proxy, ds, "bad")
    assert final.startswith(b"451 4.4.2 "), final
    assert ds.deliveries == []
    (ev,) = proxy.events("message")
    assert ev["outcome"] == "deferred"
    assert own_session(proxy, ds, "good").startswith(b"250 ")  # on a fresh connection
    assert len(ds.conns) == 2 and ds.conns[0].closed


def test_downstream_refusing_DATA_is_still_passed_on(make_proxy, scripted):
    ds = scripted(lambda conn, verb, arg: Act("refuse", 554) if verb == "DATA" and "bad" in arg else Act())
    proxy = start(make_proxy, ds)
    final = own_session(proxy, ds, "bad")
    assert final.startswith(b"554 5.5.0 ") and tags(final) == [("data", "bad@sender.test")], final
    assert own_session(proxy, ds, "good").startswith(b"250 ")
    assert len(ds.conns) == 1  # a refusal is no protocol error: the connection stays in use


@pytest.mark.parametrize("fault", ["extra", "stale", "garbage"])
def test_a_reply_nobody_asked_for_or_no_reply_at_all_gives_451_4_4_2(make_proxy, scripted, fault):
    """Two replies to one final dot (one of them nobody asked for), or a line that is no SMTP
    reply: which answer is ours cannot be known, so no 250; and the next session gets a
    fresh connection with its own replies."""
    act = {"extra": Act(extra=True), "stale": Act(stale=True), "garbage": Act("garbage")}[fault]
    ds = scripted(lambda conn, verb, arg: act if verb == "DOT" and "first" in arg else Act())
    proxy = start(make_proxy, ds)
    final = own_session(proxy, ds, "first")
    assert final.startswith(b"451 4.4.2 "), final
    assert own_session(proxy, ds, "second").startswith(b"250 ")
    assert len(ds.conns) == 2 and ds.conns[0].closed


def test_rcpt_answered_with_garbage_gives_451_4_4_2(make_proxy, scripted):
    ds = scripted(lambda conn, verb, arg: Act("garbage") if verb == "RCPT" and "bad" in arg else Act())
    proxy = start(make_proxy, ds)
    with RawSession(proxy.smtp_port) as s:
        s.command(b"EHLO client.test")
        s.command(b"MAIL FROM:<a@sender.test>")
        assert s.command(b"RCPT TO:<bad@example.com>").startswith(b"451 4.4.2 ")
        # the transaction goes on, replayed on a new connection
        reply = s.command(b"RCPT TO:<good@example.com>")
        assert reply.startswith(b"250 ") and tags(reply) == [("rcpt", "good@example.com")]
        assert s.command(b"DATA").startswith(b"354")
        s.send(token_message("TOKEN-replayed") + b".\r\n")
        assert s.reply().startswith(b"250 ")
    (d,) = ds.deliveries
    assert (d.token, d.sender, d.rcpts) == ("TOKEN-replayed", "a@sender.test", ["good@example.com"])


def test_pool_does_not_hand_out_a_connection_with_unread_bytes(make_proxy, scripted):
    ds = scripted()
    proxy = start(make_proxy, ds)
    assert own_session(proxy, ds, "first").startswith(b"250 ")
    assert len(ds.conns) == 1 and not ds.conns[0].closed  # pooled
    ds.inject(1, b"250 2.0.0 extra:<idle> nobody asked\r\n")  # sent once it returns
    assert own_session(proxy, ds, "second").startswith(b"250 ")
    assert len(ds.conns) == 2
    ds.wait_for(lambda: ds.conns[0].closed, "the tainted connection to be closed")


def test_pooled_connection_over_starttls_is_checked_and_reused(make_proxy, tmp_path):
    """The reply counter sees the bytes through the TLS layer too: over a downstream that
    requires STARTTLS, messages pass and one connection serves every session."""
    crt, key = self_signed(tmp_path, "downstream.test")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(crt, key)
    peers: list[tuple[str, int]] = []

    class PeerHandler(Recorder):
        async def handle_DATA(self, server, session, envelope):
            peers.append(session.peer)
            assert session.ssl is not None
            return await super().handle_DATA(server, session, envelope)

    tls_sink = Sink(tls_context=ctx, require_starttls=True)
    tls_sink.controller.handler = tls_sink.recorder = PeerHandler(keep=None)
    try:
        proxy = make_proxy({"downstream": {"tls": "required", "tls_verify": False}}, downstream_port=tls_sink.port)
        for i in range(3):
            assert proxy.send(token_message(f"TOKEN-tls{i}"))[0] == 250
    finally:
        tls_sink.stop()
    assert [b"TOKEN-tls%d" % i in m.content for i, m in enumerate(tls_sink.messages)] == [True] * 3
    assert len(set(peers)) == 1


# -- pure functions ---------------------------------------------------------------


def test_reply_counter_counts_replies_however_the_bytes_are_cut():
    from smtp_offload.relay.client import ReplyCounter

    wire = b"250-first\r\n250-second\r\n250 last\r\n354 go\n550 5.1.1 no\r\n"
    for cut in range(len(wire) + 1):
        for step in (1, 3, len(wire)):
            c = ReplyCounter()
            chunks = [wire[:cut]] + [wire[cut:][i:i + step] for i in range(0, len(wire) - cut, step)]
            seen = []
            for chunk in chunks:
                c.feed(chunk)
                seen.append(c.replies)
            assert c.replies == 3 and not c.mid_line, (cut, step)
            assert seen == sorted(seen)
    c = ReplyCounter()
    c.feed(b"250 ok\r\n25")
    assert (c.replies, c.mid_line) == (1, True)
    c.feed(b"0-more\r\n")
    assert (c.replies, c.mid_line) == (1, False)
    c = ReplyCounter()
    c.feed(b"ab\n-x\n\n")  # short lines are no continuation, whatever follows them
    assert c.replies == 3


def test_data_block_stuffs_dots_and_ends_lines():
    from smtp_offload.relay.client import _data_block

    assert _data_block(b"a\r\n.b\n..c\rd") == b"a\r\n..b\r\n...c\r\nd\r\n.\r\n"
    assert _data_block(b".\r\n") == b"..\r\n.\r\n"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n", b"\r\n."]), max_size=30).map(b"".join))
def test_data_block_is_the_line_end_and_dot_stuffing_rule(message):
    """The fast path (already CRLF: one replace) gives what the rule itself gives."""
    from smtp_offload.relay.client import _data_block

    text = re.sub(rb"\r\n|\n|\r(?!\n)", b"\r\n", message)
    text += b"" if text.endswith(b"\r\n") else b"\r\n"
    assert _data_block(message) == re.sub(rb"(?m)^\.", b"..", text) + b".\r\n"
