"""What the bytes are, regardless of what the sender says they are.

`filetype` covers the common media and archive formats by magic number. The
structural checks here come first because they cover what it gets wrong for
our purpose: it calls any "MZ" prefix a Windows executable, misses Mach-O,
scripts, OLE2 without a known first stream, PDFs with a leading preamble, and
only looks at the first few zip members to tell Office documents apart.
"""

from __future__ import annotations

import codecs
import io
import re
import struct
import zipfile

import filetype

from . import tables as T

_HEAD = 8192  # what filetype and the header checks look at
_TEXT_HEAD = 64 * 1024  # text plausibility: start of the file ...
_TEXT_TAIL = 4096  # ... and its end, so a text header on binary data is caught

_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
# Root-entry CLSIDs (little-endian GUID bytes) of Windows Installer databases,
# patches and transforms: OLE2 files that Windows will execute.
_MSI_CLSIDS = frozenset(
    bytes.fromhex(f"{n:02x}100c00" "00000000" "c000000000000046") for n in (0x84, 0x86, 0x82)
)
_LNK_MAGIC = bytes.fromhex("4c0000000114020000000000c000000000000046")
_MACHO_THIN = (b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe")
_SHEBANG = re.compile(rb"#![ \t]*(/[^\s]*)(?:[ \t]+([^\s]+))?")
_ODF_TYPES = {
    T.ODT, T.ODS, T.ODP, T.ODG, T.EPUB,
    "application/vnd.oasis.opendocument.text-template",
    "application/vnd.oasis.opendocument.spreadsheet-template",
    "application/vnd.oasis.opendocument.presentation-template",
}
_ZIP_EXT = {T.DOCX: "docx", T.XLSX: "xlsx", T.PPTX: "pptx", T.ODT: "odt", T.ODS: "ods",
            T.ODP: "odp", T.ODG: "odg", T.EPUB: "epub", T.JAR: "jar", T.ZIP: "zip"}


def sniff(data: bytes) -> tuple[str, str | None]:
    """Return (detected MIME type, canonical extension or None) for `data`."""
    if not data:
        return T.EMPTY, None
    head = data[:_HEAD]
    for check in (_ole, _windows_exe, _elf, _mach_o_or_java, _lnk, _shebang, _pdf_at_start, _zip):
        found = check(data, head)
        if found:
            return found

    weak = None
    kind = filetype.guess(head)
    # MZ and ELF magic alone were already judged above; an Eot match is
    # reported by filetype as octet-stream, i.e. nothing.
    if kind is not None and kind.mime not in (T.PE, T.ELF, T.OCTET):
        mime, ext = T.FILETYPE_FIXUPS.get(kind.extension, (kind.mime, kind.extension))
        if mime not in T.WEAK_FILETYPE:
            return mime, ext
        weak = (mime, ext)

    found = _pdf_after_preamble(data, head)
    if found:
        return found
    if looks_like_text(data):
        return T.TEXT, "txt"
    return weak or (T.OCTET, None)


# --- Structural checks: each returns (mime, ext) or None -----------------------

def _ole(data: bytes, head: bytes) -> tuple[str, str | None] | None:
    if not head.startswith(_OLE_MAGIC):
        return None
    # Doc, xls, ppt, msg and encrypted OOXML share this container; only MSI is
    # worth telling apart, because it executes. Its root entry carries a CLSID.
    if len(data) >= 52:
        shift, = struct.unpack_from("<H", data, 30)
        first_dir, = struct.unpack_from("<I", data, 48)
        if shift in (9, 12) and first_dir < 0xFFFFFFFA:
            root = (first_dir + 1) * (1 << shift)
            if data[root + 80:root + 96] in _MSI_CLSIDS:
                return T.MSI, "msi"
    return T.OLE, None


def _windows_exe(data: bytes, head: bytes) -> tuple[str, str | None] | None:
    # "MZ" alone is two printable letters; only a header pointing at a PE (or
    # older NE/LE/LX) signature makes it a program Windows will load.
    if len(data) < 64 or not head.startswith(b"MZ"):
        return None
    e_lfanew, = struct.unpack_from("<I", data, 0x3C)
    if not 4 <= e_lfanew <= len(data) - 4:
        return None
    sig = data[e_lfanew:e_lfanew + 4]
    if sig == b"PE\x00\x00":
        characteristics = data[e_lfanew + 22:e_lfanew + 24]
        is_dll = len(characteristics) == 2 and struct.unpack("<H", characteristics)[0] & 0x2000
        return T.PE, "dll" if is_dll else "exe"
    if sig[:2] in (b"NE", b"LE", b"LX"):
        return T.PE, "exe"
    return None


def _elf(data: bytes, head: bytes) -> tuple[str, str | None] | None:
    if head.startswith(b"\x7fELF") and len(head) >= 6 and head[4] in (1, 2) and head[5] in (1, 2):
        return T.ELF, None
    return None


def _mach_o_or_java(data: bytes, head: bytes) -> tuple[str, str | None] | None:
    if head[:4] in _MACHO_THIN or head[:4] == b"\xca\xfe\xba\xbf":
        return T.MACHO, None
    if head[:4] == b"\xca\xfe\xba\xbe" and len(head) >= 8:
        # Fat Mach-O and Java class files share CAFEBABE. Next comes the
        # architecture count (small) in one, minor+major version (major >= 45,
        # so the 32-bit value is >= 45) in the other.
        n_arch, = struct.unpack_from(">I", head, 4)
        if 0 < n_arch < 45:
            return T.MACHO, None
        return T.JAVA_CLASS, "class"
    return None


def _lnk(data: bytes, head: bytes) -> tuple[str, str | None] | None:
    return (T.LNK, "lnk") if head.startswith(_LNK_MAGIC) else None


_INTERPRETERS = [
    (re.compile(r"(ba|da|z|k|c|tc|a|fi|mk)?sh"), T.SHELL, "sh"),
    (re.compile(r"python[0-9.]*"), "text/x-python", "py"),
    (re.compile(r"perl[0-9.]*"), "text/x-perl", "pl"),
    (re.compile(r"ruby[0-9.]*"), "text/x-ruby", "rb"),
    (re.compile(r"php[0-9.]*"), "application/x-httpd-php", "php"),
    (re.compile(r"node(js)?|deno|bun"), "text/javascript", "js"),
]


def _shebang(data: bytes, head: bytes) -> tuple[str, str | None] | None:
    m = _SHEBANG.match(head.removeprefix(b"\xef\xbb\xbf")[:256])
    if not m:
        return None
    prog = m.group(1).rsplit(b"/", 1)[-1]
    if prog == b"env" and m.group(2):
        prog = m.group(2)
    name = prog.decode("ascii", "replace")
    for pattern, mime, ext in _INTERPRETERS:
        if pattern.fullmatch(name):
            return mime, ext
    return T.SCRIPT, None


def _pdf_at_start(data: bytes, head: bytes) -> tuple[str, str | None] | None:
    return (T.PDF, "pdf") if head.removeprefix(b"\xef\xbb\xbf").startswith(b"%PDF-") else None


def _pdf_after_preamble(data: bytes, head: bytes) -> tuple[str, str | None] | None:
    # Acrobat accepts the header anywhere in the first 1024 bytes. Requiring an
    # object keyword too keeps a text that merely mentions "%PDF-" as text.
    at = head.find(b"%PDF-", 0, 1024)
    if at >= 0 and head[at + 5:at + 6].isdigit() and b" obj" in data[:_TEXT_HEAD]:
        return T.PDF, "pdf"
    return None


def _zip(data: bytes, head: bytes) -> tuple[str, str | None] | None:
    if not (head.startswith(b"PK") and head[2:4] in (b"\x03\x04", b"\x05\x06", b"\x07\x08")):
        return None
    names, mimetype = _zip_members(data)
    mime = _classify_zip(names, mimetype)
    return mime, _ZIP_EXT.get(mime)


def _zip_members(data: bytes) -> tuple[list[str], bytes]:
    """Member names and the ODF/EPUB "mimetype" member, as far as readable."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = zf.namelist()
            mimetype = b""
            if "mimetype" in names and zf.getinfo("mimetype").file_size <= 200:
                mimetype = zf.read("mimetype")
            return names, mimetype
    except Exception:  # noqa: BLE001 - any malformed zip: fall back to local headers
        pass
    # Truncated or odd archives: walk the local file headers in the first bytes.
    names, mimetype, pos = [], b"", 0
    head = data[:_TEXT_HEAD]
    while len(names) < 64:
        pos = head.find(b"PK\x03\x04", pos)
        if pos < 0 or pos + 30 > len(head):
            break
        method, = struct.unpack_from("<H", head, pos + 8)
        size, name_len, extra_len = struct.unpack_from("<IHH", head, pos + 22)
        name = head[pos + 30:pos + 30 + name_len].decode("utf-8", "replace")
        names.append(name)
        body = pos + 30 + name_len + extra_len
        if name == "mimetype" and method == 0 and size <= 200:
            mimetype = head[body:body + size]
        pos = body
    return names, mimetype


def _classify_zip(names: list[str], mimetype: bytes) -> str:
    declared = mimetype.strip().decode("ascii", "replace").lower()
    if declared in _ODF_TYPES:
        return declared
    if "[Content_Types].xml" in names:
        prefixes = {n.split("/", 1)[0] for n in names if "/" in n}
        for prefix, mime in (("word", T.DOCX), ("xl", T.XLSX), ("ppt", T.PPTX)):
            if prefix in prefixes:
                return mime
    if "META-INF/MANIFEST.MF" in names and any(n.endswith(".class") for n in names):
        return T.JAR
    return T.ZIP


# --- Text ---------------------------------------------------------------------

# C0 controls that occur in ordinary text files: TAB, LF, FF, CR, ESC.
_TEXT_CONTROLS = frozenset("\t\n\f\r\x1b")


def _clean(s: str) -> bool:
    """No NUL and at most ~2% stray control characters."""
    if "\x00" in s:
        return False
    stray = sum(1 for c in s if c < " " and c not in _TEXT_CONTROLS)
    return stray * 50 <= len(s)


def _decodes_as_text(sample: bytes, encoding: str) -> bool:
    # Incremental decoding tolerates a multi-byte sequence cut at the sample end.
    try:
        s = codecs.getincrementaldecoder(encoding)().decode(sample, final=False)
    except UnicodeDecodeError:
        return False
    return _clean(s)


def _text_encoding(head: bytes) -> str | None:
    """The encoding under which `head` reads as text, or None for binary."""
    for bom, enc in ((b"\xff\xfe\x00\x00", "utf-32-le"), (b"\x00\x00\xfe\xff", "utf-32-be"),
                     (b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be")):
        if head.startswith(bom):
            return enc if _decodes_as_text(head[len(bom):], enc) else None
    if b"\x00" not in head:
        for enc in ("utf-8", "latin-1"):  # latin-1 stands for any single-byte legacy charset
            if _decodes_as_text(head, enc):
                return enc
        return None
    # UTF-16 without a BOM (some Windows exports): one byte of each pair is
    # almost always zero for Latin text.
    even, odd = head[0::2], head[1::2]
    for zeros, enc in ((odd, "utf-16-le"), (even, "utf-16-be")):
        if len(zeros) >= 8 and zeros.count(0) >= 0.9 * len(zeros) and _decodes_as_text(head, enc):
            return enc
    return None


def looks_like_text(data: bytes) -> bool:
    """True when `data` is plausibly a text file in some common encoding."""
    head = data[:_TEXT_HEAD]
    encoding = _text_encoding(head)
    if encoding is None:
        return False
    if len(data) <= _TEXT_HEAD:
        return True
    # Check the end too: start at a code-unit boundary so the decoder is in step.
    start = len(data) - _TEXT_TAIL
    unit = 4 if encoding.startswith("utf-32") else 2 if encoding.startswith("utf-16") else 1
    start -= start % unit
    tail = data[start:]
    if encoding == "utf-8":
        skip = 0
        while skip < 3 and skip < len(tail) and 0x80 <= tail[skip] < 0xC0:
            skip += 1  # we landed inside a multi-byte character
        tail = tail[skip:]
    return _decodes_as_text(tail, encoding)
