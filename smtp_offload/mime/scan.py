"""Locate every MIME entity of a message by byte offsets, without re-serialising anything.

The message is read once, as bytes with CRLF line ends (the SMTP side normalises them first),
and described as a tree of `Part`s pointing into those bytes. Rewriting then splices the
original bytes, so what we do not change is delivered exactly as it came.

Header blocks are decoded with the stdlib's compat32 header parser, which is lazy (no eager
RFC 2047 decoding) and cheap; bodies are never handed to the email package.
"""

from __future__ import annotations

import email.header
import email.parser
import email.policy
import email.utils
import re
from dataclasses import dataclass, field

from ..inspect.names import MAX_NAME, disarm, file_extension
from ..inspect.sniff import looks_like_text
from ..model import KNOWN_CTES, Part
from ..spool import FileBytes
from . import cms, codec
from .headers import fields as header_fields
from .headers import first_token

CRLF = b"\r\n"
# Attached messages (RFC 2046 5.2.1; message/global is RFC 6532's UTF-8 twin; Thunderbird parses
# message/news exactly like rfc822): what clients show, and the platform counts, as one attachment.
MESSAGE_TYPES = ("message/rfc822", "message/global", "message/news")
# Python's email parser reads every other message/* as a message too (a forwarded message labelled
# "message/x-fwd" shows its files), except these, which carry no message of their own.
_NOT_CONTAINERS = frozenset({"message/delivery-status", "message/external-body", "message/partial"})
_header_parser = email.parser.HeaderParser(policy=email.policy.compat32)


@dataclass(frozen=True)
class Limits:
    """Bounds on the work one message may cause (config: policy.max_mime_*)."""

    # "key": the option's name in [policy]; "gt": config refuses values not above it.
    max_depth: int = field(default=30, metadata={"key": "max_mime_depth", "gt": 0})
    max_parts: int = field(default=1000, metadata={"key": "max_mime_parts", "gt": 0})
    max_header_bytes: int = field(default=512 * 1024, metadata={"gt": 0})  # one entity's header block
    # parameters in one Content-Type / Content-Disposition
    max_params: int = field(default=64, metadata={"key": "max_header_params", "gt": 0})
    # RFC 2047 words we would decode in one of those headers
    max_encoded_words: int = field(default=64, metadata={"gt": 0})


class MimeError(ValueError):
    """The structure cannot be read one way only, or exceeds a limit: refuse the message."""


def parse(data: bytes | FileBytes, limits: Limits = Limits()) -> Part:
    """The structure of `data`: in memory, or a spooled message read through windows (the
    FileBytes offers the find, startswith and slices the scanner uses)."""
    root = _Scanner(data, limits).entity(0, len(data), "", 0, False, "text/plain")
    _mark_stray_text(root)
    return root


def encoded(data: bytes | FileBytes, start: int, end: int) -> bytes | memoryview:
    """data[start:end] for decoding: a memoryview (no copy) of bytes, read from a spool file."""
    return memoryview(data)[start:end] if isinstance(data, bytes) else data[start:end]


def is_container(ctype: str) -> bool:
    """Is a part of this type an attached message whose own parts a reader shows?"""
    return ctype in MESSAGE_TYPES or (ctype.startswith("message/") and ctype not in _NOT_CONTAINERS)


