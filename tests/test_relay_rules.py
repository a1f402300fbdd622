"""SMTP in and the reply rule, end to end: smtplib -> proxy process -> aiosmtpd recording sink."""

from __future__ import annotations


import pytest

from tests.support.mail import message, text
from tests.support.net import free_port


def clean() -> bytes:
    return message(text("Hello there.\r\n.leading dot line\r\n"), subject="plain")


def test_clean_message_is_relayed_byte_for_byte(proxy, sink):
    msg = clean()
    code, reply = proxy.send(msg)
    assert code == 250 and b"2.0.0" in reply
    (got,) = sink.messages
    assert got.content.endswith(msg)
    prefix = got.content[: len(got.content) - len(msg)]
    names = [line.split(b":")[0] for line in prefix.split(b"\r\n") if line and line[:1] not in b" \t"]
    assert names == [b"Received", b"X-Smtp-Offload"]
    assert b"action=unchanged" in prefix
    assert got.mail_from == "customer@sender.test" and got.rcpt_tos == ["support@example.com"]


def test_open_relay_refused(proxy, sink):
    with proxy.client() as c:
        c.ehlo("client.test")
        c.mail("someone@sender.test")
        for rcpt in ("victim@elsewhere.test", "x%victim@example.com", "a!b@example.com",
                     "victim@example.com.evil.test", '"x@elsewhere.test"@example.com', "user@[127.0.0.1]"):
            code, text_ = c.rcpt(rcpt)
            assert code == 550 and text_.startswith(b"5.7.1"), (rcpt, code, text_)
        code, text_ = c.rcpt("Support@EXAMPLE.com")
        assert code == 250
    assert proxy.events("rcpt_refused")


def test_size_refused_when_declared_and_when_sent(make_proxy, sink):
    proxy = make_proxy({"server": {"max_message_bytes": 200_000}})
    with proxy.client() as c:
        c.ehlo("client.test")
        assert c.has_extn("size") and int(c.esmtp_features["size"]) == 200_000
        assert c.has_extn("enhancedstatuscodes")
        code, text_ = c.mail("a@sender.test", ["SIZE=300000"])
        assert (code, text_[:5]) == (552, b"5.3.4")
        assert c.mail("a@sender.test")[0] == 250
        assert c.rcpt("support@example.com")[0] == 250
        code, text_ = c.data(message(text("x" * 70 + "\r\n") * 1) + (b"y" * 900 + b"\r\n") * 300)
        assert (code, text_[:5]) == (552, b"5.3.4")
    assert sink.messages == []


def test_recipient_limit(make_proxy, sink):
    proxy = make_proxy({"server": {"max_recipients": 2}})
    with proxy.client() as c:
        c.ehlo("client.test")
        c.mail("a@sender.test")
        assert c.rcpt("a@example.com")[0] == 250
        assert c.rcpt("b@example.com")[0] == 250
        code, text_ = c.rcpt("c@example.com")
        assert (code, text_[:5]) == (452, b"4.5.3")
        assert c.data(clean())[0] == 250
    assert sink.messages[0].rcpt_tos == ["a@example.com", "b@example.com"]


def test_null_sender_is_relayed_as_null(proxy, sink):
    code, _ = proxy.send(clean(), sender="")
    assert code == 250
    assert sink.messages[0].mail_from == "<>"


def test_downstream_down_gives_4xx(make_proxy, sink):
    proxy = make_proxy(downstream_port=free_port())
    with proxy.client() as c:
        c.ehlo("client.test")
        c.mail("a@sender.test")
        code, text_ = c.rcpt("support@example.com")
        assert code == 451 and text_.startswith(b"4.4.1")
        assert b"127.0.0.1" not in text_


def test_downstream_5xx_on_data_reaches_sender(proxy, sink):
    sink.recorder.data_reply = "554 5.6.0 Content rejected by policy"
    code, text_ = proxy.send(clean())
    assert code == 554 and b"5.6.0" in text_


def test_downstream_4xx_and_421_on_data_give_4xx(proxy, sink):
    sink.recorder.data_reply = "452 4.3.1 Insufficient storage"
    code, text_ = proxy.send(clean())
    assert code == 452 and text_.startswith(b"4.3.1")
    sink.recorder.data_reply = "421 4.3.2 Shutting down"
    code, text_ = proxy.send(clean())
    assert code == 451 and text_.startswith(b"4.3.2")
    ev = proxy.events("message")
    assert [e["outcome"] for e in ev] == ["deferred", "deferred"]


