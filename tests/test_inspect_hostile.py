"""inspect/ against hostile input: deceptive names, wrong detectors, polyglots, archives and bombs.

Pure unit tests, bytes in, Judgement out. Every rule has a case that fires and
one that must not (the false positives that would strip honest mail).
"""

from __future__ import annotations

import functools
import io
import random
import struct
import zipfile
import zlib

import pytest

from smtp_offload.inspect import InspectPolicy, judge, safe_display_name, sniff
from smtp_offload.inspect import archive
from smtp_offload.inspect.names import name_problem
from smtp_offload.model import Verdict
from tests.support import samples

KEEP, EMPTY, SPOOFED, BLOCKED = Verdict.KEEP, Verdict.EMPTY, Verdict.SPOOFED, Verdict.BLOCKED
PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
BINARY = bytes(range(256)) * 8
NO_NAME_CHECKS = InspectPolicy(suspicious_names=False)
PERMISSIVE = InspectPolicy(archive_max_ratio=1e9, archive_max_total_bytes=1 << 50, on_archive_limit="keep")


def zipped(files: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = method
            zf.writestr(info, data)
    return buf.getvalue()


def with_member(doc: bytes, name: str, data: bytes) -> bytes:
    """An existing zip-based document plus one member."""
    with zipfile.ZipFile(io.BytesIO(doc)) as zf:
        files = {i.filename: zf.read(i) for i in zf.infolist()}
    files[name] = data
    return zipped(files)


@functools.lru_cache(maxsize=1)
def _corpus() -> bytes:
    rng = random.Random(0)
    words = [bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))) for _ in range(5000)]
    return b"".join(b" ".join(rng.choices(words, k=12)) + b".\n" for _ in range(40_000))  # ~2.5 MiB