_MEDIA_TYPE = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+/[!#$%&'*+\-.^_`|~0-9a-z]+")
_PLAIN_TYPE = re.compile(r"[ \t]*([!#$%&'*+\-.^_`|~0-9A-Za-z]+/[!#$%&'*+\-.^_`|~0-9A-Za-z]+)[ \t]*(?:;|$)")
_WSP = frozenset(" \t\r\n")
_TYPE_END = _WSP | {",", ";"}  # and "(": a comment


def media_type(value: str) -> str | None:
    """The type/subtype a Content-Type value names, read as the most lenient client reads it:
    leading white space and comments skipped, the first token cut at white space, ",", ";" or a
    comment (Thunderbird's MimeHeaders_get), and only what follows its last "?" (Thunderbird's
    repair of "=?windows-1252?q?application/pdf", its bug 659355). None when no type is left.

    compat32 keeps "message/rfc822 (fwd)" or "x?multipart/mixed" whole, a type nobody knows,
    and would ignore a container every client opens.
    """
    plain = _PLAIN_TYPE.match(value)  # nearly every header: nothing to be lenient about
    if plain:
        return plain.group(1).lower()
    token = first_token(value, _TYPE_END.__contains__, _WSP.__contains__).rpartition("?")[2].lower()
    return token if _MEDIA_TYPE.fullmatch(token) else None


def _kind(ctype: str) -> str:
    """What a type makes of a part, as far as which files a reader finds in it goes."""
    if ctype.startswith("multipart/"):
        # digest changes its parts' default type, alternative which of them is the body
        return ctype if ctype in ("multipart/digest", "multipart/alternative") else "multipart"
    if is_container(ctype):
        return "message"
    return "text" if ctype.partition("/")[0] in ("text", "message") else "file"


def _retyped_field(data: bytes, start: int, stop: int, ctype: str) -> bytes | None:
    """The part's first Content-Type field with `ctype` as its type and its parameters as they
    came (cut where compat32 cuts them: at the first ";" outside a quoted string)."""
    for f in header_fields(data, start, stop):
        if f.name != "content-type" or not f.colon:  # a junk line "Content-Type" is no field to compat32
            continue
        raw = f.raw
        i, quoted = raw.index(b":") + 1, False
        while i < len(raw) and (quoted or raw[i:i + 1] != b";"):
            if raw[i:i + 1] == b"\\" and quoted:
                i += 1
            elif raw[i:i + 1] == b'"':
                quoted = not quoted
            i += 1
        return b"Content-Type: " + ctype.encode("ascii") + (raw[i:] if i < len(raw) else CRLF)
    return None


def _mark_stray_text(root: Part) -> None:
    """Mark the text leaves of one message that are not its body (Part.stray).

    The body is the first text/plain and text/html leaf among: the text leaves before the first
    attachment, the first text leaf at all, and the multipart/alternative around that leaf (where
    Apple Mail puts text after an inline attachment). A text part after an attachment (a text/html
    after a PDF in a multipart/mixed) is what Outlook shows as a file, ATT00001.htm. Attached
    messages are messages of their own, marked when they were read.
    """
    if not root.children:
        return
    texts: list[tuple[Part, tuple[Part, ...], bool]] = []  # (leaf, alternatives around it, before any file)
    alts: list[Part] = []
    seen_file = False

    def visit(p: Part) -> None:
        nonlocal seen_file
        if p.children and not p.is_multipart:
            seen_file = True  # an attached message
        elif p.children:
            alt = p.content_type == "multipart/alternative"
            if alt:
                alts.append(p)
            for c in p.children:
                visit(c)
            if alt:
                alts.pop()
        elif p.content_type in ("text/plain", "text/html") and not p.is_attachment:
            texts.append((p, tuple(alts), not seen_file))
        elif p.is_attachment:
            seen_file = True

    visit(root)
    if len(texts) < 2:
        return
    first, first_alts, _ = texts[0]
    alt = first_alts[-1] if first_alts else None
    region = [p for p, a, early in texts if early or p is first or any(x is alt for x in a)]
    body = [next((p for p in region if p.content_type == t), None) for t in ("text/plain", "text/html")]
    for p, _, _ in texts:
        if not any(p is b for b in body):
            p.stray = True


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


def header_end(data: bytes, start: int, end: int) -> tuple[int, int]:
    """(end of the header block, start of the body) for the entity at start."""
    if data.startswith(CRLF, start, end):  # no headers at all
        return start, start + 2
    i = data.find(b"\r\n\r\n", start, end)
    if i < 0:
        return end, end
    return i + 2, i + 4


def headers(data: bytes, start: int, stop: int):
    """The header block as a compat32 Message (headers only, no body).

    Raw 8-bit header text (RFC 6532, or legacy senders) is read as UTF-8, tolerating a few
    broken sequences (senders truncate long names mid-character); text that is clearly not
    UTF-8 is read as Latin-1. That is what mail clients display.
    """
    block = data[start:stop]
    text = block.decode("utf-8", "replace")
    if text.count("\ufffd") > 3:
        text = block.decode("latin-1")
    return _header_parser.parsestr(_lenient(text))


# RFC 5322 4.5.3 (obs-optional) allows white space before the colon: "X-Mailer : x".
_OBS_NAME = re.compile(r"^([\x21-\x39\x3b-\x7e]+)[ \t]+:", re.MULTILINE)
_FIELD = re.compile(r"[\x21-\x39\x3b-\x7e]+:|[ \t]|From ")


def _lenient(text: str) -> str:
    """The header block as the most lenient reader sees it. compat32 ends the headers at the
    first line that is not a well-formed field, and treats the rest as body; mail clients
    read on. So a sender could hide a Content-Type behind "X-Mailer : x" or a junk line from
    us but not from the recipient: we read obsolete field names and skip junk lines instead,
    seeing at least every field a client sees."""
    text = _OBS_NAME.sub(r"\1:", text)
    lines = text.split("\r\n")
    if all(not line or _FIELD.match(line) for line in lines):
        return text
    return "\r\n".join(line for line in lines if not line or _FIELD.match(line))


def _decode_words(value: str) -> str:
    # Outlook and others put RFC 2047 encoded-words in filename parameters (not allowed by
    # RFC 2231, but common): decode them so the name we judge is the name users see.
    if "=?" not in value:
        return value
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except Exception:  # a charset Python does not know ("utf-8*en", "x-unknown"): read on
        return _lenient_words(value)[0]


# An encoded-word (RFC 2047), its charset possibly with an RFC 2231 language ("utf-8*en").
_WORD = re.compile(r"=\?([^?\s]*)\?([qQbB])\?([^?]*)\?=")
_WORD_GAP = re.compile(r"(\?=)[ \t]+(?==\?)")  # white space between two adjacent encoded-words
_QP_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")


def _lenient_words(value: str) -> tuple[str, str]:
    """`value` with its encoded-words decoded the lenient way clients do: the language
    suffix dropped from the charset, text in a charset nobody knows read as Latin-1 (first
    result) or left as the encoded text, which Thunderbird shows (second result)."""
    value = _WORD_GAP.sub(r"\1", value)  # white space between encoded-words is no character
    read, shown, pos = [], [], 0
    for m in _WORD.finditer(value):
        read.append(value[pos:m.start()])
        shown.append(value[pos:m.start()])
        charset, kind, text = m.group(1).partition("*")[0], m.group(2).lower(), m.group(3)
        raw = text.encode("utf-8", "replace")
        if kind == "q":
            data = _QP_ESCAPE.sub(lambda e: bytes([int(e.group(1), 16)]), raw.replace(b"_", b" "))
        else:
            data = codec.decode(raw, "base64")
        try:
            word = data.decode(charset, "replace")
            read.append(word)
            shown.append(word)
        except Exception:  # LookupError, or a codec that is no text encoding (idna, hex...)
            read.append(data.decode("latin-1"))
            shown.append(text)
        pos = m.end()
    read.append(value[pos:])
    shown.append(value[pos:])
    return "".join(read), "".join(shown)


_FOLD = re.compile(r"\r\n(?=[ \t])")


def _unfold(value: str) -> str:
    """RFC 5322 unfolding: a line break followed by white space is that white space. Any
    other CR, LF or NUL is dropped: it can only be an artefact."""
    return _FOLD.sub("", value).replace("\r", "").replace("\n", "").replace("\x00", "")


_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)


