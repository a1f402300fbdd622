"""STARTTLS on the SMTP side, with a certificate generated for the test."""

from __future__ import annotations

import ssl

from tests.support.mail import message, text


def _client_ctx() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def test_starttls_offered_and_used(make_proxy, sink, cert):
    proxy = make_proxy({"server": {"tls_cert": cert[0], "tls_key": cert[1]}})
    with proxy.client() as c:
        c.ehlo("client.test")
        assert c.has_extn("starttls")
        c.starttls(context=_client_ctx())
        c.ehlo("client.test")
        c.mail("a@sender.test")
        assert c.rcpt("support@example.com")[0] == 250
        assert c.data(message(text()))[0] == 250
    assert b"with ESMTPS id" in sink.messages[0].content


def test_no_starttls_without_certificate(proxy):
    with proxy.client() as c:
        c.ehlo("client.test")
        assert not c.has_extn("starttls")


def test_require_tls_refuses_plaintext_mail(make_proxy, sink, cert):
    proxy = make_proxy({"server": {"tls_cert": cert[0], "tls_key": cert[1], "require_tls": True}})
    with proxy.client() as c:
        c.ehlo("client.test")
        code, reply = c.mail("a@sender.test")
        assert code == 530 and reply.startswith(b"5.7.0")
    assert sink.messages == []