def prose(n: int, seed: int = 0) -> bytes:
    """`n` bytes of varied text: compresses like real documents (3-4:1), not like a repeated line."""
    corpus = _corpus()
    start = seed * 7919 % len(corpus)
    out = (corpus[start:] + corpus) * (n // len(corpus) + 1)
    return out[:n]


def assert_sane(j) -> None:
    assert j.reason and len(j.reason) < 120 and "\n" not in j.reason, j.reason


# =============================================================================
# 1. Names
# =============================================================================

SUSPICIOUS_NAMES = [
    ("rlo", "invoice\u202egpj.pdf", "bidirectional text control (U+202E)"),
    ("lro", "a\u202dx.pdf", "(U+202D)"),
    ("lre", "a\u202ax.pdf", "(U+202A)"),
    ("rle", "a\u202bx.pdf", "(U+202B)"),
    ("pdf-char", "a\u202cx.pdf", "(U+202C)"),
    ("lri", "a\u2066x.pdf", "(U+2066)"),
    ("rli", "a\u2067x.pdf", "(U+2067)"),
    ("fsi", "a\u2068x.pdf", "(U+2068)"),
    ("pdi", "a\u2069x.pdf", "(U+2069)"),
    ("double py", "report.pdf.py", "double extension: a .py file made to look like a .pdf file"),
    ("double html", "invoice.pdf.html", "a .html file made to look like a .pdf"),
    ("double padded", "invoice.pdf            .py", "a .py file made to look like a .pdf"),
    ("trailing space", "a.pdf ", "ends in a dot or space"),
    ("trailing dot", "a.pdf.", "ends in a dot or space"),
    ("trailing dots and spaces", "a.pdf. . ", "ends in a dot or space"),
    ("clsid", "file.{3050F4D8-98B5-11CF-BB82-00AA00BDCE0B}",
     "Windows class ID {3050F4D8-98B5-11CF-BB82-00AA00BDCE0B}"),
    ("clsid mid-name", "report.pdf.{20D04FE0-3AEA-1069-A2D8-08002B30309D}", "Windows class ID"),
    ("long", "a" * 300 + ".pdf", "too long (304 characters)"),
    ("nul", "a\x00.pdf", "control characters"),
    ("crlf", "a\r\nb.pdf", "control characters"),
    ("tab", "a\tb.pdf", "control characters"),
    ("del", "a\x7fb.pdf", "control characters"),
    ("dotdot alone", "..", "ends in a dot or space"),
    ("path to a bidi name", "C:\\x\\a\u202egpj.pdf", "bidirectional"),
]

# A path is disarmed: judged by its base name, never held against the file.
PATH_NAMES = ["../../etc/passwd", "..\\..\\a.pdf", "/etc/passwd", "C:\\Users\\x\\a.pdf", "c:/temp/a.pdf",
              "\\\\server\\share\\a.pdf", "C:\\fakepath\\scan.pdf", "../x.pdf"]


@pytest.mark.parametrize("name", PATH_NAMES)
def test_paths_in_names_are_disarmed(name):
    assert name_problem(name) is None
    assert judge(samples.pdf(), PDF, name).verdict is KEEP
    assert judge(samples.pe_exe(), PDF, name).verdict is BLOCKED


def _content_for(name: str) -> tuple[bytes, str | None]:
    # Bytes the name's own extension does not contradict, so only the name is at fault.
    return (samples.text(), None) if name.rstrip(". ").endswith((".py", ".html")) else (samples.pdf(), PDF)


@pytest.mark.parametrize("name,fragment", [c[1:] for c in SUSPICIOUS_NAMES], ids=[c[0] for c in SUSPICIOUS_NAMES])
def test_suspicious_names_are_spoofed(name, fragment):
    j = judge(*_content_for(name), name)
    assert j.verdict is SPOOFED, j.reason
    assert fragment in j.reason
    assert_sane(j)


@pytest.mark.parametrize("name", [c[1] for c in SUSPICIOUS_NAMES], ids=[c[0] for c in SUSPICIOUS_NAMES])
def test_name_checks_can_be_turned_off(name):
    j = judge(*_content_for(name), name, NO_NAME_CHECKS)
    assert j.verdict is KEEP, j.reason


HONEST_NAMES = [
    "invoice.pdf", "Rëchnung 2024.pdf", "<b>Rëchnung</b> & co.pdf", "my.report.v2.pdf",
    "2024-01-02 10.30 scan.pdf", "日本語のファイル.pdf", "שלום עולם.pdf", "تقرير.pdf",
    "family \U0001F468\u200d\U0001F469\u200d\U0001F467.pdf",  # zero-width joiners are not bidi controls
    "a" * 251 + ".pdf",  # exactly 255 characters
    "docs/report.pdf", "exe.pdf", "a.exe.pdf", "setup.x64.pdf", "{not-a-clsid}.pdf", "..report.pdf",
    "report..pdf", "Q&A (final) [v3].pdf", "résumé – draft.pdf",
]


@pytest.mark.parametrize("name", HONEST_NAMES)
def test_honest_names_are_kept(name):
    j = judge(samples.pdf(), "application/pdf", name)
    assert j.verdict is KEEP, j.reason


@pytest.mark.parametrize("name", ["jquery.min.js", "setup.x64.exe", "archive.tar.gz", "a.b.c.txt"])
def test_dots_that_are_not_a_double_extension(name):
    problem = name_problem(name)
    assert problem is None or "double extension" not in problem.label


@pytest.mark.parametrize("build,name,reason", [
    (samples.text, "invoice.pdf.exe", "files with the .exe extension are not accepted (double extension .pdf.exe)"),
    (samples.text, "scan.jpg.js", "files with the .js extension are not accepted (double extension .jpg.js)"),
    (samples.text, "photo.jpeg.scr", "files with the .scr extension are not accepted (double extension .jpeg.scr)"),
    (samples.pdf, "invoice.pdf.iso", "files with the .iso extension are not accepted (double extension .pdf.iso)"),
    (samples.text, "evil.exe.", "files with the .exe extension are not accepted"),
    (samples.pe_exe, "invoice.pdf.exe", "executable files are not accepted (Windows executable)"),
    (samples.pe_exe, "invoice.pdf", "Windows executable disguised as PDF"),
])
def test_blocked_outranks_a_suspicious_name_and_says_what_it_is(build, name, reason):
    j = judge(build(), None, name)
    assert (j.verdict, j.reason) == (BLOCKED, reason)


def test_a_contradicted_claim_is_reported_before_a_suspicious_name():
    j = judge(samples.png(), "image/png", "../photo.jpg")
    assert (j.verdict, j.reason) == (SPOOFED, "content is a PNG image but the file name ends in .jpg")


@pytest.mark.parametrize("raw,shown", [
    ("invoice.pdf", "invoice.pdf"),
    ("invoice\u202egpj.exe", "invoicegpj.exe"),
    ("a\u2066b\u2069c\u200e\u200f\u061c.pdf", "abc.pdf"),
    ("zero\u200bwidth.pdf", "zerowidth.pdf"),
    ("line\r\nbreak.pdf", "line break.pdf"),
    ("nul\x00byte.pdf", "nul byte.pdf"),
    ("  lots   of\t\tspace  .pdf ", "lots of space .pdf"),
    ("../../etc/passwd", "passwd"),
    ("C:\\Users\\x\\report.pdf", "report.pdf"),
    ("dir/", "dir"),
    ("para\u2029graph.pdf", "para graph.pdf"),
    ("bad\udc80surrogate.pdf", "bad\ufffdsurrogate.pdf"),
    ("", ""),
    (None, ""),
    ("\u202e", ""),
    ("Rëchnung <b>&</b>.pdf", "b>.pdf"),  # a slash is a path separator to every client
])
def test_safe_display_name(raw, shown):
    assert safe_display_name(raw) == shown


def test_safe_display_name_caps_length_and_keeps_the_extension():
    shown = safe_display_name("x" * 500 + ".exe")
    assert len(shown) == 200 and shown.endswith("x.exe") and "\u2026" in shown
    assert safe_display_name("y" * 200) == "y" * 200


def test_safe_display_name_output_is_printable():
    nasty = "".join(chr(c) for c in range(0, 0x30)) + "\u202e\u2028\ufeff\u00ad.pdf"
    shown = safe_display_name(nasty)
    assert shown.isprintable() and "\u202e" not in shown


# =============================================================================
# 2. Detectors
# =============================================================================

MZ_TEXTS = [
    b"MZ Logistics invoice #2024-117\r\nTotal due: EUR 1,240.00\r\nThank you for your business.\r\n",
    b"MZ Logistics invoice\n" + b"Line item, quantity, price\n" * 40,
    b"MZ",
    b"MZ\r\n",
    b"MZ-Logistik GmbH Rechnung " + "Grüße".encode("utf-8") * 20,
]


@pytest.mark.parametrize("data", MZ_TEXTS, ids=range(len(MZ_TEXTS)))
def test_text_that_starts_with_mz_is_text_not_an_executable(data):
    assert sniff(data) == ("text/plain", "txt")
    j = judge(data, "text/plain", "invoice.txt")
    assert j.verdict is KEEP, j.reason


def test_a_real_pe_still_is_one_whatever_follows():
    for tail in (samples.pdf(), samples.zip_file(), b"%PDF-1.4\n" + b"x" * 100):
        j = judge(samples.pe_exe() + tail, "application/pdf", "a.pdf")
        assert j.detected_type == "application/x-msdownload" and j.verdict is BLOCKED


def _iso_at(offset: int, ident: bytes = b"CD001") -> bytes:
    data = bytearray(0x9800)
    data[offset - 1] = 1
    data[offset:offset + 5] = ident
    return bytes(data)


DETECTED = [
    ("lnk", samples.lnk, "application/x-ms-shortcut", "lnk", "executable files are not accepted (Windows shortcut)"),
    ("iso", samples.iso, "application/x-iso9660-image", "iso", "files of this type are not accepted (ISO disk image)"),
    ("iso 0x8801", lambda: _iso_at(0x8801), "application/x-iso9660-image", "iso", None),
    ("iso 0x9001", lambda: _iso_at(0x9001), "application/x-iso9660-image", "iso", None),
    ("udf", lambda: _iso_at(0x8001, b"BEA01"), "application/x-iso9660-image", "iso", None),
    ("udf nsr", lambda: _iso_at(0x8801, b"NSR02"), "application/x-iso9660-image", "iso", None),
    ("onenote", samples.onenote, "application/onenote", "one",
     "files of this type are not accepted (OneNote notebook)"),
    ("vhdx", samples.vhdx, "application/x-vhdx", "vhdx", None),
    ("vhd", samples.vhd, "application/x-vhd", "vhd", None),
    ("dmg", samples.dmg, "application/x-apple-diskimage", "dmg", None),
    ("fat img", samples.fat_image, "application/x-raw-disk-image", "img",
     "files of this type are not accepted (disk image)"),
]


@pytest.mark.parametrize("build,mime,ext,reason", [d[1:] for d in DETECTED], ids=[d[0] for d in DETECTED])
def test_new_detectors_and_their_default_block(build, mime, ext, reason):
    data = build()
    assert sniff(data) == (mime, ext)
    j = judge(data, None, None)
    assert j.verdict is BLOCKED
    if reason:
        assert j.reason == reason


@pytest.mark.parametrize("build,name", [(samples.iso, "invoice.pdf"), (samples.onenote, "notes.docx")])
def test_disguised_disk_image_and_onenote(build, name):
    j = judge(build(), None, name)
    assert j.verdict is BLOCKED and "disguised as" in j.reason


@pytest.mark.parametrize("build,name", [
    (samples.iso, "disc.iso"), (samples.iso, "disc.img"), (samples.fat_image, "floppy.img"),
    (samples.onenote, "notes.one"), (samples.vhdx, "disk.vhdx"),
])
def test_disk_images_and_onenote_pass_when_not_blocked(build, name):
    policy = InspectPolicy(blocked_types={"executable"}, blocked_extensions=())
    j = judge(build(), None, name, policy)
    assert j.verdict is KEEP, j.reason


@pytest.mark.parametrize("data", [
    b"CD001 is the ISO 9660 magic; this note only mentions it.\n",
    b"vhdxfile is how a VHDX starts, says this note\n",
    b"conectix\n" + b"text " * 200,
    bytes(0x9000),  # zeros where an ISO would have its descriptor
    samples.text(0x9000),
])
def test_disk_image_magics_in_other_places_are_not_disk_images(data):
    assert sniff(data)[0] not in ("application/x-iso9660-image", "application/x-vhdx", "application/x-vhd")


# --- HTML and SVG ------------------------------------------------------------

PLAIN_MARKUP = [
    ("html", b"<!DOCTYPE html>\n<html><head><title>Invoice</title></head><body><p>Total 10</p></body></html>\n",
     "text/html"),
    ("html upper", b"<HTML><BODY>Hello</BODY></HTML>", "text/html"),
    ("html after comment", b"<!-- saved from url=(0014)about:internet -->\n<html><body>hi</body></html>", "text/html"),
    ("html with links and styles", b'<html><head><style>p{color:red}</style></head><body>'
     b'<a href="https://example.com/onboarding?x=1">online = yes</a><img src="logo.png" alt="logo">'
     b'<p>Click on the button; status online = yes.</p></body></html>', "text/html"),
    ("svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>',
     "image/svg+xml"),
    ("svg with prolog", b'<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" '
     b'"http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">\n<svg xmlns="http://www.w3.org/2000/svg"/>',
     "image/svg+xml"),
    ("utf-16 html", "\ufeff<html><body>hallo</body></html>".encode("utf-16-le"), "text/html"),
]


@pytest.mark.parametrize("data,mime", [m[1:] for m in PLAIN_MARKUP], ids=[m[0] for m in PLAIN_MARKUP])
def test_plain_html_and_svg_are_detected_and_kept(data, mime):
    assert sniff(data)[0] == mime
    ext = "svg" if mime == "image/svg+xml" else "html"
    for declared, name in ((mime, f"page.{ext}"), (None, None), ("text/plain", "page.txt"),
                           ("application/vnd.ms-excel", "export.xls")):
        j = judge(data, declared, name)
        assert j.verdict is KEEP, (declared, name, j.reason)


ACTIVE = [
    ("script", b"<html><body><script>alert(1)</script></body></html>", "a script element"),
    ("script with attrs", b"<html><body><SCRIPT type='text/javascript' src='x.js'></SCRIPT></body></html>",
     "a script element"),
    ("smuggling", b"<!DOCTYPE html><html><body><script>var b=atob('TVqQ');/*...*/</script></body></html>",
     "a script element"),
    ("onload", b"<html><body onload=\"go()\">x</body></html>", "an event handler attribute"),
    ("onerror", b"<html><img src=x onerror='go()'></html>", "an event handler attribute"),
    ("quoted gt", b"<html><img alt=\">\" onerror=go()></html>", "an event handler attribute"),
    ("unknown event in tag", b"<html><div onzzz=go()>x</div></html>", "an event handler attribute"),
    ("javascript url", b"<html><a href=\"javascript:go()\">x</a></html>", "a javascript: URL"),
    ("javascript url spaced", b"<html><a href = ' javascript:go()'>x</a></html>", "a javascript: URL"),
    ("javascript url tab", b"<html><a href=\"java\tscript:go()\">x</a></html>", "a javascript: URL"),
    ("javascript url entity", b"<html><a href=\"java&#x09;script&colon;go()\">x</a></html>", "a javascript: URL"),
    ("javascript url decimal", b"<html><a href=\"&#106;avascript:go()\">x</a></html>", "a javascript: URL"),
    ("javascript url hex", b"<html><a href=\"&#x6A;avascript:go()\">x</a></html>", "a javascript: URL"),
    ("javascript url no semicolons", b"<html><a href=\"&#106&#97&#118&#97script:go()\">x</a></html>",
     "a javascript: URL"),
    ("javascript url leading references", b"<html><a href=\"&#32;&#10;javascript:go()\">x</a></html>",
     "a javascript: URL"),
    ("javascript in css", b"<html><div style=\"background:url('javascript:go()')\">x</div></html>",
     "a javascript: URL"),
    ("vbscript url", b"<html><a href=\"VBScript:go\">x</a></html>", "a vbscript: URL"),
    ("data html url", b"<html><iframe src=\"data:text/html;base64,PHNjcmlwdD4=\"></iframe></html>",
     "a data: URL holding HTML"),
    ("meta refresh js", b"<html><meta http-equiv=refresh content=\"0;url=javascript:go()\"></html>",
     "a javascript: URL"),
    ("svg onload", b'<svg xmlns="http://www.w3.org/2000/svg" onload="go()"/>', "an event handler attribute"),
    ("svg slash onload", b"<svg/onload=go()>", "an event handler attribute"),
    ("svg script", b'<svg xmlns="http://www.w3.org/2000/svg"><script>go()</script></svg>', "a script element"),
    ("svg ns script", b'<svg xmlns="http://www.w3.org/2000/svg"><svg:script>go()</svg:script></svg>',
     "a script element"),
    ("svg animate js", b'<svg xmlns="http://www.w3.org/2000/svg"><a><animate attributeName="href" '
     b'values="javascript:go()"/></a></svg>', "a javascript: URL"),
    ("utf-16 script", "\ufeff<html><script>go()</script></html>".encode("utf-16-le"), "a script element"),
    ("script at the end of a big page", b"<html><body>" + b"<p>filler</p>\n" * 1_300_000 + b"<script>go()</script>",
     "a script element"),
]


@pytest.mark.parametrize("data,feature", [a[1:] for a in ACTIVE], ids=[a[0] for a in ACTIVE])
def test_markup_with_active_content_is_blocked(data, feature):
    j = judge(data, None, "page.html")
    assert j.verdict is BLOCKED
    assert j.reason.endswith(f"with active content is not accepted ({feature})")
    assert_sane(j)
    kept = judge(data, None, "page.html", InspectPolicy(block_active_content=False))
    assert kept.verdict is KEEP, kept.reason


def test_svg_reason_says_svg():
    j = judge(b"<svg/onload=go()>", "image/svg+xml", "logo.svg")
    assert j.reason == "SVG image with active content is not accepted (an event handler attribute)"


def test_markup_detected_by_content_is_checked_whatever_its_name():
    j = judge(b"<html><script>go()</script></html>", "text/plain", "notes.txt")
    assert j.verdict is BLOCKED


def test_text_named_html_is_rendered_as_html_so_it_is_checked():
    data = b"Hello\n<script>go()</script>\n"
    assert sniff(data)[0] == "text/plain"
    assert judge(data, None, "page.htm").verdict is BLOCKED
    assert judge(data, "text/html", None).verdict is BLOCKED
    assert judge(data, "text/plain", "notes.txt").verdict is KEEP  # shown as text, never run


@pytest.mark.parametrize("data", [
    b'<html><a href="https://example.com/?a=1&amp;b=2&#38;c=3">x</a></html>',
    b'<html><a href="&#1060;avascript:go()">not a j</a></html>',  # a different character
    b"<html><p>Type javascript: in the address bar? Never.</p></html>",  # prose inside HTML
    b"<html><p>once = twice; online = yes; only=1</p></html>",
    b'<html><form action="/search"><input name="q" value="on"></form></html>',
])
def test_markup_without_active_content_is_kept(data):
    j = judge(data, "text/html", "page.html")
    assert j.verdict is KEEP, j.reason


@pytest.mark.parametrize("data", [
    b"To add a script, write <script> in your page, or use onclick.\n",  # prose, not a document
    b"Dear customer, javascript: is a URL scheme. Regards\n",
])
def test_text_that_mentions_script_is_kept(data):
    j = judge(data, "text/plain", "notes.txt")
    assert j.verdict is KEEP, j.reason


# --- polyglots -----------------------------------------------------------------

def pdf_zip(files: dict[str, bytes] | None = None) -> bytes:
    return samples.pdf() + samples.zip_file(files or {"readme.txt": b"just text\n"})


def test_pdf_that_is_also_a_zip_is_blocked():
    data = pdf_zip()
    assert sniff(data)[0] == PDF
    j = judge(data, PDF, "invoice.pdf")
    assert (j.verdict, j.reason) == (BLOCKED, "file is both a PDF and a ZIP archive")


def test_polyglot_kept_when_policy_allows():
    j = judge(pdf_zip(), PDF, "invoice.pdf", InspectPolicy(on_polyglot="keep"))
    assert j.verdict is KEEP, j.reason


def test_polyglot_with_an_executable_is_blocked_by_its_most_dangerous_reading():
    for policy in (InspectPolicy(), InspectPolicy(on_polyglot="keep")):
        j = judge(pdf_zip({"setup.exe": samples.pe_exe()}), PDF, "invoice.pdf", policy)
        assert (j.verdict, j.reason) == (BLOCKED, "hidden archive contains a .exe file (setup.exe)")
        j = judge(pdf_zip({"invoice.txt": samples.pe_exe()}), PDF, "invoice.pdf", policy)
        assert (j.verdict, j.reason) == (BLOCKED, "hidden archive contains a Windows executable (invoice.txt)")


def test_gifar_image_that_is_also_a_java_archive():
    data = samples.gif() + samples.zip_file({"META-INF/MANIFEST.MF": b"Manifest-Version: 1.0\r\n",
                                             "Evil.class": samples.java_class()})
    assert sniff(data)[0] == "image/gif"
    j = judge(data, "image/gif", "avatar.gif")
    assert j.verdict is BLOCKED and "Java class file" in j.reason


def test_other_hosts_count_only_what_the_hidden_archive_holds():
    harmless = samples.ole() + samples.zip_file()
    assert judge(harmless, None, "mail.msg").verdict is KEEP
    dangerous = samples.ole() + samples.zip_file({"run.exe": samples.pe_exe()})
    j = judge(dangerous, None, "mail.msg")
    assert (j.verdict, j.reason) == (BLOCKED, "hidden archive contains a .exe file (run.exe)")


@pytest.mark.parametrize("data", [
    samples.pdf(),
    samples.pdf() + b"PK\x05\x06" + b"\x00" * 18,  # an end record with no entries
    samples.pdf() + b"%garbage PK\x05\x06\x00\x00\x00\x00\x01\x00\x01\x00\x10\x00\x00\x00\x00\x00\x00\x00\x00\x00",
    samples.png() + b"PK\x03\x04 trailing junk",
])
def test_files_with_zip_signatures_but_no_archive_are_not_polyglots(data):
    assert judge(data, None, None).verdict is KEEP


def test_unknown_bytes_with_an_archive_inside_are_judged_as_that_archive():
    data = BINARY + samples.zip_file({"a.exe": b"x"})
    assert sniff(data)[0] == "application/octet-stream"
    j = judge(data, None, "blob.dat")
    assert (j.verdict, j.reason) == (BLOCKED, "archive contains a .exe file (a.exe)")
    assert judge(BINARY + samples.zip_file(), None, "blob.dat").verdict is KEEP


# --- unknown bytes ------------------------------------------------------------------

@pytest.mark.parametrize("declared,name", [(None, None), (None, "blob.dat"), ("application/octet-stream", "x.bin"),
                                           ("application/x-foo", None)])
def test_unknown_is_kept_by_default_when_nothing_contradicts_it(declared, name):
    j = judge(BINARY, declared, name)
    assert j.verdict is KEEP, j.reason


@pytest.mark.parametrize("declared,name", [(None, None), (None, "blob.dat"), ("image/png", "a.png")])
def test_unknown_blocked_by_policy(declared, name):
    j = judge(BINARY, declared, name, InspectPolicy(on_unknown="block"))
    assert (j.verdict, j.reason) == (BLOCKED, "content is unrecognised binary data, which is not accepted")


def test_on_unknown_block_leaves_recognised_files_alone():
    policy = InspectPolicy(on_unknown="block")
    for build in (samples.pdf, samples.png, samples.text, samples.docx):
        assert judge(build(), None, None, policy).verdict is KEEP


# =============================================================================
# 3. Archives
# =============================================================================

INSIDE = [
    ("pe by bytes", {"readme.txt": samples.pe_exe()}, "archive contains a Windows executable (readme.txt)"),
    ("pe by name", {"setup.exe": b"not really"}, "archive contains a .exe file (setup.exe)"),
    ("elf", {"tool": samples.elf()}, "archive contains an ELF executable (tool)"),
    ("macho", {"tool": samples.macho()}, "archive contains a Mach-O executable (tool)"),
    ("script", {"install": samples.shell_script()}, "archive contains a shell script (install)"),
    ("js", {"invoice.js": b"WScript.Echo(1)"}, "archive contains a .js file (invoice.js)"),
    ("lnk bytes", {"document.pdf": samples.lnk()}, "archive contains a Windows shortcut (document.pdf)"),
    ("msi by name", {"x.msi": samples.ole()}, "archive contains a .msi file (x.msi)"),
    ("iso bytes", {"scan.dat": samples.iso()}, "archive contains an ISO disk image (scan.dat)"),
    ("onenote bytes", {"notes.dat": samples.onenote()}, "archive contains a OneNote notebook (notes.dat)"),
    ("double extension", {"invoice.pdf.exe": b"x"}, "archive contains a .exe file (invoice.pdf.exe)"),
    ("in a folder", {"a/b/c/run.bat": b"@echo off"}, "archive contains a .bat file (run.bat)"),
    ("second of many", {"a.txt": b"a", "b.png": samples.png(), "c.scr": b"x"}, "archive contains a .scr file (c.scr)"),
    ("nested", {"inner.zip": samples.zip_file({"run.exe": samples.pe_exe()})},
     "archive contains a .exe file (run.exe)"),
    ("nested bytes", {"inner.zip": samples.zip_file({"run.txt": samples.pe_exe()})},
     "archive contains a Windows executable (run.txt)"),
    ("nested twice", {"a.zip": samples.zip_file({"b.zip": samples.zip_file({"c.txt": samples.elf()})})},
     "archive contains an ELF executable (c.txt)"),
    ("jar named zip", {"META-INF/MANIFEST.MF": b"Manifest-Version: 1.0\r\n", "Main.class": samples.java_class()},
     "archive contains a Java class file (Main.class)"),
]


@pytest.mark.parametrize("files,reason", [i[1:] for i in INSIDE], ids=[i[0] for i in INSIDE])
def test_archive_holding_an_executable_is_blocked(files, reason):
    for method in (zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED):
        j = judge(zipped(files, method), "application/zip", "files.zip")
        assert (j.verdict, j.reason) == (BLOCKED, reason)


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA], ids=["bzip2", "lzma"])
def test_other_compression_methods_are_inspected(method):
    j = judge(zipped({"a.txt": samples.pe_exe()}, method), None, "a.zip")
    assert (j.verdict, j.reason) == (BLOCKED, "archive contains a Windows executable (a.txt)")
    assert judge(zipped({"a.txt": samples.text()}, method), None, "a.zip").verdict is KEEP


