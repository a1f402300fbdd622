"""Pure stages of message processing: analyse -> plan -> render. Bytes in, decisions out.

Nothing here touches the network, the disk or the event loop; storage happens between
plan() and render() in process.py.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from . import carriers
from .inspect import InspectPolicy, judge, looks_like_text, safe_display_name
from .mime import rewrite as rw
from .mime import scan
from .mime.codec import decode
from .mime.scan import has_bare_newlines, normalize_line_endings  # noqa: F401  (part of this module's API)
from .model import KNOWN_CTES, Attachment, Judgement, Part, Verdict
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
    renamed: bool = False  # a file name was a path: its part's headers are rebuilt with the base name

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


_SEVERITY = {Verdict.BLOCKED: 3, Verdict.SPOOFED: 2, Verdict.EMPTY: 1, Verdict.KEEP: 0}


def judge_all_readings(payload: bytes, part: Part, policy: InspectPolicy, with_type: bool = True) -> Judgement:
    """Judge the bytes under every name a reader may see; the worst reading decides."""
    declared = part.content_type if with_type else None
    readings = [judge(payload, declared, n, policy) for n in (part.names or [part.filename])]
    return max(readings, key=lambda j: _SEVERITY.get(j.verdict, 0))


def _safe_token(value: str) -> str:
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_.+") else "?" for c in value)[:40]


def judge_part(payload: bytes, part: Part, policy: InspectPolicy) -> Judgement:
    """Judge a leaf part's decoded bytes, taking its transfer encoding into account."""
    j = judge_all_readings(payload, part, policy)
    if part.cte not in KNOWN_CTES:
        # An encoding nobody knows leaves bytes nobody can read as text (RFC 2049 says: treat the
        # part as application/octet-stream). Bytes that look like text are some other encoding of
        # a file we cannot see, so nothing it claims can be confirmed.
        if j.verdict in (Verdict.KEEP, Verdict.SPOOFED) and looks_like_text(payload):
            reason = (f'content is in an unknown transfer encoding ("{_safe_token(part.cte)}"), '
                      "so what it really is cannot be checked")
            return Judgement(Verdict.SPOOFED, reason, "application/octet-stream")
    return j


def _raw_reading(view: memoryview, part: Part, policy: InspectPolicy) -> Judgement | None:
    """A Content-Transfer-Encoding header we had to clean up ("base64 (note)", "BASE64;") may be
    unknown to a stricter client, which then shows the body undecoded: what those bytes are
    (an executable, say) counts too."""
    if part.cte not in ("base64", "quoted-printable") or part.cte_header is None \
            or part.cte_header.strip().lower() == part.cte:
        return None
    j = judge(bytes(view[part.body_start:part.end]), None, None, policy)
    return j if j.verdict is Verdict.BLOCKED else None


def _attachment(an: Analysis, view: memoryview, part: Part, policy: InspectPolicy) -> Attachment:
    payload = decode(view[part.body_start:part.end], part.cte)
    if part.embedded is not None:
        j, inner = _judge_message(an, payload, part, policy)
    else:
        j, inner = judge_part(payload, part, policy), []
    raw = _raw_reading(view, part, policy)
    if raw is not None and _SEVERITY[raw.verdict] > _SEVERITY.get(j.verdict, 0):
        j = Judgement(raw.verdict, f"{raw.reason} (read undecoded, as a client may read an irregular "
                      "transfer encoding)", raw.detected_type, raw.detected_ext)
    return Attachment(
        part=part, data=payload, sha256=hashlib.sha256(payload).hexdigest(), judgement=j,
        verdict=j.verdict, reason=j.reason, inner=inner,
        wire_size=part.end - (part.delim_start if part.delim_start is not None else part.start),
    )


def _judge_message(an: Analysis, payload: bytes, part: Part,
                   policy: InspectPolicy) -> tuple[Judgement, list[Attachment]]:
    """An encoded attached message (or an .eml file, or the content of an opaque S/MIME
    signature) is one unit: what its bytes are (an executable is blocked whatever it is
    labelled), else the worst file inside it, named in the reason."""
    assert part.embedded is not None and part.embedded_data is not None
    # The bytes as a file: only its names are claims (the declared message type is no
    # promise of plain text: 8-bit and binary parts are legal inside).
    own = judge_all_readings(payload, part, policy, with_type=False)
    inner = _survey(an, part.embedded_data, part.embedded, policy)
    signed = part.wrapper == "cms"
    worst = max(inner, key=lambda a: _SEVERITY.get(a.verdict, 0), default=None)
    if worst is not None and _SEVERITY.get(worst.verdict, 0) > _SEVERITY[own.verdict]:
        what = "signed content" if signed else "attached message"
        reason = f'the {what} carries "{safe_display_name(worst.name)}": {worst.reason}'
        return Judgement(worst.verdict, reason, own.detected_type, own.detected_ext), inner
    if own.verdict is not Verdict.KEEP:
        return own, inner
    if signed and rw.needs_rebuild(part.embedded):
        # An encoded message is relayed rebuilt into the one reading we judged; rebuilding
        # signed content would break its signature, so it cannot be relayed with one reading.
        return Judgement(Verdict.SPOOFED, "signed content (S/MIME) whose MIME structure can be read more "
                         "than one way", own.detected_type, own.detected_ext), inner
    head = "S/MIME signed content (the signature is not verified)" if signed else "an email message"
    return Judgement(Verdict.KEEP, f"{head}; the {len(inner)} file(s) in it were inspected",
                     own.detected_type, own.detected_ext), inner


