"""Look inside ZIP archives (and OOXML, ODF, EPUB, JAR, which are ZIPs) within fixed bounds.

An archive is judged by its most dangerous reading: an executable inside, by
its bytes or its name, refuses the archive. Structure comes first and costs
nothing to check (zipfmt.py); bytes are decompressed only to sniff the start
of each member and to open nested archives. Every decompressed byte is charged
to one budget per attachment (InspectPolicy.archive_max_inflate_bytes), so a
bomb costs at most that much work whatever it declares: Report.inflated is the
proof the tests assert on.

Findings are collected, not verdicts: rules.py maps each kind to BLOCKED,
SPOOFED or nothing according to the policy.
"""

from __future__ import annotations

import bz2
import lzma
import re
import struct
import zlib
from dataclasses import dataclass, field

from . import tables as T
from . import zipfmt
from ..units import human_size
from .names import escapes, file_extension, name_problem, safe_display_name
from .policy import InspectPolicy, KeepOrBlock
from .sniff import sniff

# Decompressed to sniff a member: every executable signature sits in the first
# KiB, and a small head keeps an archive of thousands of files within budget.
_HEAD = 1024
# Read further only when the head could be the start of what hides deeper: an
# ISO (zeros or an MBR before its descriptor at 0x9001) or a PE whose header
# sits beyond the first KiB (as far as its e_lfanew says: see _deeper).
_DEEP = 40 * 1024
_CHUNK = 64 * 1024  # compressed bytes handed to a decompressor at a time
_RATIO_FLOOR = 1 << 20  # a high ratio only matters once a member expands to something big
_SHOWN = 40  # member names in reasons are cut to this (reasons stay under 120 characters)

# Kinds of finding, most serious first.
MALFORMED, BLOCKED, LIMIT, ENCRYPTED, MACRO, ESCAPE, SPOOF, NAME = (
    "malformed", "blocked", "limit", "encrypted", "macro", "escape", "spoof", "name")


@dataclass(frozen=True)
class Finding:
    kind: str
    reason: str
    facts: tuple[tuple[str, str], ...] = ()  # what a notice's sentence needs (the member, its type)


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    inflated: int = 0  # bytes decompressed, all members and levels
    entries: int = 0  # members seen, all levels
    declared: int = 0  # declared uncompressed bytes, all levels
    encrypted: int = 0  # members that could not be read because they are encrypted

    def first(self, kind: str) -> Finding | None:
        return next((f for f in self.findings if f.kind == kind), None)


def inspect(data: bytes, policy: InspectPolicy = InspectPolicy(), whole: bool = True) -> Report:
    """Inspect the ZIP archive in `data`.

    `whole`: `data` is meant to be the archive. Otherwise it is a host (a PDF,
    an image) with an archive inside, and bytes before the archive are the host's.
    """
    run = _Run(policy, limits_refuse=whole and policy.on_archive_limit is KeepOrBlock.BLOCK)
    run.archive(data, 1, whole)
    if run.report.encrypted:
        run.add(ENCRYPTED, "archive is encrypted, so its contents cannot be inspected "
                           f"({run.report.encrypted} encrypted member{'s' if run.report.encrypted > 1 else ''})")
    return run.report