def test_unsupported_compression_method_is_an_inspection_limit():
    data = samples.raw_zip([{"name": "a.bin", "method": 9, "payload": b"\x00" * 64, "usize": 100}])
    j = judge(data, None, "a.zip")
    assert (j.verdict, j.reason) == (BLOCKED, "archive exceeds inspection limits (unsupported compression "
                                               "method 9 in a.bin)")
    j = judge(data, None, "a.zip", InspectPolicy(on_archive_limit="keep"))
    assert j.verdict is KEEP and j.reason.endswith("(archive not fully inspected)")


HARMLESS_ARCHIVES = [
    ("zip", samples.zip_file),
    ("media", lambda: zipped({"a.pdf": samples.pdf(), "b.png": samples.png(), "c.jpg": samples.jpeg(),
                              "notes/readme.txt": samples.text(), "data.csv": samples.csv(), "empty.txt": b"",
                              "dir/": b""})),
    ("docx", samples.docx), ("xlsx", samples.xlsx), ("pptx", samples.pptx), ("odt", samples.odt),
    ("epub", samples.epub),
    ("epub with javascript", lambda: with_member(samples.epub(), "OEBPS/scripts/quiz.js", b"let x = 1;")),
    ("docx with an embedded workbook",
     lambda: with_member(samples.docx(), "word/embeddings/Sheet.xlsx", samples.xlsx())),
    ("docx in a zip", lambda: zipped({"contract.docx": samples.docx()})),
    ("zip of zips", lambda: zipped({"a.zip": zipped({"b.zip": samples.zip_file()})})),
    ("empty zip", lambda: b"PK\x05\x06" + b"\x00" * 18),
    ("text mentioning MZ", lambda: zipped({"a.txt": MZ_TEXTS[0]})),
    ("plain html", lambda: zipped({"page.html": PLAIN_MARKUP[0][1]})),
    ("many small members", lambda: zipped({f"f{i}.txt": samples.text(300) for i in range(2000)})),
]


