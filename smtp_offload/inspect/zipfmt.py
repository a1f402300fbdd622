"""The ZIP format, read by hand with struct: structure only, no policy.

Why not zipfile: CPython 3.11.7 lacks the fix for CVE-2024-0450 (entries that
overlap, the "better zip bomb"), zipfile trusts declared sizes, and it hides
the disagreements between the central directory and the local headers that
attackers use to show a scanner one file and the victim's unzip tool another.
The format is small:

    [local header][data] ... [central directory entries][zip64 end records][end record]

Offsets in the central directory count from the start of the archive, which
need not be the start of the buffer: a self-extractor or a PDF/ZIP polyglot
carries a prefix. Like every unzip tool we find the end record from the back
and work out where the archive starts ("base") from it.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass

LOCAL, CENTRAL, END, END64, LOCATOR64 = b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06", b"PK\x06\x06", b"PK\x06\x07"
LOCAL_RE = re.compile(re.escape(LOCAL))
_END_FMT = struct.Struct("<4sHHHHIIH")  # 22 bytes
_CENTRAL_FMT = struct.Struct("<4sHHHHHHIIIHHHHHII")  # 46 bytes
_LOCAL_FMT = struct.Struct("<4sHHHHHIIIHH")  # 30 bytes
_MAX_COMMENT = 0xFFFF
_U32, _U16 = 0xFFFFFFFF, 0xFFFF


class Malformed(Exception):
    """The structure is inconsistent; str(e) says how, for a reason shown to people."""


@dataclass(frozen=True)
class Directory:
    base: int  # where the archive starts in the buffer; bytes before it are a prefix
    start: int  # first central directory entry
    end: int  # just past the last one
    count: int  # entries the end record declares


@dataclass
class Member:
    name: str
    names: tuple[str, ...]  # name, plus the Info-ZIP Unicode path (0x7075) when it differs
    raw_name: bytes
    flags: int
    method: int
    crc: int
    csize: int
    usize: int  # declared; -1 when unknown (a local header with a data descriptor)
    header: int  # offset of the local header in the buffer
    data: int = -1  # offset of the member's bytes, once the local header was read

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & 1)

    @property
    def is_dir(self) -> bool:
        return self.name.endswith(("/", "\\"))


def locate(buf: bytes) -> Directory | None:
    """The archive's central directory, or None when `buf` holds no consistent ZIP end."""
    lo = max(0, len(buf) - _END_FMT.size - _MAX_COMMENT)
    tail = buf[lo:]
    at = tail.rfind(END)
    while at >= 0:  # the last consistent end record wins, as in unzip tools
        found = _directory_at(buf, lo + at)
        if found:
            return found
        at = tail.rfind(END, 0, at)
    return None


def _directory_at(buf: bytes, at: int) -> Directory | None:
    if at + _END_FMT.size > len(buf):
        return None
    _, disk, cd_disk, _, count, cd_size, cd_off, _ = _END_FMT.unpack_from(buf, at)
    end = at
    if count == _U16 or cd_size == _U32 or cd_off == _U32:
        # ZIP64: a locator right before the end record, the zip64 end record before that.
        loc, rec = at - 20, at - 20 - 56
        if rec < 0 or buf[loc:loc + 4] != LOCATOR64 or buf[rec:rec + 4] != END64:
            return None
        count, cd_size, cd_off = struct.unpack_from("<QQQ", buf, rec + 32)
        end = rec
    if disk or cd_disk:
        return None  # multi-volume archives do not travel by mail
    base = end - cd_size - cd_off
    if base < 0 or (count and buf[base + cd_off:base + cd_off + 4] != CENTRAL):
        return None
    return Directory(base, base + cd_off, end, count)


def read_members(buf: bytes, d: Directory, cap: int) -> list[Member]:
    """The first `cap` central directory entries (all of them when count <= cap)."""
    out, pos = [], d.start
    for _ in range(min(d.count, cap)):
        if pos + _CENTRAL_FMT.size > d.end:
            raise Malformed("its directory is shorter than it declares")
        (sig, _, _, flags, method, _, _, crc, csize, usize,
         nlen, xlen, clen, _, _, _, offset) = _CENTRAL_FMT.unpack_from(buf, pos)
        if sig != CENTRAL:
            raise Malformed("its directory is corrupt")
        raw = buf[pos + 46:pos + 46 + nlen]
        extra = _extras(buf[pos + 46 + nlen:pos + 46 + nlen + xlen])
        if _U32 in (usize, csize, offset):
            # Only the fields that overflowed are in the zip64 extra, in this order.
            values = iter(struct.unpack_from(f"<{len(extra.get(1, b'')) // 8}Q", extra.get(1, b"")))
            usize = next(values, -1) if usize == _U32 else usize
            csize = next(values, -1) if csize == _U32 else csize
            offset = next(values, -1) if offset == _U32 else offset
            if -1 in (usize, csize, offset):
                raise Malformed("its directory is corrupt")
        name = raw.decode("utf-8" if flags & 0x800 else "cp437", "replace")
        out.append(Member(name, _names(name, raw, extra), raw, flags, method, crc, csize, usize, d.base + offset))
        pos += 46 + nlen + xlen + clen
        if pos > d.end:
            raise Malformed("its directory is corrupt")
    if d.count <= cap and buf[pos:pos + 4] == CENTRAL and pos < d.end:
        raise Malformed("its directory holds more entries than it declares")
    return out


