"""inspect/: sniff() names the bytes, judge() rules EMPTY > BLOCKED > SPOOFED > KEEP."""

from __future__ import annotations

import io
import re
import struct
import zipfile
import zlib
import pytest

from smtp_offload.inspect import (
    InspectPolicy, consistent, declared_base, file_extension, judge, looks_like_text, sniff,
)
from smtp_offload.model import Judgement, Verdict
from tests.support import samples
from tests.support.env import CORPORA, missing

KEEP, EMPTY, SPOOFED, BLOCKED = Verdict.KEEP, Verdict.EMPTY, Verdict.SPOOFED, Verdict.BLOCKED

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
ODT = "application/vnd.oasis.opendocument.text"
OLE = "application/x-ole-storage"
BINARY = bytes(range(256)) * 8  # NULs and control bytes throughout: clearly not text


# --- extra samples only these tests need ---------------------------------------

def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def apng() -> bytes:
    png = samples.png()
    ihdr_end = 8 + 12 + 13
    return png[:ihdr_end] + _chunk(b"acTL", struct.pack(">II", 1, 0)) + png[ihdr_end:]


def tiff() -> bytes:
    """1x1 8-bit grayscale little-endian TIFF."""
    entries = [(256, 3, 1, 1), (257, 3, 1, 1), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 0), (277, 3, 1, 1), (278, 3, 1, 1), (279, 4, 1, 1)]
    ifd_size = 2 + 12 * len(entries) + 4
    pixel_at = 8 + ifd_size
    ifd = struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        value = pixel_at if tag == 273 else value
        ifd += struct.pack("<HHI", tag, typ, count) + (
            struct.pack("<HH", value, 0) if typ == 3 else struct.pack("<I", value))
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00\x00\x00\x00" + b"\x80"


def msi() -> bytes:
    """samples.ole() with the Windows Installer CLSID on its root entry."""
    data = bytearray(samples.ole())
    root = 2 * 512  # header + FAT sector precede the directory (sector 1)
    data[root + 80:root + 96] = bytes.fromhex("84100c000000" "0000" "c000000000000046")
    return bytes(data)


def lnk() -> bytes:
    return bytes.fromhex("4c0000000114020000000000c000000000000046") + b"\x00" * 56


def truncated_docx() -> bytes:
    """A docx cut before its central directory: only local headers remain."""
    data = samples.docx()
    return data[:data.index(b"PK\x01\x02")]


def ods() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("mimetype", date_time=(1980, 1, 1, 0, 0, 0))
        zf.writestr(info, b"application/vnd.oasis.opendocument.spreadsheet")
        zf.writestr(zipfile.ZipInfo("content.xml", date_time=(1980, 1, 1, 0, 0, 0)), b"<x/>")
    return buf.getvalue()


def jar() -> bytes:
    return samples.zip_file({"META-INF/MANIFEST.MF": b"Manifest-Version: 1.0\r\n",
                             "com/example/Main.class": samples.java_class()})


# --- samples.py itself: deterministic and structurally valid --------------------

SAMPLE_BUILDERS = [name for name in samples.__all__ if name != "big_pdf"]


@pytest.mark.parametrize("name", SAMPLE_BUILDERS)
def test_samples_are_deterministic_and_non_empty(name):
    build = getattr(samples, name)
    first, second = build(), build()
    assert isinstance(first, bytes) and first
    assert first == second


@pytest.mark.parametrize("size", [0, 1000, 5000, 100_000, 1_000_000])
def test_big_pdf_is_deterministic_and_about_the_requested_size(size):
    data = samples.big_pdf(size)
    assert data == samples.big_pdf(size)
    assert len(data) >= len(samples.pdf())
    if size > len(samples.pdf()):
        assert abs(len(data) - size) <= 16


@pytest.mark.parametrize("data", [samples.pdf(), samples.big_pdf(20_000)], ids=["pdf", "big_pdf"])
def test_pdf_samples_have_a_correct_xref_table(data):
    assert data.startswith(b"%PDF-1.4") and data.rstrip().endswith(b"%%EOF")
    startxref = int(re.search(rb"startxref\s+(\d+)", data).group(1))
    assert data[startxref:startxref + 4] == b"xref"
    offsets = [int(m.group(1)) for m in re.finditer(rb"(\d{10}) 00000 n", data)]
    assert offsets
    for num, off in enumerate(offsets, start=1):
        assert data[off:].startswith(b"%d 0 obj" % num)


def test_png_sample_chunks_have_valid_crcs():
    data = samples.png()
    pos, kinds = 8, []
    while pos < len(data):
        length, = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        crc, = struct.unpack_from(">I", data, pos + 8 + length)
        assert crc == zlib.crc32(kind + body)
        kinds.append(kind)
        pos += 12 + length
    assert kinds == [b"IHDR", b"IDAT", b"IEND"]
    assert len(zlib.decompress(data[41:41 + struct.unpack_from(">I", data, 33)[0]])) == 2 * (1 + 2 * 3)


