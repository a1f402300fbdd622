"""What a notice template sees of one changed file: plain, already neutralised values.

Everything that came from the mail (the file name, an archive member's name, an extension) is
made safe to show here, once, before any template sees it: no control characters or line
breaks, no bidi tricks, clipped. Templates then only choose words.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

from ..delivery.decide import TNEF_REASON
from ..inspect import safe_display_name
from ..model import FileOutcome, Verdict
from ..units import human_size, when

NAME_MAX = 100  # a notice shows this much of a name: its start and its extension
FACT_MAX = 60  # facts are short: a type, an extension, an archive member's name


@dataclass(frozen=True)
class Item:
    """One changed file, as the templates read it (`f.name`, `f.rule`, `f.facts.claimed` ...)."""

    name: str  # safe to show; "" never: a nameless part is called "part-2.pdf" by the model
    size: str  # "12.3 MiB"
    type: str  # the detected MIME type, for words.txt's table of type names
    state: str  # "offloaded" (link), "not_stored" (storage failed, removed) or "removed"
    verdict: str  # "offload", "empty", "spoofed", "blocked"
    rule: str = ""  # inspect/rules.py RULES, "tnef", or "" (then `reason` is shown)
    facts: dict[str, str] = field(default_factory=dict)
    reason: str = ""  # the English reason, for rules the templates do not know
    link: str = ""
    expires: str = ""  # "2026-12-07 14:05 UTC"
    quarantine_id: str = ""


def clip(text: str, limit: int) -> str:
    """At most `limit` characters, keeping the end (an extension) after an ellipsis."""
    if len(text) <= limit:
        return text
    tail = max(limit // 3, 1)
    return text[:limit - tail - 1] + "\u2026" + text[-tail:]


def shown(value: str, limit: int = FACT_MAX) -> str:
    """A name (a file's, an archive member's) as a reader may safely see it."""
    return clip(safe_display_name(value), limit)


def plain(value: str, limit: int = FACT_MAX) -> str:
    """Any other value on one line: control, format and line-separator characters become spaces."""
    text = "".join(" " if unicodedata.category(c)[0] == "C" or c in "\u2028\u2029" else c for c in value)
    return clip(" ".join(text.split()), limit)


_NAMES = frozenset({"file", "member"})


def _rule(o: FileOutcome) -> tuple[str, dict[str, str]]:
    """The rule that removed the file, and its facts. The plan may have given its own reason
    (the winmail.dat policy, say); then the judgement's rule is not what removed it."""
    j = o.file.judgement
    if o.reason == j.reason and j.rule:
        return j.rule, {k: shown(v) if k in _NAMES else plain(v, 120 if k == "feature" else FACT_MAX)
                        for k, v in j.facts if v}
    if o.reason.endswith(TNEF_REASON):
        return "tnef", {}
    return "", {}


def item_of(o: FileOutcome) -> Item:
    name = shown(o.name, NAME_MAX) or "unnamed file"
    base = dict(name=name, size=human_size(o.size), type=o.file.judgement.detected_type, verdict=o.verdict.value,
                reason=plain(o.reason, 300))
    if o.verdict is Verdict.OFFLOAD and o.link:
        return Item(state="offloaded", link=o.link, expires=when(o.link_expires or 0), **base)
    if o.offload_failed:
        return Item(state="not_stored", **base)
    rule, facts = _rule(o)
    return Item(state="removed", rule=rule, facts=facts, quarantine_id=o.quarantine_id or "", **base)