def _extras(blob: bytes) -> dict[int, bytes]:
    found, pos = {}, 0
    while pos + 4 <= len(blob):
        kind, size = struct.unpack_from("<HH", blob, pos)
        found.setdefault(kind, blob[pos + 4:pos + 4 + size])
        pos += 4 + size
    return found


def _names(name: str, raw: bytes, extra: dict[int, bytes]) -> tuple[str, ...]:
    # 7-Zip and Info-ZIP extract under the Unicode path when its CRC matches the
    # raw name, so a member can be "a.txt" to one tool and "a.exe" to another.
    uni = extra.get(0x7075, b"")
    if len(uni) > 5 and uni[0] == 1 and struct.unpack_from("<I", uni, 1)[0] == zlib.crc32(raw):
        alt = uni[5:].decode("utf-8", "replace")
        if alt != name:
            return (name, alt)
    return (name,)


def check_layout(buf: bytes, d: Directory, members: list[Member], whole: bool, complete: bool = True) -> None:
    """Check every entry against its local header and the file; set Member.data.

    Raises Malformed for: a local header that disagrees with its directory
    entry, data past the end of the file, entries whose bytes overlap (several
    entries sharing one compressed stream is how overlap bombs multiply), and
    local headers in the gaps, which streaming unzip tools would extract
    although the directory does not list them. When `whole`, the buffer is
    meant to be the archive, so a prefix holding entries (two concatenated
    zips, read differently by different tools) counts as such a gap. Gaps
    mean nothing unless `complete` (every directory entry is in `members`).
    """
    spans = []
    for m in members:
        h = m.header
        if h + _LOCAL_FMT.size > len(buf):
            raise Malformed("an entry lies past the end of the file")
        sig, _, flags, method, _, _, crc, csize, usize, nlen, xlen = _LOCAL_FMT.unpack_from(buf, h)
        if sig != LOCAL or buf[h + 30:h + 30 + nlen] != m.raw_name or method != m.method or (flags ^ m.flags) & 1:
            raise Malformed("a local header disagrees with the central directory")
        if not flags & 8:  # without a data descriptor the local header carries the sizes too
            if _U32 in (csize, usize):
                z64 = _extras(buf[h + 30 + nlen:h + 30 + nlen + xlen]).get(1, b"")
                usize, csize = struct.unpack_from("<QQ", z64) if len(z64) >= 16 else (-1, -1)
            if (crc, csize, usize) != (m.crc, m.csize, m.usize):
                raise Malformed("a local header disagrees with the central directory")
        m.data = h + 30 + nlen + xlen
        if m.data + m.csize > len(buf):
            raise Malformed("an entry lies past the end of the file")
        spans.append((h, m.data + m.csize))
    spans.sort()
    gaps, reached = [], d.base
    for start, stop in spans:
        if start < reached:
            raise Malformed("its entries overlap (a zip bomb technique)")
        gaps.append((reached, start))
        reached = stop
    if reached > d.start:
        raise Malformed("its entries overlap (a zip bomb technique)")
    gaps.append((reached, d.start))
    if whole:
        gaps.append((0, d.base))
    if complete and any(LOCAL_RE.search(buf, a, b) for a, b in gaps if b > a):
        raise Malformed("it hides entries that its directory does not list")


def local_members(buf: bytes, cap: int) -> list[Member]:
    """Members found by walking local headers: for archives without a usable directory.

    Some tools (7-Zip, streaming unzippers) still extract such files, so they
    are read the way those tools would, as far as the headers allow.
    """
    out, pos = [], 0
    while len(out) < cap:
        found = LOCAL_RE.search(buf, pos)
        if not found or found.start() + _LOCAL_FMT.size > len(buf):
            break
        h = found.start()
        _, _, flags, method, _, _, crc, csize, usize, nlen, xlen = _LOCAL_FMT.unpack_from(buf, h)
        raw = buf[h + 30:h + 30 + nlen]
        data = h + 30 + nlen + xlen
        name = raw.decode("utf-8" if flags & 0x800 else "cp437", "replace")
        if flags & 8 or _U32 in (csize, usize):
            csize, usize = max(0, len(buf) - data), -1  # sizes follow the data: read to the end
        else:
            csize = min(csize, max(0, len(buf) - data))
        out.append(Member(name, (name,), raw, flags, method, crc, csize, usize, h, data))
        # Unknown size: look for the next header from the data on, as streaming tools do.
        pos = max(data + csize if usize >= 0 else data, h + 4)
    return out


def data_offset(buf: bytes, m: Member) -> int:
    """Where a member's bytes start, from its local header (-1 if there is none)."""
    if m.data >= 0:
        return m.data
    if buf[m.header:m.header + 4] != LOCAL or m.header + _LOCAL_FMT.size > len(buf):
        return -1
    nlen, xlen = struct.unpack_from("<HH", buf, m.header + 26)
    return m.header + 30 + nlen + xlen
