"""structlog set-up: JSON lines on stdout by default (journald and log shippers read them)."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from typing import Any, Mapping, TextIO

import structlog

_LOCK = threading.Lock()  # threads of one process; other processes are kept apart by write()


class LineLogger:
    """Writes each log line with one write() system call.

    structlog's PrintLogger uses print(), which writes the message and then "\\n" separately;
    forked workers share one stdout, so two workers' lines could interleave into one line
    that no log reader can parse. One write() of a whole line to an O_APPEND file (a pipe:
    up to PIPE_BUF bytes) is never split by another process's write."""

    def __init__(self, file: TextIO | None = None) -> None:
        self._file = file if file is not None else sys.stdout

    def msg(self, message: str) -> None:
        line = message + "\n"
        with _LOCK:
            try:
                fd = self._file.fileno()
            except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
                self._file.write(line)  # a stream without a descriptor (a test's capture)
                self._file.flush()
                return
            self._file.flush()  # whatever was printed before keeps its place
            data = line.encode(getattr(self._file, "encoding", None) or "utf-8", "backslashreplace")
            while data:  # a short write (a pipe, a signal) continues where it stopped
                data = data[os.write(fd, data):]

    log = debug = info = warn = warning = err = error = critical = exception = fatal = failure = msg


# structlog's JSONRenderer calls json.dumps(..., default=...), which builds an encoder for
# every line; this one is built once and writes the same text.
_JSON = json.JSONEncoder(default=structlog.processors._json_fallback_handler)


def _render_json(_logger: object, _name: str, event_dict: dict) -> str:
    return _JSON.encode(event_dict)


def configure(fmt: str = "json", level: str = "info") -> None:
    renderer = _render_json if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    out = LineLogger(sys.stdout)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=lambda *args: out,
        cache_logger_on_first_use=False,
    )
    # aiosmtpd logs every command (with addresses) at INFO through stdlib logging: keep only
    # problems, and make them events of ours (see StdlibToStructlog), never free text on stderr.
    root = logging.getLogger()
    if not any(isinstance(h, StdlibToStructlog) for h in root.handlers):
        root.addHandler(StdlibToStructlog(logging.WARNING))
    root.setLevel(logging.WARNING)
    logging.getLogger("mail.log").setLevel(logging.WARNING)


# Said by aiosmtpd about a PROXY header we log ourselves (proxy_refused, with the error).
_ALREADY_LOGGED = ("invalid PROXY handshake", "PROXY error")


try:
    from aiohttp.http_exceptions import BadHttpMessage as _BadHttpMessage
except ImportError:  # pragma: no cover - aiohttp is a dependency
    class _BadHttpMessage(Exception):  # type: ignore[no-redef]
        pass


class StdlibToStructlog(logging.Handler):
    """Warnings and errors of libraries that log through the standard library (aiosmtpd,
    asyncio) as our own JSON events: `library_log` with `logger` and `message`. Their text can
    hold a client's raw bytes (aiosmtpd's `unrecognised: X<CR>Y`): control characters are
    escaped, so one event stays one line in every format."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.name.startswith("mail.") and any(m in message for m in _ALREADY_LOGGED):
                return
            fields = {"logger": record.name, "message": _escape(message)}
            method = {"CRITICAL": "critical", "ERROR": "error"}.get(record.levelname, "warning")
            exc = record.exc_info[1] if record.exc_info else None
            if isinstance(exc, _BadHttpMessage):
                # A client's malformed HTTP request (NUL in a header, a broken request line) is
                # answered 400 by aiohttp: the client's problem, noted without a traceback.
                method, fields["reason"] = "info", _escape(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            elif record.exc_info:
                fields["exc_info"] = record.exc_info
            getattr(structlog.get_logger(record.name), method)("library_log", **fields)
        except Exception:  # logging must never raise into the code that logs
            self.handleError(record)


def _escape(text: str) -> str:
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class log_context:
    """Context bound to every event logged inside `with log_context(key=value):` (structlog
    contextvars), restored afterwards. structlog's bound_contextvars does the same by
    reading the whole context first; the tokens of bind_contextvars restore it for a
    fraction of the cost (once per message)."""

    __slots__ = ("_kw", "_tokens")

    def __init__(self, **kw: object) -> None:
        self._kw = kw
        self._tokens: Mapping[str, Any] = {}

    def __enter__(self) -> None:
        self._tokens = structlog.contextvars.bind_contextvars(**self._kw)

    def __exit__(self, *exc: object) -> None:
        structlog.contextvars.reset_contextvars(**self._tokens)


def get(name: str = "smtp_offload"):
    return structlog.get_logger(name)
