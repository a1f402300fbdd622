"""Rewrite a message by splicing its original bytes.

Only three kinds of edit exist: remove a part (with its delimiter line), replace a body
text part (to carry the notice), and insert a new text part. Everything between edits is
copied as it came, so untouched parts keep their exact bytes, folding and encoding.

The result is a list of pieces (spool.Piece): literal bytes for what is new, (start, end)
ranges of the message for what is kept. A message in memory gets them joined; a spooled one
(FileBytes) gets them as a spool.Pieces, streamed to the downstream from its file. One
implementation, so the two cannot differ.
"""

from __future__ import annotations

import codecs
import re
import urllib.parse
from dataclasses import dataclass

from ..model import Part
from ..spool import FileBytes, Piece, Pieces
from . import codec
from .headers import Field, fields
from .htmlbody import notice_offset
from .scan import CONFLICTING_NAMES, NAME_HEADERS

CRLF = b"\r\n"
_CONTENT_FIELDS = {"content-type", "content-transfer-encoding", "content-disposition",
                   "content-description", "content-id", "content-location", "content-md5", *NAME_HEADERS}


@dataclass(frozen=True)
class Edit:
    start: int
    end: int
    data: bytes


def pieces(data: bytes | FileBytes, edits: list[Edit]) -> list[Piece]:
    """The message with `edits` applied: the kept ranges between them and their new bytes."""
    out: list[Piece] = []
    pos = 0
    for e in sorted(edits, key=lambda e: (e.start, e.end)):
        if e.start < pos:
            raise ValueError(f"overlapping edits at {e.start}")
        out.append((pos, e.start))
        out.append(e.data)
        pos = e.end
    out.append((pos, len(data)))
    return out


def join(data: bytes, pieces: list[Piece]) -> bytes:
    return b"".join(p if isinstance(p, bytes) else data[p[0]:p[1]] for p in pieces)


def apply(data: bytes, edits: list[Edit]) -> bytes:
    return join(data, pieces(data, edits))


def part_fields(data: bytes, part: Part) -> list[Field]:
    """The part's header fields (a line without a colon among them: it is relayed as it came).
    A last line of one or two bytes with no line break (a block that a delimiter cuts) is left
    out, as it always was."""
    return [f for f in fields(data, part.start, part.header_end) if len(f.raw) > 2]


def drop_fields(data: bytes, part: Part, names) -> list[Edit]:
    """Edits that remove header fields by name (exact names or prefixes ending in '*')."""
    return [Edit(f.start, f.end, b"") for f in part_fields(data, part) if _dropped(f.name, names)]


def _python_codec(charset: str) -> str | None:
    try:
        return codecs.lookup(charset or "us-ascii").name
    except LookupError:
        return None


def text_part_with_notice(data: bytes, part: Part, notice: str, html: bool) -> bytes | None:
    """The part rebuilt with the notice at the top, or None when its text cannot be decoded
    (unknown charset, invalid bytes): then the caller adds a separate notice part instead."""
    charset = part.params.get("charset", "us-ascii").lower()
    pycodec = _python_codec(charset)
    if pycodec is None:
        return None
    try:
        text = codec.decode(data[part.body_start:part.end], part.cte).decode(pycodec)
    except (UnicodeDecodeError, ValueError):
        return None
    if html:
        at = notice_offset(text)  # where the body starts, never inside a comment, <style> or <title>
        new_text = text[:at] + notice + text[at:]
    else:
        new_text = notice + text
    out_charset = charset
    try:
        raw = new_text.encode(pycodec)
    except UnicodeEncodeError:
        out_charset, raw = "utf-8", new_text.encode("utf-8")
    cte = part.cte
    if cte not in ("base64", "quoted-printable", "8bit", "binary") and not raw.isascii():
        cte = "quoted-printable"
    drop = set()
    extra = b""
    if out_charset != charset or "charset" not in part.params:
        drop.add("content-type")
        params = "".join(_param(k, v) for k, v in part.params.items() if k != "charset")
        extra += f"Content-Type: {_mime_type(part.content_type)}{_param('charset', out_charset)}{params}\r\n" \
            .encode("ascii")
    if cte != part.cte:
        drop.add("content-transfer-encoding")
        extra += f"Content-Transfer-Encoding: {cte}\r\n".encode("ascii")
    head = b"".join(_field(part, f) for f in unique_fields(data, part) if f.name not in drop)
    return head + extra + CRLF + codec.encode(raw, cte)


def _field(part: Part, f: Field) -> bytes:
    """A header field as we relay it: a Content-Type that readers type differently, in our reading."""
    if f.name == "content-type" and part.type_field is not None:
        return part.type_field
    # The last field of a block that ends at the part's end has no line end of its own; fields
    # are written one after another here, and the blank line after them.
    return f.raw if f.raw.endswith(CRLF) else f.raw + CRLF


