"""Small but real sample files, built in memory, for tests.

Every builder is a pure function: same bytes on every call (zip timestamps are
pinned, no randomness), so tests can compare hashes and sizes. The files are
structurally valid — not just a magic number followed by noise — so sniffing
code tested against them behaves as it would on real attachments.
"""

from __future__ import annotations

import functools
import hashlib
import io
import struct
import zipfile
import zlib

from smtp_offload.harness.files import (  # noqa: F401  (the harness's builders, re-exported for the tests)
    OOXML_RELS, big_jpeg, big_pdf, docx, jpeg, ooxml, ooxml_content_types, pack_zip, pdf, pe_exe, png, zip_file,
)

# Cheap, argument-free builders (tests call each of these twice). The bombs
# (zip_bomb, overlap_zip) and raw_zip take arguments and are left out.
__all__ = [
    "pdf", "big_pdf", "png", "jpeg", "gif", "zip_file", "docx", "xlsx", "pptx",
    "odt", "epub", "ole", "pe_exe", "elf", "macho", "macho_fat", "java_class",
    "shell_script", "text", "csv", "ics", "vcard",
    "docm", "ole_with_vba", "lnk", "iso", "onenote", "vhdx", "vhd", "fat_image", "dmg",
    "encrypted_zip",
]


# --- Images -----------------------------------------------------------------

def gif() -> bytes:
    """The classic 1x1 transparent GIF89a (43 bytes)."""
    return (
        b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff"
        b"!\xf9\x04\x01\x00\x00\x00\x00"
        b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
    )


# --- ZIP and ZIP-based documents --------------------------------------------

def xlsx() -> bytes:
    """A minimal Excel OOXML package (one empty sheet)."""
    workbook = (
        b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        b'<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
        b'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
        b'<sheets><sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>'
    )
    wb_rels = (
        b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        b'<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        b'<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
        b'relationships/worksheet" Target="worksheets/sheet1.xml"/></Relationships>'
    )
    sheet = (
        b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
        b"<sheetData/></worksheet>"
    )
    return ooxml("xl/workbook.xml", "vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml", workbook, (
        ("xl/_rels/workbook.xml.rels", wb_rels, None),
        ("xl/worksheets/sheet1.xml", sheet, "vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"),
    ))


def pptx() -> bytes:
    """A skeletal PowerPoint OOXML package (enough to be recognised)."""
    pres = (
        b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        b'<p:presentation xmlns:p="http://schemas.openxmlformats.org/presentationml/2006/main"/>'
    )
    return ooxml("ppt/presentation.xml", "vnd.openxmlformats-officedocument.presentationml.presentation.main+xml",
                 pres)


def odt() -> bytes:
    """A skeletal OpenDocument text file (stored "mimetype" member first)."""
    content = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
        b'office:version="1.2"><office:body><office:text/></office:body></office:document-content>'
    )
    manifest = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0">'
        b'<manifest:file-entry manifest:full-path="/" '
        b'manifest:media-type="application/vnd.oasis.opendocument.text"/>'
        b'<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>'
        b"</manifest:manifest>"
    )
    return pack_zip([
        ("mimetype", b"application/vnd.oasis.opendocument.text"),
        ("content.xml", content),
        ("META-INF/manifest.xml", manifest),
    ], stored_first=True)


def epub() -> bytes:
    """A skeletal EPUB container (stored "mimetype" member first)."""
    container = (
        b'<?xml version="1.0"?>\n'
        b'<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">'
        b'<rootfiles><rootfile full-path="content.opf" media-type="application/oebps-package+xml"/>'
        b"</rootfiles></container>"
    )
    return pack_zip([
        ("mimetype", b"application/epub+zip"),
        ("META-INF/container.xml", container),
    ], stored_first=True)


# --- OLE2 compound file -----------------------------------------------------

_FREESECT, _ENDOFCHAIN, _FATSECT = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD


