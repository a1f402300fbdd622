"""DKIM verification on arrival and the ARC seal after a rewrite, verified downstream with
dkimpy. The proxy runs in-process here so the test can hand it a DNS resolver (dkimpy's
dnsfunc hook on the verifying side): everything stays offline."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys

import aiosmtplib
import dkim
import pytest

from smtp_offload import auth as auth_mod
from smtp_offload import config as config_mod
from smtp_offload import log as log_mod
from smtp_offload.app import App
from smtp_offload.errors import ConfigError
from tests.support import samples
from tests.support.keys import keypair
from tests.support.mail import attachment, message, multipart, text
from tests.support.net import free_port
from tests.support.proc import Sink, write_config


SENDER_KEY, SENDER_TXT = keypair()
ARC_KEY, ARC_TXT = keypair()
DNS = {"s1._domainkey.sender.test": SENDER_TXT, "arc._domainkey.mx.test": ARC_TXT}


def dnsfunc(name, timeout=5):  # for dkimpy on the verifying (downstream) side
    rec = DNS.get(name.decode().rstrip("."))
    return rec.encode() if rec else None


async def resolver(name: str):  # for the proxy
    return DNS.get(name)


async def hanging_resolver(name: str):
    await asyncio.sleep(30)


def signed(msg: bytes) -> bytes:
    sig = dkim.sign(msg, b"s1", b"sender.test", SENDER_KEY,
                    include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
    return sig + msg


def proxy_config(tmp_path, **signed):
    key = tmp_path / "arc.pem"
    key.write_bytes(ARC_KEY)
    cfg = config_mod.load(None, env={})
    cfg.server = dataclasses.replace(cfg.server, listen=f"127.0.0.1:{free_port()}", accepted_domains=["example.com"],
                                     hostname="mx.test")
    cfg.links = dataclasses.replace(cfg.links, listen=f"127.0.0.1:{free_port()}", secret_file=str(tmp_path / "secret"))
    cfg.storage.local.path = str(tmp_path / "store")
    cfg.policy = dataclasses.replace(cfg.policy, plan=dataclasses.replace(cfg.policy.plan, offload_over_bytes=20_000),
                                     signed=dataclasses.replace(cfg.policy.signed, **signed))
    cfg.auth = dataclasses.replace(cfg.auth, authserv_id="mx.test", dns_timeout=0.5, arc=dataclasses.replace(
        cfg.auth.arc, enabled=True, selector="arc", domain="mx.test", private_key_file=str(key)))
    return cfg


async def relay(cfg, sink, raw: bytes, resolve=resolver) -> bytes:
    cfg.downstream = dataclasses.replace(cfg.downstream, port=sink.port, tls="none")
    log_mod.configure("json", "warning")
    app = App(cfg, log_mod.get(), resolver=resolve)
    await app.start()
    try:
        host, port = cfg.server.listen.rsplit(":", 1)
        client = aiosmtplib.SMTP(hostname=host, port=int(port), start_tls=False)
        await client.connect()
        await client.sendmail("customer@sender.test", ["support@example.com"], raw)
        await client.quit()
    finally:
        await app.stop(drain=1)
    return sink.messages[-1].content


@pytest.fixture
def sink():
    s = Sink()
    yield s
    s.stop()


def auth_results(raw: bytes) -> list[bytes]:
    head = raw.split(b"\r\n\r\n", 1)[0].replace(b"\r\n\t", b" ").replace(b"\r\n ", b" ")
    return [ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"authentication-results:")]


async def test_unchanged_message_keeps_its_dkim_signature(tmp_path, sink):
    raw = signed(message(text("Hello, nothing attached.\r\n")))
    got = await relay(proxy_config(tmp_path), sink, raw)
    assert got.endswith(raw)
    assert dkim.verify(got, dnsfunc=dnsfunc)
    (ar,) = auth_results(got)
    assert ar.startswith(b"Authentication-Results: mx.test;") and b"dkim=pass header.d=sender.test" in ar
    assert b"ARC-Seal" not in got  # nothing changed, nothing to vouch for


async def test_rewritten_message_is_arc_sealed(tmp_path, sink):
    raw = signed(message(multipart(text(), attachment(samples.big_pdf(60_000), "scan.pdf", "application/pdf"))))
    got = await relay(proxy_config(tmp_path), sink, raw)
    assert b"scan.pdf" in got and b"action=rewritten" in got
    assert not dkim.verify(got, dnsfunc=dnsfunc)  # the body changed: the sender's signature breaks...
    cv, results, reason = dkim.arc_verify(got, dnsfunc=dnsfunc)
    assert cv == dkim.CV_Pass, reason  # ...and the ARC chain carries what we saw
    head = got.split(b"\r\n\r\n", 1)[0].replace(b"\r\n\t", b" ").replace(b"\r\n ", b" ")
    aar = [ln for ln in head.split(b"\r\n") if ln.startswith(b"ARC-Authentication-Results:")]
    assert len(aar) == 1 and b"i=1; mx.test" in aar[0] and b"dkim=pass header.d=sender.test" in aar[0]
    ams = [ln for ln in head.split(b"\r\n") if ln.startswith(b"ARC-Message-Signature:")][0]
    assert b"x-smtp-offload" in ams.lower()  # the decision headers are covered by the seal


async def test_forged_authentication_results_are_removed(tmp_path, sink):
    forged = b"Authentication-Results: mx.test; dkim=pass header.d=bank.test\r\n"
    other = b"Authentication-Results: mx.elsewhere.test; spf=pass\r\n"
    raw = forged + other + message(text("Trust me.\r\n"))
    got = await relay(proxy_config(tmp_path), sink, raw)
    ars = auth_results(got)
    assert b"bank.test" not in got
    assert other.rstrip() in ars and sum(1 for a in ars if a.startswith(b"Authentication-Results: mx.test")) == 1


async def test_dns_timeout_is_temperror_and_mail_flows(tmp_path, sink):
    raw = signed(message(text("DNS is slow today.\r\n")))
    got = await relay(proxy_config(tmp_path), sink, raw, resolve=hanging_resolver)
    (ar,) = auth_results(got)
    assert b"dkim=temperror header.d=sender.test" in ar


async def test_signed_mail_can_be_relayed_untouched(tmp_path, sink):
    raw = signed(message(multipart(text(), attachment(samples.pe_exe(), "tool.pdf", "application/pdf"))))
    got = await relay(proxy_config(tmp_path, on_signed="skip", skip_signed_domains=["sender.test"]), sink, raw)
    assert got.endswith(raw) and b"action=skipped-signed" in got
    assert dkim.verify(got, dnsfunc=dnsfunc)


def test_broken_arc_key_is_a_config_error_at_start(tmp_path):
    """The key is read by the start-up check of `serve` and `check-config` (auth.check_start),
    not by config.load: config does not import auth."""
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN RSA PRIVATE KEY-----\nnot a key\n-----END RSA PRIVATE KEY-----\n")
    for arc, key in (({"enabled": True, "selector": "arc", "domain": "mx.test", "private_key_file": str(bad)},
                      "auth.arc.private_key_file"),
                     ({"enabled": True, "domain": "mx.test", "private_key_file": str(bad)}, "auth.arc.selector"),
                     ({"enabled": True, "selector": "a", "domain": "mx.test",
                       "private_key_file": str(tmp_path / "missing.pem")}, "auth.arc.private_key_file")):
        path = write_config(tmp_path / "c.toml", {"auth.arc": arc})
        cfg = config_mod.load(path, env={})
        with pytest.raises(ConfigError) as err:
            auth_mod.check_start(cfg.auth)
        assert key in str(err.value)
    path = write_config(tmp_path / "c.toml", {
        "server": {"listen": f"127.0.0.1:{free_port()}", "accepted_domains": ["example.com"]},
        "links": {"listen": f"127.0.0.1:{free_port()}", "secret_file": str(tmp_path / "secret")},
        "storage.local": {"path": str(tmp_path / "store")},
        "auth.arc": {"enabled": True, "selector": "arc", "domain": "mx.test", "private_key_file": str(bad)}})
    for verb in (["check-config", "--offline"], ["serve"]):
        r = subprocess.run([sys.executable, "-m", "smtp_offload", *verb, "--config", str(path)], capture_output=True,
                           text=True, cwd=tmp_path, timeout=30)
        assert r.returncode == 2 and "config error: auth.arc.private_key_file" in r.stderr, (verb, r)
        assert "Traceback" not in r.stderr


@pytest.mark.parametrize("name", ["Authentication-Results", "AUTHENTICATION-RESULTS", "authentication-results "])
def test_forged_results_are_found_whatever_the_case_of_their_name(name):
    cfg = config_mod.load(None, env={})
    auth = auth_mod.Authenticator(dataclasses.replace(cfg.auth, authserv_id="mx.test"), "mx.test")
    msg = message(text())
    raw = f"{name}: MX.test; dkim=pass header.d=bank.test\r\nX-Other: 1\r\n".encode() + msg
    assert auth_mod.strip_forged(raw, auth) == b"X-Other: 1\r\n" + msg
    other = b"Authentication-Results: elsewhere.test; dkim=pass\r\n" + msg
    assert auth_mod.strip_forged(other, auth) is other


def test_signatures_are_found_whatever_the_case_of_their_name():
    cfg = config_mod.load(None, env={})
    auth = auth_mod.Authenticator(dataclasses.replace(cfg.auth, dns_timeout=0.5), "mx.test",
                                  resolver=lambda name: asyncio.sleep(0, result=None))
    raw = signed(message(text())).replace(b"DKIM-Signature", b"DKIM-SIGNATURE", 1)
    (result,) = asyncio.run(auth.verify(raw)).dkim
    assert (result.domain, result.selector) == ("sender.test", "s1")  # looked up: no key, so no pass
    assert result.result != "pass"
    assert asyncio.run(auth.verify(message(text()))).dkim == []
