"""Plain data passed along the pipeline: SMTP in -> parse -> inspect -> plan -> offload -> rewrite -> relay.

Nothing here does I/O; every stage takes and returns these values so each can be
tested with bytes in, decision out.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from .spool import FileBytes


KNOWN_CTES = frozenset({"7bit", "8bit", "binary", "base64", "quoted-printable"})  # RFC 2045 6.1


class Verdict(str, enum.Enum):
    KEEP = "keep"
    EMPTY = "empty"
    SPOOFED = "spoofed"
    BLOCKED = "blocked"
    OFFLOAD = "offload"


@dataclass(frozen=True)
class Judgement:
    """What inspect/ concluded about one attachment's bytes (before planning)."""

    verdict: Verdict  # KEEP, EMPTY, SPOOFED or BLOCKED; OFFLOAD is decided by the planner
    reason: str  # human-readable, safe to show to the recipient and the sender
    detected_type: str  # MIME type judged from the bytes, e.g. "application/pdf", "text/plain",
    #                     "application/octet-stream" when nothing matched
    detected_ext: str | None = None  # canonical extension of detected_type, without dot
    # Which rule decided, machine-readable (inspect/rules.py RULES), and the facts its sentence needs
    # (("type", "application/x-msdownload"), ("claimed", "application/pdf")): the notice templates
    # turn these into plain words per language. "" when no rule names it: the notice shows `reason`.
    rule: str = ""
    facts: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Envelope:
    client_ip: str
    helo: str
    mail_from: str  # "" for the null reverse-path
    rcpt_tos: tuple[str, ...]
    mail_options: tuple[str, ...] = ()
    smtputf8: bool = False


@dataclass
class Part:
    """One MIME entity located by byte offsets in the original message.

    start..end is the whole entity (headers + body); body_start..body_end the raw
    (still transfer-encoded) body. For a child of a multipart, delim_start is where
    the CRLF before its opening boundary line begins: removing [delim_start, end)
    removes the part and its delimiter and leaves valid MIME.
    """

    path: str  # "1", "1.2", "1.2.1" ... like IMAP part numbers; root is ""
    start: int
    end: int
    header_end: int  # offset of the first body byte (after the blank line)
    body_start: int
    body_end: int
    content_type: str  # lower-cased type/subtype ("text/plain" when absent)
    params: dict[str, str]  # Content-Type parameters, lower-cased keys, decoded (RFC 2231)
    disposition: str | None  # "attachment" / "inline" / None
    filename: str | None  # from Content-Disposition filename or Content-Type name
    cte: str  # the Content-Transfer-Encoding mechanism, lower-cased ("7bit" when absent; mime.codec.parse_cte)
    delim_start: int | None = None
    children: list["Part"] = field(default_factory=list)
    in_message: bool = False  # inside an attached message/rfc822
    names: list[str] = field(default_factory=list)  # every file name a reader may see (first = ours)
    ambiguities: list[str] = field(default_factory=list)  # header readings that differ between parsers
    unclosed: bool = False  # a multipart whose close delimiter is missing
    header_fields: Any = field(default=None, repr=False, compare=False)  # parsed headers (top level only)
    cte_header: str | None = None  # the Content-Transfer-Encoding header as written, when there is one
    renamed: bool = False  # a name was a path and is read as its base name (headers get rebuilt)
    # A transfer-encoded attached message (message/rfc822 in base64 or quoted-printable): its
    # decoded bytes and their structure. Offsets in `embedded` point into `embedded_data`.
    embedded: "Part | None" = field(default=None, repr=False, compare=False)
    embedded_data: bytes | None = field(default=None, repr=False, compare=False)
    # "cms" when `embedded` is the content of an opaque S/MIME signature (mime/cms.py): it cannot
    # be rebuilt without breaking the signature, and it is no .eml file.
    wrapper: str | None = None
    # The Content-Type field to relay instead of the received one, when readers would type the part
    # differently ("x?multipart/mixed"): ours, the one we judged (mime/scan.py: media_type).
    type_field: bytes | None = field(default=None, repr=False, compare=False)
    # A text/plain or text/html leaf outside its message's body (after an attachment, say): Outlook
    # shows it as a file (ATT00001.htm), so it is judged like one (an HTML one always, a plain one
    # when its bytes are no text); it is neither counted nor offloaded as an attachment.
    stray: bool = False

    @property
    def is_multipart(self) -> bool:
        return self.content_type.startswith("multipart/")

    @property
    def is_attachment(self) -> bool:
        """A leaf part a mail client could show as a file.

        That is a part with a name or an attachment disposition, and also a nameless one that
        is not text (images, application/*, audio...), an encoded attached message, any part in
        a transfer encoding nobody knows (RFC 2049: treat it as application/octet-stream), and an
        HTML part outside the message's body (`stray`). The message's own text stays body;
        multiparts and readable attached messages are containers whose parts are judged instead.
        """
        # message/external-body only points at a file elsewhere: there are no bytes to judge.
        if self.children or self.is_multipart or self.content_type == "message/external-body":
            return False
        if self.filename is not None or self.disposition == "attachment" or self.embedded is not None:
            return True
        if self.cte not in KNOWN_CTES:
            return True
        if self.stray and self.content_type == "text/html":
            return True
        return self.content_type.partition("/")[0] not in ("text", "message")

    def walk(self):
        yield self
        for c in self.children:
            yield from c.walk()


@dataclass(frozen=True)
class File:
    """A file found in a message (or sent to the HTTP side): its decoded bytes and what
    inspect/ concluded about them."""

    part: Part
    # A large file of a spooled message is decoded into a spool file of its own (a FileBytes,
    # closed with the plan: delivery/decide.py Plan.close), every other one is bytes.
    data: bytes | FileBytes
    sha256: str
    judgement: Judgement
    wire_size: int  # encoded size on the wire including headers and delimiter
    inner: tuple["File", ...] = ()  # files judged inside an encoded attached message

    @property
    def name(self) -> str:
        if self.part.filename:
            return self.part.filename
        # A nameless part gets its place and, when the bytes tell, an extension to open it with.
        ext = self.judgement.detected_ext
        if self.part.embedded is not None:
            ext = "p7m" if self.part.wrapper == "cms" else "eml"
        return f"part-{self.part.path or '0'}" + (f".{ext}" if ext else "")

    @property
    def declared_type(self) -> str:
        return self.part.content_type

    @property
    def size(self) -> int:
        return len(self.data)

    def nested(self):
        """Every file judged inside this one, at any depth."""
        for i in self.inner:
            yield i
            yield from i.nested()


@dataclass(frozen=True)
class FileOutcome:
    """What finally happened to one file (delivery/prepare.py): its verdict, and where it went
    when offloaded. What the notice, the decision headers, the log and the metrics read."""

    file: File
    verdict: Verdict
    reason: str
    storage_key: str | None = None
    link: str | None = None
    link_expires: int | None = None  # unix time
    offload_failed: bool = False
    quarantine_id: str | None = None  # a stripped file kept in the quarantine (smtp_offload/quarantine)

    @property
    def name(self) -> str:
        return self.file.name

    @property
    def size(self) -> int:
        return self.file.size
