"""Claims whose format carries a signature must be met by the bytes; executables are known by structure.

Pure unit tests of sniff() and judge(). Every type in tables.SIGNATURE_TYPES has
a small genuine sample here that sniff() recognises consistently with it (so
the set holds only what can be positively recognised), and unrecognised bytes
under that claim are spoofed. Formats left out of the set, and claims nobody
can check, keep unrecognised bytes as before.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import struct
import zipfile

import pytest

from smtp_offload.inspect import InspectPolicy, consistent, judge, sniff
from smtp_offload.inspect import tables as T
from smtp_offload.model import Verdict
from tests.support import samples

KEEP, SPOOFED, BLOCKED = Verdict.KEEP, Verdict.SPOOFED, Verdict.BLOCKED
BINARY = bytes(range(256)) * 8  # NULs and control bytes throughout: no format, no text
PE = "application/x-msdownload"
ZERO = bytes(64)


# --- small genuine samples -------------------------------------------------------

def ftyp(major: bytes, *compatible: bytes) -> bytes:
    """An ISO base media file: an ftyp box naming brands, then a free box."""
    body = major + bytes(4) + b"".join(compatible)
    return struct.pack(">I", 8 + len(body)) + b"ftyp" + body + b"\x00\x00\x00\x08free" + ZERO


def riff(kind: bytes, chunk: bytes) -> bytes:
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + kind + chunk


def zipped(files: dict[str, bytes], stored_first: bool = False) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i, (name, data) in enumerate(files.items()):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED if stored_first and i == 0 else zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return buf.getvalue()


def odf(mime: str) -> bytes:
    return zipped({"mimetype": mime.encode(), "content.xml": b"<x/>"}, stored_first=True)


def msi() -> bytes:
    data = bytearray(samples.ole())
    data[2 * 512 + 80:2 * 512 + 96] = bytes.fromhex("84100c000000" "0000" "c000000000000046")
    return bytes(data)


def tiff() -> bytes:
    return b"II*\x00\x08\x00\x00\x00\x01\x00\x00\x01\x03\x00\x01\x00\x00\x00\x01\x00\x00\x00" + ZERO


# One builder per signature type: the proof that sniff() recognises it.
WORD_SAMPLE, EXCEL_SAMPLE, PPT_SAMPLE = samples.docx, samples.xlsx, samples.pptx
SIGNED: dict[str, object] = {
    "application/pdf": samples.pdf,
    "application/rtf": lambda: b"{\\rtf1\\ansi Hello}\n",
    "image/png": samples.png, "image/apng": samples.png, "image/jpeg": samples.jpeg, "image/gif": samples.gif,
    "image/webp": lambda: riff(b"WEBP", b"VP8 " + struct.pack("<I", 10) + bytes(10)),
    "image/tiff": tiff, "image/x-canon-cr2": lambda: b"II*\x00\x10\x00\x00\x00CR\x02\x00" + ZERO,
    "image/bmp": lambda: b"BM" + struct.pack("<IHHI", 58, 0, 0, 54) + struct.pack(
        "<IiiHHIIiiII", 40, 1, 1, 1, 24, 0, 4, 0, 0, 0, 0) + b"\x00\x00\xff\x00",
    "image/x-icon": lambda: b"\x00\x00\x01\x00\x01\x00\x01\x01\x00\x00\x01\x00\x20\x00" + ZERO,
    "image/vnd.adobe.photoshop": lambda: b"8BPS\x00\x01" + ZERO,
    "image/vnd.ms-photo": lambda: b"II\xbc\x01\x08\x00\x00\x00" + ZERO,
    "image/heic": lambda: ftyp(b"heic", b"mif1", b"heic"), "image/avif": lambda: ftyp(b"avif", b"mif1", b"miaf"),
    "video/mp4": lambda: ftyp(b"isom", b"isom", b"avc1"), "audio/mp4": lambda: ftyp(b"M4A ", b"M4A ", b"isom"),
    "video/x-m4v": lambda: ftyp(b"M4V ", b"M4V "), "video/3gpp": lambda: ftyp(b"3gp5", b"3gp5"),
    "video/3gpp2": lambda: ftyp(b"3g2a", b"3g2a"), "audio/3gpp": lambda: ftyp(b"3gp4", b"3gp4"),
    "application/mp4": lambda: ftyp(b"mp42", b"mp42"),
    **{t: (lambda: b"OggS\x00\x02" + ZERO) for t in (
        "audio/ogg", "video/ogg", "application/ogg", "audio/opus", "audio/vorbis")},
    **{t: (lambda: b"\x1a\x45\xdf\xa3\x93\x42\x82\x88matroska" + ZERO) for t in (
        "video/x-matroska", "audio/x-matroska")},
    **{t: (lambda: b"\x1a\x45\xdf\xa3\x9f\x42\x82\x84webm" + ZERO) for t in ("video/webm", "audio/webm")},
    **{t: (lambda: bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c") + ZERO) for t in (
        "video/x-ms-wmv", "video/x-ms-asf", "audio/x-ms-wma")},
    "audio/x-flac": lambda: b"fLaC\x00\x00\x00\x22" + ZERO,
    "audio/x-wav": lambda: riff(b"WAVE", b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, 8000, 8000, 1, 8)),
    "audio/amr": lambda: b"#!AMR\n" + b"\x3c\x00\x91\x17" * 16,
    "audio/x-aiff": lambda: b"FORM\x00\x00\x00\x4eAIFFCOMM\x00\x00\x00\x12" + ZERO,
    "audio/midi": lambda: b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x00\x60",
    "video/x-msvideo": lambda: riff(b"AVI ", b"LIST\x04\x00\x00\x00hdrl"),
    "video/x-flv": lambda: b"FLV\x01\x05\x00\x00\x00\x09" + ZERO,
    "font/woff": lambda: b"wOFF\x00\x01\x00\x00" + ZERO, "font/woff2": lambda: b"wOF2\x00\x01\x00\x00" + ZERO,
    "application/zip": samples.zip_file,
    "application/x-rar-compressed": lambda: b"Rar!\x1a\x07\x01\x00" + ZERO,
    "application/x-7z-compressed": lambda: b"7z\xbc\xaf\x27\x1c\x00\x04" + ZERO,
    "application/gzip": lambda: gzip.compress(b"hello", mtime=0),
    "application/x-bzip2": lambda: bz2.compress(b"hello"), "application/x-xz": lambda: lzma.compress(b"hello"),
    "application/zstd": lambda: b"\x28\xb5\x2f\xfd\x00\x58\x29\x00\x00hello",
    "application/vnd.ms-cab-compressed": lambda: b"MSCF\x00\x00\x00\x00" + ZERO,
    "application/x-lzip": lambda: b"LZIP\x01\x0c" + ZERO,
    "application/x-lzop": lambda: b"\x89LZO\x00\r\n\x1a\n" + ZERO,
    "application/x-rpm": lambda: b"\xed\xab\xee\xdb\x03\x00" + ZERO,
    "application/x-deb": lambda: b"!<arch>\ndebian-binary   " + ZERO,
    "application/x-sqlite3": lambda: b"SQLite format 3\x00\x10\x00" + ZERO,
    "application/wasm": lambda: b"\x00asm\x01\x00\x00\x00",
    "application/x-google-chrome-extension": lambda: b"Cr24\x03\x00\x00\x00" + ZERO,
    "application/x-ole-storage": samples.ole, "application/vnd.ms-outlook": samples.ole,
    "application/epub+zip": samples.epub,
    "application/java-archive": lambda: samples.zip_file({"META-INF/MANIFEST.MF": b"Manifest-Version: 1.0\r\n",
                                                          "a/Main.class": samples.java_class()}),
    **{t: WORD_SAMPLE for t in T.WORD - {"application/msword"}},
    **{t: EXCEL_SAMPLE for t in T.EXCEL - {"application/vnd.ms-excel"}},
    **{t: PPT_SAMPLE for t in T.POWERPOINT - {"application/vnd.ms-powerpoint"}},
    **{t: (lambda t=t: odf(t)) for t in T.ODF | {
        "application/vnd.oasis.opendocument.text-template",
        "application/vnd.oasis.opendocument.spreadsheet-template",
        "application/vnd.oasis.opendocument.presentation-template"}},
    PE: samples.pe_exe, "application/x-executable": samples.elf, "application/x-mach-binary": samples.macho,
    "application/x-msi": msi, "application/java-vm": samples.java_class, "application/x-ms-shortcut": samples.lnk,
    "application/onenote": samples.onenote, "application/x-iso9660-image": samples.iso,
    "application/x-vhd": samples.vhd, "application/x-vhdx": samples.vhdx,
}


def test_every_signature_type_has_a_sample_here():
    assert set(SIGNED) == set(T.SIGNATURE_TYPES)
    assert all(t == T.ALIASES.get(t, t) for t in T.SIGNATURE_TYPES)  # canonical: claims are mapped first
    assert not any(T.is_text_claim(t) for t in T.SIGNATURE_TYPES)


@pytest.mark.parametrize("claim", sorted(SIGNED))
def test_sniff_recognises_every_signature_type(claim):
    detected, _ = sniff(SIGNED[claim]())
    assert detected != T.OCTET
    assert consistent(detected, claim) is True, detected


@pytest.mark.parametrize("claim", sorted(SIGNED))
def test_unrecognised_bytes_under_a_signature_claim_are_spoofed(claim):
    j = judge(BINARY, claim, None)
    assert j.verdict is SPOOFED
    assert j.reason.startswith("content is unrecognised binary data but it was declared as ")
    for ext in (e for e, t in T.EXTENSIONS.items() if t == claim):
        j = judge(BINARY, None, f"file.{ext}")
        expected = BLOCKED if ext in InspectPolicy().blocked_extensions else SPOOFED
        assert j.verdict is expected, (ext, j.reason)
        if expected is SPOOFED:
            assert j.reason == f"content is unrecognised binary data but the file name ends in .{ext}"


def test_the_finding_statement_pdf():
    """Unrecognised binary declared and named as a PDF: "if you expect a PDF and magic says octet-stream, reject"."""
    j = judge(BINARY, "application/pdf", "statement.pdf")
    assert (j.verdict, j.reason) == (SPOOFED, "content is unrecognised binary data but it was declared as "
                                              "application/pdf")
    j = judge(BINARY, "application/octet-stream", "statement.pdf")
    assert (j.verdict, j.reason) == (SPOOFED, "content is unrecognised binary data but the file name ends in .pdf")
    j = judge(BINARY, "image/jpg", "scan.jpg")  # an alias is mapped before the check
    assert j.verdict is SPOOFED


# Formats whose signature is optional, weak or not recognised in every version:
# real files of these may sniff as unrecognised, so such bytes stay uncheckable.
def _mp3_without_id3() -> bytes:
    return b"\xff\xe3\x18\xc4" + bytes(range(1, 200))  # MPEG 2.5 layer III frame sync, no tag


def _biff2_xls() -> bytes:
    return b"\x09\x00\x04\x00\x02\x00\x10\x00" + b"\x00\x02\x0a\x00" + bytes(40)  # Excel 2.x BOF record


def _old_quicktime() -> bytes:
    return b"\x00\x00\x00\x08wide\x00\x00\x10\x00mdat" + bytes(range(256)) * 4  # no ftyp box


def _v7_tar() -> bytes:
    header = bytearray(512)
    header[:8] = b"file.txt"
    header[100:108] = b"0000644\x00"
    return bytes(header) + b"hello\n" + bytes(506)  # pre-POSIX tar: no "ustar" magic


UNCHECKABLE = [
    ("mp3 without ID3", _mp3_without_id3, "audio/mpeg", "song.mp3"),
    ("BIFF2 workbook", _biff2_xls, "application/vnd.ms-excel", "report.xls"),
    ("quicktime without ftyp", _old_quicktime, "video/quicktime", "clip.mov"),
    ("v7 tar", _v7_tar, "application/x-tar", "files.tar"),
    ("binary as legacy word", lambda: BINARY, "application/msword", "letter.doc"),
    ("binary as legacy powerpoint", lambda: BINARY, "application/vnd.ms-powerpoint", "slides.ppt"),
    ("binary as truetype", lambda: BINARY, "font/ttf", "font.ttf"),
    ("binary as mpeg video", lambda: BINARY, "video/mpeg", "clip.mpg"),
    ("binary as raw disk image", lambda: BINARY, None, "disk.img.bin"),
    ("binary as unknown type", lambda: BINARY, "application/x-whatever", None),
    ("binary named dat", lambda: BINARY, None, "blob.dat"),
    ("binary named bin", lambda: BINARY, "application/octet-stream", "firmware.bin"),
    ("pkcs7 signature", lambda: BINARY, "application/pkcs7-signature", "smime.p7s"),
    ("pkcs7 mime", lambda: BINARY, "application/pkcs7-mime", "smime.p7m"),
]


@pytest.mark.parametrize("build,declared,name", [u[1:] for u in UNCHECKABLE], ids=[u[0] for u in UNCHECKABLE])
def test_claims_nobody_can_check_keep_unrecognised_bytes(build, declared, name):
    data = build()
    assert sniff(data)[0] == T.OCTET
    j = judge(data, declared, name)
    assert j.verdict is KEEP, j.reason


def test_text_claims_are_judged_as_before():
    assert judge(BINARY, "text/plain", "notes.txt").verdict is SPOOFED
    assert judge(samples.csv(), "application/vnd.ms-excel", "report.csv").verdict is KEEP
    assert judge(b"<html><body>x</body></html>", "application/msword", "page.doc").verdict is KEEP


# The classic false positives (README "Not spoofs") are recognised formats, not unknown bytes.
CLASSIC = [
    ("image/jpg alias", samples.jpeg, "image/jpg", "a.jpg"),
    ("image/pjpeg alias", samples.jpeg, "image/pjpeg", "a.jpeg"),
    (".jfif", samples.jpeg, "image/jpeg", "photo.jfif"),
    ("docx declared zip", samples.docx, "application/zip", "a.docx"),
    ("docx declared x-zip-compressed", samples.docx, "application/x-zip-compressed", "a.docx"),
    ("password-protected docx (OLE2)", samples.ole, "application/vnd.openxmlformats-officedocument."
     "wordprocessingml.document", "protected.docx"),
    ("csv as ms-excel", samples.csv, "application/vnd.ms-excel", "report.csv"),
    ("html saved as doc", lambda: b"<html><body><p>Letter</p></body></html>", "application/msword", "letter.doc"),
    ("html saved as xls", lambda: b"<html><body><table><tr><td>1</td></tr></table></body></html>",
     "application/vnd.ms-excel", "sheet.xls"),
    ("heif photo with a brand filetype misses", lambda: ftyp(b"mif1", b"mif1", b"heix", b"miaf"), "image/heic",
     "IMG_0001.HEIC"),
    ("mp4 from a camera with another brand", lambda: ftyp(b"iso6", b"iso6", b"dash"), "video/mp4", "clip.mp4"),
    ("bigtiff scan", lambda: b"II+\x00\x08\x00\x00\x00" + bytes(range(1, 64)), "image/tiff", "scan.tif"),
    ("zip with a stub before it", lambda: BINARY + samples.zip_file(), "application/zip", "bundle.zip"),
]


@pytest.mark.parametrize("build,declared,name", [c[1:] for c in CLASSIC], ids=[c[0] for c in CLASSIC])
def test_classic_false_positives_still_pass(build, declared, name):
    j = judge(build(), declared, name)
    assert j.verdict is KEEP, j.reason


@pytest.mark.parametrize("major,compatible,mime", [
    (b"heic", [b"mif1", b"heic"], "image/heic"), (b"mif1", [b"mif1", b"heix"], "image/heic"),
    (b"msf1", [b"msf1", b"hevc"], "image/heic"), (b"avif", [b"avif", b"mif1"], "image/avif"),
    (b"mif1", [b"mif1", b"avif", b"miaf"], "image/avif"), (b"qt  ", [b"qt  "], "video/quicktime"),
    (b"M4A ", [b"M4A ", b"mp42"], "audio/mp4"), (b"M4V ", [b"M4V "], "video/x-m4v"),
    (b"3gp4", [b"3gp4", b"isom"], "video/3gpp"), (b"3g2a", [b"3g2a"], "video/3gpp2"),
    (b"mp42", [b"mp42", b"isom"], "video/mp4"), (b"XAVC", [b"XAVC", b"mp42"], "video/mp4"),
])
def test_iso_media_files_are_told_apart_by_brand(major, compatible, mime):
    assert sniff(ftyp(major, *compatible))[0] == mime


@pytest.mark.parametrize("data", [
    b"BMW;Model;Price\r\n320i;1;42000\r\n",  # a car dealer's CSV export
    b"GIF export of the March report\n",
    b"8BPS is the Photoshop signature, says this note\n",
    b"OggS, fLaC and MThd are magic numbers\n",
    b"SQLite format notes\n",
    b"    ....ftyp is where an MP4 names its brands\n",
])
def test_text_that_starts_like_a_signature_is_text(data):
    assert sniff(data) == ("text/plain", "txt")
    assert judge(data, "text/csv", "export.csv").verdict is KEEP


# --- executables by structure ---------------------------------------------------------

def pe(e_lfanew: int = 0x80, size: int | None = None, optional: bytes | None = None) -> bytes:
    """MZ, e_lfanew -> PE\\0\\0 and a COFF header; `optional` replaces the optional header."""
    dos = bytearray(64)
    dos[:2] = b"MZ"
    struct.pack_into("<I", dos, 0x3C, e_lfanew)
    out = bytearray(dos) + bytes(max(0, e_lfanew - 64))
    opt = bytes(240) if optional is None else optional
    coff = struct.pack("<HHIIIHH", 0x14C, 1, 0, 0, 0, len(opt), 0x0102)
    out[e_lfanew:e_lfanew + 24 + len(opt)] = b"PE\x00\x00" + coff + opt
    if size is not None:
        out += bytes(max(0, size - len(out)))
    return bytes(out)


def tiny_pe() -> bytes:
    """The header-overlapping trick: e_lfanew = 4, so "PE\\0\\0" sits inside the DOS header."""
    data = bytearray(b"MZ\x00\x00PE\x00\x00" + struct.pack("<HHIIIHH", 0x14C, 0, 0, 0, 0, 0x70, 0x0103))
    data += bytes(0x70 + 0x20)
    struct.pack_into("<I", data, 0x3C, 4)
    return bytes(data)


EXECUTABLES = [
    ("pe", lambda: pe(), PE),
    ("pe header past the 8 KiB head", lambda: pe(e_lfanew=0x5000), PE),
    ("pe header 1 MiB into the file", lambda: pe(e_lfanew=1 << 20), PE),
    ("pe with a damaged optional header", lambda: pe(optional=b"\xde\xad" * 8), PE),
    ("pe with no optional header", lambda: pe(optional=b""), PE),
    ("pe cut right after its signature", lambda: pe()[:0x80 + 4], PE),
    ("tiny pe with overlapping headers", tiny_pe, PE),
    ("elf 32-bit big-endian", lambda: b"\x7fELF\x01\x02\x01" + bytes(9) + b"\x00\x02\x00\x08" + ZERO,
     "application/x-executable"),
    ("elf 64-bit little-endian", samples.elf, "application/x-executable"),
    ("mach-o thin", samples.macho, "application/x-mach-binary"),
    ("mach-o fat", samples.macho_fat, "application/x-mach-binary"),
    ("mach-o fat64", lambda: struct.pack(">II", 0xCAFEBABF, 1) + ZERO, "application/x-mach-binary"),
]


@pytest.mark.parametrize("build,mime", [e[1:] for e in EXECUTABLES], ids=[e[0] for e in EXECUTABLES])
def test_executables_are_recognised_by_structure(build, mime):
    data = build()
    assert sniff(data)[0] == mime
    j = judge(data, "application/pdf", "report.pdf")
    assert j.verdict is BLOCKED and "disguised as PDF" in j.reason, j.reason


def mz_stub(e_lfanew: int) -> bytes:
    """A DOS header whose e_lfanew points at no PE signature (beyond the file, or at zeros)."""
    dos = bytearray(64)
    dos[:2] = b"MZ"
    struct.pack_into("<HH", dos, 2, 0x90, 3)
    struct.pack_into("<I", dos, 0x3C, e_lfanew)
    return bytes(dos) + b"\x0e\x1f\xba\x0e\x00\xb4\x09\xcd\x21\xb8\x01\x4c\xcd\x21" + bytes(100)


@pytest.mark.parametrize("data", [
    mz_stub(0x80), mz_stub(0x10000), mz_stub(0xFFFFFFF0), mz_stub(2),
    b"MZ\x90\x00\x03\x00PE\x00\x00" + bytes(20),  # shorter than a DOS header: no e_lfanew at all
])
def test_mz_stubs_are_not_executables_and_do_not_pass_as_pdf(data):
    assert sniff(data)[0] == T.OCTET
    j = judge(data, "application/pdf", "report.pdf")
    assert (j.verdict, j.reason) == (SPOOFED, "content is unrecognised binary data but it was declared as "
                                              "application/pdf")


def test_a_pe_whose_header_is_far_inside_an_archive_member_is_found():
    # The member is 200 KiB: its first KiB is unrecognised, the PE signature at 160 KiB.
    member = pe(e_lfanew=160 << 10, size=200 << 10)
    for name in ("readme.txt", "data.bin"):
        j = judge(samples.zip_file({name: member}), "application/zip", "docs.zip")
        assert (j.verdict, j.reason) == (BLOCKED, f"archive contains a Windows executable ({name})")


def test_an_mz_member_pointing_past_its_end_costs_no_more_than_before():
    from smtp_offload.inspect import archive

    report = archive.inspect(samples.zip_file({"a.bin": mz_stub(0x7FFFFFF0) + bytes(100 << 10)}))
    assert report.findings == [] and report.inflated <= 41 * 1024