@pytest.mark.parametrize("build", [h[1] for h in HARMLESS_ARCHIVES], ids=[h[0] for h in HARMLESS_ARCHIVES])
def test_harmless_archives_are_kept(build):
    j = judge(build(), None, None)
    assert j.verdict is KEEP, j.reason


def test_many_large_members_are_sniffed_by_their_heads_only():
    # 300 members of 40 KiB expand to 12 MiB, more than the 8 MiB budget: sniffing
    # reads the first KiB of each, so the archive is fully inspected and kept.
    data = zipped({f"doc{i}.txt": prose(40 * 1024, i) for i in range(300)})
    report = archive.inspect(data)
    assert report.findings == [] and report.inflated <= 300 * 1025
    assert judge(data, None, "docs.zip").verdict is KEEP


def _pe_with_late_header() -> bytes:
    """A PE whose header sits past the first KiB (some packers put it there)."""
    pe = bytearray(samples.pe_exe())
    e_lfanew = struct.unpack_from("<I", pe, 0x3C)[0]
    header = pe[e_lfanew:0x200]
    late = 0x1800
    out = bytearray(pe[:e_lfanew]) + bytearray(late - e_lfanew) + header
    struct.pack_into("<I", out, 0x3C, late)
    return bytes(out)


def _hybrid_iso() -> bytes:
    """An ISO whose system area starts with an MBR (boot code and 55 AA), as Linux ISOs do."""
    data = bytearray(samples.iso())
    data[0:4] = b"\xfa\x31\xc0\x8e"
    data[510:512] = b"\x55\xaa"
    return bytes(data)