def ole() -> bytes:
    """A minimal valid OLE2 / Compound File Binary (v3, 512-byte sectors).

    Layout: header, sector 0 = FAT, sector 1 = directory with only the Root
    Entry. Legacy .doc/.xls/.msg and password-protected OOXML share this
    container, so it deliberately carries no application stream.
    """
    header = bytearray(512)
    header[0:8] = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
    struct.pack_into(
        "<HHHHHH", header, 24,
        0x003E,  # minor version
        0x0003,  # major version 3
        0xFFFE,  # byte order: little-endian
        9,       # sector shift: 512-byte sectors
        6,       # mini sector shift: 64-byte mini sectors
        0,       # reserved
    )
    struct.pack_into(
        "<IIIIIIIII", header, 40,
        0,             # number of directory sectors (must be 0 in v3)
        1,             # number of FAT sectors
        1,             # first directory sector
        0,             # transaction signature
        0x1000,        # mini stream cutoff
        _ENDOFCHAIN,   # first mini FAT sector
        0,             # number of mini FAT sectors
        _ENDOFCHAIN,   # first DIFAT sector
        0,             # number of DIFAT sectors
    )
    difat = [0] + [_FREESECT] * 108  # FAT lives in sector 0
    struct.pack_into("<109I", header, 76, *difat)

    fat = [_FATSECT, _ENDOFCHAIN] + [_FREESECT] * 126
    fat_sector = struct.pack("<128I", *fat)

    root = bytearray(128)
    name = "Root Entry".encode("utf-16-le") + b"\x00\x00"
    root[0:len(name)] = name
    struct.pack_into("<HBB", root, 64, len(name), 5, 1)  # name length, type root, colour black
    struct.pack_into("<III", root, 68, _FREESECT, _FREESECT, _FREESECT)  # left, right, child
    struct.pack_into("<II", root, 116, _ENDOFCHAIN, 0)  # start sector, size (empty mini stream)
    unused = bytearray(128)
    struct.pack_into("<III", unused, 68, _FREESECT, _FREESECT, _FREESECT)
    dir_sector = bytes(root) + bytes(unused) * 3

    return bytes(header) + fat_sector + dir_sector


# --- Executables ------------------------------------------------------------

def elf() -> bytes:
    """A 64-bit little-endian x86-64 ELF executable header (no program headers)."""
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\x00" * 8
    hdr = ident + struct.pack(
        "<HHIQQQIHHHHHH",
        2,        # e_type: EXEC
        0x3E,     # e_machine: x86-64
        1,        # e_version
        0x401000,  # entry
        0,        # phoff
        0,        # shoff
        0,        # flags
        64,       # ehsize
        56, 0,    # phentsize, phnum
        64, 0,    # shentsize, shnum
        0,        # shstrndx
    )
    return hdr + b"\x00" * 64


def macho() -> bytes:
    """A 64-bit little-endian Mach-O executable header (MH_MAGIC_64, x86-64)."""
    hdr = struct.pack("<IiiIIII", 0xFEEDFACF, 0x01000007, 3, 2, 0, 0, 0) + b"\x00" * 4
    return hdr + b"\x00" * 64


def macho_fat() -> bytes:
    """A universal (fat) Mach-O with two arch slices pointing at real Mach-O headers."""
    inner = macho()
    off1, off2 = 0x1000, 0x2000
    head = struct.pack(">II", 0xCAFEBABE, 2)
    head += struct.pack(">iiIII", 0x01000007, 3, off1, len(inner), 12)
    head += struct.pack(">iiIII", 0x0100000C, 0, off2, len(inner), 14)
    out = head + b"\x00" * (off1 - len(head)) + inner
    return out + b"\x00" * (off2 - len(out)) + inner


def java_class() -> bytes:
    """A Java class file header: CAFEBABE like fat Mach-O, but minor/major version after it."""
    # minor 0, major 52 (Java 8); constant pool count etc. follow in a real file.
    return struct.pack(">IHHH", 0xCAFEBABE, 0, 52, 1) + b"\x00" * 32


def shell_script() -> bytes:
    return b"#!/bin/sh\nset -e\necho 'hello'\nrm -rf /tmp/example-not-real\n"


# --- Text formats -----------------------------------------------------------

