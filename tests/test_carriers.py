"""Hidden carriers, each with its documented policy."""

from __future__ import annotations

import binascii
import dataclasses

import pytest

import samples
from mail import attachment, entity, message, multipart, text
from smtp_offload import config as config_mod
from smtp_offload.errors import PermanentError
from smtp_offload.model import Verdict
from smtp_offload.process import Processor


def processor(**policy) -> Processor:
    cfg = config_mod.load(None, env={})
    cfg.policy = dataclasses.replace(cfg.policy, **policy)
    return Processor(cfg, store=None, secret=None, log=None)


def uu(name: str, data: bytes) -> str:
    lines = [binascii.b2a_uu(data[i:i + 45]).decode().rstrip("\n") for i in range(0, len(data), 45)]
    return f"begin 644 {name}\r\n" + "\r\n".join(lines) + "\r\n`\r\nend\r\n"


def test_uuencoded_executable_in_text_refuses_the_message():
    raw = message(text("Please run this:\r\n" + uu("invoice.pdf", samples.pe_exe())))
    with pytest.raises(PermanentError) as err:
        processor().decide(raw)
    assert (err.value.code, err.value.status) == (550, "5.7.1") and "invoice.pdf" in err.value.text
    assert processor(on_uuencode="keep").decide(raw).attachments == []


def test_uuencoded_harmless_file_is_accepted():
    an = processor().decide(message(text("notes:\r\n" + uu("notes.txt", samples.text()))))
    assert [j.verdict for _, j in an.uuencoded] == [Verdict.KEEP]


def test_winmail_dat_is_stripped_by_default():
    raw = message(multipart(text(), attachment(b"\x78\x9f\x3e\x22" + b"\x00" * 200, "winmail.dat",
                                               "application/ms-tnef")))
    (a,) = processor().decide(raw).attachments
    assert a.verdict is Verdict.BLOCKED and "winmail.dat" in a.reason
    (a,) = processor(on_tnef="keep").decide(raw).attachments
    assert a.verdict is Verdict.KEEP
    with pytest.raises(PermanentError):
        processor(on_tnef="reject").decide(raw)


def test_message_partial_is_refused_by_default():
    raw = message(entity([("Content-Type", 'message/partial; id="abc@x"; number=1; total=2')], b"From: x\r\n\r\npart"))
    with pytest.raises(PermanentError) as err:
        processor().decide(raw)
    assert "message/partial" in err.value.text
    processor(on_partial="keep").decide(raw)


def test_encrypted_mail_is_kept_by_default_and_refusable():
    raw = message(multipart(entity([("Content-Type", "application/pgp-encrypted")], b"Version: 1\r\n"),
                            entity([("Content-Type", "application/octet-stream")], b"-----BEGIN PGP MESSAGE-----\r\nx\r\n"),
                            subtype='encrypted; protocol="application/pgp-encrypted"'))
    assert processor().decide(raw).encrypted
    with pytest.raises(PermanentError) as err:
        processor(on_encrypted="reject").decide(raw)
    assert "Encrypted" in err.value.text


def test_signed_mail_is_inspected_like_any_other():
    raw = message(multipart(multipart(text(), attachment(samples.pe_exe(), "a.pdf", "application/pdf")),
                            entity([("Content-Type", "application/pkcs7-signature; name=smime.p7s")], b"sig"),
                            subtype='signed; protocol="application/pkcs7-signature"'))
    verdicts = {a.name: a.verdict for a in processor().decide(raw).attachments}
    assert verdicts["a.pdf"] is Verdict.BLOCKED