_SINGLE = ("content-type", "content-disposition", "content-transfer-encoding")


def unique_fields(data: bytes, part: Part) -> list[Field]:
    """Header fields with later duplicates of the content headers dropped: the first one is
    the one we read, so it is the one every later reader must see."""
    seen: set[str] = set()
    out = []
    for f in part_fields(data, part):
        if f.name in _SINGLE:
            if f.name in seen:
                continue
            seen.add(f.name)
        out.append(f)
    return out


def _rfc2231(value: str) -> str:
    return "UTF-8''" + urllib.parse.quote(value, safe="", errors="replace")


# RFC 2045 token: printable ASCII but white space and tspecials.
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")


def _param(key: str, value: str) -> str:
    """"; key=value" for a header we write: a quoted string when the value is printable ASCII,
    else RFC 2231-encoded; nothing when the key is no RFC 2045 token (a non-ASCII name cannot
    be written, and no reader would have understood it)."""
    if not _TOKEN.fullmatch(key):
        return ""
    if value.isascii() and value.isprintable():
        return '; %s="%s"' % (key, value.replace("\\", "\\\\").replace('"', '\\"'))
    return f"; {key}*={_rfc2231(value)}"


def _mime_type(ctype: str) -> str:
    # A type that is no "token/token" cannot be written as it was read; every reader takes an
    # unknown type for application/octet-stream (RFC 2049), so we write that.
    top, _, sub = ctype.partition("/")
    return ctype if _TOKEN.fullmatch(top) and _TOKEN.fullmatch(sub) else "application/octet-stream"


def canonical_headers(data: bytes, part: Part) -> bytes:
    """The part's header block in one unambiguous form: one of each content header and,
    when its places for a name decoded to different names or named a path, only our reading of
    the name (RFC 2231), with the other places for a name (Content-Name...) left out."""
    kept = unique_fields(data, part)
    if CONFLICTING_NAMES not in part.ambiguities and not part.renamed:  # at most its type is rebuilt
        return b"".join(_field(part, f) for f in kept)
    params = "".join(_param(k, v) for k, v in part.params.items() if k not in ("name", "charset"))
    if "charset" in part.params:
        params = _param("charset", part.params["charset"]) + params
    disposition = part.disposition if part.disposition and _TOKEN.fullmatch(part.disposition) else "attachment"
    name = part.filename or ""
    canonical = (f"Content-Type: {_mime_type(part.content_type)}{params};\r\n\tname*={_rfc2231(name)}\r\n"
                 f"Content-Disposition: {disposition};\r\n\tfilename*={_rfc2231(name)}\r\n").encode("ascii")
    out = []
    for f in kept:  # the canonical pair goes where the first of them was: order matters to parsers
        if f.name in ("content-type", "content-disposition"):
            if canonical:
                out.append(canonical)
                canonical = b""
            continue
        if f.name in NAME_HEADERS:
            continue
        out.append(f.raw)
    return b"".join(out)


def new_text_part(notice: str) -> bytes:
    raw = notice.encode("utf-8")
    cte = "7bit" if raw.isascii() else "quoted-printable"
    return (b'Content-Type: text/plain; charset="utf-8"\r\n'
            + f"Content-Transfer-Encoding: {cte}\r\n\r\n".encode() + codec.encode(raw, cte))


def body_parts(root: Part, removed: set[str]) -> tuple[Part | None, Part | None]:
    """The message's own text/plain and text/html body (not an attachment, not inside an
    attached message, not being removed)."""
    plain = html = None
    for p in root.walk():
        if p.children or p.in_message or p.path in removed or p.is_attachment or p.stray:
            continue
        if p.content_type == "text/plain" and plain is None:
            plain = p
        elif p.content_type == "text/html" and html is None:
            html = p
    return plain, html


PLACEHOLDER = "The file this message carried was removed by the mail gateway; see the notice in the outer message."


def rewrite(data: bytes | FileBytes, root: Part, removed: list[Part], notice_text: str | None,
            notice_html: str | None, drop_root_fields: tuple[str, ...] = ()) -> bytes | Pieces:
    """Remove `removed` parts, put the notice into the body, drop the named root header
    fields, and rebuild ambiguous parts into the one form we judged. Bytes for bytes; for a
    spooled message a Pieces reading what is kept from its file."""
    out = _rewritten(data, root, removed, notice_text, notice_html, drop_root_fields)
    return join(data, out) if isinstance(data, bytes) else Pieces(data, out)


