"""Sender authentication that cannot be used against inspection (issue 11, item 9), through
the real proxy process: its DKIM and ARC key lookups go to a DNS server of the test's own
on loopback (`auth.dns_servers`), the downstream is the recording sink, and the relayed
bytes are checked with dkimpy as a receiving MTA would."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import urllib.request

import dkim
import pytest
from prometheus_client.parser import text_string_to_metric_families

from smtp_offload import config as config_mod
from smtp_offload import auth as auth_mod
from smtp_offload.errors import ConfigError
from tests.support import samples
from tests.support.dnsstub import DnsStub
from tests.support.keys import keypair
from tests.support.mail import attachment, b64, message, multipart, text
from tests.support.net import free_port
from tests.support.proc import write_config

SIGNED = [b"from", b"to", b"subject", b"date", b"message-id"]


KEYS = {name: keypair() for name in ("sender", "other", "trusted", "forwarder", "seal")}
DNS = {
    "s1._domainkey.sender.test": KEYS["sender"][1],
    "s1._domainkey.other.test": KEYS["other"][1],
    "s1._domainkey.mail.trusted.test": KEYS["trusted"][1],
    "arc._domainkey.fwd.test": KEYS["forwarder"][1],
    "seal._domainkey.mx.test": KEYS["seal"][1],
}


def dnsfunc(name, timeout=5):  # dkimpy on the receiving side reads the same records
    rec = DNS.get(name.decode().rstrip("."))
    return rec.encode() if rec else None


@pytest.fixture(scope="module")
def dns_server():
    server = DnsStub(DNS)
    yield server
    server.stop()


def sign(msg: bytes, domain: str = "sender.test", key: str = "sender", **kw) -> bytes:
    return dkim.sign(msg, b"s1", domain.encode(), KEYS[key][0], include_headers=SIGNED, **kw) + msg


class _ExtraTag(dkim.DKIM):
    """Signs with one more tag after d=: an attacker's own valid signature that also says
    "D=<a listed domain>" (tag names are case-sensitive: dkimpy verifies d=, not D=)."""
    extra = (b"D", b"sender.test")

    def gen_header(self, fields, *args, **kw):
        at = [k for k, _ in fields].index(b"d") + 1
        return super().gen_header(fields[:at] + [self.extra] + fields[at:], *args, **kw)


def sign_with_capital_d(msg: bytes) -> bytes:
    # The second header only makes sure other.test's key is looked up too.
    decoy = b"DKIM-Signature: v=1; a=rsa-sha256; d=other.test; s=s1; h=from; bh=AA==; b=AA==\r\n"
    return _ExtraTag(msg).sign(b"s1", b"other.test", KEYS["other"][0], include_headers=SIGNED) + decoy + msg


def with_exe(subject: str = "Invoice") -> bytes:
    return message(multipart(text(), attachment(samples.pe_exe(), "invoice.pdf", "application/pdf")), subject=subject)


def auth_overrides(dns_server, policy: dict | None = None, arc: bool = False, tmp_path=None) -> dict:
    out: dict[str, dict] = {"auth": {"verify_dkim": True, "authserv_id": "mx.test", "dns_servers": [dns_server.server],
                                     "dns_timeout": 10}}
    if policy:
        out["policy"] = policy
    if arc:
        key = tmp_path / "seal.pem"
        key.write_bytes(KEYS["seal"][0])
        out["auth.arc"] = {"enabled": True, "selector": "seal", "domain": "mx.test", "private_key_file": str(key)}
    return out


def head(raw: bytes) -> list[bytes]:
    """The top header fields, unfolded."""
    block = raw.split(b"\r\n\r\n", 1)[0]
    return re.sub(rb"\r\n[ \t]+", b" ", block).split(b"\r\n")


def field(raw: bytes, name: bytes) -> list[bytes]:
    return [ln for ln in head(raw) if ln.lower().startswith(name.lower() + b":")]


def our_results(raw: bytes) -> bytes:
    (ar,) = [ln for ln in field(raw, b"Authentication-Results") if ln.split(b":", 1)[1].strip().startswith(b"mx.test;")]
    return ar


def relayed(proxy, sink, raw: bytes) -> bytes:
    code, reply = proxy.send(raw)
    assert code == 250, reply
    return sink.messages[-1].content


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=15) as r:
        body = r.read().decode()
    return sum(s.value for f in text_string_to_metric_families(body) for s in f.samples if s.name == name)


# -- policy.on_signed = "skip" ---------------------------------------------------

def test_skip_needs_a_passing_signature_from_a_listed_domain(make_proxy, sink, dns_server):
    """Any DKIM-Signature used to let an executable through uninspected; now only one that
    verifies, over the whole body, from a listed domain does."""
    proxy = make_proxy(auth_overrides(dns_server, {"on_signed": "skip",
                                                   "skip_signed_domains": ["Sender.Test", ".trusted.test"]}))
    tampered = sign(with_exe("Invoice")).replace(b"Subject: Invoice", b"Subject: Invoice!")
    forged = (b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=sender.test; s=s1; h=from;\r\n"
              b" bh=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=; b=AAAA\r\n") + with_exe()
    cases = {
        "a signature that fails, from a listed domain": (tampered, b"dkim=fail header.d=sender.test"),
        "a made-up signature header": (forged, b"header.d=sender.test"),
        "a valid signature from a domain not listed": (sign(with_exe(), "other.test", "other"),
                                                        b"dkim=pass header.d=other.test"),
        "a listed domain's signature with l= (anything may follow it)": (sign(with_exe(), length=True),
                                                                         b"dkim=pass header.d=sender.test"),
        "a listed subdomain entry does not take the parent": (sign(with_exe(), "trusted.test", "trusted"),
                                                              b"header.d=trusted.test"),
        "an attacker's valid signature that also says D=<listed domain>": (sign_with_capital_d(with_exe()),
                                                                          b"dkim=pass header.d=other.test"),
    }
    for case, (raw, recorded) in cases.items():
        got = relayed(proxy, sink, raw)
        assert b"action=skipped-signed" not in got, case
        assert b"action=rewritten" in got and b"verdict=blocked" in got, case  # the exe was judged...
        assert b64(samples.pe_exe()) in raw and b64(samples.pe_exe()) not in got, case  # ...and removed
        assert recorded in our_results(got), (case, our_results(got))


def test_skip_relays_a_listed_domains_passing_signature_untouched(make_proxy, sink, dns_server):
    proxy = make_proxy(auth_overrides(dns_server, {"on_signed": "skip",
                                                   "skip_signed_domains": ["Sender.Test", ".trusted.test"]}))
    for raw, domain in ((sign(with_exe()), b"sender.test"),
                        (sign(with_exe(), "mail.trusted.test", "trusted"), b"mail.trusted.test")):
        got = relayed(proxy, sink, raw)
        assert got.endswith(raw) and b"action=skipped-signed" in got
        assert b"dkim=pass header.d=" + domain in our_results(got)
        assert dkim.verify(got, dnsfunc=dnsfunc)


def test_skip_without_dkim_verification_is_refused_at_start(tmp_path):
    smtp, links = free_port(), free_port()
    path = write_config(tmp_path / "c.toml", {
        "server": {"listen": f"127.0.0.1:{smtp}", "accepted_domains": ["example.com"]},
        "links": {"listen": f"127.0.0.1:{links}", "secret_file": str(tmp_path / "secret")},
        "storage.local": {"path": str(tmp_path / "store")},
        "policy": {"on_signed": "skip", "skip_signed_domains": ["sender.test"]},
        "auth": {"verify_dkim": False}})
    for verb in (["check-config", "--offline"], ["serve"]):
        r = subprocess.run([sys.executable, "-m", "smtp_offload", *verb, "--config", str(path)], capture_output=True,
                           text=True, cwd=tmp_path, timeout=30)
        assert r.returncode == 2 and "policy.on_signed" in r.stderr and "auth.verify_dkim" in r.stderr, (verb, r)
        assert "Traceback" not in r.stderr


# -- the incoming ARC chain and our seal -----------------------------------------

def forwarded(msg: bytes) -> bytes:
    """What a forwarder (fwd.test) that checks DKIM and ARC-seals hands on: ARC set i=1."""
    msg = b"Authentication-Results: fwd.test; dkim=pass header.d=sender.test header.s=s1\r\n" + sign(msg)
    return b"".join(dkim.arc_sign(msg, b"arc", b"fwd.test", KEYS["forwarder"][0], b"fwd.test",
                                  include_headers=SIGNED)) + msg


def seal_tags(raw: bytes) -> list[dict[bytes, bytes]]:
    return [dict(re.findall(rb"(\w+)=([^;\s]*)", ln.split(b":", 1)[1])) for ln in field(raw, b"ARC-Seal")]


def test_a_changed_message_gets_the_next_arc_instance(make_proxy, sink, dns_server, tmp_path):
    proxy = make_proxy(auth_overrides(dns_server, arc=True, tmp_path=tmp_path))
    incoming = forwarded(with_exe())
    assert dkim.arc_verify(incoming, dnsfunc=dnsfunc)[0] == dkim.CV_Pass
    # A DKIM-Signature whose d= would break our header's syntax (and with it the arc= result).
    hostile = b"DKIM-Signature: v=1; a=rsa-sha256; d=pay(pal.test; s=s\"1; h=from; bh=AA==; b=AA==\r\n"
    for raw in (incoming, hostile + incoming):
        got = relayed(proxy, sink, raw)
        assert b"verdict=blocked" in got  # changed
        ar = our_results(got)
        assert b"arc=pass" in ar and b"as.d=fwd.test" in ar, ar
        assert b"paypal" not in ar
        assert sorted((t[b"i"], t[b"cv"]) for t in seal_tags(got)) == [(b"1", b"none"), (b"2", b"pass")]
        cv, results, reason = dkim.arc_verify(got, dnsfunc=dnsfunc)
        assert cv == dkim.CV_Pass, reason
        (aar,) = [ln for ln in field(got, b"ARC-Authentication-Results") if b"i=2" in ln]
        assert b"mx.test" in aar and b"arc=pass" in aar
    assert not proxy.events("arc_seal_failed")


def test_a_broken_incoming_chain_is_recorded_and_sealed_as_failed(make_proxy, sink, dns_server, tmp_path):
    proxy = make_proxy(auth_overrides(dns_server, arc=True, tmp_path=tmp_path))
    broken = forwarded(with_exe("Invoice")).replace(b"Subject: Invoice", b"Subject: Invoice (edited)")
    assert dkim.arc_verify(broken, dnsfunc=dnsfunc)[0] == dkim.CV_Fail
    got = relayed(proxy, sink, broken)
    assert b"arc=fail" in our_results(got)
    assert sorted((t[b"i"], t[b"cv"]) for t in seal_tags(got)) == [(b"1", b"none"), (b"2", b"fail")]
    newest = dkim.ARC(got).verify(dnsfunc=dnsfunc)[1][0]
    assert newest["instance"] == 2 and newest["ams-valid"]  # our own set is sound; it says the chain failed


def test_a_seal_that_cannot_be_made_is_logged_counted_and_the_mail_still_goes(make_proxy, sink, dns_server, tmp_path):
    proxy = make_proxy(auth_overrides(dns_server, arc=True, tmp_path=tmp_path))
    metric_name = "smtp_offload_arc_seal_failures_total"
    assert metric(proxy.links_port, metric_name) == 0
    # A sloppy mailer's header line dkimpy cannot parse (RFC 5322's obsolete space before the
    # colon), on a signed message: its verification used to crash into 451 for ever ...
    sloppy = (b"DKIM-Signature: v=1; a=rsa-sha256; d=sender.test; s=s1; h=from; bh=AA==; b=AA==\r\n"
              + with_exe().replace(b"\r\n\r\n", b"\r\nX-Mailer : Sloppy 1.0\r\n\r\n", 1))
    # ... and a chain already at RFC 8617's limit of 50 sets: no i=51 may be added.
    at_limit = (b"ARC-Seal: i=50; cv=pass; a=rsa-sha256; d=fwd.test; s=arc; t=1; b=AA==\r\n"
                b"ARC-Message-Signature: i=50; a=rsa-sha256; c=relaxed/relaxed; d=fwd.test; s=arc; h=from; "
                b"bh=AA==; b=AA==\r\nARC-Authentication-Results: i=50; fwd.test; dkim=pass\r\n" + with_exe())
    for n, (raw, reason) in enumerate(((sloppy, "MessageFormatError"), (at_limit, "Maximum instance")), 1):
        got = relayed(proxy, sink, raw)
        assert b"verdict=blocked" in got and b64(samples.pe_exe()) not in got  # changed...
        assert [t[b"i"] for t in seal_tags(got)] == [t[b"i"] for t in seal_tags(raw)]  # ...and relayed unsealed
        events = proxy.events("arc_seal_failed")
        assert len(events) == n and reason in events[-1]["error"] and events[-1]["queue_id"]
        assert metric(proxy.links_port, metric_name) == n
    assert b"dkim=permerror header.d=sender.test" in our_results(sink.messages[0].content)


# -- pure functions --------------------------------------------------------------

def _auth(tmp_path) -> auth_mod.Authenticator:
    key = tmp_path / "seal.pem"
    key.write_bytes(KEYS["seal"][0])
    cfg = config_mod.load(write_config(tmp_path / "c.toml", {"auth": {"authserv_id": "mx.test"}, "auth.arc": {
        "enabled": True, "selector": "seal", "domain": "mx.test", "private_key_file": str(key)}}), env={})
    return auth_mod.Authenticator(cfg.auth, "mx.test")


def test_seal_says_so_when_dkimpy_returns_no_set(tmp_path):
    """dkimpy's arc_sign returns [] (no exception) when it finds no arc= result of ours on a
    message that has a chain: that must surface as SealError, not as an empty seal."""
    auth = _auth(tmp_path)
    chained = forwarded(message(text()))
    without_arc = b"Authentication-Results: mx.test; dkim=pass header.d=sender.test header.s=s1\r\n" + chained
    for msg in (chained, without_arc):
        with pytest.raises(auth_mod.SealError, match="no ARC set"):
            auth.seal(msg)
    ours = auth.results_header(auth_mod.AuthResults([auth_mod.DkimResult("pass", "sender.test", "s1")],
                                                  auth_mod.ArcResult("pass", 1)))
    assert b"i=2" in auth.seal(ours + chained)


def test_results_header_values_are_always_parseable(tmp_path):
    a = auth_mod
    ar = _auth(tmp_path).results_header(a.AuthResults(
        [a.DkimResult("fail", 'pay(pal.com', 's"1'), a.DkimResult("pass", "", "")],
        a.ArcResult("fail", 3, ("a;b", "x"), ("fwd.test", "arc"))))
    assert b"header.d=invalid header.s=invalid" in ar and b"header.d=unknown" in ar
    assert b"arc=fail (i=3 ams.d=invalid ams.s=x as.d=fwd.test as.s=arc)" in ar.replace(b"\r\n\t", b" ")


@pytest.mark.parametrize("domain, listed, expected", [
    ("sender.test", ["sender.test"], True),
    ("SENDER.test.", ["Sender.Test"], True),
    ("mail.sender.test", ["sender.test"], False),
    ("mail.sender.test", [".sender.test"], True),
    ("sender.test", [".sender.test"], False),
    ("evilsender.test", [".sender.test"], False),
    ("sender.test.evil", ["sender.test"], False),
    ("anything.test", [], False),
])
def test_domain_listed(domain, listed, expected):
    assert auth_mod.domain_listed(domain, listed) is expected


@pytest.mark.parametrize("section, values, key", [
    ("auth", {"dns_servers": ["localhost"]}, "auth.dns_servers[0]"),
    ("auth", {"dns_servers": ["127.0.0.1:53", "127.0.0.1:99999"]}, "auth.dns_servers[1]"),
    ("auth", {"dns_servers": ["[::1]x"]}, "auth.dns_servers[0]"),
    ("auth", {"dns_servers": "127.0.0.1"}, "auth.dns_servers"),
    ("auth", {"authserv_id": "mx.test; dkim=pass"}, "auth.authserv_id"),
    ("policy", {"skip_signed_domains": ["ok.test", "user@bad.test"]}, "policy.skip_signed_domains[1]"),
    ("policy", {"on_signed": "skip", "skip_signed_domains": ["sender.test"]}, None),  # verify_dkim: see below
])
def test_new_keys_are_validated_naming_the_key(tmp_path, section, values, key):
    path = write_config(tmp_path / "c.toml", {section: values})
    if key is None:  # valid on its own: verify_dkim defaults to true
        config_mod.load(path, env={})
        return
    with pytest.raises(ConfigError) as err:
        config_mod.load(path, env={})
    assert key in str(err.value)


def test_dns_server_forms():
    parse = config_mod.parse_dns_server
    assert parse("k", "192.0.2.53") == ("192.0.2.53", 53)
    assert parse("k", "127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse("k", "2001:db8::53") == ("2001:db8::53", 53)
    assert parse("k", "[2001:db8::53]:5353") == ("2001:db8::53", 5353)


async def test_arc_chain_results_in_process(tmp_path):
    """The chain is judged with DKIM verification alone (no sealing), and a chain whose keys
    cannot be fetched in time did not pass: RFC 8617 has no temporary result."""
    cfg = config_mod.load(write_config(tmp_path / "c.toml", {"auth": {"authserv_id": "mx.test", "dns_timeout": 0.2}}),
                          env={})

    async def resolver(name: str):
        return DNS.get(name)

    async def hanging(name: str):
        await asyncio.sleep(30)

    chained = forwarded(message(text()))
    got = await auth_mod.Authenticator(cfg.auth, "mx.test", resolver).verify(chained)
    assert (got.arc.result, got.arc.instance, got.arc.seal) == ("pass", 1, ("fwd.test", "arc"))
    assert [r.result for r in got.dkim] == ["pass"]
    got = await auth_mod.Authenticator(cfg.auth, "mx.test", hanging).verify(chained)
    assert got.arc.result == "fail" and [r.result for r in got.dkim] == ["temperror"]
    got = await auth_mod.Authenticator(cfg.auth, "mx.test", resolver).verify(message(text()))
    assert got.arc.result == "none" and got.dkim == []