@pytest.mark.parametrize("build,label", [(_pe_with_late_header, "Windows executable"),
                                         (samples.iso, "ISO disk image"), (_hybrid_iso, "ISO disk image")])
def test_members_whose_signature_lies_deep_are_found(build, label):
    assert sniff(build())[1] in ("exe", "iso")
    j = judge(zipped({"harmless.dat": build()}), None, "a.zip")
    assert (j.verdict, j.reason) == (BLOCKED, f"archive contains an {label} (harmless.dat)".replace("an W", "a W"))


def test_unknown_binary_members_cost_only_their_heads():
    rng = random.Random(5)
    data = zipped({f"{i}.bin": rng.randbytes(48 * 1024) for i in range(200)})
    report = archive.inspect(data)
    assert report.findings == [] and report.inflated <= 200 * 1025


def test_docx_holding_an_executable_is_blocked():
    j = judge(with_member(samples.docx(), "word/embeddings/setup.exe", samples.pe_exe()), DOCX, "a.docx")
    assert (j.verdict, j.reason) == (BLOCKED, "archive contains a .exe file (setup.exe)")
    j = judge(with_member(samples.docx(), "word/media/image1.png", samples.pe_exe()), DOCX, "a.docx")
    assert (j.verdict, j.reason) == (BLOCKED, "archive contains a Windows executable (image1.png)")


def test_javascript_outside_an_epub_is_blocked():
    assert judge(zipped({"quiz.js": b"let x = 1;"}), None, "a.zip").verdict is BLOCKED
    assert judge(with_member(samples.epub(), "quiz.js", b"let x = 1;"), None, "book.epub").verdict is KEEP


def test_archive_member_types_follow_the_policy_categories():
    data = zipped({"disc.dat": samples.iso(), "pic.png": samples.png()})
    assert judge(data, None, "a.zip").verdict is BLOCKED
    assert judge(data, None, "a.zip", InspectPolicy(blocked_types={"executable"})).verdict is KEEP
    # MIME types and families in blocked_types are about the attachment, not its members.
    j = judge(data, None, "a.zip", InspectPolicy(blocked_types={"disk-image", "image/*"}))
    assert (j.verdict, j.reason) == (BLOCKED, "archive contains an ISO disk image (disc.dat)")
    assert judge(zipped({"pic.png": samples.png()}), None, "a.zip",
                 InspectPolicy(blocked_types={"image/*"})).verdict is KEEP


# --- encrypted -----------------------------------------------------------------------

def test_encrypted_archive_kept_by_default():
    j = judge(samples.encrypted_zip(), "application/zip", "numbers.zip")
    assert j.verdict is KEEP
    assert j.reason == "content is a ZIP archive, consistent with how it is labelled (encrypted members not inspected)"