def _readings(value: str) -> list[str]:
    """Every name a client may read from one name value, the decoded one first.

    compat32 unescapes only \\\\ and \\" in a quoted string; RFC 5322 (and Thunderbird, and the
    email package's default policy) unescape every quoted-pair: "invoice.j\\s" is invoice.js.
    A client that does not decode encoded-words in a parameter shows them as written; one that
    does may strip a language from the charset or read an unknown charset byte for byte. Most
    names have neither a backslash nor an encoded-word: they have only the one reading.
    """
    value = _unfold(value).strip()
    if "\\" not in value and "=?" not in value:
        return [value]
    out = []
    for form in (value, _QUOTED_PAIR.sub(r"\1", value)) if "\\" in value else (value,):
        out.append(_decode_words(form))
        if "=?" in form:
            out += _lenient_words(form)
            # Undecoded, the white space folding left between two encoded-words is no part of
            # the name anybody sees (a client shows a space at most): not a control character.
            # Its length is the encoding's, not the name's: only its end (the extension) counts.
            out.append(_WORD_GAP.sub(r"\1 ", form)[-MAX_NAME:])
        else:
            out.append(form)
    return list(dict.fromkeys(out))


def _clean(value) -> str:
    """A parameter value as the first reader takes it. Encoded-words are not decoded here: RFC
    2047 forbids them in parameters, and a boundary is always read as written (decoding
    "=?utf-8?Q?x?=" to "x" would hide every part from us but not from Thunderbird)."""
    if isinstance(value, tuple):  # RFC 2231 (charset, language, value)
        value = email.utils.collapse_rfc2231_value(value)
    return _unfold(str(value))


