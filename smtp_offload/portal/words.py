"""What the customer reads about each file, in plain words (pure functions).

The judge's reasons are written for administrators ("Windows executable disguised as PDF");
a customer needs to know what was wrong and what to send instead.
"""

from __future__ import annotations

from ..inspect import tables as T
from ..inspect.names import file_extension
from ..model import Verdict
from ..units import human_size

# Where the judge's words are too technical for a customer.
_PLAIN = {T.PE: "a Windows program", T.ELF: "a program", T.MACHO: "a Mac program", T.MSI: "a Windows installer",
          T.SHELL: "a script", T.SCRIPT: "a script", T.OCTET: "a file we cannot recognise",
          T.LNK: "a Windows shortcut", T.JAR: "a Java program"}
_PROGRAMS = {T.PE, T.ELF, T.MACHO, T.MSI, T.SHELL, T.SCRIPT, T.LNK, T.JAR, T.JAVA_CLASS}

RECEIVED = "received"


def kind(mime: str) -> str:
    """"a PDF", "a Windows program", "a JPEG image"."""
    return _PLAIN.get(mime) or T.NAMES.get(mime) or f"a file of type {mime}"


def kind_of_extension(ext: str) -> str:
    mime = T.EXTENSIONS.get(ext.lower())
    return kind(mime) if mime else f"a .{ext} file"


def _bare(name: str) -> str:
    for article in ("a ", "an "):
        if name.startswith(article):
            return name[len(article):]
    return name


def refusal(verdict: Verdict, reason: str, detected: str, filename: str) -> str:
    """"refused: this file is a Windows program, not a PDF — please send the original PDF"."""
    ext = file_extension(filename)
    if verdict is Verdict.EMPTY:
        return "refused: this file is empty — please choose the file again"
    disguised = verdict is Verdict.BLOCKED and ext not in T.DEFAULT_BLOCKED_EXTENSIONS \
        and detected != T.OCTET and T.EXTENSIONS.get(ext or "") != detected
    if ext and (verdict is Verdict.SPOOFED or disguised):
        claimed = kind_of_extension(ext)
        return f"refused: this file is {kind(detected)}, not {claimed} — please send the original {_bare(claimed)}"
    if detected in _PROGRAMS or (ext and ext in T.DEFAULT_BLOCKED_EXTENSIONS):
        return "refused: programs and scripts cannot be accepted — please send a document or a picture"
    return f"refused: {reason} — please send a PDF or a picture instead"


def not_accepted(ext: str | None, accepted: list[str]) -> str:
    shown = ", ".join(e.upper() for e in accepted[:12]) + (", …" if len(accepted) > 12 else "")
    what = f".{ext} files" if ext else "files without an extension"
    return f"refused: {what} are not accepted here — please send one of: {shown}"


def too_large(limit: int) -> str:
    return f"refused: this file is larger than {human_size(limit)}, the most one file may be"
