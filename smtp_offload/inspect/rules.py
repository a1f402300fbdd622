"""The verdict on one attachment: EMPTY > BLOCKED > SPOOFED > KEEP.

A sender makes up to two claims about a file — its Content-Type and its
file-name extension. Each claim is mapped to a canonical type and compared
with what sniff() found. A claim can be confirmed, contradicted, or
uncheckable (a type we know nothing about, or bytes we do not recognise);
only a contradiction makes a file SPOOFED. Guessing would strip legitimate
attachments, which mail admins rightly hate more than a missed mislabel.

What a file *is* outranks what it is called, so within each verdict the
content reasons come first: BLOCKED by type, by extension, for active
content, macros, what an archive holds, a polyglot reading, unknown bytes;
then SPOOFED by a contradicted claim, by an archive member's name or path,
and last by a file name built to deceive (names.py).
"""

from __future__ import annotations

import fnmatch

from ..model import Judgement, Verdict
from . import archive as A
from . import tables as T
from . import zipfmt
from .active import find_active, starts_as_xml
from .names import double_extension, file_extension, name_problem
from .policy import InspectPolicy, KeepOrBlock
from .sniff import ole_has_vba, sniff, text_encoding

__all__ = ["InspectPolicy", "judge", "consistent", "declared_base", "file_extension", "RULES"]

# Every rule code judge() gives a Judgement that removes a file (Judgement.rule), with the
# facts each one carries. The notice templates say each in plain words, per language
# (smtp_offload/notices/templates/<language>/words.txt); tests/test_notices.py holds them to it.
# "type" is always the detected MIME type; "claimed" a canonical MIME type the sender claimed.
RULES: dict[str, tuple[str, ...]] = {
    "empty": (),
    "disguised": ("type", "claimed", "ext"),  # a blocked type named or declared as another
    "program": ("type", "ext"),  # an executable (blocked_types' executable category)
    "blocked_type": ("type",),
    "blocked_extension": ("ext", "double"),  # double: "pdf.exe" when the name has two
    "not_allowed": ("type",),  # outside policy.allowed_types
    "active_content": ("kind", "feature"),  # kind: html, svg, xml
    "macros": ("type",),
    "hidden": ("type", "member", "member_type", "ext"),  # an archive inside a PDF or image holds a blocked file
    "polyglot": ("type",),
    "archive_malformed": (),
    "archive_blocked": ("type", "member", "member_type", "ext"),
    "archive_limit": ("type",),
    "archive_encrypted": ("type",),
    "archive_macros": ("type", "member", "member_type"),
    "unknown_binary": (),
    "declared_mismatch": ("type", "claimed"),
    "extension_mismatch": ("type", "claimed", "ext"),
    "archive_path": ("member",),
    "archive_macro_name": ("member",),
    "archive_name": ("member", "problem"),
    "name_bidi": (),
    "name_control": (),
    "name_clsid": (),
    "double_extension": ("ext", "double"),
    "name_trailing": (),
    "name_too_long": (),
    # Set by delivery/decide.py, which judges the containers around files:
    "carries": ("container", "file", "inner"),  # an attached message (or signed content) carries a
    #                                             removed file; the inner rule's facts come along
    "unknown_encoding": (),
    "signed_ambiguous": (),
}
# What an archive finding of each kind is called as a rule (see _archive_refusal).
_ARCHIVE_RULES = {A.MALFORMED: "archive_malformed", A.BLOCKED: "archive_blocked", A.LIMIT: "archive_limit",
                  A.ENCRYPTED: "archive_encrypted", A.MACRO: "archive_macros", A.ESCAPE: "archive_path",
                  A.SPOOF: "archive_macro_name", A.NAME: "archive_name"}

# Claims under which a browser renders text as markup, whatever the bytes start with.
_MARKUP_CLAIMS = frozenset({T.HTML, T.SVG, "application/xhtml+xml"})
_MARKUP_EXTS = frozenset("html htm xhtml xht shtml svg mht mhtml".split())
_XML_CLAIMS = frozenset({"application/xml", "application/xslt+xml"})  # text/xml is an alias
_XML_EXTS = frozenset("xml xsl xslt".split())


