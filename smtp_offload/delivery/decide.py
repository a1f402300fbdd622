"""Decide: bytes and policy in, an immutable plan of per-file decisions out.

Pure: nothing here touches the network, the disk, the clock or the event loop, and nothing
it returns is changed afterwards. The three steps read top to bottom:
  analyse  - find the structure (mime/scan.py) and judge every file by its bytes (inspect/);
  plan     - apply the administrator's policy, then offload, largest first, until the message
             fits the downstream platform's limits;
  decide   - both, or the reply that refuses the message.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from .. import carriers
from .. import replies as R
from ..inspect import InspectPolicy, judge, looks_like_text, safe_display_name
from ..mime import rewrite as rw
from ..mime import scan
from ..mime.codec import decode, decode_file
from ..model import KNOWN_CTES, File, Judgement, Part, Verdict
from ..spool import FileBytes
from .policy import Action, Ambiguous, BareNewlines, Fit, KeepOrReject, PlanPolicy, Tnef, Uuencode

TNEF_REASON = "an Outlook winmail.dat container whose files cannot be inspected; ask the sender to resend in plain format"
OUR_HEADERS = ("x-smtp-offload*",)  # incoming copies are forgeries: dropped before we add ours
NOTICE_BUDGET = 2048  # bytes reserved for the notice text and HTML, plus ...
# ... this much per changed file: its name, link and sentences in text and HTML, quoted-printable
# encoded. The worst case (a 100-character name of 4-byte characters, a 100-character link, the
# longest German sentence) is about 5 KiB; tests/test_notices.py measures it against this.
NOTICE_PER_FILE = 6144
TRACE_BUDGET = 1024  # Received + summary header
PER_HEADER = 400  # one decision header per attachment
# A part of a spooled message whose encoded body is larger than this is decoded into a spool
# file of its own (streamed, hashed on the way) and judged through a memory map of it; a
# smaller one is decoded in memory, as every part of a message held in memory is.
STREAM_OVER = 1024 * 1024


@dataclass(frozen=True)
class DecidePolicy:
    """Everything decide() reads, composed once at start from [policy], [downstream] and [server]."""

    inspect: InspectPolicy = field(default_factory=InspectPolicy)
    plan: PlanPolicy = field(default_factory=PlanPolicy)
    mime: scan.Limits = field(default_factory=scan.Limits)
    fit: Fit = Fit(40_000_000, 50)
    bare_newlines: BareNewlines = BareNewlines.NORMALIZE


@dataclass(frozen=True)
class Analysis:
    data: bytes | FileBytes  # a spooled message stays in its file (the SMTP side's, closed there)
    root: Part
    files: tuple[File, ...]
    message_id: str | None
    forged_headers: bool = False
    partial: bool = False  # message/partial somewhere
    encrypted: bool = False  # multipart/encrypted or S/MIME enveloped data somewhere
    uuencoded: tuple[tuple[str, Judgement], ...] = ()  # files inside body text
    containers: int = 0  # attached messages, which the platform counts as one attachment each
    ambiguities: tuple[str, ...] = ()  # rebuilt into one reading when rendered
    renamed: bool = False  # a file name was a path: its part's headers are rebuilt with the base name
    spooled: tuple[FileBytes, ...] = ()  # files decoded into spool files (File.data): close() closes them

    def close(self) -> None:
        for f in self.spooled:
            f.close()


@dataclass(frozen=True)
class Decision:
    """What happens to one file: KEEP, OFFLOAD, or removed as EMPTY, SPOOFED or BLOCKED."""

    file: File
    verdict: Verdict
    reason: str


@dataclass(frozen=True)
class Plan:
    analysis: Analysis
    decisions: tuple[Decision, ...]
    refusal: str | None = None  # the reply when policy refuses the whole message

    @property
    def changed(self) -> tuple[Decision, ...]:
        return tuple(d for d in self.decisions if d.verdict is not Verdict.KEEP)

    @property
    def projected_size(self) -> int:
        return projected_size(self.analysis, self.decisions)

    def close(self) -> None:
        """Close the spool files the plan decoded files into, once the message is done."""
        self.analysis.close()


# -- analyse ----------------------------------------------------------------------------------
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
            return Judgement(Verdict.SPOOFED, reason, "application/octet-stream", rule="unknown_encoding")
    return j


def _raw_reading(view: memoryview | FileBytes, part: Part, policy: InspectPolicy) -> Judgement | None:
    """A Content-Transfer-Encoding header we had to clean up ("base64 (note)", "BASE64;") may be
    unknown to a stricter client, which then shows the body undecoded: what those bytes are
    (an executable, say) counts too."""
    if part.cte not in ("base64", "quoted-printable") or part.cte_header is None \
            or part.cte_header.strip().lower() == part.cte:
        return None
    if isinstance(view, FileBytes) and part.end - part.body_start > STREAM_OVER:
        raw, _ = decode_file(view, part.body_start, part.end, "binary")  # the bytes as they are, in a file
        with raw, raw.mapped() as mm:
            j = judge(mm, None, None, policy)
    else:
        j = judge(bytes(view[part.body_start:part.end]), None, None, policy)
    return j if j.verdict is Verdict.BLOCKED else None


def _has_content(payload: bytes | FileBytes) -> bool:
    """Anything but white space in it?"""
    if isinstance(payload, bytes):
        return bool(payload.strip())
    return any(chunk.strip() for chunk in payload.chunks())


class _Survey:
    """What walking one message tree finds besides its files (private to analyse())."""

    def __init__(self, policy: InspectPolicy) -> None:
        self.policy = policy
        self.partial = self.encrypted = self.renamed = False
        self.uuencoded: list[tuple[str, Judgement]] = []
        self.containers = 0
        self.ambiguities: list[str] = []
        self.spooled: list[FileBytes] = []  # files decoded into spool files, kept (File.data)
        self.digests: dict[int, str] = {}  # id(spool file) -> its sha256, hashed as it was decoded

    def close(self) -> None:
        for f in self.spooled:
            f.close()

    def decoded(self, view: memoryview | FileBytes, part: Part) -> bytes | FileBytes:
        """The part's decoded body: in memory, or (a large one of a spooled message) a spool file."""
        if isinstance(view, memoryview) or part.embedded is not None or part.end - part.body_start <= STREAM_OVER:
            return decode(view[part.body_start:part.end], part.cte)
        f, self.digests[id(f)] = decode_file(view, part.body_start, part.end, part.cte)
        self.spooled.append(f)
        return f

    def drop(self, payload: bytes | FileBytes) -> None:
        """A decoded body that became no file: its spool file is closed at once."""
        if isinstance(payload, FileBytes):
            self.spooled.remove(payload)
            self.digests.pop(id(payload), None)
            payload.close()

    def files(self, data: bytes | FileBytes, root: Part) -> tuple[File, ...]:
        found: list[File] = []
        view = memoryview(data) if isinstance(data, bytes) else data  # slices of a memoryview are not copies
        for part in root.walk():
            self.ambiguities += [f"part {part.path or 'header'}: {n}" for n in part.ambiguities]
            if part.unclosed:
                self.ambiguities.append(f"part {part.path or 'body'}: missing closing boundary")
            self.renamed |= part.renamed
            if scan.is_container(part.content_type) and part.children and not part.in_message:
                self.containers += 1
            self.partial |= carriers.is_partial(part)
            self.encrypted |= carriers.is_encrypted(part)
            if part.content_type == "text/plain" and not part.is_attachment and not part.children:
                body = self.decoded(view, part)
                if isinstance(body, FileBytes):
                    with body.mapped() as mm:  # a large text body: read through a map of its file
                        text = looks_like_text(mm)
                        uuencoded = [] if part.stray and not text else carriers.uuencoded_files(mm)
                    if part.stray and not text:
                        found.append(self.file(view, part, body))
                        continue
                    self.drop(body)
                    self.uuencoded += [(n, judge(d, None, n, self.policy)) for n, d in uuencoded]
                    continue
                if part.stray and not looks_like_text(body):  # not the body, and no text: a file (ATT00001.txt)
                    found.append(self.file(view, part, body))
                    continue
                self.uuencoded += [(n, judge(d, None, n, self.policy)) for n, d in carriers.uuencoded_files(body)]
            if part.is_attachment:
                payload = self.decoded(view, part)
                if part.stray and not _has_content(payload):
                    self.drop(payload)
                    continue  # an empty text part outside the body: there is nothing to open
                found.append(self.file(view, part, payload))
        return tuple(found)

    def file(self, view: memoryview | FileBytes, part: Part, payload: bytes | FileBytes) -> File:
        if part.embedded is not None:
            assert isinstance(payload, bytes)  # an attached message is held (scan.py scanned it in memory)
            j, inner = self.message(payload, part)
        elif isinstance(payload, bytes):
            j, inner = judge_part(payload, part, self.policy), ()
        else:  # judged through a map of its file, unmapped before the next file is looked at
            with payload.mapped() as mm:
                j, inner = judge_part(mm, part, self.policy), ()
        raw = _raw_reading(view, part, self.policy)
        if raw is not None and _SEVERITY[raw.verdict] > _SEVERITY.get(j.verdict, 0):
            j = Judgement(raw.verdict, f"{raw.reason} (read undecoded, as a client may read an irregular "
                          "transfer encoding)", raw.detected_type, raw.detected_ext, raw.rule, raw.facts)
        digest = hashlib.sha256(payload).hexdigest() if isinstance(payload, bytes) else self.digests[id(payload)]
        return File(part=part, data=payload, sha256=digest, judgement=j, inner=inner,
                    wire_size=part.end - (part.delim_start if part.delim_start is not None else part.start))

    def message(self, payload: bytes, part: Part) -> tuple[Judgement, tuple[File, ...]]:
        """An encoded attached message (or an .eml file, or the content of an opaque S/MIME
        signature) is one unit: what its bytes are (an executable is blocked whatever it is
        labelled), else the worst file inside it, named in the reason."""
        assert part.embedded is not None and part.embedded_data is not None
        # The bytes as a file: only its names are claims (the declared message type is no
        # promise of plain text: 8-bit and binary parts are legal inside).
        own = judge_all_readings(payload, part, self.policy, with_type=False)
        inner = self.files(part.embedded_data, part.embedded)
        signed = part.wrapper == "cms"
        worst = max(inner, key=lambda f: _SEVERITY.get(f.judgement.verdict, 0), default=None)
        if worst is not None and _SEVERITY.get(worst.judgement.verdict, 0) > _SEVERITY[own.verdict]:
            what = "signed content" if signed else "attached message"
            reason = f'the {what} carries "{safe_display_name(worst.name)}": {worst.judgement.reason}'
            return Judgement(worst.judgement.verdict, reason, own.detected_type, own.detected_ext, "carries",
                             _carried(worst, "signed" if signed else "message")), inner
        if own.verdict is not Verdict.KEEP:
            return own, inner
        if signed and rw.needs_rebuild(part.embedded):
            # An encoded message is relayed rebuilt into the one reading we judged; rebuilding
            # signed content would break its signature, so it cannot be relayed with one reading.
            return Judgement(Verdict.SPOOFED, "signed content (S/MIME) whose MIME structure can be read more "
                             "than one way", own.detected_type, own.detected_ext, "signed_ambiguous"), inner
        head = "S/MIME signed content (the signature is not verified)" if signed else "an email message"
        return Judgement(Verdict.KEEP, f"{head}; the {len(inner)} file(s) in it were inspected",
                         own.detected_type, own.detected_ext), inner