class _Run:
    """One inspection: the policy, the findings so far, and the budget all levels share."""

    def __init__(self, policy: InspectPolicy, limits_refuse: bool) -> None:
        self.policy = policy
        self.report = Report()
        # Once a finding refuses the archive whatever else is in it, reading
        # more bytes only costs work (the reason stays the first such finding).
        self.refusing = (MALFORMED, BLOCKED, LIMIT) if limits_refuse else (MALFORMED, BLOCKED)
        self.settled = False

    def add(self, kind: str, reason: str, **facts: str) -> None:
        if any(f.kind == kind and f.reason == reason for f in self.report.findings):
            return
        self.report.findings.append(Finding(kind, reason, tuple(facts.items())))
        self.settled = self.settled or kind in self.refusing

    @property
    def budget(self) -> int:
        return self.policy.archive_max_inflate_bytes - self.report.inflated

    # --- one archive -----------------------------------------------------------

    def archive(self, buf: bytes, depth: int, whole: bool) -> None:
        p = self.policy
        room = p.archive_max_entries - self.report.entries
        d = zipfmt.locate(buf)
        try:
            if d is None:
                if not whole:
                    return
                members = zipfmt.local_members(buf, room + 1)  # no directory: read it as 7-Zip would
                count = len(members)
            else:
                members = zipfmt.read_members(buf, d, room + 1)
                zipfmt.check_layout(buf, d, members, whole, complete=len(members) == d.count)
                count = d.count
        except zipfmt.Malformed as e:
            self.add(MALFORMED, f"malformed archive: {e}")
            return
        if count > room:
            self.add(LIMIT, f"archive exceeds inspection limits (more than {p.archive_max_entries} entries)")
            members = members[:room]
        self.report.entries += len(members)
        self._check_sizes(members)
        try:  # reading any member may expose one that lies about its size
            epub = self._is_epub(buf, members)
            for m in members:
                self.member(buf, m, depth, epub)
        except zipfmt.Malformed as e:
            self.add(MALFORMED, f"malformed archive: {e}")

    def _check_sizes(self, members: list[zipfmt.Member]) -> None:
        p = self.policy
        known = [m for m in members if m.usize >= 0]
        for m in known:
            if m.usize >= _RATIO_FLOOR and m.usize > p.archive_max_ratio * max(m.csize, 1):
                self.add(LIMIT, f"archive exceeds inspection limits (compression ratio over "
                                f"{p.archive_max_ratio:g}:1 in {_shown(m.name)})")
                break
        usize, csize = sum(m.usize for m in known), sum(m.csize for m in known)
        if usize >= _RATIO_FLOOR and usize > p.archive_max_ratio * max(csize, 1):
            self.add(LIMIT, f"archive exceeds inspection limits (compression ratio over {p.archive_max_ratio:g}:1)")
        self.report.declared += usize
        if self.report.declared > p.archive_max_total_bytes:
            self.add(LIMIT, f"archive exceeds inspection limits (expands to {human_size(self.report.declared)}, "
                            f"limit {human_size(p.archive_max_total_bytes)})")

    def _is_epub(self, buf: bytes, members: list[zipfmt.Member]) -> bool:
        m = next((m for m in members if m.name == "mimetype" and not m.encrypted), None)
        return m is not None and self.read(buf, m, 64).strip() == b"application/epub+zip"

    # --- one member ------------------------------------------------------------

    def member(self, buf: bytes, m: zipfmt.Member, depth: int, epub: bool) -> None:
        p, shown = self.policy, _shown(m.name)
        if any(escapes(n) for n in m.names):
            self.add(ESCAPE, f"archive member with a path that escapes the folder ({shown})", member=shown)
        if m.is_dir:
            return
        for n in m.names:
            ext = file_extension(n)
            # EPUB 3 books carry JavaScript by design; their reader runs it sandboxed.
            if ext and ext in p.blocked_extensions and not (epub and ext == "js"):
                self.add(BLOCKED, f"archive contains a .{ext} file ({_shown(n)})", member=_shown(n), ext=ext)
            problem = name_problem(re.split(r"[\\/]", n)[-1]) if p.suspicious_names else None
            if problem:
                self.add(NAME, f"archive member with a suspicious name ({problem.label}): {_shown(n)}",
                         member=_shown(n), problem=problem.code)
        if m.encrypted:
            self.report.encrypted += 1
            return
        if self.settled or m.usize == 0:
            return  # the archive is refused already: spend no more work on it
        head = self.read(buf, m, _HEAD)
        kind, _ = sniff(head)
        deeper = _deeper(head, m.usize) if kind == T.OCTET and len(head) == _HEAD else 0
        if deeper:
            kind, _ = sniff(self.read(buf, m, deeper))
        blocked = _blocked_category(kind, p)
        if blocked:
            self.add(BLOCKED, f"archive contains {T.NAMES.get(kind, kind)} ({shown})", member=shown, type=kind)
        elif kind in T.ZIP_CONTAINERS or head.startswith(zipfmt.LOCAL):
            self.nested(buf, m, depth, shown)

    def nested(self, buf: bytes, m: zipfmt.Member, depth: int, shown: str) -> None:
        p = self.policy
        if depth >= p.archive_max_depth:
            self.add(LIMIT, f"archive exceeds inspection limits (nested more than {p.archive_max_depth} levels deep)")
            return
        if m.method != 0 and not 0 <= m.usize <= self.budget:
            self.add(LIMIT, f"archive exceeds inspection limits (nested archive {shown} is too large to inspect)")
            return
        inner = self.read(buf, m, m.usize + 1 if m.usize >= 0 else self.budget)
        kind, _ = sniff(inner)
        if kind in T.MACRO_OOXML:
            self.add(MACRO, f"archive contains {T.NAMES[kind]} ({shown})", member=shown, type=kind)
            claim = T.EXTENSIONS.get(file_extension(m.name) or "")
            if claim in T.MACRO_FREE:
                self.add(SPOOF, f"archive member {shown} has macros but a macro-free name", member=shown)
        self.archive(inner, depth + 1, True)

    # --- bounded reading -------------------------------------------------------

    def read(self, buf: bytes, m: zipfmt.Member, want: int) -> bytes:
        """Up to `want` bytes from the start of member `m`, decompressed within the budget.

        Asks for one byte more than the member declares: getting it proves the
        member lies about its size (a bomb that hides behind a small number).
        """
        if m.usize >= 0:
            want = min(want, m.usize + 1)
        start = zipfmt.data_offset(buf, m)
        if start < 0:
            return b""
        src = memoryview(buf)[start:start + m.csize]
        if m.method == 0:
            out = bytes(src[:want])
        elif m.method in (8, 12, 14):
            out = self._inflate(m.method, src, want)
        else:
            self.add(LIMIT, f"archive exceeds inspection limits (unsupported compression method "
                            f"{m.method} in {_shown(m.name)})")
            return b""
        if 0 <= m.usize < len(out):
            raise zipfmt.Malformed(f"member {_shown(m.name)} is larger than it declares")
        return out

    def _inflate(self, method: int, src: memoryview, want: int) -> bytes:
        out, pos = bytearray(), 0
        if method == 14:  # LZMA in ZIP: version (2), properties size (2), properties, raw stream
            dec, pos = _lzma(src, want)
            if dec is None:
                return b""
        else:
            dec = zlib.decompressobj(-15) if method == 8 else bz2.BZ2Decompressor()
        pending = b""
        try:
            while len(out) < want and not dec.eof:
                allowed = min(want - len(out), self.budget)
                if allowed <= 0:
                    self.add(LIMIT, "archive exceeds inspection limits (more content than can be inspected)")
                    break
                if method == 8:
                    if not pending:
                        if pos >= len(src):
                            break
                        pending, pos = src[pos:pos + _CHUNK], pos + _CHUNK
                    piece = dec.decompress(pending, allowed)
                    pending = dec.unconsumed_tail
                else:
                    chunk = b""
                    if dec.needs_input:
                        if pos >= len(src):
                            break
                        chunk, pos = src[pos:pos + _CHUNK], pos + _CHUNK
                    piece = dec.decompress(chunk, allowed)
                    if not piece and not chunk:
                        break
                self.report.inflated += len(piece)
                out += piece
        except (zlib.error, OSError, EOFError, lzma.LZMAError):
            pass  # corrupt data: inspect what came out; the recipient cannot extract more either
        return bytes(out)


