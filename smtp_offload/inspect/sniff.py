"""What the bytes are, regardless of what the sender says they are.

`filetype` covers the common media and archive formats by magic number. The
structural checks here come first because they cover what it gets wrong for
our purpose: it calls any "MZ" prefix a Windows executable, misses Mach-O,
scripts, OLE2 without a known first stream, PDFs with a leading preamble,
disk images, OneNote, HTML and SVG, most ISO media brands and BigTIFF, and
only looks at the first few zip members to tell Office documents apart (or
macro-enabled ones from the rest).
"""

from __future__ import annotations

import codecs
import re
import struct

import filetype

from . import tables as T
from . import zipfmt
from .active import markup

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
            T.ODP: "odp", T.ODG: "odg", T.EPUB: "epub", T.JAR: "jar", T.ZIP: "zip",
            T.DOCM: "docm", T.XLSM: "xlsm", T.PPTM: "pptm"}


def sniff(data: bytes) -> tuple[str, str | None]:
    """Return (detected MIME type, canonical extension or None) for `data`."""
    if not data:
        return T.EMPTY, None
    head = data[:_HEAD]
    # Executables first: a file that is a program at offset 0 is a program,
    # whatever else it also is. Then disk images, whose signature sits at 32 KiB
    # behind a system area that may hold anything (a PDF header, a zip).
    for check in (_ole, _windows_exe, _elf, _mach_o_or_java, _lnk, _disk_image, _onenote,
                  _shebang, _pdf_at_start, _zip, _iso_media, _bigtiff):
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
    encoding = text_encoding(data)
    if encoding:
        kind = markup(data[:2048].decode(encoding, "replace"))
        if kind == "html":
            return T.HTML, "html"
        if kind == "svg":
            return T.SVG, "svg"
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


# ISO 9660 ("CD001") and UDF ("BEA01", "NSR0x") volume descriptors follow a
# 32 KiB system area, in the first, second or third 2 KiB sector after it.
_VOLUME_IDS = (b"CD001", b"BEA01", b"NSR02", b"NSR03")
_DMG_TRAILER = b"koly" + struct.pack(">II", 4, 512)  # UDIF "koly" block: version 4, 512 bytes


def _disk_image(data: bytes, head: bytes) -> tuple[str, str | None] | None:
    if any(data[at:at + 5] in _VOLUME_IDS for at in (0x8001, 0x8801, 0x9001)):
        return T.ISO, "iso"
    # Binary fields follow both magics (a UTF-16 creator, big-endian numbers):
    # requiring a NUL among them keeps a note that starts with the word as text.
    if head.startswith(b"vhdxfile") and b"\x00" in head[8:16]:
        return T.VHDX, "vhdx"
    # Dynamic VHDs copy their footer to the start; fixed ones only have it at the end.
    for footer in (head[:16], data[-512:-496], data[-511:-495]):
        if footer.startswith(b"conectix") and b"\x00" in footer[8:]:
            return T.VHD, "vhd"
    if len(data) >= 512 and data[-512:-500] == _DMG_TRAILER:
        return T.DMG, "dmg"
    # A volume boot sector: a jump, the 55 AA signature and a file system name.
    if len(head) >= 512 and head[510:512] == b"\x55\xaa" and head[0] in (0xEB, 0xE9) and (
            head[3:11] in (b"NTFS    ", b"EXFAT   ") or head[0x36:0x39] == b"FAT" or head[0x52:0x57] == b"FAT32"):
        return T.DISK, "img"
    return None


_ONENOTE_MAGIC = bytes.fromhex("e4525c7b8cd8a74daeb15378d02996d3")


def _onenote(data: bytes, head: bytes) -> tuple[str, str | None] | None:
    return (T.ONENOTE, "one") if head.startswith(_ONENOTE_MAGIC) else None


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


_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs",
                          b"mif1", b"msf1", b"mif2"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})