def _rewritten(data: bytes | FileBytes, root: Part, removed: list[Part], notice_text: str | None,
               notice_html: str | None, drop_root_fields: tuple[str, ...]) -> list[Piece]:
    gone = _collapse(root, {p.path for p in removed})
    if root.path in gone:  # nothing but attachments: the notice becomes the whole body
        return [_as_text_entity(data, root, notice_text or "", drop_root_fields)]
    edits = _notice_edits(data, root, gone, notice_text, notice_html or notice_text) if notice_text else []
    edits += _rebuild_edits(data, root, gone, drop_root_fields, {e.start for e in edits})
    if not root.ambiguities and not root.renamed:  # else its headers are rebuilt without them
        edits += drop_fields(data, root, drop_root_fields)
    for p in _topmost(root, gone):
        if p.delim_start is not None:
            edits.append(Edit(p.delim_start, p.end, b""))
        else:  # the body of an attached message: keep that message, say where its content went
            edits.append(Edit(p.start, p.end, _as_text_entity(data, p, PLACEHOLDER, ())))
    return pieces(data, edits)


def _rebuild_edits(data: bytes, root: Part, gone: set[str], drop_root: tuple[str, ...],
                   replaced: set[int]) -> list[Edit]:
    """Canonical headers for ambiguous parts we keep (a part replaced for the notice is
    rebuilt there already), and the missing close delimiter of unclosed multiparts."""
    edits = []
    for p in _kept(root, gone):
        if (p.ambiguities or p.renamed) and p.start not in replaced:
            head = canonical_headers(data, p)
            if p is root and drop_root:
                head = b"".join(f.raw for f in fields(head) if not _dropped(f.name, drop_root))
            edits.append(Edit(p.start, p.header_end, head))
        if p.embedded is not None and p.embedded_data is not None and p.wrapper is None \
                and needs_rebuild(p.embedded):  # signed content cannot be rebuilt: pipeline strips it
            # An encoded attached message is relayed in the one reading we judged, re-encoded.
            inner = rewrite(p.embedded_data, p.embedded, [], None, None)
            edits.append(Edit(p.body_start, p.end, codec.encode(inner, p.cte)))
    # Innermost first: unclosed multiparts nested at the end of another close at the same offset.
    for p in reversed(list(_kept(root, gone))):
        if p.unclosed:
            boundary = p.params["boundary"].encode("utf-8", "surrogateescape")
            edits.append(Edit(p.end, p.end, CRLF + b"--" + boundary + b"--" + CRLF))
    return edits


def needs_rebuild(root: Part) -> bool:
    """Does any part of this tree have headers or boundaries we relay rebuilt?"""
    return any(p.ambiguities or p.unclosed or p.renamed or (p.embedded is not None and needs_rebuild(p.embedded))
               for p in root.walk())


def _kept(part: Part, gone: set[str]):
    if part.path in gone:
        return
    yield part
    for c in part.children:
        yield from _kept(c, gone)


def _collapse(part: Part, gone: set[str]) -> set[str]:
    """A multipart whose every child is removed is removed too (RFC 2046 wants at least one part)."""
    for c in part.children:
        _collapse(c, gone)
    if part.is_multipart and part.children and all(c.path in gone for c in part.children):
        gone.add(part.path)
    return gone


def _topmost(part: Part, gone: set[str]):
    if part.path in gone:
        yield part
        return
    for c in part.children:
        yield from _topmost(c, gone)


def _as_text_entity(data: bytes, part: Part, notice: str, drop: tuple[str, ...]) -> bytes:
    """The entity's own (non-content) header fields followed by a text/plain body."""
    keep = b"".join(f.raw for f in part_fields(data, part)
                    if f.name not in _CONTENT_FIELDS and not _dropped(f.name, drop))
    return keep + new_text_part(notice)


def _dropped(name: str, names: tuple[str, ...]) -> bool:
    return any(name == x or (x.endswith("*") and name.startswith(x[:-1])) for x in names)


def _notice_edits(data: bytes, root: Part, gone: set[str], text: str, html: str) -> list[Edit]:
    plain_part, html_part = body_parts(root, gone)
    edits = []
    for part, notice, is_html in ((plain_part, text, False), (html_part, html, True)):
        if part is None:
            continue
        rebuilt = text_part_with_notice(data, part, notice, is_html)
        if rebuilt is not None:
            edits.append(Edit(part.start, part.end, rebuilt))
    if edits:
        return edits
    if root.is_multipart and root.children:
        # Insert a new first part, right where the first delimiter (with its CRLF) begins.
        boundary = root.params["boundary"].encode("utf-8", "surrogateescape")
        at = root.children[0].delim_start
        assert at is not None
        chunk = b"--" + boundary + CRLF + new_text_part(text)
        chunk = CRLF + chunk if data.startswith(CRLF, at) else chunk + CRLF
        return [Edit(at, at, chunk)]
    if root.is_multipart and "boundary" in root.params:
        boundary = root.params["boundary"].encode("utf-8", "surrogateescape")
        return [Edit(root.body_start, root.end,
                     b"--" + boundary + CRLF + new_text_part(text) + CRLF + b"--" + boundary + b"--" + CRLF)]
    # A single-part message that is not text we can decode: nothing sane to add the notice to.
    return []