_CONTENT_HEADERS = ("content-type", "content-disposition", "content-transfer-encoding")
NAME_HEADERS = ("content-name", "x-sun-data-name")  # file names outside the content headers
CONFLICTING_NAMES = "conflicting file names"


class _Scanner:
    def __init__(self, data: bytes | FileBytes, limits: Limits):
        self.data = data
        self.limits = limits
        self.parts = 0

    def entity(self, start: int, end: int, path: str, depth: int, in_message: bool, default_type: str) -> Part:
        data, lim = self.data, self.limits
        self.parts += 1
        if self.parts > lim.max_parts:
            raise MimeError(f"more than {lim.max_parts} MIME parts")
        if depth > lim.max_depth:
            raise MimeError(f"MIME parts nested deeper than {lim.max_depth} levels")
        hend, bstart = header_end(data, start, end)
        if hend - start > lim.max_header_bytes:
            raise MimeError(f"a header block larger than {lim.max_header_bytes} bytes")
        msg = headers(data, start, hend)
        notes = [f"duplicate {h} headers" for h in _CONTENT_HEADERS if len(msg.get_all(h) or ()) > 1]
        for h in ("content-type", "content-disposition") + NAME_HEADERS:
            raw = msg.get(h)
            if raw is not None and str(raw).count("=?") > lim.max_encoded_words:
                raise MimeError(f"more than {lim.max_encoded_words} encoded-words in {h}")
        ct_params = msg.get_params(header="content-type") or []
        cd_params = msg.get_params(header="content-disposition") or []
        if max(len(ct_params), len(cd_params)) > lim.max_params + 1:
            raise MimeError(f"more than {lim.max_params} parameters in a header")
        ct_header = msg.get("content-type")
        strict = (msg.get_content_type() if ct_header else default_type).lower()
        ctype = (media_type(str(ct_header)) if ct_header else None) or strict
        retyped = ctype != strict and _kind(ctype) != _kind(strict)
        if retyped:  # compat32 (Python's email) reads another type than the lenient clients do
            notes.append("a Content-Type that readers type differently")
        params: dict[str, str] = {}
        for key, val in ct_params[1:]:
            key, val = key.lower(), _clean(val)
            if key == "boundary" and params.get(key, val) != val:
                raise MimeError("conflicting boundary parameters")
            params.setdefault(key, val)
        # Where any client takes a file name from, each place with every reading of its value.
        readings = (_names(cd_params[1:], "filename") + _names(ct_params[1:], "name")
                    + _names(cd_params[1:], "name") + _header_names(msg))
        raw_names = [r for rs in readings for r in rs]
        names = [disarm(n) for n in raw_names]  # a path is cut to the base name every client saves
        distinct = list(dict.fromkeys(n for n in names if n))
        # All readings are judged; but the raw and the decoded form of one value are one name:
        # only two places that decode to different names make the headers ambiguous.
        if len({disarm(rs[0]) for rs in readings} - {""}) > 1:
            notes.append(CONFLICTING_NAMES)
        disp_raw = msg.get("content-disposition")
        disposition = (str(disp_raw).split(";", 1)[0].strip().lower() or None) if disp_raw else None
        cte_header = msg.get("content-transfer-encoding")
        cte = codec.parse_cte(None if cte_header is None else str(cte_header))
        part = Part(
            path=path, start=start, end=end, header_end=hend, body_start=bstart, body_end=end,
            content_type=ctype, params=params, disposition=disposition,
            filename=distinct[0] if distinct else None, cte=cte, in_message=in_message,
            names=distinct, ambiguities=notes, renamed=names != raw_names,
            cte_header=None if cte_header is None else str(cte_header),
        )
        if not path:
            part.header_fields = msg  # the top-level headers: Message-ID, Date... read from here later
        if retyped:
            part.type_field = _retyped_field(data, start, hend, ctype)
        if names and not distinct and disposition is None:  # name="" still claims to be a file
            part.disposition = "attachment"
        if ctype.startswith("multipart/") and params.get("boundary"):
            child_default = "message/rfc822" if ctype == "multipart/digest" else "text/plain"
            boundary = params["boundary"].encode("utf-8", "surrogateescape")
            # No more children than would take the message past max_parts (each is a part at
            # least): a message of 100,000 delimiters is refused after reading 1,000 of them.
            found, closed = split_multipart(data, bstart, end, boundary, lim.max_parts - self.parts + 1)
            if not found:
                # No delimiter: every strict reader sees no parts (a leaf). A line that only
                # starts like one ("--boundaryXYZ") is a delimiter to lenient readers: two readings.
                if _near_miss(data, bstart, end, b"--" + boundary):
                    raise MimeError(f"multipart part {path or 'body'} has only malformed boundary lines")
                return part
            part.unclosed = not closed
            for i, (cstart, cend, dstart) in enumerate(found):
                cpath = f"{path}.{i + 1}" if path else str(i + 1)
                child = self.entity(cstart, cend, cpath, depth + 1, in_message, child_default)
                child.delim_start = dstart
                part.children.append(child)
        elif is_container(ctype) and cte in ("7bit", "8bit", "binary") and bstart < end:
            # An attached message is a container: judge the files inside it, not the message as a file.
            inner = self.entity(bstart, end, f"{path}.1" if path else "1", depth + 1, True, "text/plain")
            _mark_stray_text(inner)
            part.children.append(inner)
        elif is_container(ctype) and cte in ("base64", "quoted-printable") and bstart < end:
            # Encoded (RFC 2046 forbids it; clients show it all the same): one attachment unit whose
            # decoded message is scanned within the same limits. Its offsets are its own.
            self._embed(part, codec.decode(encoded(data, bstart, end), cte), depth)
        elif bstart < end and part.is_attachment and cte in KNOWN_CTES:
            self._unwrap(part, depth)
        return part

    def _unwrap(self, part: Part, depth: int) -> None:
        """A file that clients open as a message: the content of an opaque S/MIME signature
        (application/pkcs7-mime, or a .p7m file), or an .eml file (Thunderbird re-types an
        octet-stream by its name; a saved .eml opens as a message anywhere)."""
        exts = {file_extension(n) for n in part.names}
        smime = part.content_type in cms.PKCS7_TYPES or cms.PKCS7_EXTENSION in exts
        if not smime and "eml" not in exts:
            return
        # Materialised even from a spool file: an attached message is held to be scanned anyway.
        payload = codec.decode(encoded(self.data, part.body_start, part.end), part.cte)
        if smime:
            content = cms.signed_content(payload)
            if content is not None:
                part.wrapper = "cms"
                self._embed(part, content, depth)
        elif looks_like_text(payload):  # a binary "x.eml" is no text, as its name claims: spoofed
            payload = normalize_line_endings(payload)
            if _starts_as_message(payload, self.limits):
                self._embed(part, payload, depth)

    def _embed(self, part: Part, payload: bytes, depth: int) -> None:
        """Make `payload` the message inside `part`: one unit, scanned within the same limits."""
        part.embedded_data = normalize_line_endings(payload)
        sub = _Scanner(part.embedded_data, self.limits)
        sub.parts = self.parts
        part.embedded = sub.entity(0, len(part.embedded_data), f"{part.path}.1" if part.path else "1",
                                   depth + 1, True, "text/plain")
        self.parts = sub.parts
        _mark_stray_text(part.embedded)


