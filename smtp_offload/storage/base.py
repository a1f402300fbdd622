"""The storage contract offloaded attachments are written through, plus key/name helpers.

Keys are opaque to callers but deliberately human-readable
(`YYYY/MM/DD/<uuid4 hex>/<safe name>`): the date prefix lets operators expire old
objects with a plain lifecycle rule or `find -mtime`, and the random segment makes
keys unguessable and collision-free even for identical file names.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import os
import re
import unicodedata
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, BinaryIO, Protocol, TypeVar

from ..errors import StorageError
from ..spool import FileBytes

T = TypeVar("T")
# What put and put_record take: bytes in memory, or a spooled file (a large attachment of a
# message written to disk as it arrived), which every store reads a chunk at a time.
Body = bytes | FileBytes

CHUNK_SIZE = 256 * 1024
MAX_NAME_BYTES = 150  # well under the 255-byte NAME_MAX, leaving room for sidecar/temp affixes
_MAX_EXT_CHARS = 16  # a longer "extension" is just part of a dotted name

# Punctuation that is harmless in file systems, URLs (after quoting) and headers.
_SAFE_ASCII = frozenset(" ._-+()[],@&=!~'")
# Letters, digits, combining marks (needed by many scripts) and dashes of any script.
_SAFE_CATEGORIES = ("L", "N", "M", "Pd")
_WINDOWS_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL"] + [f"COM{i}" for i in range(1, 10)] + [f"LPT{i}" for i in range(1, 10)]
)


class InvalidKey(KeyError, ValueError):
    """A key that could never name a stored object (traversal, absolute, NUL...).

    Both a KeyError (callers treating it as "absent" stay correct) and a ValueError
    (it is bad input, not a missing object).
    """


@dataclass(frozen=True)
class StoredObject:
    """A stored file and what the landing page and audit log need to know about it."""

    key: str
    size: int
    sha256: str
    content_type: str  # the detected type, never the sender's claim
    filename: str  # the original name as the sender gave it (shown and used for downloads)
    message_id: str | None = None
    sender: str | None = None  # envelope sender of the message it came with
    date: str | None = None  # ISO 8601 UTC time the message was received
    tenant: str | None = None
    # What a person reads in the mail (display_text): shown on the landing page, never trusted.
    from_header: str | None = None  # the visible From: display name and address
    subject: str | None = None


class Store(Protocol):
    key_prefix: str  # prepended to every key this store is given (make_key's prefix)

    async def put(self, data: Body, obj: StoredObject) -> StoredObject:
        """Store `data` under obj.key with obj's metadata. Storing the same key again
        replaces it (keys are deterministic for a retried message, so a retry never makes a
        second copy). Raises StorageError on failure, ValueError when sha256/size disagree.
        A FileBytes is read in chunks, never whole; the caller keeps it open until put returns."""
        ...

    async def stat(self, key: str) -> StoredObject:
        """Metadata of `key`; KeyError when absent, StorageError when the store is unusable."""
        ...

    async def open(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Await to get an iterator of CHUNK_SIZE-ish chunks of bytes [start, end) (end None:
        to the end of the object; the caller keeps the range within stat's size).

        Raises KeyError on the await (not on first iteration) so a caller can still
        answer 404 before it commits to a response. The iterator releases its
        resources when exhausted; call its `aclose()` when stopping early.
        """
        ...

    async def delete(self, key: str) -> None:
        """Idempotent: deleting an absent key is not an error."""
        ...

    async def check(self) -> None:
        """Readiness probe; raises StorageError when the store cannot take writes."""
        ...

    async def presign(self, obj: StoredObject, ttl: int) -> str | None:
        """A URL that downloads obj directly for `ttl` seconds, or None when this store
        cannot make one (the link service then streams the bytes itself)."""
        ...

    async def revoke(self, token_id: str, key: str | None = None) -> None:
        """Record that a link is revoked, where every instance sharing the store sees it.
        `key`, the link's object when known, lets a routed store record it beside the file."""
        ...

    async def is_revoked(self, token_id: str, key: str | None = None) -> bool: ...

    # Records: small state every instance sharing the store must see (API jobs, idempotency
    # results, staged job bodies), kept where no object key and so no link can reach.
    async def put_record(self, name: str, data: Body) -> None:
        """Write (or replace) record `name` (see RECORD_NAME); StorageError on failure. A
        FileBytes (a held file of a spooled message) is read in chunks, as by put."""
        ...

    async def get_record(self, name: str) -> bytes:
        """KeyError when absent, StorageError when the store is unusable."""
        ...

    async def delete_record(self, name: str) -> None:
        """Idempotent."""
        ...

    async def list_records(self, kind: str, prefix: str = "") -> list[str]:
        """The names of the records of `kind` whose name starts with `prefix`, sorted."""
        ...