def test_jpeg_sample_is_a_complete_segment_chain():
    data = samples.jpeg()
    assert data[:4] == b"\xff\xd8\xff\xe0" and data[6:11] == b"JFIF\x00" and data.endswith(b"\xff\xd9")
    pos, markers = 2, []
    while data[pos + 1] != 0xDA:  # walk segments up to start-of-scan
        markers.append(data[pos + 1])
        pos += 2 + struct.unpack_from(">H", data, pos + 2)[0]
    assert markers == [0xE0, 0xDB, 0xC0, 0xC4, 0xC4]


@pytest.mark.parametrize("name", ["zip_file", "docx", "xlsx", "pptx", "odt", "epub"])
def test_zip_samples_are_readable_archives(name):
    with zipfile.ZipFile(io.BytesIO(getattr(samples, name)())) as zf:
        assert zf.testzip() is None
        assert zf.namelist()


def test_zip_file_takes_members():
    with zipfile.ZipFile(io.BytesIO(samples.zip_file({"a.txt": b"A", "b/c.bin": b"\x00"}))) as zf:
        assert zf.namelist() == ["a.txt", "b/c.bin"] and zf.read("b/c.bin") == b"\x00"


def test_ole_sample_is_a_compound_file_of_whole_sectors():
    data = samples.ole()
    assert data[:8] == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
    assert len(data) >= 1024 and len(data) % 512 == 0
    assert data[1024:1024 + 20] == "Root Entry".encode("utf-16-le")


def test_pe_sample_points_at_a_pe_signature():
    data = samples.pe_exe()
    e_lfanew, = struct.unpack_from("<I", data, 0x3C)
    assert data[:2] == b"MZ" and data[e_lfanew:e_lfanew + 4] == b"PE\x00\x00"
    assert struct.unpack_from("<H", data, e_lfanew + 4)[0] == 0x8664


# --- sniff ------------------------------------------------------------------------

SNIFF_CASES = [
    ("pdf", samples.pdf, "application/pdf", "pdf"),
    ("big_pdf", lambda: samples.big_pdf(300_000), "application/pdf", "pdf"),
    ("png", samples.png, "image/png", "png"),
    ("jpeg", samples.jpeg, "image/jpeg", "jpg"),
    ("gif", samples.gif, "image/gif", "gif"),
    ("zip", samples.zip_file, "application/zip", "zip"),
    ("docx", samples.docx, DOCX, "docx"),
    ("xlsx", samples.xlsx, XLSX, "xlsx"),
    ("pptx", samples.pptx, PPTX, "pptx"),
    ("odt", samples.odt, ODT, "odt"),
    ("ods", ods, "application/vnd.oasis.opendocument.spreadsheet", "ods"),
    ("epub", samples.epub, "application/epub+zip", "epub"),
    ("jar", jar, "application/java-archive", "jar"),
    ("truncated_docx", truncated_docx, DOCX, "docx"),
    ("ole", samples.ole, OLE, None),
    ("msi", msi, "application/x-msi", "msi"),
    ("pe_exe", samples.pe_exe, "application/x-msdownload", "exe"),
    ("elf", samples.elf, "application/x-executable", None),
    ("macho", samples.macho, "application/x-mach-binary", None),
    ("macho_fat", samples.macho_fat, "application/x-mach-binary", None),
    ("java_class", samples.java_class, "application/java-vm", "class"),
    ("lnk", lnk, "application/x-ms-shortcut", "lnk"),
    ("shell_script", samples.shell_script, "text/x-shellscript", "sh"),
    ("text", samples.text, "text/plain", "txt"),
    ("csv", samples.csv, "text/plain", "txt"),
    ("ics", samples.ics, "text/plain", "txt"),
    ("vcard", samples.vcard, "text/plain", "txt"),
    ("tiff", tiff, "image/tiff", "tif"),
    ("apng", apng, "image/apng", "apng"),
    ("empty", lambda: b"", "application/x-empty", None),
    ("binary", lambda: BINARY, "application/octet-stream", None),
]


@pytest.mark.parametrize("build,mime,ext", [c[1:] for c in SNIFF_CASES], ids=[c[0] for c in SNIFF_CASES])
def test_sniff_every_sample(build, mime, ext):
    assert sniff(build()) == (mime, ext)


MACHO_MAGICS = [b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe",
                b"\xca\xfe\xba\xbf"]


@pytest.mark.parametrize("magic", MACHO_MAGICS, ids=lambda m: m.hex())
def test_sniff_every_mach_o_magic(magic):
    assert sniff(magic + b"\x00\x00\x00\x07" + b"\x00" * 56)[0] == "application/x-mach-binary"


@pytest.mark.parametrize("major", [45, 52, 65])
def test_cafebabe_with_a_java_version_is_a_class_file(major):
    assert sniff(struct.pack(">IHH", 0xCAFEBABE, 0, major) + b"\x00" * 32) == ("application/java-vm", "class")


@pytest.mark.parametrize("script,mime", [
    (b"#!/bin/bash\necho hi\n", "text/x-shellscript"),
    (b"#! /bin/sh\nls\n", "text/x-shellscript"),
    (b"#!/usr/bin/env python3\nprint(1)\n", "text/x-python"),
    (b"#!/usr/bin/perl -w\nprint 1;\n", "text/x-perl"),
    (b"#!/usr/bin/env node\nconsole.log(1)\n", "text/javascript"),
    (b"\xef\xbb\xbf#!/bin/sh\nls\n", "text/x-shellscript"),
    (b"#!/opt/tool/bin/frobnicate\nx\n", "text/x-script"),
])
def test_sniff_shebang_scripts(script, mime):
    assert sniff(script)[0] == mime


