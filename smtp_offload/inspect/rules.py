"""The verdict on one attachment: EMPTY > BLOCKED > SPOOFED > KEEP.

A sender makes up to two claims about a file — its Content-Type and its
file-name extension. Each claim is mapped to a canonical type and compared
with what sniff() found. A claim can be confirmed, contradicted, or
uncheckable (a type we know nothing about, or bytes we do not recognise);
only a contradiction makes a file SPOOFED. Guessing would strip legitimate
attachments, which mail admins rightly hate more than a missed mislabel.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from ..model import Judgement, Verdict
from . import tables as T
from .sniff import sniff


def _items(value) -> list[str]:
    # A lone string would otherwise be iterated character by character.
    return [value] if isinstance(value, str) else list(value)


def _norm_type(t: str) -> str:
    t = t.strip().lower()
    return T.ALIASES.get(t, t)


@dataclass(frozen=True)
class InspectPolicy:
    # Detected MIME types ("application/zip"), families ("image/*") or
    # categories ("executable", "archive") that are refused whatever their name.
    blocked_types: frozenset[str] = frozenset({"executable"})
    # Lower-case, no dot. Refused whatever the content.
    blocked_extensions: frozenset[str] = T.DEFAULT_BLOCKED_EXTENSIONS
    # When set, only these detected types (same syntax as blocked_types) pass.
    allowed_types: frozenset[str] | None = None

    def __post_init__(self) -> None:
        # Config files hand us lists, mixed case and ".exe": normalise once here.
        object.__setattr__(self, "blocked_types", frozenset(_norm_type(t) for t in _items(self.blocked_types)))
        object.__setattr__(self, "blocked_extensions", frozenset(
            e.strip().lower().lstrip(".") for e in _items(self.blocked_extensions)))
        if self.allowed_types is not None:
            object.__setattr__(self, "allowed_types",
                               frozenset(_norm_type(t) for t in _items(self.allowed_types)))


def judge(
    data: bytes,
    declared_type: str | None,
    filename: str | None,
    policy: InspectPolicy = InspectPolicy(),
) -> Judgement:
    """Judge one attachment's bytes against its declared type and name."""
    detected, detected_ext = sniff(data)

    def verdict(v: Verdict, reason: str) -> Judgement:
        return Judgement(v, reason, detected, detected_ext)

    if not data:
        return verdict(Verdict.EMPTY, "file is empty (0 bytes)")

    declared = declared_base(declared_type)
    declared_claim = None if declared is None or declared in T.NO_CLAIM else T.ALIASES.get(declared, declared)
    ext = file_extension(filename)
    ext_claim = T.EXTENSIONS.get(ext) if ext else None
    what = _name(detected)

    # BLOCKED: what it is outranks what it is called.
    if _matches_any(detected, policy.blocked_types, strict=True):
        bare = _bare(what)
        for claim, label in ((declared_claim, declared), (ext_claim, f".{ext} file")):
            if claim and consistent(detected, claim) is False:
                disguise = _bare(T.NAMES[claim]) if claim in T.NAMES else label
                return verdict(Verdict.BLOCKED, f"{bare[0].upper()}{bare[1:]} disguised as {disguise}")
        if detected in T.CATEGORIES["executable"]:
            return verdict(Verdict.BLOCKED, f"executable files are not accepted ({bare})")
        return verdict(Verdict.BLOCKED, f"files of this type are not accepted ({bare})")
    if ext and ext in policy.blocked_extensions:
        return verdict(Verdict.BLOCKED, f"files with the .{ext} extension are not accepted")
    if policy.allowed_types is not None and not _matches_any(detected, policy.allowed_types, strict=False):
        return verdict(Verdict.BLOCKED, f"content is {what}, which is not an accepted file type")

    # SPOOFED: a checkable claim contradicted by the bytes.
    if declared_claim and consistent(detected, declared_claim) is False:
        shown = declared if len(declared) <= 60 else declared[:57] + "..."  # sender-controlled
        return verdict(Verdict.SPOOFED, f"content is {what} but it was declared as {shown}")
    if ext_claim and consistent(detected, ext_claim) is False:
        return verdict(Verdict.SPOOFED, f"content is {what} but the file name ends in .{ext}")

    confirmed = any(c and consistent(detected, c) for c in (declared_claim, ext_claim))
    if confirmed:
        return verdict(Verdict.KEEP, f"content is {what}, consistent with how it is labelled")
    return verdict(Verdict.KEEP, f"content is {what}; nothing contradicts its type or name")


def consistent(detected: str, claim: str) -> bool | None:
    """Whether content of type `detected` may honestly be called `claim`.

    True: confirmed. False: contradicted. None: cannot be checked, because the
    claim is a type we cannot recognise or the bytes are unrecognised binary
    (which only contradicts a claim of text).
    """
    claim = T.ALIASES.get(claim, claim)
    if claim == detected or claim in T.ACCEPTS.get(detected, ()):
        return True
    text_claim = T.is_text_claim(claim)
    if detected == T.TEXT:
        # Office happily opens CSV, HTML and RTF saved as .xls/.doc, and
        # Excel/Outlook declare CSV as application/vnd.ms-excel.
        if text_claim or claim in ("application/msword", "application/vnd.ms-excel",
                                   "application/rtf", "application/postscript"):
            return True
        return False if _known(claim) else None
    if not (text_claim or _known(claim)):
        return None
    if detected in (T.OCTET, T.EMPTY):
        return False if text_claim else None
    if text_claim and (detected in T.SCRIPTS or detected in ("application/rtf", "application/postscript")):
        return True  # text formats with a signature are still text
    return False


def declared_base(declared_type: str | None) -> str | None:
    """'Image/PNG; name="a.png"' -> 'image/png'; None when no usable type."""
    if not declared_type:
        return None
    base = declared_type.split(";", 1)[0].strip().lower()
    base = base.split()[0] if base else base  # "image/png name=a.png" (missing ';')
    return base if base.count("/") == 1 and not base.startswith("/") and not base.endswith("/") else None


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


# --- helpers --------------------------------------------------------------------

def _known(claim: str) -> bool:
    """A type whose bytes sniff() can recognise, so a mismatch means something."""
    return claim in T.KNOWN_TYPES


def _matches_any(detected: str, patterns: frozenset[str], strict: bool) -> bool:
    """Does `detected` match a policy entry (type, "major/*" family, category)?

    Blocking is strict (only what the bytes are). Allowing is lenient: an
    allowed type also admits content that may be that type but cannot be told
    apart from it (an OLE2 file for application/msword, text for text/csv).
    """
    for p in patterns:
        if p in T.CATEGORIES:
            if detected in T.CATEGORIES[p]:
                return True
        elif detected == p or ("*" in p and fnmatch.fnmatchcase(detected, p)):
            return True
        elif not strict and consistent(detected, p):
            return True
    return False


def _name(mime: str) -> str:
    return T.NAMES.get(mime) or f"a file of type {mime}"


def _bare(name: str) -> str:
    for article in ("a ", "an "):
        if name.startswith(article):
            return name[len(article):]
    return name