def open_body(data: Body) -> BinaryIO:
    """`data` as a file object of its own, reading from the start.

    Call it on the event loop, before handing the work to a thread: the file object is its
    own open file, so a put that was cancelled or timed out while its thread still runs
    never reads through a descriptor the caller has since closed (whose number the next
    spooled message, perhaps another customer's, may already have been given)."""
    if not isinstance(data, FileBytes):
        return io.BytesIO(data)
    try:
        fh = data.open()
    except OSError as exc:  # closed already: a bug of the caller's, answered as a failed put
        raise StorageError(f"the spooled file cannot be read: {exc.strerror or exc}") from exc
    # The SDKs read to the end of the file (S3 takes its size from it): it must be the size said.
    if os.fstat(fh.fileno()).st_size != len(data):
        fh.close()
        raise StorageError("the spooled file is not the size it was written at")
    return fh


def sha256_of(fh: BinaryIO) -> str:
    """The sha256 of what `fh` holds from its start, read a chunk at a time (in a worker
    thread: a large file takes a while); `fh` is left at its start for the upload."""
    fh.seek(0)
    h = hashlib.sha256()
    buf = bytearray(CHUNK_SIZE)
    view = memoryview(buf)
    while n := fh.readinto(buf):
        h.update(view[:n])
    fh.seek(0)
    return h.hexdigest()


def check_range(start: int, end: int | None) -> None:
    """The range open() takes: 0 <= start <= end; ValueError otherwise."""
    if start < 0 or (end is not None and end < start):
        raise ValueError(f"bad range {start}-{end}")


def check_key(key: str) -> str:
    """An object key as make_key makes them, or InvalidKey: keys reach the store from links
    and API calls, so one naming an internal object (a dot segment: records, revocations,
    probes, sidecars), a path escape or an absolute path is refused by every store alike."""
    if not isinstance(key, str) or not key or "\x00" in key or "\\" in key or key.startswith("/"):
        raise InvalidKey(key)
    if any(not p or p.startswith(".") for p in key.split("/")):
        raise InvalidKey(key)
    return key


META_FIELDS = ("filename", "sha256", "message_id", "sender", "date", "tenant", "from_header", "subject")
OPTIONAL_META = META_FIELDS[2:]  # None when absent; every store's stat gives them back alike (from_metadata)
_DISPLAY_META = ("from_header", "subject")  # only shown to people: they give way to the rest (metadata_of)
MAX_META_NAME = 200  # characters of the file name kept in metadata (what stat gives back)
MAX_DISPLAY_TEXT = 200  # characters of a From or Subject kept
# S3 takes 2 KiB of user metadata (names and values); the display fields get what is left of this.
_META_BUDGET = 1900


def clip_filename(name: str) -> str:
    """The file name as every store keeps it in metadata: at most MAX_META_NAME characters,
    extension kept. Object stores send metadata as HTTP headers limited in total (S3: 2 KiB,
    Azure and GCS: 8 KiB), and the name is the sender's choice: a hostile one must not make
    every put fail (and open that store's circuit breaker). The local store clips the same,
    so every store gives back the same name."""
    if len(name) <= MAX_META_NAME:
        return name
    stem, dot, ext = name.rpartition(".")
    keep = f".{ext}" if dot and stem and len(ext) <= 16 else ""
    return name[: MAX_META_NAME - len(keep)] + keep