def test_encrypted_archive_blocked_by_policy():
    j = judge(samples.encrypted_zip(), "application/zip", "numbers.zip", InspectPolicy(on_encrypted_archive="block"))
    assert (j.verdict, j.reason) == (BLOCKED, "archive is encrypted, so its contents cannot be inspected "
                                              "(1 encrypted member)")


def test_encrypted_members_are_still_judged_by_name():
    data = samples.raw_zip([{"name": "setup.exe", "method": 0, "flags": 0x801, "data": b"x" * 20}])
    assert judge(data, None, "a.zip").reason == "archive contains a .exe file (setup.exe)"


def test_unencrypted_archive_passes_an_encryption_block():
    assert judge(samples.zip_file(), None, "a.zip", InspectPolicy(on_encrypted_archive="block")).verdict is KEEP


# --- names inside archives ---------------------------------------------------------

@pytest.mark.parametrize("member", ["../../etc/passwd", "../x.txt", "/etc/passwd", "C:/Windows/win.ini",
                                    "c:\\temp\\x.txt", "a/../../x.txt", "..\\..\\x.txt", "\\\\host\\share\\x.txt"])
def test_member_paths_that_escape_are_spoofed(member):
    data = samples.raw_zip([{"name": member, "data": b"hello\n"}])
    j = judge(data, None, "a.zip")
    assert j.verdict is SPOOFED
    assert j.reason.startswith("archive member with a path that escapes the folder (")


@pytest.mark.parametrize("member", ["dir/sub/file.txt", "a..b.txt", "..hidden.txt", "dir/.../x.txt", "./x.txt"])
def test_member_paths_that_stay_are_kept(member):
    j = judge(samples.raw_zip([{"name": member, "data": b"hello\n"}]), None, "a.zip")
    assert j.verdict is KEEP, j.reason


@pytest.mark.parametrize("member,label", [
    ("invoice\u202egpj.txt", "bidirectional control U+202E"),
    ("report.pdf.py", "double extension .pdf.py"),
    ("file.{3050F4D8-98B5-11CF-BB82-00AA00BDCE0B}", "a class ID"),
    ("bad\x01name.txt", "control characters"),
])
def test_suspicious_member_names_are_spoofed(member, label):
    j = judge(samples.raw_zip([{"name": member, "data": b"hello\n"}]), None, "a.zip")
    assert j.verdict is SPOOFED and f"suspicious name ({label})" in j.reason
    assert judge(samples.raw_zip([{"name": member, "data": b"hello\n"}]), None, "a.zip",
                 NO_NAME_CHECKS).verdict is KEEP


def test_unicode_path_extra_that_renames_a_member_is_judged_too():
    raw = b"invoice.txt"
    uni = struct.pack("<BI", 1, zlib.crc32(raw)) + "invoice.exe".encode()
    extra = struct.pack("<HH", 0x7075, len(uni)) + uni
    data = samples.raw_zip([{"name": "invoice.txt", "data": b"hello\n", "cd_extra": extra}])
    assert judge(data, None, "a.zip").reason == "archive contains a .exe file (invoice.exe)"
    # A Unicode path whose CRC does not match the name is ignored, as by unzip tools.
    bad = struct.pack("<BI", 1, 0) + "invoice.exe".encode()
    data = samples.raw_zip([{"name": "invoice.txt", "data": b"hello\n",
                             "cd_extra": struct.pack("<HH", 0x7075, len(bad)) + bad}])
    assert judge(data, None, "a.zip").verdict is KEEP


# --- macros ------------------------------------------------------------------------------

def with_vba(doc: bytes, folder: str) -> bytes:
    return with_member(doc, f"{folder}/vbaProject.bin", samples.ole_with_vba())


MACRO_DOCS = [
    ("docm", samples.docm, "application/vnd.ms-word.document.macroenabled.12", "docx", "docm",
     "macro-enabled Word document"),
    ("xlsm", lambda: with_vba(samples.xlsx(), "xl"), "application/vnd.ms-excel.sheet.macroenabled.12", "xlsx", "xlsm",
     "macro-enabled Excel workbook"),
    ("xlsm xlm", lambda: with_member(samples.xlsx(), "xl/macrosheets/sheet1.xml", b"<xm:macrosheet/>"),
     "application/vnd.ms-excel.sheet.macroenabled.12", "xlsx", "xlsm", "macro-enabled Excel workbook"),
    ("pptm", lambda: with_vba(samples.pptx(), "ppt"), "application/vnd.ms-powerpoint.presentation.macroenabled.12",
     "pptx", "pptm", "macro-enabled PowerPoint presentation"),
]


@pytest.mark.parametrize("build,mime,free,enabled,label", [m[1:] for m in MACRO_DOCS], ids=[m[0] for m in MACRO_DOCS])
def test_macros_under_a_macro_free_name_are_spoofed(build, mime, free, enabled, label):
    data = build()
    assert sniff(data) == (mime, enabled)
    j = judge(data, None, f"report.{free}")
    assert (j.verdict, j.reason) == (SPOOFED, f"content is a {label} but the file name ends in .{free}")
    # Honestly labelled, it is kept unless the policy refuses macros.
    for declared, name in ((mime, f"report.{enabled}"), (None, f"report.{enabled}"), ("application/zip", None),
                           ("application/octet-stream", None)):
        assert judge(data, declared, name).verdict is KEEP
    j = judge(data, mime, f"report.{enabled}", InspectPolicy(on_macros="block"))
    assert (j.verdict, j.reason) == (BLOCKED, f"Office documents with macros are not accepted ({label})")


def test_macros_declared_macro_free_are_spoofed():
    j = judge(samples.docm(), DOCX, "report.docm")
    assert j.verdict is SPOOFED and j.reason.startswith("content is a macro-enabled Word document but it was declared")


def test_macro_free_documents_pass_a_macro_block():
    policy = InspectPolicy(on_macros="block")
    for build, name in ((samples.docx, "a.docx"), (samples.xlsx, "a.xlsx"), (samples.ole, "a.doc")):
        assert judge(build(), None, name, policy).verdict is KEEP


def test_legacy_office_macros():
    assert judge(samples.ole_with_vba(), "application/msword", "a.doc").verdict is KEEP
    j = judge(samples.ole_with_vba(), "application/msword", "a.doc", InspectPolicy(on_macros="block"))
    assert (j.verdict, j.reason) == (BLOCKED, "Office documents with macros are not accepted "
                                              "(Microsoft Office (OLE2) file)")
    # Text that mentions the stream name is not a VBA project.
    mention = samples.ole() + "x_VBA_PROJECT".encode("utf-16-le")
    assert judge(mention, None, "a.doc", InspectPolicy(on_macros="block")).verdict is KEEP


def test_macro_document_inside_an_archive():
    data = zipped({"report.docx": samples.docm()})
    j = judge(data, None, "a.zip")
    assert (j.verdict, j.reason) == (SPOOFED, "archive member report.docx has macros but a macro-free name")
    assert judge(zipped({"report.docm": samples.docm()}), None, "a.zip").verdict is KEEP
    j = judge(zipped({"report.docm": samples.docm()}), None, "a.zip", InspectPolicy(on_macros="block"))
    assert (j.verdict, j.reason) == (BLOCKED, "archive contains a macro-enabled Word document (report.docm)")