def text(n: int = 200) -> bytes:
    """`n` bytes of plain ASCII prose with line breaks."""
    line = b"The quick brown fox jumps over the lazy dog.\n"
    return (line * (n // len(line) + 1))[:n]


def csv() -> bytes:
    return (
        b"id,name,amount,date\r\n"
        b"1,Alice,12.50,2024-01-02\r\n"
        b"2,Bob,7.25,2024-01-03\r\n"
        b'3,"Carol, Jr.",100.00,2024-01-04\r\n'
    )


def ics() -> bytes:
    return (
        b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//example//samples//EN\r\n"
        b"BEGIN:VEVENT\r\nUID:1@example.com\r\nDTSTAMP:20240101T000000Z\r\n"
        b"DTSTART:20240102T100000Z\r\nDTEND:20240102T110000Z\r\nSUMMARY:Meeting\r\n"
        b"END:VEVENT\r\nEND:VCALENDAR\r\n"
    )


def vcard() -> bytes:
    return (
        b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Alice Example\r\nN:Example;Alice;;;\r\n"
        b"EMAIL;TYPE=INTERNET:alice@example.com\r\nTEL;TYPE=CELL:+1-555-0100\r\nEND:VCARD\r\n"
    )


# --- Hostile and risky files (tests/test_inspect_hostile.py) ------------------

def docm() -> bytes:
    """docx() plus a VBA project: what Word saves as .docm (macro-enabled)."""
    with zipfile.ZipFile(io.BytesIO(docx())) as zf:
        members = [(i.filename, zf.read(i)) for i in zf.infolist()]
    members[0] = ("[Content_Types].xml", ooxml_content_types(
        b'<Default Extension="bin" ContentType="application/vnd.ms-office.vbaProject"/>'
        b'<Override PartName="/word/document.xml" ContentType="application/'
        b'vnd.ms-word.document.macroEnabled.main+xml"/>'))
    return pack_zip(members + [("word/vbaProject.bin", ole_with_vba())])


def ole_with_vba() -> bytes:
    """ole() whose directory also holds a "_VBA_PROJECT" stream entry (a .doc with macros)."""
    data = bytearray(ole())
    entry = 2 * 512 + 128  # second directory entry, after the root
    name = "_VBA_PROJECT".encode("utf-16-le") + b"\x00\x00"
    data[entry:entry + len(name)] = name
    struct.pack_into("<HBB", data, entry + 64, len(name), 2, 1)  # stream, black
    struct.pack_into("<I", data, 2 * 512 + 76, 1)  # root's child -> entry 1
    return bytes(data)


def lnk() -> bytes:
    """A Windows shortcut header: size 0x4C and the ShellLink CLSID, then empty fields."""
    return bytes.fromhex("4c0000000114020000000000c000000000000046") + b"\x00" * 56


def iso() -> bytes:
    """An ISO 9660 image: 32 KiB system area, a primary volume descriptor, a terminator."""
    pvd = bytearray(2048)
    pvd[0:7] = b"\x01CD001\x01"
    pvd[8:40] = b"LINUX".ljust(32)
    pvd[40:72] = b"INVOICE_2024".ljust(32)
    terminator = b"\xffCD001\x01".ljust(2048, b"\x00")
    return bytes(0x8000) + bytes(pvd) + terminator


def onenote() -> bytes:
    """A OneNote section header: the file-format GUID, then zeros."""
    return bytes.fromhex("e4525c7b8cd8a74daeb15378d02996d3") + bytes(1008)


def vhdx() -> bytes:
    return b"vhdxfile" + "smtp-offload tests".encode("utf-16-le") + bytes(1000)


def vhd() -> bytes:
    """A fixed VHD: the raw disk, then a 512-byte "conectix" footer."""
    footer = (b"conectix" + struct.pack(">II", 2, 0x10000)).ljust(512, b"\x00")
    return bytes(4096) + footer


def dmg() -> bytes:
    """An Apple disk image: data, then the 512-byte UDIF "koly" trailer."""
    return bytes(4096) + (b"koly" + struct.pack(">II", 4, 512)).ljust(512, b"\x00")


def fat_image() -> bytes:
    """A FAT12 floppy image's boot sector (what a .img usually is), padded to 4 KiB."""
    boot = bytearray(512)
    boot[0:3] = b"\xeb\x3c\x90"
    boot[3:11] = b"MSDOS5.0"
    struct.pack_into("<HBHBHHBHHH", boot, 11, 512, 1, 1, 2, 224, 2880, 0xF0, 9, 18, 2)
    boot[0x36:0x3E] = b"FAT12   "
    boot[510:512] = b"\x55\xaa"
    return bytes(boot) + bytes(4096 - 512)


def raw_zip(members: list[dict], prefix: bytes = b"") -> bytes:
    """A ZIP written field by field, for the malformed archives zipfile will not write.

    Each member is a dict with "name" and "data" (the uncompressed bytes) and
    optionally: "method" (0 stored or 8 deflated, the default), "flags" (0x800,
    a UTF-8 name, by default; bit 0 marks it encrypted), "payload" (the
    compressed bytes, instead of compressing "data"), "usize"/"crc" (what the
    headers declare, instead of the truth), "local_name" (a local header that
    disagrees with the directory), "cd_extra" (a central directory extra
    field), "same_as" (the index of an earlier member whose local header and
    data this directory entry reuses: an overlap), "unlisted" (a local entry
    the directory does not list). `prefix` goes before the archive, whose
    offsets then count from its own start, as in an appended ZIP.
    """
    body, central, written = bytearray(), bytearray(), []
    for m in members:
        if "same_as" in m:
            ref = written[m["same_as"]]
            name = m.get("name", ref["name"]).encode()
            offset, payload, flags, method, crc, usize = (ref[k] for k in ("offset", "payload", "flags",
                                                                            "method", "crc", "usize"))
        else:
            data, method, flags = m.get("data", b""), m.get("method", 8), m.get("flags", 0x800)
            payload = m.get("payload")
            if payload is None:
                payload = _deflate(data) if method == 8 else data
            crc, usize = m.get("crc", zlib.crc32(data)), m.get("usize", len(data))
            name, local_name = m["name"].encode(), m.get("local_name", m["name"]).encode()
            offset = len(body)
            body += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, flags, method, 0, 0x21, crc,
                                len(payload), usize, len(local_name), 0) + local_name + payload
        written.append({"name": m.get("name", ""), "offset": offset, "payload": payload, "flags": flags,
                        "method": method, "crc": crc, "usize": usize})
        if m.get("unlisted"):
            continue
        extra = m.get("cd_extra", b"")
        central += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, flags, method, 0, 0x21, crc,
                               len(payload), usize, len(name), len(extra), 0, 0, 0, 0o644 << 16, offset)
        central += name + extra
    count = sum(1 for m in members if not m.get("unlisted"))
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, count, count, len(central), len(body), 0)
    return prefix + bytes(body) + bytes(central) + end


