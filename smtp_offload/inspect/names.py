"""A file name is data, never a path: spot names built to deceive; make any name safe to show.

A path in a name ("C:\\fakepath\\scan.pdf" from a browser upload, "../x.pdf" from a scanner)
is disarmed rather than held against the file: every client saves only its base name, so
that is the name we judge, show and relay (disarm). Archive members are another matter:
there a path is where an unzip tool writes (archive.py).

Senders control the name completely. The tricks here are old and still work
because Windows Explorer and mail clients render names faithfully: a
right-to-left override shows "invoice\\u202Efdp.exe" as "invoiceexe.pdf",
"invoice.pdf.exe" shows as "invoice.pdf" when extensions are hidden, Windows
drops trailing dots and spaces ("evil.exe." runs as evil.exe), and a CLSID
extension makes Explorer open the file with whatever handler that class names.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from . import tables as T

MAX_NAME = 255  # what NTFS and most file systems accept for one name
DISPLAY_MAX = 200

# Bidirectional embeddings, overrides and isolates: they reorder how the name is
# displayed without changing what the system acts on. The marks (LRM U+200E, RLM U+200F,
# ALM U+061C) are not among them: they are invisible strong characters, common in Hebrew
# and Arabic names, and cannot move the Latin letters of an extension.
BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_CLSID = re.compile(r"\{[0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}\}")
_DRIVE = re.compile(r"[A-Za-z]:[\\/]")


@dataclass(frozen=True)
class NameProblem:
    label: str  # short, to append to another reason: "double extension .pdf.exe"
    detail: str  # a whole reason: "file name has a double extension ..."
    code: str = ""  # machine-readable, for a notice's plain sentence: "bidi", "double_extension" ...


def name_problem(name: str | None) -> NameProblem | None:
    """The first deception found in `name`, or None for an honest-looking name."""
    if not name:
        return None
    name = disarm(name)  # what a client saves is the base name: judge that
    bidi = next((c for c in name if c in BIDI), None)
    if bidi:
        code = f"U+{ord(bidi):04X}"
        return NameProblem(f"bidirectional control {code}",
                           f"file name contains a bidirectional text control ({code}) that can disguise its extension",
                           "bidi")
    if any(unicodedata.category(c) == "Cc" for c in name):
        return NameProblem("control characters", "file name contains control characters (such as NUL, CR or LF)",
                           "control")
    clsid = _CLSID.search(name)
    if clsid:
        return NameProblem("a class ID", f"file name contains a Windows class ID {clsid.group(0)}, "
                                         "which hides its real type", "clsid")
    double = double_extension(name)
    if double:
        mid, last = double
        return NameProblem(f"double extension .{mid}.{last}",
                           f"double extension: a .{last} file made to look like a .{mid} file", "double_extension")
    if name != name.rstrip(". "):
        return NameProblem("trailing dot or space", "file name ends in a dot or space, which Windows silently drops",
                           "trailing")
    if len(name) > MAX_NAME:
        return NameProblem("too long", f"file name is too long ({len(name)} characters)", "too_long")
    return None


def escapes(name: str) -> bool:
    """Would `name`, used as a path, leave the folder it is saved in?

    A slash inside a name is tolerated ("</b> & co.pdf" is a real attachment
    name, and every client keeps only the last part); a root, a drive, a UNC
    share or a ".." component is an attempt to write elsewhere.
    """
    path = name.replace("\\", "/")
    return path.startswith("/") or bool(_DRIVE.match(name)) or ".." in path.split("/")


def base_name(name: str) -> str:
    """The last non-empty component of `name` read as a Windows or POSIX path."""
    parts = [p for p in re.split(r"[\\/]", name) if p.strip()]
    return parts[-1] if parts else ""


def disarm(name: str) -> str:
    """`name` without the path that would take it out of the folder it is saved in.

    Only real paths (a root, a drive, a UNC share, a ".." component) are cut: a slash inside
    an ordinary name ("</b> & co.pdf") stays as the sender wrote it.
    """
    return base_name(name) if escapes(name) else name


def double_extension(name: str) -> tuple[str, str] | None:
    """("pdf", "exe") for "invoice.pdf.exe": a known type's extension hiding a risky one."""
    base = re.split(r"[\\/]", name)[-1].rstrip(". ")  # as Windows will see it
    parts = base.split(".")
    if len(parts) < 3:
        return None
    # Padding before the last dot ("invoice.pdf          .exe") is the same trick.
    mid, last = parts[-2].strip().lower(), parts[-1].strip().lower()
    # "jquery.min.js" or "setup.x64.exe" only look double: the middle part is no file type.
    if last in T.RISKY_EXTENSIONS and mid in T.EXTENSIONS:
        return mid, last
    return None


def safe_display_name(name: str | None) -> str:
    """`name` made safe to show in a notice or a log line: "" when nothing is left.

    Controls and line breaks become spaces, invisible format characters
    (bidi controls, zero-width characters) go, only the last path part is
    kept, whitespace is collapsed, and long names keep their start and their
    extension (the part a reader must see) around an ellipsis.
    """
    if not name:
        return ""
    out = []
    for c in name:
        cat = unicodedata.category(c)
        if cat in ("Cc", "Zl", "Zp"):
            out.append(" ")
        elif cat == "Cs":
            out.append("\ufffd")  # a lone surrogate cannot be encoded for a log line
        elif cat != "Cf":
            out.append(c)
    parts = [p for p in re.split(r"[\\/]", "".join(out)) if p.strip()]
    shown = " ".join(parts[-1].split()) if parts else ""
    if len(shown) > DISPLAY_MAX:
        shown = shown[:150] + "\u2026" + shown[-(DISPLAY_MAX - 151):]
    return shown


def file_extension(filename: str | None) -> str | None:
    """Lower-case extension of the base name, as Windows would see it."""
    if not filename:
        return None
    # Windows drops trailing dots and spaces ("evil.exe. " opens as evil.exe);
    # a trailing separator is dropped too, in case a client sanitises it away.
    path = filename.replace("\\", "/").rstrip("/. \t\r\n\x00")
    base = path.rsplit("/", 1)[-1].rstrip(". \t\r\n\x00")
    if "." not in base:
        return None
    ext = base.rsplit(".", 1)[1].strip().lower()
    return ext or None