def _carried(worst: File, container: str) -> tuple[tuple[str, str], ...]:
    """The facts of "carries": the container, the file it carries (its name, its rule and that
    rule's facts); at any depth the deepest file is named, in the outermost container."""
    j = worst.judgement
    if j.rule == "carries":
        return (("container", container),) + tuple(kv for kv in j.facts if kv[0] != "container")
    return (("container", container), ("file", safe_display_name(worst.name)), ("inner", j.rule)) + j.facts


def analyse(data: bytes | FileBytes, policy: InspectPolicy, limits: scan.Limits = scan.Limits()) -> Analysis:
    """Raises scan.MimeError when the structure exceeds a limit or cannot be read one way.
    A spooled message (FileBytes) may leave files in spool files: Analysis.close() closes them."""
    root = scan.parse(data, limits)
    survey = _Survey(policy)
    try:
        files = survey.files(data, root)
        forged = _forged(data, root)
    except BaseException:
        survey.close()
        raise
    return Analysis(data, root, files, scan.root_header(data, root, "message-id"),
                    forged_headers=forged, partial=survey.partial,
                    encrypted=survey.encrypted, uuencoded=tuple(survey.uuencoded), containers=survey.containers,
                    ambiguities=tuple(survey.ambiguities), renamed=survey.renamed, spooled=tuple(survey.spooled))