@pytest.mark.parametrize("data", [
    b"#!AMR\n" + b"not a script",
    b"# !/bin/sh is how scripts start\n",
    b"Hashbang #!/bin/sh in the middle\n",
])
def test_sniff_not_a_shebang(data):
    assert sniff(data)[0] != "text/x-shellscript"


def test_sniff_pdf_after_a_little_leading_junk():
    data = b"\r\nsome preamble junk\r\n" * 10 + samples.pdf()
    assert sniff(data) == ("application/pdf", "pdf")


def test_sniff_pdf_header_beyond_1024_bytes_is_not_pdf():
    data = b"x" * 1100 + samples.pdf()
    assert sniff(data)[0] != "application/pdf"


def test_sniff_text_mentioning_the_pdf_header_stays_text():
    assert sniff(b"Every file starts with %PDF-1.7, see the spec.\n")[0] == "text/plain"


@pytest.mark.parametrize("data", [
    b"MZ is the start of my note, nothing more.\n",
    b"MZ" + b"\x00" * 62,  # e_lfanew 0: no PE header
    b"MZ" + b"\x00" * 58 + struct.pack("<I", 10_000),  # e_lfanew past the end
    b"MZ" + b"\x00" * 58 + struct.pack("<I", 0x40) + b"XX\x00\x00" + b"\x00" * 64,  # no signature there
    b"MZ is the start of this longer note, which runs past the DOS header size.\n" * 3,
])
def test_sniff_mz_alone_is_not_an_executable(data):
    assert sniff(data)[0] != "application/x-msdownload"


def test_sniff_pe_dll_and_ne_executables():
    pe = bytearray(samples.pe_exe())
    e = struct.unpack_from("<I", pe, 0x3C)[0]
    struct.pack_into("<H", pe, e + 22, 0x2022)  # IMAGE_FILE_DLL
    assert sniff(bytes(pe)) == ("application/x-msdownload", "dll")
    ne = bytearray(samples.pe_exe())
    ne[e:e + 4] = b"NE\x05\x0a"
    assert sniff(bytes(ne))[0] == "application/x-msdownload"


@pytest.mark.parametrize("data", [
    "Grüße aus Köln, ça va? Ελληνικά 日本語\n".encode("utf-8"),
    "βροχή στην Αθήνα σήμερα\n".encode("utf-8"),  # starts with the brotli "magic"
    b"BZh is how bzip2 starts, but this is a sentence.\n",
    b"ID3 tags are in MP3 files; this is text.\n",
    "Grüße aus Köln\r\n".encode("cp1252") * 20,
    "\ufeffunicode with BOM\r\n".encode("utf-16-le"),
    "unicode big endian with BOM\n".encode("utf-16"),
    "no BOM, little endian, exported by Windows\r\n".encode("utf-16-le") * 4,
    b"tabs\tand form\x0cfeeds and \x1b[1mansi\x1b[0m\r\n",
    b"DOS text with an end-of-file marker" + b" padding" * 10 + b"\x1a",
])
def test_sniff_plausible_text(data):
    assert looks_like_text(data)
    assert sniff(data) == ("text/plain", "txt")


@pytest.mark.parametrize("data", [
    b"text with a \x00 NUL byte",
    bytes(range(1, 32)) * 10,  # control characters, no NUL
    b"\xff\xfe" + b"\x00\xd8" * 8,  # UTF-16 BOM followed by broken surrogates
    samples.text(70_000) + BINARY,  # text header, binary tail
])
def test_sniff_binary_is_not_text(data):
    assert not looks_like_text(data)
    assert sniff(data) == ("application/octet-stream", None)


def test_sniff_long_utf8_text_split_mid_character_at_the_tail_window():
    data = ("é" * 40_000).encode("utf-8") + b"x"  # tail window starts inside a character
    assert sniff(data) == ("text/plain", "txt")


def test_sniff_long_text_is_text():
    assert sniff(samples.text(500_000)) == ("text/plain", "txt")


# --- judge: EMPTY -------------------------------------------------------------------

@pytest.mark.parametrize("declared,name", [
    (None, None), ("text/plain", "a.txt"), ("application/pdf", "a.pdf"), (None, "evil.exe"),
])
def test_empty_file_is_empty_whatever_it_claims(declared, name):
    j = judge(b"", declared, name)
    assert j.verdict is EMPTY
    assert j.reason == "file is empty (0 bytes)"


def test_empty_wins_over_an_allow_list():
    assert judge(b"", None, None, InspectPolicy(allowed_types=frozenset({"image/*"}))).verdict is EMPTY


# --- judge: BLOCKED -----------------------------------------------------------------

EXECUTABLES = [
    ("pe_exe", samples.pe_exe, "Windows executable"),
    ("elf", samples.elf, "ELF executable"),
    ("macho", samples.macho, "Mach-O executable"),
    ("macho_fat", samples.macho_fat, "Mach-O executable"),
    ("java_class", samples.java_class, "Java class file"),
    ("shell_script", samples.shell_script, "shell script"),
    ("msi", msi, "Windows Installer package"),
    ("lnk", lnk, "Windows shortcut"),
]