# --- limits ---------------------------------------------------------------------------

def test_too_many_entries():
    data = zipped({f"{i}.txt": b"x" for i in range(6)})
    j = judge(data, None, "a.zip", InspectPolicy(archive_max_entries=5))
    assert (j.verdict, j.reason) == (BLOCKED, "archive exceeds inspection limits (more than 5 entries)")
    assert judge(data, None, "a.zip", InspectPolicy(archive_max_entries=6)).verdict is KEEP
    j = judge(data, None, "a.zip", InspectPolicy(archive_max_entries=5, on_archive_limit="keep"))
    assert j.verdict is KEEP and j.reason.endswith("(archive not fully inspected)")


def test_an_archive_over_the_entry_limit_is_a_limit_not_malformed():
    # Only the entries up to the limit are read; the rest must not look hidden.
    data = zipped({f"{i}.txt": b"x" for i in range(30)})
    report = archive.inspect(data, InspectPolicy(archive_max_entries=10))
    assert [f.kind for f in report.findings] == [archive.LIMIT]


def test_entries_are_counted_across_nesting():
    data = zipped({"a.zip": zipped({f"{i}.txt": b"x" for i in range(4)}), "b.txt": b"x"})  # 6 in all
    assert judge(data, None, "a.zip", InspectPolicy(archive_max_entries=5)).verdict is BLOCKED
    assert judge(data, None, "a.zip", InspectPolicy(archive_max_entries=6)).verdict is KEEP


def test_nesting_depth():
    data = samples.zip_file({"readme.txt": b"deep"})
    for _ in range(3):
        data = zipped({"inner.zip": data})  # four levels in all
    j = judge(data, None, "a.zip")
    assert (j.verdict, j.reason) == (BLOCKED, "archive exceeds inspection limits (nested more than 3 levels deep)")
    assert judge(data, None, "a.zip", InspectPolicy(archive_max_depth=4)).verdict is KEEP
    # Beyond the depth limit nothing is opened, so what is there is unknown.
    assert judge(data, None, "a.zip", InspectPolicy(on_archive_limit="keep")).verdict is KEEP


def test_declared_total_size():
    data = zipped({"a.txt": prose(2 << 20, 1), "b.txt": prose(1 << 20, 2)})
    j = judge(data, None, "a.zip", InspectPolicy(archive_max_total_bytes=2 << 20))
    assert (j.verdict, j.reason) == (BLOCKED, "archive exceeds inspection limits (expands to 3.0 MiB, limit 2.0 MiB)")
    assert judge(data, None, "a.zip", InspectPolicy(archive_max_total_bytes=3 << 20)).verdict is KEEP


def test_compression_ratio_per_member_and_in_total():
    data = samples.zip_bomb(4 << 20)  # zeros: ratio ~1000
    j = judge(data, None, "a.zip")
    assert (j.verdict, j.reason) == (BLOCKED, "archive exceeds inspection limits (compression ratio over "
                                              "200:1 in zeros.bin)")
    assert judge(data, None, "a.zip", InspectPolicy(archive_max_ratio=2000)).verdict is KEEP
    # Small members are not bombs, however well they compress.
    assert judge(samples.zip_bomb(512 * 1024), None, "a.zip").verdict is KEEP


def test_a_nested_archive_too_large_for_the_budget():
    inner = zipped({f"{i}.txt": prose(1 << 20, i) for i in range(3)}, zipfile.ZIP_STORED)  # 3 MiB
    data = zipped({"inner.zip": inner})
    j = judge(data, None, "a.zip", InspectPolicy(archive_max_inflate_bytes=2 << 20))
    assert (j.verdict, j.reason) == (BLOCKED, "archive exceeds inspection limits (nested archive inner.zip "
                                              "is too large to inspect)")
    assert judge(data, None, "a.zip").verdict is KEEP
    # Stored, a nested archive is read in place: no decompression, no budget.
    stored = zipped({"inner.zip": inner}, zipfile.ZIP_STORED)
    assert judge(stored, None, "a.zip", InspectPolicy(archive_max_inflate_bytes=1 << 20)).verdict is KEEP


# --- malformed archives ------------------------------------------------------------------

MALFORMED = [
    ("overlap", lambda: samples.overlap_zip(copies=10, size=1 << 20), "its entries overlap (a zip bomb technique)"),
    ("overlap renamed", lambda: samples.raw_zip([{"name": "a.txt", "data": b"x" * 100},
                                                 {"same_as": 0, "name": "b.txt"}]),
     "a local header disagrees with the central directory"),
    ("local name differs", lambda: samples.raw_zip([{"name": "a.txt", "local_name": "a.exe", "data": b"x"}]),
     "a local header disagrees with the central directory"),
    ("local size differs", lambda: _patch(samples.zip_file(), 22, struct.pack("<I", 5)),
     "a local header disagrees with the central directory"),
    ("past the end", lambda: _cut_member(samples.zip_file()), "an entry lies past the end of the file"),
    ("hidden entry", lambda: samples.raw_zip([{"name": "a.txt", "data": b"x"},
                                              {"name": "evil.exe", "data": b"y", "unlisted": True}]),
     "it hides entries that its directory does not list"),
    ("concatenated", lambda: samples.zip_file({"evil.exe": b"x"}) + samples.zip_file(),
     "it hides entries that its directory does not list"),
    ("undercounted", lambda: _patch_end(samples.zip_file({"a.txt": b"a", "b.txt": b"b"}), count=1),
     "its directory holds more entries than it declares"),
    ("lying size", lambda: samples.zip_bomb(1 << 20, declared=100), "member zeros.bin is larger than it declares"),
    ("lying stored size", lambda: samples.raw_zip([{"name": "mimetype", "method": 0, "data": b"application/epub+zip",
                                                    "usize": 3}]),
     "member mimetype is larger than it declares"),
]


def _patch(data: bytes, at: int, new: bytes) -> bytes:
    return data[:at] + new + data[at + len(new):]


def _cut_member(data: bytes) -> bytes:
    """Claim a compressed size far beyond the file, in both headers (so they agree)."""
    cd = data.index(b"PK\x01\x02")
    return _patch(_patch(data, 18, struct.pack("<I", 10_000)), cd + 20, struct.pack("<I", 10_000))


def _patch_end(data: bytes, count: int) -> bytes:
    end = data.rindex(b"PK\x05\x06")
    return _patch(data, end + 8, struct.pack("<HH", count, count))


