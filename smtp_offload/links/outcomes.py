"""What each refusal of a link means to whoever asked: the one table of it.

The JSON API (`links.api`), the link pages (`links.server`) and the `links` command
(`links.command`) all answer the same failures (bad token, expired, revoked, file gone,
bad request, storage down) and look the answer up here. The statuses, exit codes and
texts are a public contract: clients, scripts and monitoring read them.

Where the callers differ on purpose, the table keeps both: a link page answers a bad
token 403 (a person followed a broken link) where the API answers 400 (a client sent
a bad field), and the command tells the operator at the terminal what storage said
where the API and the pages say nothing about internals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from smtp_offload.errors import StorageError
from smtp_offload.links import pages
from smtp_offload.links.service import Gone, LinkError, Revoked
from smtp_offload.links.tokens import BadToken, ExpiredToken


@dataclass(frozen=True)
class Outcome:
    """One refusal, as each caller shows it."""

    kind: str  # "expired" | "bad_token" | "revoked" | "gone" | "invalid_request" | "storage_unavailable"
    api_status: int  # JSON API
    page_status: int  # the landing page and the download link
    exit_code: int  # `smtp-offload links ...`
    message: str  # the JSON API's "error"
    cli_message: str  # what the command prints after "smtp-offload: "
    page: str  # the HTML page shown at page_status
    detail: str | None = None  # what went wrong inside, for operators' logs only; never on a page or in JSON

    def as_json(self) -> dict[str, Any]:
        return {"error": self.message}


@dataclass(frozen=True)
class _Row:
    raised: type[BaseException] | tuple[type[BaseException], ...]
    kind: str
    api_status: int
    page_status: int
    exit_code: int
    message: Callable[[Any], str]
    page: Callable[[Any, pages.View], str]
    cli_message: Callable[[Any], str] | None = None  # None: the same as message
    detail: bool = False  # log str(exc) for operators


def _say(text: str) -> Callable[[Any], str]:
    return lambda _exc: text


# First match wins: subclasses (Revoked, Gone) before LinkError.
_TABLE: tuple[_Row, ...] = (
    #    raised        kind               API  page exit  JSON "error" (and the command's text)
    _Row(ExpiredToken, "expired",         410, 410, 1, _say("link has expired"),
         page=lambda e, v: pages.expired(e.expires, v)),
    _Row(BadToken,     "bad_token",       400, 403, 1, _say("token is not valid"), page=lambda e, v: pages.not_valid(v)),
    _Row(Revoked,      "revoked",         410, 410, 1, _say("link was revoked"), page=lambda e, v: pages.revoked(v)),
    _Row(Gone,         "gone",            404, 404, 1, _say("file no longer available"),
         page=lambda e, v: pages.gone(v)),
    _Row(LinkError,    "invalid_request", 400, 400, 1, str,  # InvalidRequest: its own words
         page=lambda e, v: pages.not_valid(v)),
    _Row((StorageError, OSError), "storage_unavailable", 503, 503, 1, _say("storage unavailable, try again later"),
         page=lambda e, v: pages.unavailable(v),
         cli_message=lambda e: f"storage unavailable: {e}",  # the terminal is an operator's: the detail helps
         detail=True),
)

def outcome_of(exc: BaseException, view: pages.View | None = None) -> Outcome | None:
    """How to answer `exc`; None when it is no refusal but a bug, which the caller lets through
    (the API's JSON 500, aiohttp's 500, a traceback from the command). `view` is what the page
    may show besides (the branding; for an expired link its file and the "Get a new link" form)."""
    for row in _TABLE:
        if isinstance(exc, row.raised):
            message = row.message(exc)
            return Outcome(
                kind=row.kind, api_status=row.api_status, page_status=row.page_status, exit_code=row.exit_code,
                message=message, cli_message=row.cli_message(exc) if row.cli_message else message,
                page=row.page(exc, view or pages.View()), detail=str(exc) if row.detail else None,
            )
    return None