@pytest.mark.parametrize("build,label", [e[1:] for e in EXECUTABLES], ids=[e[0] for e in EXECUTABLES])
@pytest.mark.parametrize("declared,name", [
    (None, None), ("application/octet-stream", "tool.bin"), ("application/x-foo", "unknown.xyz"),
])
def test_executables_are_blocked(build, label, declared, name):
    j = judge(build(), declared, name)
    assert j.verdict is BLOCKED
    assert j.reason == f"executable files are not accepted ({label})"


@pytest.mark.parametrize("build,label", [e[1:] for e in EXECUTABLES if e[0] != "shell_script"],
                         ids=[e[0] for e in EXECUTABLES if e[0] != "shell_script"])
@pytest.mark.parametrize("declared,name,claimed", [
    (None, "invoice.pdf", "PDF"),
    ("application/pdf", "invoice", "PDF"),
    ("image/jpeg", "photo.jpg", "JPEG image"),
    (None, "notes.txt", "plain text"),
    ("application/msword", None, "Word document"),
])
def test_disguised_executables_are_blocked_not_spoofed(build, label, declared, name, claimed):
    j = judge(build(), declared, name)
    assert j.verdict is BLOCKED
    assert j.reason == f"{label[0].upper()}{label[1:]} disguised as {claimed}"


def test_pe_named_invoice_pdf_reason():
    assert judge(samples.pe_exe(), "application/pdf", "invoice.pdf").reason == "Windows executable disguised as PDF"


def test_script_named_txt_is_blocked_as_executable_not_as_disguise():
    j = judge(samples.shell_script(), "text/plain", "notes.txt")
    assert (j.verdict, j.reason) == (BLOCKED, "executable files are not accepted (shell script)")


@pytest.mark.parametrize("name,ext", [
    ("evil.exe", "exe"), ("EVIL.EXE", "exe"), ("evil.exe.", "exe"), ("evil.exe ", "exe"),
    ("evil.exe. . ", "exe"), ("C:\\Users\\x\\evil.exe", "exe"), ("../../evil.exe", "exe"),
    ("run.bat", "bat"), ("run.cmd", "cmd"), ("a.scr", "scr"),
    ("a.js", "js"), ("a.vbs", "vbs"), ("a.ps1", "ps1"), ("a.hta", "hta"), ("a.lnk", "lnk"),
    ("a.jar", "jar"), ("a.msi", "msi"), ("a.reg", "reg"), ("a.sh", "sh"), ("a.wsf", "wsf"),
    ("a.cpl", "cpl"), ("a.pif", "pif"), ("a.com", "com"),
])
@pytest.mark.parametrize("build", [samples.text, samples.pdf, samples.png], ids=["text", "pdf", "png"])
def test_blocked_extensions_whatever_the_content(name, ext, build):
    j = judge(build(), "application/octet-stream", name)
    assert j.verdict is BLOCKED
    assert j.reason == f"files with the .{ext} extension are not accepted"


@pytest.mark.parametrize("build", [samples.text, samples.pdf, samples.png], ids=["text", "pdf", "png"])
def test_blocked_extension_reason_names_a_double_extension(build):
    j = judge(build(), "application/octet-stream", "invoice.pdf.exe")
    assert j.verdict is BLOCKED
    assert j.reason == "files with the .exe extension are not accepted (double extension .pdf.exe)"
    plain = judge(build(), "application/octet-stream", "invoice.pdf.exe", InspectPolicy(suspicious_names=False))
    assert plain.reason == "files with the .exe extension are not accepted"


@pytest.mark.parametrize("name", ["exe.pdf", "a.exe.pdf", "my.exe/report.pdf", "a.exe_", "a.executable"])
def test_exe_that_is_not_the_last_extension_is_not_blocked(name):
    assert judge(samples.pdf(), "application/pdf", name).verdict is not BLOCKED


def test_blocked_extension_outranks_spoof():
    assert judge(samples.png(), "image/jpeg", "photo.exe").verdict is BLOCKED


def test_allow_list_families_and_aliases():
    images = InspectPolicy(allowed_types=frozenset({"image/*"}))
    for build in (samples.png, samples.jpeg, samples.gif, tiff):
        assert judge(build(), None, None, images).verdict is KEEP
    j = judge(samples.pdf(), "application/pdf", "a.pdf", images)
    assert j.verdict is BLOCKED and j.reason == "content is a PDF, which is not an accepted file type"
    jpg_alias = InspectPolicy(allowed_types=frozenset({"image/jpg"}))
    assert judge(samples.jpeg(), None, None, jpg_alias).verdict is KEEP
    assert judge(samples.png(), None, None, jpg_alias).verdict is BLOCKED


def test_allow_list_admits_what_cannot_be_told_apart():
    assert judge(samples.ole(), None, "a.doc", InspectPolicy(allowed_types=frozenset({"application/msword"}))).verdict is KEEP
    assert judge(samples.csv(), None, "a.csv", InspectPolicy(allowed_types=frozenset({"text/csv"}))).verdict is KEEP
    assert judge(samples.docx(), None, None, InspectPolicy(allowed_types=frozenset({"application/zip"}))).verdict is KEEP