@pytest.mark.parametrize("build,detail", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_archives_are_blocked(build, detail):
    for policy in (InspectPolicy(), PERMISSIVE):  # not a limit: no policy keeps them
        j = judge(build(), "application/zip", "a.zip", policy)
        assert (j.verdict, j.reason) == (BLOCKED, f"malformed archive: {detail}")


def test_truncated_archive_is_read_from_its_local_headers():
    full = zipped({"a.txt": samples.text(), "run.exe": b"MZ"})
    cut = full[:full.index(b"PK\x01\x02")]
    assert judge(cut, None, "a.zip").reason == "archive contains a .exe file (run.exe)"
    docx = samples.docx()
    assert judge(docx[:docx.index(b"PK\x01\x02")], DOCX, "a.docx").verdict is KEEP


# --- bombs: bounded work -----------------------------------------------------------------

class CountingZlib:
    """Stands in for the zlib module in archive.py and counts every byte inflated."""

    def __init__(self) -> None:
        self.total = 0
        self.error = zlib.error

    def decompressobj(self, *args):
        real, outer = zlib.decompressobj(*args), self

        class Counted:
            def decompress(self, data, max_length=0):
                out = real.decompress(data, max_length)
                outer.total += len(out)
                return out

            def __getattr__(self, name):
                return getattr(real, name)
        return Counted()


@pytest.fixture
def counting_zlib(monkeypatch):
    counter = CountingZlib()
    monkeypatch.setattr(archive, "zlib", counter)
    return counter


def test_a_real_zip_bomb_is_blocked_cheaply(counting_zlib):
    bomb = samples.zip_bomb()  # 1 GiB of zeros in about 1 MiB
    assert len(bomb) < 2 << 20
    j = judge(bomb, "application/zip", "bomb.zip")
    assert j.verdict is BLOCKED and j.reason.startswith("archive exceeds inspection limits (compression ratio")
    assert counting_zlib.total == 0  # refused by its declared sizes: nothing inflated


@pytest.mark.parametrize("budget", [64 * 1024, 1 << 20, 8 << 20])
def test_bomb_inspection_never_inflates_more_than_the_budget(counting_zlib, budget):
    # Limits raised so nothing stops early: the budget alone bounds the work.
    policy = InspectPolicy(archive_max_ratio=1e9, archive_max_total_bytes=1 << 50, on_archive_limit="keep",
                           archive_max_inflate_bytes=budget)
    nested = zipped({"bomb.zip": samples.zip_bomb(), "again.zip": samples.zip_bomb()}, zipfile.ZIP_STORED)
    for data in (samples.zip_bomb(), samples.zip_bomb(declared=1), nested):
        counting_zlib.total = 0
        report = archive.inspect(data, policy)
        assert report.inflated <= budget
        assert counting_zlib.total == report.inflated
        judge(data, None, "a.zip", policy)
        assert counting_zlib.total <= 2 * budget


def test_nested_bombs_are_bounded_and_blocked(counting_zlib):
    data = zipped({f"bomb{i}.zip": samples.zip_bomb() for i in range(3)}, zipfile.ZIP_STORED)
    j = judge(data, None, "a.zip")
    assert j.verdict is BLOCKED
    assert counting_zlib.total <= InspectPolicy().archive_max_inflate_bytes


def test_the_overlap_bomb_is_refused_before_anything_is_inflated(counting_zlib):
    bomb = samples.overlap_zip(copies=100, size=16 << 20)  # 1.6 GB from a few KiB
    assert len(bomb) < 64 * 1024
    report = archive.inspect(bomb, PERMISSIVE)
    assert report.inflated == 0 and counting_zlib.total == 0
    assert report.findings[0].kind == archive.MALFORMED
    j = judge(bomb, None, "a.zip", PERMISSIVE)
    assert (j.verdict, j.reason) == (BLOCKED, "malformed archive: its entries overlap (a zip bomb technique)")
    assert counting_zlib.total == 0


def test_many_members_share_one_budget(counting_zlib):
    data = zipped({f"{i}.txt": prose(16 * 1024, i) for i in range(400)})  # 6.25 MiB of members
    policy = InspectPolicy(archive_max_inflate_bytes=256 * 1024)
    report = archive.inspect(data, policy)
    assert report.inflated <= 256 * 1024 and counting_zlib.total <= 256 * 1024
    assert [f.reason for f in report.findings] == \
        ["archive exceeds inspection limits (more content than can be inspected)"]
    assert judge(data, None, "a.zip", policy).verdict is BLOCKED
    assert judge(data, None, "a.zip").verdict is KEEP  # the default budget covers every head


# =============================================================================
# 4. Policy, and robustness
# =============================================================================

def test_policy_defaults():
    p = InspectPolicy()
    assert p.blocked_types == frozenset({"executable", "disk-image", "onenote"})
    assert {"iso", "img", "vhd", "vhdx"} <= p.blocked_extensions
    assert (p.suspicious_names, p.block_active_content) == (True, True)
    assert (p.on_unknown, p.on_polyglot, p.on_encrypted_archive, p.on_macros, p.on_archive_limit) == \
        ("keep", "block", "keep", "keep", "block")
    assert (p.archive_max_entries, p.archive_max_depth, p.archive_max_total_bytes, p.archive_max_ratio,
            p.archive_max_inflate_bytes) == (10_000, 3, 1 << 30, 200, 8 << 20)


@pytest.mark.parametrize("field,value", [
    ("on_unknown", "spoof"), ("on_polyglot", "strip"), ("on_encrypted_archive", ""), ("on_macros", "Block"),
    ("on_archive_limit", None), ("archive_max_entries", 0), ("archive_max_depth", -1),
    ("archive_max_total_bytes", 0), ("archive_max_ratio", 0), ("archive_max_inflate_bytes", -5),
])
def test_policy_rejects_nonsense(field, value):
    with pytest.raises(ValueError, match=field):
        InspectPolicy(**{field: value})


HOSTILE = {
    "bomb": lambda: samples.zip_bomb(4 << 20),
    "overlap": lambda: samples.overlap_zip(copies=5, size=1 << 16),
    "docm": samples.docm,
    "encrypted": samples.encrypted_zip,
    "nested": lambda: zipped({"a.zip": samples.docx(), "b.txt": samples.pe_exe()}),
    "polyglot": lambda: pdf_zip({"a.exe": b"MZ"}),
    "zip64ish": lambda: _patch_end(samples.zip_file(), 0xFFFF),
    "iso": samples.iso,
    "epub": lambda: with_member(samples.epub(), "quiz.js", b"let x = 1;"),
    "lying mimetype": lambda: samples.raw_zip([{"name": "mimetype", "method": 0, "data": b"application/epub+zip",
                                                "usize": 3}, {"name": "a.js", "data": b"x"}]),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_truncated_and_corrupted_hostile_files_never_crash(name):
    data = HOSTILE[name]()
    step = max(1, len(data) // 150)
    variants = [data[:cut] for cut in range(0, len(data), step)]
    variants += [data[cut:] for cut in range(1, len(data), step * 7)]
    for at in range(0, len(data), step):
        variants.append(data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:])
    for v in variants:
        j = judge(v, "application/zip", "a.zip")
        assert j.verdict in (KEEP, EMPTY, SPOOFED, BLOCKED)
        assert_sane(j)


def test_zip64_archives_are_read():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in (("a.txt", b"hello"), ("run.exe", b"x")):
            with zf.open(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), "w", force_zip64=True) as f:
                f.write(data)
    j = judge(buf.getvalue(), None, "a.zip")
    assert (j.verdict, j.reason) == (BLOCKED, "archive contains a .exe file (run.exe)")
