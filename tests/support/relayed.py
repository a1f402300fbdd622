"""Reading what the proxy relayed: the parts, the bodies, the attachments and the
X-Smtp-Offload-Attachment decision headers of the message the sink received."""

from __future__ import annotations

import re
import urllib.parse

from smtp_offload.mime import scan
from smtp_offload.mime.codec import decode
from tests.support import samples
from tests.support.mail import b64

LINK = re.compile(rb"https?://127\.0\.0\.1:\d+/f/[A-Za-z0-9._~%-]+(?:/[^\s<>\"]*)?")
EXE = samples.pe_exe()


def parts_of(raw: bytes) -> list:
    return [p for p in scan.parse(raw).walk()]


def attachment_payloads(raw: bytes) -> dict[str, bytes]:
    return {p.filename: decode(raw[p.body_start:p.end], p.cte) for p in parts_of(raw) if p.is_attachment}


def body_text(raw: bytes, subtype: str = "plain") -> str:
    for p in parts_of(raw):
        if p.content_type == f"text/{subtype}" and not p.is_attachment:
            return decode(raw[p.body_start:p.end], p.cte).decode(p.params.get("charset", "utf-8"))
    raise AssertionError(f"no text/{subtype} body")


def said(raw: bytes, subtype: str = "plain") -> str:
    """The relayed body as a reader takes it in: the text notice's wrapped lines read as one."""
    return " ".join(body_text(raw, subtype).split())


def leaf_payloads(raw: bytes) -> list[bytes]:
    """The decoded bytes of every part of the relayed message (leaves, at any depth)."""
    return [decode(raw[p.body_start:p.end], p.cte) for p in scan.parse(raw).walk() if not p.children]


def _decision_lines(raw: bytes) -> list[str]:
    head = raw[:raw.index(b"\r\n\r\n")].replace(b"\r\n\t", b" ").decode("ascii")
    return [line for line in head.split("\r\n") if line.startswith("X-Smtp-Offload-Attachment:")]


def decisions(raw: bytes) -> list[dict[str, str]]:
    """The X-Smtp-Offload-Attachment headers of a relayed message, unfolded, as dicts."""
    out = []
    for line in _decision_lines(raw):
        fields = re.findall(r'(\S+?)=("[^"]*"|[^;]*)', line.split(":", 1)[1])
        out.append({k: v.strip('"') for k, v in fields})
    return out


def verdict_reasons(raw: bytes) -> dict[str, tuple[str, str]]:
    """{file name: (verdict, reason)} from the X-Smtp-Offload-Attachment headers."""
    out = {}
    for line in _decision_lines(raw):
        name = urllib.parse.unquote(re.search(r"name\*=UTF-8''([^;\s]+)", line).group(1))
        out[name] = (re.search(r"verdict=(\w+)", line).group(1), re.search(r'reason="([^"]*)"', line).group(1))
    return out


def relay(proxy, sink, msg: bytes) -> bytes:
    """Send `msg` through `proxy`, which must accept it; the bytes `sink` received."""
    code, reply = proxy.send(msg)
    assert code == 250, reply
    return sink.messages[-1].content


def assert_exe_gone(got: bytes) -> None:
    assert EXE not in b"".join(leaf_payloads(got))
    assert b64(EXE)[:76] not in got


def assert_fails_open(proxy, sink, msg: bytes, data: bytes, name: str = "scan.pdf") -> None:
    """Storage down from the start: the proxy said so and started anyway, and a message whose
    file should have been offloaded is relayed with the file kept in it, and a warning."""
    assert proxy.events("storage_unavailable_at_start")
    assert proxy.send(msg)[0] == 250
    got = sink.messages[-1].content
    assert attachment_payloads(got) == {name: data}
    assert b"X-Smtp-Offload-Warning: offload failed" in got