def test_empty_allow_list_blocks_everything():
    policy = InspectPolicy(allowed_types=frozenset())
    for build in (samples.pdf, samples.png, samples.text):
        assert judge(build(), None, None, policy).verdict is BLOCKED


def test_allow_list_with_category():
    policy = InspectPolicy(allowed_types=frozenset({"archive"}))
    assert judge(samples.zip_file(), None, "a.zip", policy).verdict is KEEP
    assert judge(samples.pdf(), None, "a.pdf", policy).verdict is BLOCKED


def test_blocked_types_category_type_family_and_alias():
    archive = InspectPolicy(blocked_types=frozenset({"archive"}))
    j = judge(samples.zip_file(), "application/zip", "a.zip", archive)
    assert (j.verdict, j.reason) == (BLOCKED, "files of this type are not accepted (ZIP archive)")
    assert judge(samples.pe_exe(), None, None, archive).verdict is KEEP  # executable no longer listed
    assert judge(samples.gif(), None, None, InspectPolicy(blocked_types=frozenset({"image/*"}))).verdict is BLOCKED
    alias = InspectPolicy(blocked_types=frozenset({"Application/X-Zip-Compressed"}))
    assert judge(samples.zip_file(), None, None, alias).verdict is BLOCKED


def test_blocked_types_are_strict_about_what_the_bytes_are():
    # A zip block is not a docx block, and a Word block cannot tell an OLE2 file is Word.
    assert judge(samples.docx(), None, None, InspectPolicy(blocked_types=frozenset({"application/zip"}))).verdict is KEEP
    assert judge(samples.ole(), None, None, InspectPolicy(blocked_types=frozenset({"application/msword"}))).verdict is KEEP


def test_without_blocking_a_disguised_executable_is_still_spoofed():
    j = judge(samples.pe_exe(), "application/pdf", "invoice.pdf", InspectPolicy(blocked_types=frozenset()))
    assert j.verdict is SPOOFED
    assert j.reason == "content is a Windows executable but it was declared as application/pdf"


def test_policy_normalises_extensions_and_types():
    policy = InspectPolicy(blocked_types=["EXECUTABLE"], blocked_extensions=[".PDF", " Zip "])
    assert policy.blocked_extensions == frozenset({"pdf", "zip"})
    assert policy.blocked_types == frozenset({"executable"})
    assert judge(samples.pdf(), None, "a.pdf", policy).verdict is BLOCKED
    # .exe is no longer blocked, but it is still a claim the PDF bytes contradict.
    assert judge(samples.pdf(), None, "a.exe", policy).verdict is SPOOFED


def test_policy_accepts_a_lone_string():
    assert InspectPolicy(allowed_types="image/*").allowed_types == frozenset({"image/*"})


def test_disguise_named_after_an_unnamed_claim():
    assert judge(samples.elf(), None, "tune.mid").reason == "ELF executable disguised as .mid file"
    assert judge(samples.elf(), "audio/midi", None).reason == "ELF executable disguised as audio/midi"


def test_default_policy():
    p = InspectPolicy()
    assert p.blocked_types == frozenset({"executable", "disk-image", "onenote"})
    assert {"exe", "scr", "com", "pif", "bat", "cmd", "ps1", "vbs", "vbe", "js", "jse", "wsf", "wsh",
            "hta", "msi", "lnk", "cpl", "jar", "reg", "sh"} <= p.blocked_extensions
    assert all(e == e.lower() and not e.startswith(".") for e in p.blocked_extensions)
    assert p.allowed_types is None


# --- judge: SPOOFED -------------------------------------------------------------------

