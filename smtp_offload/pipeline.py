"""Pure stages of message processing: analyse -> plan -> render. Bytes in, decisions out.

Nothing here touches the network, the disk or the event loop; storage happens between
plan() and render() in process.py.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from . import carriers
from .inspect import InspectPolicy, judge
from .mime import rewrite as rw
from .mime import scan
from .mime.codec import decode
from .model import Attachment, Judgement, Part, Verdict
from .notice import render as render_notice

TNEF_REASON = "an Outlook winmail.dat container whose files cannot be inspected; ask the sender to resend in plain format"
OUR_HEADERS = ("x-smtp-offload*",)  # incoming copies are forgeries: dropped before we add ours
NOTICE_BUDGET = 2048  # bytes reserved for the notice text and HTML, plus ...
NOTICE_PER_FILE = 1024  # ... this much per changed file (name, link, HTML twice)
TRACE_BUDGET = 1024  # Received + summary header
PER_HEADER = 400  # one decision header per attachment


@dataclass(frozen=True)
class PlanPolicy:
    offload_over_bytes: int
    max_message_bytes: int  # the downstream's limit, counted on the wire
    max_attachments: int
    actions: dict[Verdict, str]  # EMPTY/SPOOFED/BLOCKED -> "strip" | "reject"
    on_tnef: str = "strip"  # "keep" | "strip" | "reject"   (see carriers.py)
    on_partial: str = "reject"  # "keep" | "reject"
    on_encrypted: str = "keep"  # "keep" | "reject"
    on_uuencode: str = "inspect"  # "inspect" | "keep"


@dataclass
class Analysis:
    data: bytes
    root: Part
    attachments: list[Attachment]
    message_id: str | None
    forged_headers: bool = False
    partial: bool = False  # message/partial somewhere
    encrypted: bool = False  # multipart/encrypted or S/MIME enveloped data somewhere
    uuencoded: list[tuple[str, Judgement]] = field(default_factory=list)  # files inside body text
    containers: int = 0  # attached messages, which the platform counts as one attachment each
    ambiguities: list[str] = field(default_factory=list)  # rebuilt into one reading by render()

    @property
    def changed(self) -> list[Attachment]:
        return [a for a in self.attachments if a.verdict is not Verdict.KEEP]


@dataclass(frozen=True)
class Rejection:
    text: str  # for the sender: ASCII, one line

    @classmethod
    def of(cls, what: str, name: str, reason: str) -> "Rejection":
        safe = "".join(c if 32 <= ord(c) < 127 else "?" for c in name)[:80]
        return cls(f'{what} "{safe}" refused: {reason}')


def has_bare_newlines(data: bytes) -> bool:
    crlf = data.count(b"\r\n")
    return data.count(b"\r") != crlf or data.count(b"\n") != crlf


def normalize_line_endings(data: bytes) -> bytes:
    """Bare CR or LF become CRLF and NUL bytes are dropped, so the structure we judge is the
    one every later hop reads (no end-of-data look-alike survives: see README, Security model)."""
    if b"\x00" in data:
        data = data.replace(b"\x00", b"")
    if not has_bare_newlines(data):
        return data
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


_SEVERITY = {Verdict.BLOCKED: 3, Verdict.SPOOFED: 2, Verdict.EMPTY: 1, Verdict.KEEP: 0}


def judge_all_readings(payload: bytes, part: Part, policy: InspectPolicy):
    """Judge the bytes under every name a reader may see; the worst reading decides."""
    readings = [judge(payload, part.content_type, n, policy) for n in (part.names or [part.filename])]
    return max(readings, key=lambda j: _SEVERITY.get(j.verdict, 0))


def analyse(data: bytes, policy: InspectPolicy, limits: scan.Limits = scan.Limits()) -> Analysis:
    """Raises scan.MimeError when the structure exceeds a limit or cannot be read one way."""
    root = scan.parse(data, limits)
    attachments: list[Attachment] = []
    containers = 0
    ambiguities: list[str] = []
    flags = {"partial": False, "encrypted": False}
    uuencoded: list[tuple[str, Judgement]] = []
    view = memoryview(data)  # slices of it are not copies
    for part in root.walk():
        ambiguities += [f"part {part.path or 'header'}: {n}" for n in part.ambiguities]
        if part.unclosed:
            ambiguities.append(f"part {part.path or 'body'}: missing closing boundary")
        if part.content_type == "message/rfc822" and part.children and not part.in_message:
            containers += 1
        flags["partial"] |= carriers.is_partial(part)
        flags["encrypted"] |= carriers.is_encrypted(part)
        if part.content_type == "text/plain" and not part.is_attachment and not part.children:
            body = decode(view[part.body_start:part.end], part.cte)
            uuencoded += [(n, judge(d, None, n, policy)) for n, d in carriers.uuencoded_files(body)]
        if not part.is_attachment:
            continue
        payload = decode(view[part.body_start:part.end], part.cte)
        j = judge_all_readings(payload, part, policy)
        attachments.append(Attachment(
            part=part, data=payload, sha256=hashlib.sha256(payload).hexdigest(), judgement=j,
            verdict=j.verdict, reason=j.reason,
            wire_size=part.end - (part.delim_start if part.delim_start is not None else part.start),
        ))
    forged = bool(rw.drop_fields(data, root, OUR_HEADERS))
    return Analysis(data, root, attachments, scan.root_header(data, root, "message-id"), forged_headers=forged,
                    containers=containers, ambiguities=ambiguities, uuencoded=uuencoded, **flags)


def plan(an: Analysis, policy: PlanPolicy) -> Rejection | None:
    """Set each attachment's final verdict. Returns a Rejection when policy refuses the message."""
    if an.partial and policy.on_partial == "reject":
        return Rejection("Fragmented messages (message/partial) cannot be inspected and are not accepted")
    if an.encrypted and policy.on_encrypted == "reject":
        return Rejection("Encrypted messages cannot be inspected and are not accepted")
    if policy.on_uuencode == "inspect":
        for name, j in an.uuencoded:
            if j.verdict is not Verdict.KEEP:
                return Rejection.of("File uuencoded in the message text", name, j.reason)
    for a in an.attachments:
        if a.verdict is Verdict.KEEP and policy.on_tnef != "keep" and carriers.is_tnef(a.part):
            a.verdict, a.reason = Verdict.BLOCKED, TNEF_REASON
            if policy.on_tnef == "reject":
                return Rejection.of("Attachment", a.name, a.reason)
            continue
        if a.verdict in (Verdict.EMPTY, Verdict.SPOOFED, Verdict.BLOCKED):
            if policy.actions[a.verdict] == "reject":
                return Rejection.of("Attachment", a.name, a.reason)
        elif len(a.data) > policy.offload_over_bytes:
            a.verdict, a.reason = Verdict.OFFLOAD, "larger than the offload threshold"
    # The planner: offload more, largest first, until the message fits the downstream's limits.
    kept = sorted((a for a in an.attachments if a.verdict is Verdict.KEEP), key=lambda a: a.wire_size, reverse=True)
    while kept and (projected_size(an) > policy.max_message_bytes
                    or visible_count(an) > policy.max_attachments):
        a = kept.pop(0)
        if visible_count(an) > policy.max_attachments and a.part.in_message:
            continue  # offloading a file inside an attached message does not lower the count
        a.verdict, a.reason = Verdict.OFFLOAD, "offloaded so the message fits the recipient's limits"
    return None


def visible_count(an: Analysis) -> int:
    return an.containers + sum(1 for a in an.attachments if a.verdict is Verdict.KEEP and not a.part.in_message)


def projected_size(an: Analysis) -> int:
    changed = an.changed
    removed = sum(a.wire_size for a in changed)
    notice = (NOTICE_BUDGET + NOTICE_PER_FILE * len(changed)) if changed else 0
    return len(an.data) - removed + notice + TRACE_BUDGET + PER_HEADER * len(an.attachments)


def render(an: Analysis) -> bytes:
    """The rewritten message body (without our trace headers)."""
    changed = an.changed
    if not changed and not an.forged_headers and not an.ambiguities:
        return an.data
    notice_text = notice_html = None
    if changed:
        notice_text, notice_html = render_notice(changed)
    removed = [a.part for a in changed]
    return rw.rewrite(an.data, an.root, removed, notice_text, notice_html, OUR_HEADERS)