def _deflate(data: bytes) -> bytes:
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    return co.compress(data) + co.flush()


def encrypted_zip() -> bytes:
    """A ZipCrypto-encrypted member (flag bit 0): 12-byte header plus ciphertext, stored."""
    secret = b"quarterly numbers\n"
    cipher = hashlib.sha256(b"not really encrypted").digest()[:12 + len(secret)]
    return raw_zip([{"name": "numbers.xlsx", "method": 0, "flags": 0x801, "data": secret,
                     "payload": cipher}])


_MIB = 1 << 20


@functools.lru_cache(maxsize=None)
def zip_bomb(size: int = 1 << 30, declared: int | None = None) -> bytes:
    """One member of `size` zero bytes, deflated to about a thousandth: a real zip bomb.

    Built without compressing a gigabyte: after a full flush a deflate stream
    restarts from scratch, so a MiB of zeros compresses to the same block
    every time and the stream is that block repeated. `declared` is the size
    the headers claim (the truth by default; smaller is a bomb that lies).
    """
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = co.compress(bytes(_MIB)) + co.flush(zlib.Z_FULL_FLUSH)
    whole, rest = divmod(size, _MIB)
    payload = block * whole + co.compress(bytes(rest)) + co.flush()
    crc = 0
    for _ in range(whole):
        crc = zlib.crc32(bytes(_MIB), crc)
    crc = zlib.crc32(bytes(rest), crc)
    return raw_zip([{"name": "zeros.bin", "payload": payload, "crc": crc,
                     "usize": size if declared is None else declared}])


def overlap_zip(copies: int = 100, size: int = 16 * _MIB) -> bytes:
    """The overlap bomb: `copies` directory entries all pointing at one deflated member.

    Each entry looks like an honest member of `size` zero bytes; together they
    expand to copies * size from a file of a few KiB.
    """
    return raw_zip([{"name": "data.bin", "data": bytes(size)}] + [{"same_as": 0}] * (copies - 1))