def _forged(data: bytes | FileBytes, root: Part) -> bool:
    """Does the message arrive with header fields only this hop may write (ours)?"""
    # A quick look first: splitting every message's header block into fields costs more.
    return b"x-smtp-offload" in data[root.start:root.header_end].lower() and \
        bool(rw.drop_fields(data, root, OUR_HEADERS))


# -- plan -------------------------------------------------------------------------------------
def _refused(what: str, name: str, reason: str) -> str:
    safe = "".join(c if 32 <= ord(c) < 127 else "?" for c in name)[:80]
    return R.POLICY_REFUSED.format(reason=f'{what} "{safe}" refused: {reason}')


def _by_policy(f: File, policy: PlanPolicy) -> tuple[Decision, str | None]:
    """One file under the administrator's policy, before fitting: its decision and, when policy
    refuses the message for it, the reply."""
    verdict, reason = f.judgement.verdict, f.judgement.reason
    if verdict is Verdict.KEEP and policy.on_tnef is not Tnef.KEEP:
        tnef = next((i for i in f.nested() if carriers.is_tnef(i.part)), None)
        if tnef is not None:
            verdict = Verdict.BLOCKED
            reason = f'the attached message carries "{safe_display_name(tnef.name)}": {TNEF_REASON}'
        elif carriers.is_tnef(f.part):
            verdict, reason = Verdict.BLOCKED, TNEF_REASON
        if verdict is Verdict.BLOCKED:
            refusal = _refused("Attachment", f.name, reason) if policy.on_tnef is Tnef.REJECT else None
            return Decision(f, verdict, reason), refusal
    actions = {Verdict.EMPTY: policy.on_empty, Verdict.SPOOFED: policy.on_spoofed, Verdict.BLOCKED: policy.on_blocked}
    if verdict in actions:
        refusal = _refused("Attachment", f.name, reason) if actions[verdict] is Action.REJECT else None
        return Decision(f, verdict, reason), refusal
    if f.size > policy.offload_over_bytes:
        return Decision(f, Verdict.OFFLOAD, "larger than the offload threshold"), None
    return Decision(f, Verdict.KEEP, reason), None