SPOOFS = [
    ("jpeg declared png", samples.jpeg, "image/png", None,
     "content is a JPEG image but it was declared as image/png"),
    ("png named jpg", samples.png, "image/png", "photo.jpg",
     "content is a PNG image but the file name ends in .jpg"),
    ("zip named pdf", samples.zip_file, None, "report.pdf",
     "content is a ZIP archive but the file name ends in .pdf"),
    ("zip declared pdf", samples.zip_file, "application/pdf", "report.zip",
     "content is a ZIP archive but it was declared as application/pdf"),
    ("binary named txt", lambda: BINARY, None, "notes.txt",
     "content is unrecognised binary data but the file name ends in .txt"),
    ("binary declared text/plain", lambda: BINARY, "text/plain", None,
     "content is unrecognised binary data but it was declared as text/plain"),
    ("pdf declared text/plain", samples.pdf, "text/plain; charset=utf-8", "a.pdf",
     "content is a PDF but it was declared as text/plain"),
    ("png named txt", samples.png, None, "image.txt",
     "content is a PNG image but the file name ends in .txt"),
    ("text declared png", samples.text, "image/png", None,
     "content is plain text but it was declared as image/png"),
    ("text named pdf", samples.text, "application/octet-stream", "error-page.pdf",
     "content is plain text but the file name ends in .pdf"),
    ("gif declared jpeg alias", samples.gif, "image/jpg", None,
     "content is a GIF image but it was declared as image/jpg"),
    ("ole named pdf", samples.ole, None, "a.pdf",
     "content is a Microsoft Office (OLE2) file but the file name ends in .pdf"),
    ("docx named xlsx", samples.docx, None, "budget.xlsx",
     "content is a Word document but the file name ends in .xlsx"),
    ("docx declared pdf", samples.docx, "application/pdf", "a.docx",
     "content is a Word document but it was declared as application/pdf"),
    ("pdf named docx", samples.pdf, None, "a.docx",
     "content is a PDF but the file name ends in .docx"),
    ("text named docx", samples.text, None, "a.docx",
     "content is plain text but the file name ends in .docx"),
    ("binary declared csv", lambda: BINARY, "text/csv", "a.csv",
     "content is unrecognised binary data but it was declared as text/csv"),
    ("png declared calendar", samples.png, "text/calendar", None,
     "content is a PNG image but it was declared as text/calendar"),
    ("binary named vcf", lambda: BINARY, None, "card.vcf",
     "content is unrecognised binary data but the file name ends in .vcf"),
    ("jpeg declared html", samples.jpeg, "text/html", None,
     "content is a JPEG image but it was declared as text/html"),
    ("binary declared json", lambda: BINARY, "application/json", None,
     "content is unrecognised binary data but it was declared as application/json"),
    ("zip declared xml", samples.zip_file, "application/xml", None,
     "content is a ZIP archive but it was declared as application/xml"),
    ("binary named eml", lambda: BINARY, "message/rfc822", "fwd.eml",
     "content is unrecognised binary data but it was declared as message/rfc822"),
    ("binary declared png", lambda: BINARY, "image/png", "a.png",
     "content is unrecognised binary data but it was declared as image/png"),
    ("binary named pdf", lambda: BINARY, None, "statement.pdf",
     "content is unrecognised binary data but the file name ends in .pdf"),
    ("pdf declared with params and case", samples.pdf, 'IMAGE/PNG; name="a.png"', None,
     "content is a PDF but it was declared as image/png"),
    ("png named jpg with path", samples.png, None, "C:\\Users\\x\\photo.JPG",
     "content is a PNG image but the file name ends in .jpg"),
    ("png named jpg trailing dot", samples.png, None, "../photo.jpg. ",
     "content is a PNG image but the file name ends in .jpg"),
]


@pytest.mark.parametrize("build,declared,name,reason", [s[1:] for s in SPOOFS], ids=[s[0] for s in SPOOFS])
def test_spoofed(build, declared, name, reason):
    j = judge(build(), declared, name)
    assert j.verdict is SPOOFED
    assert j.reason == reason


@pytest.mark.parametrize("declared", [None, "", "application/octet-stream", "application/unknown",
                                      "binary/octet-stream", "Application/Octet-Stream; name=x.jpg"])
def test_claimless_declared_types_leave_only_the_extension_to_check(declared):
    assert judge(samples.png(), declared, "a.png").verdict is KEEP
    assert judge(samples.png(), declared, None).verdict is KEEP
    j = judge(samples.png(), declared, "a.jpg")
    assert j.verdict is SPOOFED and j.reason.endswith("ends in .jpg")


def test_declared_mismatch_is_reported_before_the_name_mismatch():
    j = judge(samples.png(), "image/gif", "a.jpg")
    assert j.reason == "content is a PNG image but it was declared as image/gif"


# --- judge: not spoofs (KEEP) -----------------------------------------------------------