def test_recipient_verdicts_are_mirrored(proxy, sink):
    sink.recorder.rcpt_replies["gone@example.com"] = "550 5.1.1 No such user"
    sink.recorder.rcpt_replies["full@example.com"] = "452 4.2.2 Mailbox full"
    with proxy.client() as c:
        c.ehlo("client.test")
        c.mail("a@sender.test")
        assert c.rcpt("ok@example.com")[0] == 250
        code, text_ = c.rcpt("gone@example.com")
        assert (code, text_) == (550, b"5.1.1 No such user")
        code, text_ = c.rcpt("full@example.com")
        assert (code, text_) == (452, b"4.2.2 Mailbox full")
        assert c.data(clean())[0] == 250
    assert sink.messages[0].rcpt_tos == ["ok@example.com"]


def test_several_transactions_and_rset_in_one_session(proxy, sink):
    with proxy.client() as c:
        c.ehlo("client.test")
        for i in range(3):
            c.mail(f"s{i}@sender.test")
            assert c.rcpt(f"r{i}@example.com")[0] == 250
            if i == 1:
                assert c.rset()[0] == 250
                continue
            assert c.data(clean())[0] == 250
    assert [m.mail_from for m in sink.messages] == ["s0@sender.test", "s2@sender.test"]
    assert [m.rcpt_tos for m in sink.messages] == [["r0@example.com"], ["r2@example.com"]]


def test_smtputf8_and_8bitmime_pass_through(proxy, sink):
    msg = message(text("Grüße, ünïcödé\r\n", cte="8bit"), to="støtte@example.com")
    with proxy.client() as c:
        c.ehlo("client.test")
        assert c.has_extn("smtputf8") and c.has_extn("8bitmime")
        c.mail("kunde@absender.test", ["SMTPUTF8", "BODY=8BITMIME"])
        assert c.rcpt("støtte@example.com")[0] == 250
        assert c.data(msg)[0] == 250
    got = sink.messages[0]
    assert got.rcpt_tos == ["støtte@example.com"]
    assert "SMTPUTF8" in got.mail_options and "BODY=8BITMIME" in got.mail_options
    assert got.content.endswith(msg)


def test_message_event_logged(proxy, sink):
    proxy.send(clean())
    (ev,) = proxy.events("message")
    assert ev["outcome"] == "relayed" and ev["reply"].startswith("250 2.0.0")
    assert ev["client"] == "127.0.0.1" and ev["sender"] == "customer@sender.test"
    assert ev["recipients"] == ["support@example.com"] and ev["message_id"].startswith("<test-")


def test_long_lines_policy(make_proxy, sink):
    proxy = make_proxy({"server": {"max_line_length": 2000}})
    ok = message(text("a" * 1500 + "\r\n"))
    assert proxy.send(ok)[0] == 250
    code, text_ = proxy.send(message(text("a" * 2500 + "\r\n")))
    assert code == 500 and text_.startswith(b"5.5.2")
    assert len(sink.messages) == 1


@pytest.fixture
def plain_sink():
    """A downstream that offers neither 8BITMIME nor SMTPUTF8."""
    from tests.support.proc import Sink
    s = Sink(decode_data=True, enable_SMTPUTF8=False)
    yield s
    s.stop()


def test_downstream_without_smtputf8_or_8bitmime(make_proxy, plain_sink):
    proxy = make_proxy(downstream_port=plain_sink.port)
    with proxy.client() as c:
        c.ehlo("client.test")
        c.mail("kunde@absender.test", ["SMTPUTF8"])
        code, text_ = c.rcpt("støtte@example.com")
        assert code == 553 and text_.startswith(b"5.6.7")
    with proxy.client() as c:
        c.ehlo("client.test")
        c.mail("a@sender.test", ["BODY=8BITMIME"])
        assert c.rcpt("support@example.com")[0] == 250
        code, text_ = c.data(message(text("Grüße\r\n", cte="8bit")))
        assert code == 554 and text_.startswith(b"5.6.3")
        # 7-bit mail still flows on the same session
        c.mail("a@sender.test")
        assert c.rcpt("support@example.com")[0] == 250
        assert c.data(clean())[0] == 250
    assert len(plain_sink.messages) == 1


def test_sigterm_drains_and_exits_zero(proxy, sink):
    assert proxy.send(clean())[0] == 250
    assert proxy.stop() == 0
    assert proxy.events("stopped")


def test_strict_envelope_addresses(proxy, sink):
    from tests.support.net import RawSession

    with RawSession(proxy.smtp_port) as s:
        s.command(b"EHLO c.test")
        for bad in (b"MAIL FROM:<a\x00b@sender.test>", b"MAIL FROM:<@relay.test:a@sender.test>"):
            assert s.command(bad).startswith(b"553 5.1.3"), bad
        assert s.command(b"MAIL FROM:<a@sender.test>").startswith(b"250")
        for bad in (b"RCPT TO:<@relay.test:support@example.com>", b"RCPT TO:<support\x00@example.com>",
                    b"RCPT TO:<support@example.com\x7f>"):
            assert s.command(bad)[:1] == b"5", bad
    assert sink.messages == []
