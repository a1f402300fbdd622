"""Event handler attributes found by reading tags as a browser's tokenizer does.

A known event name ("onload=") counts anywhere (see active.py), but browsers
keep adding events ("onwebkitanimationstart", "oncontentvisibilityautostatechange")
that fire with no click, so any "on...=" attribute inside a tag counts too,
while the same words in prose ("status online = yes") do not. Where a tag's
attributes begin depends on its quoted values, which may hold ">" and "<"
(`<div title=">" onfoo=go()>`), so tags are tokenized here as the HTML
standard does it (13.2.5, the attribute states), odd corners included: in
`<div x=a"  onfoo=go() ">` the quote belongs to the unquoted value and the
handler counts; in `<div ="  onfoo=go() ">` the "=" starts a name.

Where a tag starts is not known without parsing the whole document (a "<div"
may sit in a comment or inside another tag's value), so a tag is read from
every "<" + letter, and every reading ends at the next one: a reading there
is either in a name, an unquoted value or a tag name (the "<" is one more
character of it) or in a quoted value, so readings that begin there in those
states go on exactly as it would. A quoted one begins only where the last
quote of its kind can have opened a value (it follows "="). Each stretch
between two tag starts is read by at most five readings, so the search is
linear, and only stretches that hold an "on...=" are read at all, with the
one at the end of each piece, whose readings go on into the next piece: no
tag is too long to follow and no text is read twice.

The text is lower-cased and its runs of HTML whitespace squeezed to one space
(whitespace is whitespace to the tokenizer); nothing else is changed: a
character reference or a control character in a tag is not whitespace.
"""

from __future__ import annotations

import heapq
import re

# Tokenizer states (the standard's, merged where they behave alike).
TAG_NAME, BEFORE_NAME, NAME_START, NAME, AFTER_NAME, BEFORE_VALUE, DOUBLE, SINGLE, UNQUOTED = range(9)

_HTML_SPACE = bytes.maketrans(b"\t\n\f\r", b"    ")
_SPACES = re.compile(rb" {2,}")
_TAG_OPEN = re.compile(rb"<[a-z]")
_LAST_TAG_OPEN = re.compile(rb"(?s:.*)<[a-z]")  # backtracks from the end: finds the last one
_HANDLER = rb"on[a-z]{3,64} ?="
_HANDLER_AT = re.compile(_HANDLER)
# Where a handler could start: a name starts after a space, a "/" or a closing quote.
_CANDIDATE = re.compile(rb"[ /\"']" + _HANDLER)
_LOOKAHEAD = 80  # a name this close to the end of a piece waits for the next one: it may be a handler
_KEEP = 128  # text kept for the next piece: longer than a candidate
# Complete attributes (and separators), read in one go from the before-name
# state. An attribute counts as complete only when what ends it is in view,
# so the match never stops inside one; it stops before a handler, a ">", or
# anything unfinished, which the state machine below takes over.
_LOOP = re.compile(
    rb"(?:[ /]++|(?!" + _HANDLER + rb")[^ />][^ />=]*+"
    rb"(?: ?= ?(?:\"[^\"]*+\"|'[^']*+'|[^ >\"'][^ >]*+(?=[ >]))|(?=[/>]| [^ =])))*+")
_OPENS_VALUE = re.compile(rb"= ?[\"']")
_TAG_NAME_END = re.compile(rb"[ />]")
_NAME_END = re.compile(rb"[ />=]")
_UNQUOTED_END = re.compile(rb"[ >]")