def judge(
    data: bytes,
    declared_type: str | None,
    filename: str | None,
    policy: InspectPolicy = InspectPolicy(),
) -> Judgement:
    """Judge one attachment's bytes against its declared type and name."""
    detected, detected_ext = sniff(data)

    def verdict(v: Verdict, reason: str, rule: str = "", **facts: str | None) -> Judgement:
        shown = tuple((k, f) for k, f in facts.items() if f)
        return Judgement(v, reason, detected, detected_ext, rule, shown)

    if not data:
        return verdict(Verdict.EMPTY, "file is empty (0 bytes)", "empty")

    declared = declared_base(declared_type)
    declared_claim = None if declared is None or declared in T.NO_CLAIM else T.ALIASES.get(declared, declared)
    ext = file_extension(filename)
    ext_claim = T.EXTENSIONS.get(ext) if ext else None
    what = _name(detected)
    bare = _bare(what)

    # BLOCKED: what it is outranks what it is called.
    if _matches_any(detected, policy.blocked_types, strict=True):
        for claim, label, by_name in ((declared_claim, declared, False), (ext_claim, f".{ext} file", True)):
            if claim and consistent(detected, claim) is False:
                disguise = _bare(T.NAMES[claim]) if claim in T.NAMES else label
                return verdict(Verdict.BLOCKED, f"{bare[0].upper()}{bare[1:]} disguised as {disguise}", "disguised",
                               type=detected, claimed=claim, ext=ext if by_name else None)
        if detected in T.CATEGORIES["executable"]:
            return verdict(Verdict.BLOCKED, f"executable files are not accepted ({bare})", "program",
                           type=detected, ext=ext or detected_ext)
        return verdict(Verdict.BLOCKED, f"files of this type are not accepted ({bare})", "blocked_type", type=detected)
    if ext and ext in policy.blocked_extensions:
        double = double_extension(filename) if policy.suspicious_names else None
        shown = f" (double extension .{double[0]}.{double[1]})" if double else ""
        return verdict(Verdict.BLOCKED, f"files with the .{ext} extension are not accepted{shown}", "blocked_extension",
                       ext=ext, double=".".join(double) if double else None)
    if policy.allowed_types is not None and not _matches_any(detected, policy.allowed_types, strict=False):
        return verdict(Verdict.BLOCKED, f"content is {what}, which is not an accepted file type", "not_allowed",
                       type=detected)
    if policy.block_active_content and detected in (T.HTML, T.SVG, T.TEXT):
        page = detected != T.TEXT or declared_claim in _MARKUP_CLAIMS or ext in _MARKUP_EXTS
        # XML opens in a browser too; it runs script only in the XHTML or SVG namespace.
        xml = not page and (declared_claim in _XML_CLAIMS or (declared_claim or "").endswith("+xml")
                            or ext in _XML_EXTS)
        encoding = text_encoding(data) if page or xml or b"<" in data[:512] else None
        xml = xml or (not page and encoding is not None and starts_as_xml(data, encoding))
        feature = find_active(data, encoding, xml=xml) if page or xml else None
        if feature:
            kind = "XML document" if xml else "SVG image" if T.SVG in (detected, declared_claim, ext_claim) \
                else "HTML document"
            return verdict(Verdict.BLOCKED, f"{kind} with active content is not accepted ({feature})", "active_content",
                           kind=kind.split()[0].lower(), feature=feature)
    if policy.on_macros is KeepOrBlock.BLOCK and (
            detected in T.MACRO_OOXML or (detected == T.OLE and ole_has_vba(data))):
        return verdict(Verdict.BLOCKED, f"Office documents with macros are not accepted ({bare})", "macros",
                       type=detected)
    report, mode = _look_inside(data, detected, policy)
    refusal = _archive_refusal(report, mode, what, policy)
    if refusal:
        reason, rule, facts = refusal
        return verdict(Verdict.BLOCKED, reason, rule, type=detected, **facts)
    if policy.on_unknown is KeepOrBlock.BLOCK and detected == T.OCTET:
        return verdict(Verdict.BLOCKED, "content is unrecognised binary data, which is not accepted", "unknown_binary")

    # SPOOFED: a checkable claim contradicted by the bytes.
    def contradicted(claim: str | None) -> bool:
        if not claim or consistent(detected, claim) is not False:
            return False
        # Unknown bytes with an archive inside open in a zip tool all the same
        # (an installer stub, padding before it): a ZIP-based claim holds.
        return not (mode == "archive" and detected == T.OCTET and consistent(T.ZIP, claim))

    if contradicted(declared_claim):
        shown = declared if len(declared) <= 60 else declared[:57] + "..."  # sender-controlled
        return verdict(Verdict.SPOOFED, f"content is {what} but it was declared as {shown}", "declared_mismatch",
                       type=detected, claimed=declared_claim)
    if contradicted(ext_claim):
        return verdict(Verdict.SPOOFED, f"content is {what} but the file name ends in .{ext}", "extension_mismatch",
                       type=detected, claimed=ext_claim, ext=ext)
    if mode == "archive":
        kinds = (A.ESCAPE, A.SPOOF, A.NAME) if policy.suspicious_names else (A.ESCAPE, A.SPOOF)
        found = next((f for k in kinds for f in report.findings if f.kind == k), None)
        if found:
            return verdict(Verdict.SPOOFED, found.reason, _ARCHIVE_RULES[found.kind], type=detected,
                           **_member_facts(found))
    problem = name_problem(filename) if policy.suspicious_names else None
    if problem:
        double = double_extension(filename) if problem.code == "double_extension" else None
        rule = problem.code if problem.code == "double_extension" else f"name_{problem.code}"
        return verdict(Verdict.SPOOFED, problem.detail, rule,
                       ext=double[1] if double else None, double=".".join(double) if double else None)

    note = ""
    if mode == "archive" and report.encrypted:
        note = " (encrypted members not inspected)"
    elif mode == "archive" and report.first(A.LIMIT):
        note = " (archive not fully inspected)"
    confirmed = any(c and consistent(detected, c) for c in (declared_claim, ext_claim))
    if confirmed:
        return verdict(Verdict.KEEP, f"content is {what}, consistent with how it is labelled{note}")
    return verdict(Verdict.KEEP, f"content is {what}; nothing contradicts its type or name{note}")