def display_text(value: str | None, limit: int = MAX_DISPLAY_TEXT) -> str | None:
    """A header as a person reads it, fit to keep and show: control and format characters
    (CR, LF, NUL, bidi overrides) removed, white space runs made one space, at most `limit`
    characters. None when nothing is left. Display only: never parse anything out of it."""
    if value is None:
        return None
    kept = "".join(" " if c.isspace() else c for c in str(value)
                   if c.isspace() or unicodedata.category(c) not in ("Cc", "Cf", "Cs", "Co", "Cn"))
    text = " ".join(kept.split())
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text or None


def as_kept(obj: StoredObject) -> StoredObject:
    """obj as a store without metadata limits keeps it (the local store): the same name and
    display texts as the object stores give back, short of their byte budget."""
    return replace(obj, filename=clip_filename(obj.filename), from_header=display_text(obj.from_header),
                   subject=display_text(obj.subject))


def _quote(value: str) -> str:
    return urllib.parse.quote(value, safe="@<>.:-_")


def metadata_of(obj: StoredObject) -> dict[str, str]:
    """obj's metadata by field name, percent-encoded: every object store sends it as HTTP
    headers (x-amz-meta-*, x-ms-meta-*, x-goog-meta-*), which are ASCII only.

    From and Subject are the sender's text and only shown: they get the room the other
    fields leave within S3's 2 KiB, so a hostile one can shorten itself but never fail a put."""
    out = {}
    for field in META_FIELDS:
        value = getattr(obj, field)
        if value is not None and field not in _DISPLAY_META:
            out[field] = _quote(clip_filename(value) if field == "filename" else str(value))
    room = _META_BUDGET - sum(len(k) + len(v) for k, v in out.items())
    for field in _DISPLAY_META:
        text = display_text(getattr(obj, field))
        if text is None:
            continue
        room -= len(field)
        encoded = _quote(text)
        while text and len(encoded) > max(room, 0) // 2:  # each gets at most half of what is left
            text = text[: len(text) * 3 // 4]
            encoded = _quote(text)
        if text:
            out[field] = encoded
            room -= len(encoded)
    return out


def from_metadata(key: str, size: int, content_type: str | None, meta: dict[str, str]) -> StoredObject:
    """The StoredObject a store's stat gives back from its (decoded) metadata: the one parser
    of it, so every store answers alike. A field missing from `meta` is None."""
    return StoredObject(
        key=key, size=size, sha256=meta.get("sha256", ""),
        content_type=content_type or "application/octet-stream",
        filename=meta.get("filename") or key.rsplit("/", 1)[-1],
        **{k: (str(meta[k]) if meta.get(k) is not None else None) for k in OPTIONAL_META},
    )


RECORDS = ".records"  # a dot segment: make_key never produces one, so no object key reaches a record
RECORD_NAME = re.compile(r"[a-z]+/[A-Za-z0-9_-]{1,128}(\.[a-z]{1,8})?")


def check_record_name(name: str) -> str:
    """`kind/name[.ext]`, the only record names there are; InvalidKey otherwise."""
    if not isinstance(name, str) or not RECORD_NAME.fullmatch(name):
        raise InvalidKey(name)
    return name


def _safe_char(c: str) -> str:
    if c in _SAFE_ASCII:
        return c
    cat = unicodedata.category(c)
    if cat == "Zs":  # exotic spaces (NBSP, ideographic) read as spaces
        return " "
    # Cc/Cf (control, bidi overrides like U+202E used to fake extensions) fall through to "_".
    return c if cat.startswith(_SAFE_CATEGORIES) else "_"


def _collapse(s: str) -> str:
    out: list[str] = []
    for c in s:
        if out and c == out[-1] and c in "_ ":
            continue
        out.append(c)
    return "".join(out)


def _truncate_utf8(s: str, limit: int) -> str:
    # Cut on a byte budget without leaving half a multi-byte character behind.
    return s.encode("utf-8")[: max(limit, 0)].decode("utf-8", errors="ignore")


def safe_filename(name: str) -> str:
    """A name safe to use as a path component, a URL segment and a download name.

    The input comes from a mail's MIME headers, i.e. from whoever sent it.
    """
    name = unicodedata.normalize("NFC", name or "")
    # Mail clients send Windows and POSIX paths alike; only the last component is a name.
    parts = [p for p in name.replace("\\", "/").split("/") if p.strip()]
    base = parts[-1] if parts else ""
    base = _collapse("".join(_safe_char(c) for c in base))
    # Leading dots would hide the file (or be "..") and trailing dots/spaces are dropped by Windows.
    base = base.lstrip(". ").rstrip(". ")

    stem, dot, ext = base.rpartition(".")
    if not dot or not stem or len(ext) > _MAX_EXT_CHARS or ext.strip() != ext:
        stem, ext = base, ""
    if stem.split(".")[0].upper() in _WINDOWS_RESERVED:
        stem = "_" + stem
    suffix = f".{ext}" if ext else ""
    if len((stem + suffix).encode("utf-8")) > MAX_NAME_BYTES:
        stem = _truncate_utf8(stem, MAX_NAME_BYTES - len(suffix.encode("utf-8"))).rstrip(". ")
    result = (stem + suffix) if stem else ext
    return result or "file"


_SEGMENT = re.compile(r"[^a-z0-9._-]+")


def tenant_segment(value: str) -> str:
    """A tenant (recipient domain or customer id) as one safe, lower-case key segment."""
    seg = _SEGMENT.sub("_", value.strip().lower()).strip("._")[:63]
    return seg or "_"


def make_key(filename: str, now: datetime | None = None, *, prefix: str = "", tenant: str | None = None,
             unique: str | None = None) -> str:
    """`[prefix/][tenant/]YYYY/MM/DD/<unique>/<safe name>`, dated in UTC so keys sort the same
    on every host. `unique` defaults to a random uuid; pass a value derived from the message
    (Message-ID, sha256) to make a retried delivery land on the same key."""
    now = now or datetime.now(timezone.utc)
    if now.tzinfo is not None:
        now = now.astimezone(timezone.utc)
    head = "/".join(p for p in (prefix.strip("/"), tenant_segment(tenant) if tenant else "") if p)
    key = f"{now:%Y/%m/%d}/{unique or uuid.uuid4().hex}/{safe_filename(filename)}"
    return f"{head}/{key}" if head else key


_FALLBACK_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ._-+()[],@&=!~'")


def content_disposition(filename: str) -> str:
    """RFC 6266 attachment header: an ASCII `filename` for old clients, the real one in `filename*`.

    The name is made safe first (no path, no control characters): it came from a sender.
    """
    name = safe_filename(filename)
    decomposed = unicodedata.normalize("NFKD", name)
    ascii_name = "".join(c if c in _FALLBACK_SAFE else "_" for c in decomposed if not unicodedata.combining(c))
    stem, dot, ext = ascii_name.rpartition(".")
    if not dot:
        stem, ext = ascii_name, ""
    if not any(c.isalnum() for c in stem):  # e.g. an all-Cyrillic name
        ascii_name = "download" + (f".{ext}" if ext.isalnum() else "")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{urllib.parse.quote(name, safe='')}"


class Workers:
    """A store's own worker threads for a blocking SDK (boto3, google-cloud-storage).

    asyncio.to_thread shares the loop's default pool (a handful of threads on a small VM) with
    the local store, hashing and rendering; cancelling an await does not stop its thread. A
    store whose endpoint hangs would fill that pool and stall every other store's customers:
    with its own pool, its calls queue behind each other only.
    """

    def __init__(self, name: str, size: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix=name)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