def _iso_media(data: bytes, head: bytes) -> tuple[str, str | None] | None:
    # ISO base media files (MP4, M4A, 3GP, HEIC, AVIF) open with an "ftyp" box
    # naming brands. filetype knows a handful of brands, so an MP4 from a camera
    # or a HEIF photo from a phone with another one would go unrecognised.
    if len(head) < 16 or head[4:8] != b"ftyp":
        return None
    size = int.from_bytes(head[:4], "big")
    if not 16 <= size <= 4096 or size % 4:  # four text bytes make a size far above 4096
        return None
    major = head[8:12]
    brands = {head[at:at + 4] for at in range(16, min(size, len(head)), 4)}
    if major in _AVIF_BRANDS or (major in _HEIF_BRANDS and brands & _AVIF_BRANDS):
        return "image/avif", "avif"
    if major in _HEIF_BRANDS:
        return "image/heic", "heic"
    if major == b"qt  ":
        return "video/quicktime", "mov"
    if major[:3] in (b"M4A", b"M4B", b"M4P"):
        return "audio/mp4", "m4a"
    if major[:3] == b"M4V":
        return "video/x-m4v", "m4v"
    if major[:3] == b"3g2":
        return "video/3gpp2", "3g2"
    if major[:2] == b"3g":
        return "video/3gpp", "3gp"
    return "video/mp4", "mp4"


def _bigtiff(data: bytes, head: bytes) -> tuple[str, str | None] | None:
    # TIFF with 64-bit offsets (scanners, microscopes); filetype knows classic TIFF only.
    if head[:8] in (b"II+\x00\x08\x00\x00\x00", b"MM\x00+\x00\x08\x00\x00"):
        return "image/tiff", "tif"
    return None


def _zip(data: bytes, head: bytes) -> tuple[str, str | None] | None:
    if not (head.startswith(b"PK") and head[2:4] in (b"\x03\x04", b"\x05\x06", b"\x07\x08")):
        return None
    names, mimetype = _zip_members(data)
    mime = _classify_zip(names, mimetype)
    return mime, _ZIP_EXT.get(mime)


_LIST_CAP = 10_000  # names enough to classify; archive.py enforces the real limits


def _zip_members(data: bytes) -> tuple[list[str], bytes]:
    """Member names and the ODF/EPUB "mimetype" member, as far as readable.

    Names only: judging what the members are is archive.py's job. A damaged
    or truncated archive is listed from its local headers, as 7-Zip would.
    """
    d = zipfmt.locate(data)
    try:
        members = zipfmt.read_members(data, d, _LIST_CAP) if d else None
    except zipfmt.Malformed:
        members = None
    if members is None:
        members = zipfmt.local_members(data[:_TEXT_HEAD], 64)
    mimetype = b""
    m = next((m for m in members if m.name == "mimetype"), None)
    if m is not None and m.method == 0 and 0 <= m.csize <= 200:
        at = zipfmt.data_offset(data, m)
        mimetype = data[at:at + m.csize] if at >= 0 else b""
    return [m.name for m in members], mimetype


_MACRO_VARIANT = {T.DOCX: T.DOCM, T.XLSX: T.XLSM, T.PPTX: T.PPTM}


def _classify_zip(names: list[str], mimetype: bytes) -> str:
    declared = mimetype.strip().decode("ascii", "replace").lower()
    if declared in _ODF_TYPES:
        return declared
    if "[Content_Types].xml" in names:
        prefixes = {n.split("/", 1)[0] for n in names if "/" in n}
        for prefix, mime in (("word", T.DOCX), ("xl", T.XLSX), ("ppt", T.PPTX)):
            if prefix in prefixes:
                # A VBA project or Excel 4.0 macro sheets make it the macro-enabled
                # variant, whatever the package's content types claim.
                lowered = [n.lower() for n in names]
                if any(n.endswith("vbaproject.bin") or "/macrosheets/" in n for n in lowered):
                    return _MACRO_VARIANT[mime]
                return mime
    if "META-INF/MANIFEST.MF" in names and any(n.endswith(".class") for n in names):
        return T.JAR
    return T.ZIP


_VBA_NAME = "_VBA_PROJECT".encode("utf-16-le")


def ole_has_vba(data: bytes) -> bool:
    """Does this OLE2 file hold a VBA project (a .doc/.xls/.ppt with macros)?

    Directory entries are 128 bytes, in sectors that are multiples of 512
    bytes, and start with their UTF-16 name: an entry named "_VBA_PROJECT"
    (or "_VBA_PROJECT_CUR") at a 128-byte boundary is the project, not a
    document that merely mentions it.
    """
    at = data.find(_VBA_NAME)
    while at >= 0:
        if at % 128 == 0:
            return True
        at = data.find(_VBA_NAME, at + 1)
    return False


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
    return text_encoding(data) is not None


def text_encoding(data: bytes) -> str | None:
    """The encoding under which all of `data` plausibly reads as text, or None."""
    head = data[:_TEXT_HEAD]
    encoding = _text_encoding(head)
    if encoding is None:
        return None
    if len(data) <= _TEXT_HEAD:
        return encoding
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
    return encoding if _decodes_as_text(tail, encoding) else None