def _as_judged(files) -> list[Decision]:
    return [Decision(f, f.judgement.verdict, f.judgement.reason) for f in files]


def plan(an: Analysis, policy: PlanPolicy, fit: Fit) -> Plan:
    """Each file's decision; `refusal` set when policy refuses the message (the files it did not
    get to are recorded as judged, for the metrics and `smtp-offload scan`)."""
    refusal = _refused_message(an, policy)
    if refusal is not None:
        return Plan(an, tuple(_as_judged(an.files)), refusal)
    decisions: list[Decision] = []
    for i, f in enumerate(an.files):
        decision, refusal = _by_policy(f, policy)
        decisions.append(decision)
        if refusal is not None:
            return Plan(an, tuple(decisions + _as_judged(an.files[i + 1:])), refusal)
    return Plan(an, tuple(_fit(an, decisions, fit)))


def _refused_message(an: Analysis, policy: PlanPolicy) -> str | None:
    """What refuses the whole message, whatever its files are: hidden carriers policy rejects."""
    if an.partial and policy.on_partial is KeepOrReject.REJECT:
        return R.POLICY_REFUSED.format(
            reason="Fragmented messages (message/partial) cannot be inspected and are not accepted")
    if an.encrypted and policy.on_encrypted is KeepOrReject.REJECT:
        return R.POLICY_REFUSED.format(reason="Encrypted messages cannot be inspected and are not accepted")
    if policy.on_uuencode is Uuencode.INSPECT:
        for name, j in an.uuencoded:
            if j.verdict is not Verdict.KEEP:
                return _refused("File uuencoded in the message text", name, j.reason)
    return None