def _starts_as_message(data: bytes, limits: Limits) -> bool:
    """Does `data` open with a header block in which a reader finds at least one field? One too
    large to read is a message we would refuse, like the same message declared message/rfc822.
    `data` has CRLF line ends."""
    hend, _ = header_end(data, 0, len(data))
    return hend > limits.max_header_bytes or len(headers(data, 0, hend)) > 0


def _near_miss(data: bytes | FileBytes, start: int, end: int, delim: bytes) -> bool:
    """Is there a line that starts with the delimiter but has more after it?"""
    line_delim, lowest = CRLF + delim, max(start - 1, 0)  # found as split_multipart finds them

    def after(at: int) -> int:  # the next delimiter-like line start from `at` on, or -1
        j = data.find(line_delim, at, end)
        return j + 2 if j >= 0 else -1

    i = start if data.startswith(delim, start, end) else after(lowest)
    while i >= 0:
        eol = data.find(CRLF, i, end)
        rest = data[i + len(delim):end if eol < 0 else eol]
        if rest.rstrip(b" \t") not in (b"", b"--"):
            return True
        i = after(max(i - 1, lowest))
    return False


def _names(params: list, key: str) -> list[list[str]]:
    """The readings (see _readings) of every value a name parameter has, RFC 2231 collapsed."""
    return [_readings(email.utils.collapse_rfc2231_value(v) if isinstance(v, tuple) else str(v))
            for k, v in params if k.lower() == key]