NOT_SPOOFS = [
    # aliases
    ("image/jpg", samples.jpeg, "image/jpg", "a.jpg"),
    ("image/pjpeg", samples.jpeg, "image/pjpeg", "a.jpg"),
    ("image/x-png", samples.png, "image/x-png", "a.png"),
    ("application/x-pdf", samples.pdf, "application/x-pdf", "a.pdf"),
    ("application/x-zip-compressed", samples.zip_file, "application/x-zip-compressed", "a.zip"),
    ("text/x-vcard", samples.vcard, "text/x-vcard", "a.vcf"),
    ("text/vcard", samples.vcard, "text/vcard", "contact.vcard"),
    ("text/calendar", samples.ics, "text/calendar; method=REQUEST", "invite.ics"),
    ("application/ics", samples.ics, "application/ics", "invite.ics"),
    ("image/tif", tiff, "image/tif", "scan.tif"),
    ("tiff ext", tiff, "image/tiff", "scan.tiff"),
    ("apng named png", apng, "image/png", "anim.png"),
    # JPEG extensions
    (".jfif", samples.jpeg, "image/jpeg", "a.jfif"),
    (".jpe", samples.jpeg, "image/jpeg", "a.jpe"),
    (".jpeg", samples.jpeg, "image/jpeg", "a.jpeg"),
    (".JPG", samples.jpeg, "image/jpeg", "IMG_0001.JPG"),
    # OOXML is zip
    ("docx declared zip", samples.docx, "application/zip", "a.docx"),
    ("docx named zip", samples.docx, "application/x-zip-compressed", "a.zip"),
    ("xlsx declared ms-excel", samples.xlsx, "application/vnd.ms-excel", "a.xlsx"),
    ("docx declared msword", samples.docx, "application/msword", "a.docx"),
    ("xlsx named xls", samples.xlsx, None, "old-name.xls"),
    ("pptx declared zip", samples.pptx, "application/zip", "a.pptx"),
    ("docx named docm", samples.docx, None, "macro.docm"),
    ("odt declared zip", samples.odt, "application/zip", "a.odt"),
    ("epub named zip", samples.epub, None, "book.zip"),
    ("zip named docx", samples.zip_file, None, "a.docx"),
    ("zip named xlsx", samples.zip_file, "application/octet-stream", "a.xlsx"),
    ("zip declared docx", samples.zip_file, DOCX, "a.docx"),
    # OLE2 containers
    ("ole named docx", samples.ole, DOCX, "protected.docx"),
    ("ole named xlsx", samples.ole, None, "protected.xlsx"),
    ("ole named doc", samples.ole, "application/msword", "a.doc"),
    ("ole named xls", samples.ole, "application/vnd.ms-excel", "a.xls"),
    ("ole named ppt", samples.ole, "application/vnd.ms-powerpoint", "a.ppt"),
    ("ole named msg", samples.ole, "application/vnd.ms-outlook", "a.msg"),
    ("ole octet-stream", samples.ole, "application/octet-stream", "a.msg"),
    # text that Office and Outlook mislabel
    ("csv as ms-excel", samples.csv, "application/vnd.ms-excel", "report.csv"),
    ("csv as octet-stream", samples.csv, "application/octet-stream", "report.csv"),
    ("csv as text/csv", samples.csv, "text/csv", "report.csv"),
    ("csv as text/comma-separated-values", samples.csv, "text/comma-separated-values", "r.csv"),
    ("tsv named xls", samples.csv, "application/vnd.ms-excel", "export.xls"),
    ("text/plain named log", samples.text, "text/plain", "server.log"),
    ("text/plain named csv", samples.csv, "text/plain", "data.csv"),
    ("text/plain named md", samples.text, "text/plain", "README.md"),
    ("text/plain named ini", samples.text, "text/plain; charset=us-ascii", "settings.ini"),
    ("text/plain named json", b'{"a": 1}\n', "text/plain", "data.json"),
    ("eml text", samples.text, "message/rfc822", "forwarded.eml"),
    ("eml octet-stream", samples.text, "application/octet-stream", "forwarded.eml"),
    ("html", b"<html><body>Hello</body></html>\n", "text/html; charset=utf-8", "page.html"),
    ("svg", b'<svg xmlns="http://www.w3.org/2000/svg"/>\n', "image/svg+xml", "logo.svg"),
    ("utf-16 csv", "a,b\r\n1,2\r\n".encode("utf-16"), "text/csv", "u16.csv"),
    # what we cannot know
    ("unknown declared type on pdf", samples.pdf, "application/x-foo", "a.pdf"),
    ("unknown declared type on png", samples.png, "application/x-foo", None),
    ("unknown declared type on text", samples.text, "application/x-foo", "a.foo"),
    ("unknown extension on pdf", samples.pdf, None, "a.xyz"),
    ("unknown binary named dat", lambda: BINARY, None, "blob.dat"),
    ("unknown binary no claims", lambda: BINARY, None, None),
    ("pkcs7 signature", lambda: BINARY, "application/pkcs7-signature", "smime.p7s"),
    ("no extension", samples.pdf, None, "README"),
    ("dotfile", samples.text, None, ".bashrc"),
    # case
    ("upper-case everything", samples.pdf, "APPLICATION/PDF", "A.PDF"),
    ("big pdf", lambda: samples.big_pdf(200_000), "application/pdf", "big.pdf"),
    ("rtf named doc", b"{\\rtf1\\ansi Hello}\n", "application/msword", "letter.doc"),
    ("rtf as text/rtf", b"{\\rtf1\\ansi Hello}\n", "text/rtf", "letter.rtf"),
]


@pytest.mark.parametrize("build,declared,name", [n[1:] for n in NOT_SPOOFS], ids=[n[0] for n in NOT_SPOOFS])
def test_not_spoofed(build, declared, name):
    data = build() if callable(build) else build
    j = judge(data, declared, name)
    assert j.verdict is KEEP, j.reason


# A path in a name is disarmed, not held against the file (browsers send "C:\\fakepath\\x"):
# only the base name counts, with the name checks on or off.
@pytest.mark.parametrize("name", ["C:\\x\\a.pdf", "../a.pdf", "C:\\pics.png\\report.pdf"])
def test_paths_are_ignored_when_name_checks_are_off(name):
    j = judge(samples.pdf(), "application/pdf", name, InspectPolicy(suspicious_names=False))
    assert j.verdict is KEEP, j.reason
    j = judge(samples.pdf(), "application/pdf", name)
    assert j.verdict is KEEP, j.reason


def test_keep_reasons():
    assert judge(samples.pdf(), "application/pdf", "a.pdf").reason == \
        "content is a PDF, consistent with how it is labelled"
    assert judge(BINARY, None, None).reason == \
        "content is unrecognised binary data; nothing contradicts its type or name"


def test_flanker_wav_declared_as_wav_is_kept_but_as_png_spoofed():
    wav = b"RIFF" + struct.pack("<I", 36) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, 8000, 8000, 1, 8) \
        + b"data" + struct.pack("<I", 0)
    assert sniff(wav)[0] == "audio/x-wav"
    assert judge(wav, "audio/wav", "a.wav").verdict is KEEP
    assert judge(wav, "image/png", "a.png").verdict is SPOOFED


# --- judge: general properties ------------------------------------------------------------