def _fit(an: Analysis, decisions: list[Decision], fit: Fit) -> list[Decision]:
    """Offload more, largest first, until the message fits the downstream's limits."""
    decisions = list(decisions)
    kept = sorted((i for i, d in enumerate(decisions) if d.verdict is Verdict.KEEP),
                  key=lambda i: decisions[i].file.wire_size, reverse=True)
    while kept and (projected_size(an, decisions) > fit.max_message_bytes
                    or visible_count(an, decisions) > fit.max_attachments):
        i = kept.pop(0)
        f = decisions[i].file
        if visible_count(an, decisions) > fit.max_attachments and f.part.in_message:
            continue  # offloading a file inside an attached message does not lower the count
        if f.part.stray and projected_size(an, decisions) <= fit.max_message_bytes:
            continue  # a text part outside the body is no attachment to count: offloaded only for size
        decisions[i] = Decision(f, Verdict.OFFLOAD, "offloaded so the message fits the recipient's limits")
    return decisions


def visible_count(an: Analysis, decisions) -> int:
    return an.containers + sum(1 for d in decisions if d.verdict is Verdict.KEEP
                               and not d.file.part.in_message and not d.file.part.stray)


def projected_size(an: Analysis, decisions) -> int:
    changed = [d for d in decisions if d.verdict is not Verdict.KEEP]
    removed = sum(d.file.wire_size for d in changed)
    notice = (NOTICE_BUDGET + NOTICE_PER_FILE * len(changed)) if changed else 0
    return len(an.data) - removed + notice + TRACE_BUDGET + PER_HEADER * len(an.files)


# -- decide -----------------------------------------------------------------------------------
def decide_file(data: bytes, filename: str, declared_type: str | None, policy: DecidePolicy) -> Decision:
    """One file sent to the HTTP side, judged as the same file attached to a mail would be:
    a decision of OFFLOAD (accepted: it is stored) or EMPTY, SPOOFED or BLOCKED (refused)."""
    part = Part(path="1", start=0, end=len(data), header_end=0, body_start=0, body_end=len(data),
                content_type=(declared_type or "application/octet-stream").strip().lower(), params={},
                disposition="attachment", filename=filename, cte="binary", names=[filename])
    judged = judge_part(data, part, policy.inspect)
    f = File(part=part, data=data, sha256=hashlib.sha256(data).hexdigest(), judgement=judged, wire_size=len(data))
    decision, _refusal = _by_policy(f, policy.plan)  # the API refuses the file, whatever policy does to a mail
    if decision.verdict in (Verdict.KEEP, Verdict.OFFLOAD):
        return Decision(f, Verdict.OFFLOAD, judged.reason)
    return decision


def decide(data: bytes | FileBytes, policy: DecidePolicy) -> Plan:
    """The plan for one message as received (CRLF line ends). Raises SmtpReplyError for a
    message refused before any file is judged: bare newlines, structure past a limit, MIME
    that reads more than one way (when policy says reject).

    A spooled message (FileBytes) arrives normalised already (its `bare_newlines` flag says
    what came); its large files may be decoded into spool files: the caller closes the plan
    (Plan.close) when the message is done."""
    if isinstance(data, FileBytes):
        if policy.bare_newlines is BareNewlines.REJECT and data.bare_newlines:
            raise R.BARE_NEWLINES.error()
    else:
        if policy.bare_newlines is BareNewlines.REJECT and scan.has_bare_newlines(data):
            raise R.BARE_NEWLINES.error()
        data = scan.normalize_line_endings(data)
    try:
        an = analyse(data, policy.inspect, policy.mime)
    except scan.MimeError as exc:
        raise R.STRUCTURE_REFUSED.error(reason=exc) from None
    if an.ambiguities and policy.plan.on_ambiguous_mime is Ambiguous.REJECT:
        an.close()
        raise R.AMBIGUOUS_MIME.error(reason=an.ambiguities[0])
    return plan(an, policy.plan, policy.fit)
