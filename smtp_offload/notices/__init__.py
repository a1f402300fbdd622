"""The notice put into a changed message: what happened to each file and what the reader can do.

Rendered from Jinja2 templates, one directory per language (templates/<language>/):
  notice.txt   the text/plain notice (never autoescaped; the URL alone on its own line)
  notice.html  the HTML notice (autoescaped; the file name is the link text; inline styles only)
  words.txt    file types as people say them, each rule as a plain sentence, what to do next
An administrator's notices.templates_dir/<language>/<name> wins over the shipped file of the
same name; anything not found there comes from the shipped language, then from English.

words.txt is imported by both notices and compiled twice: once by an environment that
autoescapes everything (HTML), once by one that escapes nothing (text). So a value from the
mail is escaped exactly once in HTML, and never turned into entities in text.
"""

from __future__ import annotations

import functools
import re
import textwrap
from collections.abc import Iterable
from pathlib import Path

import jinja2

from ..config import NOTICE_TEMPLATES, NoticesConfig
from ..model import FileOutcome
from .items import Item, item_of

__all__ = ["Notices", "NoticeError", "render", "Item"]

TEMPLATES = ("notice.txt", "notice.html")
WIDTH = 76  # text lines are wrapped here (a URL or a long name may be longer: never broken)


class NoticeError(Exception):
    """A template cannot be loaded or rendered: the message names the file and the setting."""


def _para(text: str, indent: int = 2) -> str:
    """A paragraph of the text notice, wrapped with a hanging indent; words are never broken
    (a long file name stays whole), and the result never starts or ends a line with spaces."""
    pad = " " * indent
    words = " ".join(text.split())
    return textwrap.fill(words, WIDTH, initial_indent=pad, subsequent_indent=pad, break_long_words=False,
                         break_on_hyphens=False) if words else ""


class Notices:
    """Renders notices in one language, from the shipped templates and an admin's directory."""

    def __init__(self, cfg: NoticesConfig | None = None, *, upload_links: bool = False) -> None:
        cfg = cfg or NoticesConfig()
        self.language = cfg.language
        self.templates_dir = cfg.templates_dir
        self.upload_links = upload_links  # the portal is on: agents can send a customer an upload link
        dirs = [Path(cfg.templates_dir) / cfg.language] if cfg.templates_dir else []
        dirs += [NOTICE_TEMPLATES / cfg.language, NOTICE_TEMPLATES / "en"]
        loader = jinja2.ChoiceLoader([jinja2.FileSystemLoader(str(d)) for d in dict.fromkeys(dirs)])
        common = dict(loader=loader, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                      auto_reload=False)
        self._html = jinja2.Environment(autoescape=True, **common)
        self._text = jinja2.Environment(autoescape=False, **common)
        self._text.filters["para"] = _para
        self._html.filters["para"] = _para

    def render(self, changed: Iterable[FileOutcome]) -> tuple[str, str]:
        """Plain-text and HTML notices (CRLF line ends); the text one ends with a separator
        from the original body."""
        items = [item_of(o) for o in changed]
        try:
            return self.render_items(items)
        except Exception:
            # check() rendered every rule at start, so this is a case it could not foresee in an
            # admin's template: the shipped English notice is better than a deferred message.
            if self is _default():
                raise
            return _default().render_items(items)

    def render_items(self, items: list[Item]) -> tuple[str, str]:
        context = {"files": items, "upload_links": self.upload_links, "language": self.language}
        text = self._text.get_template("notice.txt").render(context)
        markup = self._html.get_template("notice.html").render(context)
        return _text_lines(text), _crlf(markup.strip()) + "\r\n"

    def check(self) -> None:
        """Render a notice with every rule and outcome: an admin's template that fails does so
        here, at start, instead of on a customer's message. Raises NoticeError."""
        from .sample import sample_items

        try:
            self.render_items(sample_items())
        except jinja2.TemplateNotFound as exc:
            raise NoticeError(f"notices: template {exc.name} not found for language {self.language!r} "
                              f"({self._where()})") from None
        except jinja2.TemplateSyntaxError as exc:
            raise NoticeError(f"notices: {exc.filename or exc.name}, line {exc.lineno}: {exc.message} "
                              f"({self._where()})") from None
        except Exception as exc:  # anything a template can raise while rendering
            raise NoticeError(f"notices: {_failing_template(exc)}: {type(exc).__name__}: {exc} "
                              f"({self._where()})") from None

    def _where(self) -> str:
        return f"notices.templates_dir = {self.templates_dir!r}" if self.templates_dir \
            else "notices.templates_dir is not set: the shipped templates"


def _failing_template(exc: BaseException) -> str:
    """The template file (and line) where `exc` was raised: Jinja puts template frames into
    the traceback under the template's file name."""
    tb, found = exc.__traceback__, "a template"
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if name.endswith((".txt", ".html")):
            found = f"{name}, line {tb.tb_lineno}"
        tb = tb.tb_next
    return found


def _crlf(text: str) -> str:
    return re.sub(r"\r?\n", "\r\n", text)


def _text_lines(text: str) -> str:
    """Every line without trailing blanks (a URL line is then the URL alone), CRLF line ends,
    at most one blank line in a row."""
    lines = [line.rstrip() for line in text.strip("\n").split("\n")]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\r\n".join(out) + "\r\n\r\n"


@functools.lru_cache(maxsize=1)
def _default() -> Notices:
    return Notices()


def render(changed: Iterable[FileOutcome]) -> tuple[str, str]:
    """The notice in English from the shipped templates (notices.language's default)."""
    return _default().render(changed)

