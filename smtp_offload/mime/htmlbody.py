"""Where a notice goes in an HTML body so that the reader sees it: where the body starts.

A regular expression finds "<body" inside a comment, a <style> sheet or a <title> as readily as
the real tag, and a notice put there is never shown. The body starts at a real <body> start tag,
or, without one, at the first thing that makes an HTML parser open the body on its own (text,
an element that does not belong in <head>). Until then the document is in its "head phase",
and that is all this module tokenizes, following the HTML standard's tokenizer and its
head-phase tree rules (WHATWG HTML 13.2.5, 13.2.6.4.1-13.2.6.4.6): comments, DOCTYPE, bogus
comments, and the text-only contents of <title>, <style>, <script> and <noframes>. (The
stdlib's html.parser reads some of these differently from browsers: "<!-->", "</ script>",
a <title>'s contents, "<!--<script>" inside a script.)

Anything whose tokenizing depends on more than that (<noscript> reads differently with and
without scripting, <template> holds a fragment) ends the head phase right there: a notice
placed before it opens the body and is visible all the same.
"""

from __future__ import annotations

import re

_WS = "\t\n\f\r "
_NAME_END = _WS + "/>"
# Start tags the head phase takes in without opening the body. Their contents are text-only:
_RCDATA = frozenset({"title"})
_RAWTEXT = frozenset({"style", "noframes"})
_HEAD_VOID = frozenset({"html", "head", "base", "basefont", "bgsound", "link", "meta"})
# End tags that open the body (the rest are ignored in the head phase).
_BODY_OPENING_END_TAGS = frozenset({"body", "html", "br"})
_BODY_TAG = re.compile(r"<body(?=[\t\n\f\r />])", re.IGNORECASE)
_SCRIPT = re.compile(r"<!--|-->|<(/?)script(?=[\t\n\f\r />])", re.IGNORECASE)


def notice_offset(html: str) -> int:
    """The offset in `html` where a notice is shown first in the body: right after a real
    <body> start tag, else right before whatever starts the body, else the end of the text."""
    i, n = 0, len(html)
    if html.startswith("\ufeff"):
        i = 1
    while i < n:
        text_end = html.find("<", i)
        if text_end < 0:
            text_end = n
        stripped = len(html[i:text_end].lstrip(_WS))
        if stripped:  # text that is not white space opens the body
            return text_end - stripped
        if text_end == n:
            return n
        if _BODY_TAG.match(html, text_end):  # the real <body> tag: the notice goes right after it
            end = _tag(html, text_end + 1)[1]
            return text_end if end is None else end
        nxt = _markup_end(html, text_end)
        if nxt is None:  # the body starts here (or nothing after this can be trusted)
            return text_end
        i = nxt
    return n


def _markup_end(s: str, lt: int) -> int | None:
    """The offset after the markup at s[lt] == "<", read in the head phase; None when the body
    starts at lt (or we cannot tell)."""
    c = s[lt + 1:lt + 2]
    if c.isascii() and c.isalpha():
        name, end = _tag(s, lt + 1)
        if end is None:  # unterminated tag at the end: nothing after it is content
            return None
        if name in _HEAD_VOID:
            return end
        if name in _RCDATA or name in _RAWTEXT:
            close = _end_tag(s, end, name)
            return None if close < 0 else close
        if name == "script":
            close = _script_end(s, end)
            return None if close < 0 else close
        return None  # any other element (also <noscript>, <template>) opens the body
    if c == "/":
        c2 = s[lt + 2:lt + 3]
        if c2.isascii() and c2.isalpha():
            name, end = _tag(s, lt + 2)
            if end is None or name in _BODY_OPENING_END_TAGS:
                return None
            return end  # </head> and stray end tags: the body has not started
        if c2 == ">":
            return lt + 3
        if not c2:
            return None  # "</" at the end is text
        return _to_gt(s, lt + 2)  # bogus comment
    if c == "!":
        if s.startswith("<!--", lt):
            return _comment_end(s, lt)
        return _to_gt(s, lt + 2)  # DOCTYPE, and CDATA (a bogus comment outside SVG/MathML): up to ">"
    if c == "?":
        return _to_gt(s, lt + 2)  # bogus comment
    return None  # a lone "<" is text


def _to_gt(s: str, i: int) -> int | None:
    j = s.find(">", i)
    return None if j < 0 else j + 1


def _comment_end(s: str, lt: int) -> int | None:
    i = lt + 4
    if s.startswith(">", i):  # "<!-->"
        return i + 1
    if s.startswith("->", i):  # "<!--->"
        return i + 2
    ends = [j for j in (s.find("-->", i), s.find("--!>", i)) if j >= 0]
    if not ends:
        return None
    j = min(ends)
    return j + (3 if s.startswith("-->", j) else 4)


def _tag(s: str, i: int) -> tuple[str, int | None]:
    """(lower-case tag name, offset after its ">") for the tag whose name starts at i; None for
    the offset when the text ends inside the tag. Attribute values may hide ">" in quotes."""
    n = len(s)
    j = i
    while j < n and s[j] not in _NAME_END:
        j += 1
    name = s[i:j].lower()
    while j < n:
        ch = s[j]
        if ch == ">":
            return name, j + 1
        if ch in _WS or ch == "/":
            j += 1
            continue
        j += 1  # the first character of an attribute name may be anything, "=" included
        while j < n and s[j] not in _NAME_END and s[j] != "=":
            j += 1
        while j < n and s[j] in _WS:
            j += 1
        if j < n and s[j] == "=":
            j += 1
            while j < n and s[j] in _WS:
                j += 1
            if j < n and s[j] in "\"'":
                close = s.find(s[j], j + 1)
                if close < 0:
                    return name, None
                j = close + 1
            else:
                while j < n and s[j] not in _WS and s[j] != ">":
                    j += 1
    return name, None


def _end_tag(s: str, i: int, name: str) -> int:
    """Offset of the end tag that closes a text-only element opened before i, or -1."""
    m = re.compile(rf"</{re.escape(name)}(?=[\t\n\f\r />])", re.IGNORECASE).search(s, i)
    return m.start() if m else -1


def _script_end(s: str, i: int) -> int:
    """Offset of the </script> that really ends a script, or -1: inside "<!--" a nested
    "<script" makes the next "</script>" part of the text (the double-escaped states)."""
    state = 0  # 0: script data, 1: escaped ("<!--" seen), 2: double escaped
    for m in _SCRIPT.finditer(s, i):
        token = m.group(0)
        if token == "<!--":
            j = m.end()
            while s.startswith("-", j):
                j += 1
            if s.startswith(">", j):  # "<!-->" and "<!--->" close at once; "-->" ends an escape
                state = 0
            elif state == 0:
                state = 1
        elif token == "-->":
            state = 0
        elif m.group(1):  # </script
            if state == 2:
                state = 1
            else:
                return m.start()
        elif state == 1:  # <script inside an escape
            state = 2
    return -1