def _look_inside(data: bytes, detected: str, policy: InspectPolicy) -> tuple[A.Report | None, str | None]:
    """Inspect the ZIP archive that `data` is or carries, and say how to read the findings.

    "archive": the file is an archive (or unknown bytes with one inside, which
    unzip tools open all the same): every finding counts. "polyglot": a PDF
    or image that is also an archive, a classic way to slip one past a
    gateway. "host": anything else with an archive inside (an Outlook .msg
    holding a zip, say): only what the archive holds counts, because its
    structure is at the mercy of the host's own layout.
    """
    if detected in T.ZIP_CONTAINERS:
        return A.inspect(data, policy), "archive"
    if detected in (T.TEXT, T.HTML, T.SVG):
        return None, None
    d = zipfmt.locate(data)
    if d is None or d.count == 0:
        return None, None
    report = A.inspect(data, policy, whole=False)
    if detected == T.OCTET:
        return report, "archive"
    return report, "polyglot" if detected == T.PDF or detected.startswith("image/") else "host"


def _archive_refusal(report: A.Report | None, mode: str | None, what: str,
                     policy: InspectPolicy) -> tuple[str, str, dict[str, str]] | None:
    """(reason, rule, facts) when what the archive holds refuses the file."""
    if report is None:
        return None
    if mode != "archive":
        found = report.first(A.BLOCKED)
        if found:
            return "hidden " + found.reason, "hidden", _member_facts(found)
        if mode == "polyglot" and policy.on_polyglot is KeepOrBlock.BLOCK:
            return f"file is both {what} and a ZIP archive", "polyglot", {}
        return None
    kinds = [A.MALFORMED, A.BLOCKED]
    kinds += [A.LIMIT] if policy.on_archive_limit is KeepOrBlock.BLOCK else []
    kinds += [A.ENCRYPTED] if policy.on_encrypted_archive is KeepOrBlock.BLOCK else []
    kinds += [A.MACRO] if policy.on_macros is KeepOrBlock.BLOCK else []
    found = next((f for k in kinds for f in report.findings if f.kind == k), None)
    return (found.reason, _ARCHIVE_RULES[found.kind], _member_facts(found)) if found else None


def _member_facts(found: A.Finding) -> dict[str, str]:
    """An archive finding's facts, its member's type as member_type (the file's own is "type");
    a member blocked by its name gets the type its extension stands for."""
    facts = {("member_type" if k == "type" else k): v for k, v in found.facts}
    if "member_type" not in facts and facts.get("ext") in T.EXTENSIONS:
        facts["member_type"] = T.EXTENSIONS[facts["ext"]]
    return facts


def consistent(detected: str, claim: str) -> bool | None:
    """Whether content of type `detected` may honestly be called `claim`.

    True: confirmed. False: contradicted. None: cannot be checked, because the
    claim is a type we cannot recognise or the bytes are unrecognised binary
    (which only contradicts a claim of text or of a format with a signature).
    """
    claim = T.ALIASES.get(claim, claim)
    if claim == detected or claim in T.ACCEPTS.get(detected, ()):
        return True
    if detected in (T.HTML, T.SVG):
        return consistent(T.TEXT, claim)  # markup is text, and Office opens HTML saved as .doc/.xls
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
        # Unrecognised bytes are not text, nor a format that always carries a signature.
        return False if text_claim or claim in T.SIGNATURE_TYPES else None
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