def _survey(an: Analysis, data: bytes, root: Part, policy: InspectPolicy) -> list[Attachment]:
    """The attachments of one message tree, judged; what else it holds is noted on `an`."""
    attachments: list[Attachment] = []
    view = memoryview(data)  # slices of it are not copies
    for part in root.walk():
        an.ambiguities += [f"part {part.path or 'header'}: {n}" for n in part.ambiguities]
        if part.unclosed:
            an.ambiguities.append(f"part {part.path or 'body'}: missing closing boundary")
        an.renamed |= part.renamed
        if scan.is_container(part.content_type) and part.children and not part.in_message:
            an.containers += 1
        an.partial |= carriers.is_partial(part)
        an.encrypted |= carriers.is_encrypted(part)
        if part.content_type == "text/plain" and not part.is_attachment and not part.children:
            body = decode(view[part.body_start:part.end], part.cte)
            if part.stray and not looks_like_text(body):  # not the body, and no text: a file (ATT00001.txt)
                attachments.append(_attachment(an, view, part, policy))
                continue
            an.uuencoded += [(n, judge(d, None, n, policy)) for n, d in carriers.uuencoded_files(body)]
        if part.is_attachment:
            if part.stray and not decode(view[part.body_start:part.end], part.cte).strip():
                continue  # an empty text part outside the body: there is nothing to open
            attachments.append(_attachment(an, view, part, policy))
    return attachments


def analyse(data: bytes, policy: InspectPolicy, limits: scan.Limits = scan.Limits()) -> Analysis:
    """Raises scan.MimeError when the structure exceeds a limit or cannot be read one way."""
    root = scan.parse(data, limits)
    an = Analysis(data, root, [], scan.root_header(data, root, "message-id"))
    an.attachments = _survey(an, data, root, policy)
    an.forged_headers = bool(rw.drop_fields(data, root, OUR_HEADERS))
    return an


def inner_files(a: Attachment):
    """Every file judged inside an encoded attached message, at any depth."""
    for i in a.inner:
        yield i
        yield from inner_files(i)


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
        tnef = next((i for i in inner_files(a) if carriers.is_tnef(i.part)), None)
        if a.verdict is Verdict.KEEP and tnef is not None and policy.on_tnef != "keep":
            a.verdict = Verdict.BLOCKED
            a.reason = f'the attached message carries "{safe_display_name(tnef.name)}": {TNEF_REASON}'
            if policy.on_tnef == "reject":
                return Rejection.of("Attachment", a.name, a.reason)
            continue
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
        if a.part.stray and projected_size(an) <= policy.max_message_bytes:
            continue  # a text part outside the body is no attachment to count: offloaded only for size
        a.verdict, a.reason = Verdict.OFFLOAD, "offloaded so the message fits the recipient's limits"
    return None


def visible_count(an: Analysis) -> int:
    return an.containers + sum(1 for a in an.attachments
                               if a.verdict is Verdict.KEEP and not a.part.in_message and not a.part.stray)


def projected_size(an: Analysis) -> int:
    changed = an.changed
    removed = sum(a.wire_size for a in changed)
    notice = (NOTICE_BUDGET + NOTICE_PER_FILE * len(changed)) if changed else 0
    return len(an.data) - removed + notice + TRACE_BUDGET + PER_HEADER * len(an.attachments)


def render(an: Analysis) -> bytes:
    """The rewritten message body (without our trace headers)."""
    changed = an.changed
    if not changed and not an.forged_headers and not an.ambiguities and not an.renamed:
        return an.data
    notice_text = notice_html = None
    if changed:
        notice_text, notice_html = render_notice(changed)
    removed = [a.part for a in changed]
    return rw.rewrite(an.data, an.root, removed, notice_text, notice_html, OUR_HEADERS)