def _header_names(msg) -> list[list[str]]:
    """The readings of Content-Name and X-Sun-Data-Name: no RFC has them, but Thunderbird names
    a file after them when no parameter does (mimehdrs.cpp, MimeHeaders_get_name)."""
    return [_readings(str(v)) for h in NAME_HEADERS for v in msg.get_all(h) or ()]


def split_multipart(data: bytes | FileBytes, body_start: int, end: int, boundary: bytes,
                    limit: int | None = None) -> tuple[list[tuple[int, int, int]], bool]:
    """(start, end, delimiter start) of each body part between body_start and end, and
    whether the close delimiter was there. With `limit`, the search stops once that many parts
    are found (False then: the close delimiter was not looked for; the caller refuses them all).

    A delimiter is "--boundary" at the start of a line, followed only by optional white
    space (or "--" for the close delimiter). The CRLF before a delimiter belongs to it
    (RFC 2046 5.1.1), so it is where the previous part ends. A missing close delimiter
    lets the last part run to the end of the entity.
    """
    delim = b"--" + boundary
    line_delim = CRLF + delim  # one search skips every "--boundary" that does not start a line
    out: list[tuple[int, int, int]] = []
    pos = body_start
    lowest = max(body_start - 1, 0)  # where a CRLF before a delimiter may start
    cur: tuple[int, int] | None = None  # (part start, its delimiter start)
    while True:
        if pos == body_start and data.startswith(delim, body_start, end):
            i = body_start  # the body's first line: no CRLF before it
        else:
            i = data.find(line_delim, pos - 2 if pos - 2 > lowest else lowest, end)
            if i < 0:
                break
            i += 2
        # What follows on the line: one small slice answers nearly every line (a spooled
        # message is asked once, not four times).
        j = i + len(delim)
        head = data[j:j + 80 if end - j > 80 else end]
        closing = head[:2] == b"--"
        rest = (head[2:] if closing else head).lstrip(b" \t")
        if rest[:2] == CRLF:
            line_end = j + len(head) - len(rest)
        elif rest and (rest != b"\r" or j + len(head) >= end):
            pos = i + 1  # "--boundaryX": a longer boundary, not ours
            continue
        else:  # white space to the slice's end, or a CR at its edge: the line read whole
            line = _delimiter_line(data, j, end)
            if line is None:
                pos = i + 1
                continue
            closing, line_end = line
        dstart = i - 2 if i != body_start else i
        if cur is not None:
            out.append((cur[0], dstart, cur[1]))
            cur = None
            if limit is not None and len(out) >= limit:
                return out, False
        if closing:
            return out, True
        cur = (min(line_end + 2, end), dstart)
        pos = cur[0]
    if cur is not None:
        out.append((cur[0], end, cur[1]))
    return out, False


def _delimiter_line(data: bytes | FileBytes, j: int, end: int) -> tuple[bool, int] | None:
    """After "--boundary" (ending at j): (close delimiter?, where its line ends) when only "--"
    and white space follow on the line, else None."""
    closing = data.startswith(b"--", j, end)
    k = j + 2 if closing else j
    eol = data.find(CRLF, k, end)
    line_end = end if eol < 0 else eol
    return None if data[k:line_end].strip(b" \t") else (closing, line_end)


def root_header(data: bytes, root: Part, name: str) -> str | None:
    """A top-level header's value (parsed once, when the structure was scanned)."""
    msg = root.header_fields if root.header_fields is not None else headers(data, root.start, root.header_end)
    value = msg.get(name)
    return None if value is None else str(value).strip()


def display_header(data: bytes, root: Part, name: str) -> str | None:
    """A top-level header as a person reads it (From, Subject): unfolded, its RFC 2047 words
    decoded the lenient way clients do. For display only: nothing is judged by it."""
    value = root_header(data, root, name)
    return None if value is None else _decode_words(_unfold(value)).strip()
