"""Hidden carriers, each with its documented policy."""

from __future__ import annotations

import binascii
from smtp_offload.delivery.decide import DecidePolicy, Plan, decide
from smtp_offload.delivery.policy import PlanPolicy
from smtp_offload.model import Verdict
from tests.support import samples
from tests.support.mail import attachment, entity, message, multipart, text


def decided(raw: bytes, **policy) -> Plan:
    return decide(raw, DecidePolicy(plan=PlanPolicy(**policy)))


def uu(name: str, data: bytes) -> str:
    lines = [binascii.b2a_uu(data[i:i + 45]).decode().rstrip("\n") for i in range(0, len(data), 45)]
    return f"begin 644 {name}\r\n" + "\r\n".join(lines) + "\r\n`\r\nend\r\n"


def test_uuencoded_executable_in_text_refuses_the_message():
    raw = message(text("Please run this:\r\n" + uu("invoice.pdf", samples.pe_exe())))
    refusal = decided(raw).refusal
    assert refusal.startswith("550 5.7.1 ") and "invoice.pdf" in refusal
    kept = decided(raw, on_uuencode="keep")
    assert kept.refusal is None and kept.decisions == ()


def test_uuencoded_harmless_file_is_accepted():
    plan = decided(message(text("notes:\r\n" + uu("notes.txt", samples.text()))))
    assert plan.refusal is None and [j.verdict for _, j in plan.analysis.uuencoded] == [Verdict.KEEP]


def test_winmail_dat_is_stripped_by_default():
    raw = message(multipart(text(), attachment(b"\x78\x9f\x3e\x22" + b"\x00" * 200, "winmail.dat",
                                               "application/ms-tnef")))
    (a,) = decided(raw).decisions
    assert a.verdict is Verdict.BLOCKED and "winmail.dat" in a.reason
    (a,) = decided(raw, on_tnef="keep").decisions
    assert a.verdict is Verdict.KEEP
    assert decided(raw, on_tnef="reject").refusal.startswith("550 5.7.1 ")


def test_message_partial_is_refused_by_default():
    raw = message(entity([("Content-Type", 'message/partial; id="abc@x"; number=1; total=2')], b"From: x\r\n\r\npart"))
    refusal = decided(raw).refusal
    assert refusal.startswith("550 5.7.1 ") and "message/partial" in refusal
    assert decided(raw, on_partial="keep").refusal is None


def test_encrypted_mail_is_kept_by_default_and_refusable():
    raw = message(multipart(entity([("Content-Type", "application/pgp-encrypted")], b"Version: 1\r\n"),
                            entity([("Content-Type", "application/octet-stream")], b"-----BEGIN PGP MESSAGE-----\r\nx\r\n"),
                            subtype='encrypted; protocol="application/pgp-encrypted"'))
    plan = decided(raw)
    assert plan.refusal is None and plan.analysis.encrypted
    refusal = decided(raw, on_encrypted="reject").refusal
    assert refusal.startswith("550 5.7.1 ") and "Encrypted" in refusal


def test_signed_mail_is_inspected_like_any_other():
    raw = message(multipart(multipart(text(), attachment(samples.pe_exe(), "a.pdf", "application/pdf")),
                            entity([("Content-Type", "application/pkcs7-signature; name=smime.p7s")], b"sig"),
                            subtype='signed; protocol="application/pkcs7-signature"'))
    verdicts = {d.file.name: d.verdict for d in decided(raw).decisions}
    assert verdicts["a.pdf"] is Verdict.BLOCKED