def _lzma(src: memoryview, want: int):
    if len(src) < 9:
        return None, 0
    props_len, = struct.unpack_from("<H", src, 2)
    props = bytes(src[4:4 + props_len])
    if props_len != 5:
        return None, 0
    d = props[0]
    lc, lp, pb = d % 9, (d // 9) % 5, d // 45
    declared, = struct.unpack_from("<I", props, 1)
    # The encoder's dictionary may be declared as 4 GiB, which liblzma would
    # allocate. A back-reference cannot reach further than what was produced,
    # and we never produce more than `want`, so a small dictionary decodes the
    # same bytes.
    size = min(declared, max(want, 1 << 16))
    filt = {"id": lzma.FILTER_LZMA1, "dict_size": max(size, 4096), "lc": lc, "lp": lp, "pb": pb}
    try:
        return lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[filt]), 4 + props_len
    except lzma.LZMAError:
        return None, 0


def _deeper(head: bytes, usize: int) -> int:
    """How much of a member to read when its unrecognised first KiB may start something deeper (0: nothing)."""
    if head.startswith(b"MZ"):
        # The PE signature sits wherever e_lfanew points, which may be far past
        # _DEEP (the budget still bounds the read); past the member's end it
        # points at nothing.
        e_lfanew, = struct.unpack_from("<I", head, 0x3C)
        if 0 <= usize and e_lfanew + 4 <= usize:
            return max(_DEEP, min(e_lfanew + 24, usize))
        return _DEEP
    return _DEEP if not head.strip(b"\x00") or head[510:512] == b"\x55\xaa" else 0


def _blocked_category(kind: str, policy: InspectPolicy) -> bool:
    # Members are held to the policy's categories only: an admin blocking
    # "image/*" means image attachments, not the pictures inside a .docx.
    return any(kind in T.CATEGORIES[c] for c in policy.blocked_types if c in T.CATEGORIES)


def _shown(name: str) -> str:
    shown = safe_display_name(name) or "unnamed member"
    return shown if len(shown) <= _SHOWN else shown[:_SHOWN - 12] + "\u2026" + shown[-11:]