class Tags:
    """Reads a document that arrives in pieces: `found` once a tag has an event handler attribute."""

    def __init__(self) -> None:
        self.found = False
        self.text = b""  # the end of the last piece (lower-cased, squeezed), kept for the next
        self.base = 0  # offset of `text` in the squeezed document
        self.views: list[tuple[int, int]] = []  # (offset, state) of the readings still going at its end
        self.done = 0  # offset before which every tag start was dealt with
        # Whether the last quote of each kind before `quotes_to` can have opened a value.
        self.opener = {b'"': False, b"'": False}
        self.quotes_to = 0

    def feed(self, piece: bytes, final: bool = False) -> bool:
        """Read the next piece of the document (`final`: the last); True once a handler was found."""
        if not self.found:
            text = self.text + piece.lower().translate(_HTML_SPACE)
            if b"  " in text:
                text = _SPACES.sub(b" ", text)
            self._read(text, final)
            keep = len(text) if final else max(len(text) - _KEEP, 0)
            keep = min([keep] + [at - self.base for at, _ in self.views])
            self._quotes(text, keep)
            self.text, self.base = text[keep:], self.base + keep
        return self.found

    def _read(self, text: bytes, final: bool) -> None:
        end = len(text)
        start = max(self.done - self.base, 0)
        # Tag starts are searched in the whole text, so a "<" at its very end waits for its letter.
        self.done = self.base + max(end if final else end - 1, start)
        carried, self.views = self.views, []
        first = _TAG_OPEN.search(text, start)
        # Stretches that hold a candidate, but the last, which is read below in any case.
        seg_end, views = (first.start() if first else end), carried
        for cand in _CANDIDATE.finditer(text) if first else ():
            at = cand.start() + 1
            if at >= seg_end:
                if seg_end == end:
                    break
                seg = _LAST_TAG_OPEN.match(text, seg_end, at).end() - 2
                nxt = _TAG_OPEN.search(text, at)
                if nxt is None:
                    break
                views, seg_end = self._spawn(text, seg, at), nxt.start()
            elif views is None:
                continue  # this stretch was read
            if self._run(text, views, seg_end, seg_end):
                return
            views = None
        if first is None:
            last = carried
        else:
            last = self._spawn(text, _LAST_TAG_OPEN.match(text, first.start()).end() - 2)
        self._run(text, last, end, end if final else end - _LOOKAHEAD, carry=True)

    def _spawn(self, text: bytes, at: int, upto: int | None = None) -> list[tuple[int, int]]:
        """The readings that begin at the tag start `at` (tag starts come in order), but none when
        all of them surely end before `upto`."""
        self._quotes(text, at)
        quoted = [(self.base + at, state) for quote, state in ((b'"', DOUBLE), (b"'", SINGLE)) if self.opener[quote]]
        if upto is not None and not quoted:
            # Out of a quoted value, every reading ends at a ">"; into one only through "=" and a quote.
            gt = text.find(b">", at, upto)
            if gt >= 0 and _OPENS_VALUE.search(text, at, gt) is None:
                return []
        # A tag name, a name and an unquoted value read "<div" alike to a space or ">" when no "=" or
        # "/" comes first, and from the space on alike when no "=" follows: one reading stands for three.
        m = _TAG_NAME_END.search(text, at + 1)
        if m and text[m.start()] != 0x2F and text.find(b"=", at + 1, m.start()) < 0:
            end = m.start()
            if text[end] == 0x3E:
                return quoted
            if text[end + 1:end + 2] not in (b"", b"="):
                return [(self.base + end, BEFORE_NAME)] + quoted
        return [(self.base + at + 1, state) for state in (TAG_NAME, NAME, UNQUOTED)] + quoted

    def _quotes(self, text: bytes, upto: int) -> None:
        """Bring the last-quote records up to offset `upto` of `text` (each byte looked at once)."""
        lo = max(self.quotes_to - self.base, 0)
        if upto <= lo:
            return
        for quote in (b'"', b"'"):
            q = text.rfind(quote, lo, upto)
            if q >= 0:  # a value opens after "=" (whitespace squeezed to one space)
                self.opener[quote] = text[q - 1:q] == b"=" or text[max(q - 2, 0):q] == b"= "
        self.quotes_to = self.base + upto

    def _run(self, text: bytes, views: list[tuple[int, int]], end: int, judged: int,
             carry: bool = False) -> bool:
        """Advance `views` through text[:end]; True (and `found`) on a handler.

        A name that starts past `judged` may be a handler the next piece
        completes: it waits. With `carry`, what is still reading at the end
        goes on in the next piece (self.views); otherwise `end` is a tag start
        and the readings end there.
        """
        todo = [(at - self.base, state) for at, state in views]
        heapq.heapify(todo)
        last = None
        while todo:
            at, state = view = heapq.heappop(todo)
            if view == last:
                continue
            last = view
            if at >= end or (state == NAME_START and at > judged):
                if carry:
                    self.views.append((self.base + at, state))
                continue
            step = _step(text, at, state, end)
            if step is True:
                self.found = True
                return True
            for nxt in step:
                heapq.heappush(todo, nxt)
        return False


def _step(text: bytes, at: int, state: int, end: int) -> bool | list[tuple[int, int]]:
    """Where a reading in `state` at `at` goes: True on a handler, else its next (offset, state)s."""
    if state == BEFORE_NAME:
        b = _LOOP.match(text, at, end).end()
        if b >= end:
            return [(end, BEFORE_NAME)]
        return [] if text[b] == 0x3E else [(b, NAME_START)]  # a ">" ends the tag
    if state == TAG_NAME:
        m = _TAG_NAME_END.search(text, at, end)
        if m is None:
            return [(end, TAG_NAME)]
        return [] if text[m.start()] == 0x3E else [(m.start(), BEFORE_NAME)]
    if state == NAME_START:
        if _HANDLER_AT.match(text, at, end):
            return True
        at += 1  # the first character belongs to the name, whatever it is (even "=")
        state = NAME
    if state == NAME:
        m = _NAME_END.search(text, at, end)
        if m is None:
            return [(end, NAME)]
        ch = text[m.start()]
        if ch == 0x3D:  # "="
            return [(m.start() + 1, BEFORE_VALUE)]
        if ch == 0x20:
            return [(m.start(), AFTER_NAME)]
        return [] if ch == 0x3E else [(m.start(), BEFORE_NAME)]  # "/": as before a name
    if state in (AFTER_NAME, BEFORE_VALUE):
        if at < end and text[at] == 0x20:
            at += 1
        if at >= end:
            return [(end, state)]
        ch = text[at]
        if ch == 0x3E:
            return []
        if state == AFTER_NAME:
            if ch == 0x3D:
                return [(at + 1, BEFORE_VALUE)]
            return [(at, BEFORE_NAME if ch == 0x2F else NAME_START)]
        if ch in (0x22, 0x27):
            return [(at + 1, DOUBLE if ch == 0x22 else SINGLE)]
        return [(at, UNQUOTED)]
    if state in (DOUBLE, SINGLE):
        q = text.find(b'"' if state == DOUBLE else b"'", at, end)
        return [(end, state)] if q < 0 else [(q + 1, BEFORE_NAME)]  # after a quoted value: as before a name
    m = _UNQUOTED_END.search(text, at, end)
    if m is None:
        return [(end, UNQUOTED)]
    return [] if text[m.start()] == 0x3E else [(m.start(), BEFORE_NAME)]