ALL_DATA = [c[1]() for c in SNIFF_CASES] + [BINARY]
CLAIMS = [(None, None), ("application/pdf", "a.pdf"), ("text/plain", "a.txt"), ("image/png", "a.png"),
          ("application/octet-stream", "a.zip"), ("application/x-foo", "a.exe")]


@pytest.mark.parametrize("declared,name", CLAIMS)
def test_judgement_shape_and_never_offload(declared, name):
    for data in ALL_DATA:
        j = judge(data, declared, name)
        assert isinstance(j, Judgement)
        assert j.verdict in (KEEP, EMPTY, SPOOFED, BLOCKED)
        assert (j.detected_type, j.detected_ext) == sniff(data)
        assert j.reason and len(j.reason) < 120 and "\n" not in j.reason


def test_reason_never_contains_file_bytes():
    marker = b"SECRET-MARKER-1234"
    for data, declared, name in [(marker * 20, "image/png", None), (marker + BINARY, "text/plain", None),
                                 (marker * 20, None, "x.exe"), (marker * 20, None, None)]:
        assert "SECRET-MARKER" not in judge(data, declared, name).reason


def test_reason_caps_a_long_declared_type():
    j = judge(BINARY, "text/" + "x" * 500, None)
    assert j.verdict is SPOOFED and len(j.reason) < 120 and j.reason.endswith("...")


def test_precedence_empty_blocked_spoofed_keep():
    assert judge(b"", "image/png", "a.exe").verdict is EMPTY
    assert judge(samples.pe_exe(), "image/png", "a.png").verdict is BLOCKED
    assert judge(samples.jpeg(), "image/png", "a.png").verdict is SPOOFED
    assert judge(samples.png(), "image/png", "a.png").verdict is KEEP


def test_judge_default_policy_is_the_default_inspect_policy():
    custom = InspectPolicy(blocked_types=frozenset(), blocked_extensions=frozenset())
    assert judge(samples.pe_exe(), None, "a.exe").verdict is BLOCKED
    assert judge(samples.pe_exe(), None, "a.exe", custom).verdict is KEEP


# --- helpers -------------------------------------------------------------------------------

@pytest.mark.parametrize("name,ext", [
    (None, None), ("", None), ("README", None), ("a.PDF", "pdf"), ("a.tar.gz", "gz"),
    ("evil.exe.", "exe"), ("evil.exe  ", "exe"), ("C:\\dir.d\\file", None), ("../x/a.Jpg", "jpg"),
    ("a.", None), (".", None), ("archive.zip\\", "zip"),
])
def test_file_extension(name, ext):
    assert file_extension(name) == ext


@pytest.mark.parametrize("value,base", [
    (None, None), ("", None), ("image/PNG", "image/png"), ('text/plain; charset="utf-8"', "text/plain"),
    (" Application/PDF ;name=a.pdf", "application/pdf"), ("image/png name=a.png", "image/png"),
    ("pdf", None), ("/", None), ("image/", None),
])
def test_declared_base(value, base):
    assert declared_base(value) == base


@pytest.mark.parametrize("detected,claim,expected", [
    ("image/jpeg", "image/jpg", True),
    ("image/jpeg", "image/png", False),
    ("text/plain", "text/csv", True),
    ("text/plain", "application/x-foo", None),
    ("application/octet-stream", "image/png", False),
    ("application/octet-stream", "application/x-foo", None),
    ("application/octet-stream", "text/plain", False),
    (OLE, XLSX, True),
    ("application/zip", DOCX, True),
    (DOCX, "application/zip", True),
    (DOCX, XLSX, False),
    ("application/pdf", "application/x-foo", None),
])
def test_consistent(detected, claim, expected):
    assert consistent(detected, claim) is expected


# --- real-world attachments -------------------------------------------------------------------

CORPUS = CORPORA / "flanker" / "attachments"
CORPUS_FILES = sorted(p for p in CORPUS.iterdir() if p.is_file()) if CORPUS.is_dir() else []
_DECLARED = {".png": "image/png", ".wav": "audio/wav", ".jpg": "image/jpeg", ".gif": "image/gif",
             ".pdf": "application/pdf", ".txt": "text/plain"}


@pytest.mark.parametrize("path", CORPUS_FILES or [None], ids=lambda p: p.name if p else "absent")
def test_corpus_attachment_is_recognised_and_kept_under_its_own_type(path):
    if path is None:
        missing(f"no corpus at {CORPUS} (../shared/corpora)")
    data = path.read_bytes()
    detected, _ = sniff(data)
    assert detected not in ("application/octet-stream", "application/x-empty")
    declared = _DECLARED.get(path.suffix.lower())
    j = judge(data, declared, path.name)
    assert j.verdict is KEEP, j.reason


PNG_FILES = [p for p in CORPUS_FILES if p.suffix.lower() == ".png"]


@pytest.mark.parametrize("path", PNG_FILES or [None], ids=lambda p: p.name if p else "absent")
def test_corpus_png_declared_image_png_is_kept(path):
    if path is None:
        missing(f"no PNG files in {CORPUS} (../shared/corpora)")
    data = path.read_bytes()
    assert sniff(data) == ("image/png", "png")
    assert judge(data, "image/png", path.name).verdict is KEEP
    assert judge(data, "image/jpeg", path.name).verdict is SPOOFED
