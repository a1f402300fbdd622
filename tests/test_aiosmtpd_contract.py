"""aiosmtpd is pinned, not owned: the contract smtp/server.py relies on (issue 12).

`GatewaySMTP` (smtp/server.py) subclasses `aiosmtpd.smtp.SMTP`: it replaces smtp_DATA, push,
the idle timer and EOF handling, wraps several other methods, and reads attributes aiosmtpd
never promised to keep (underscored names, and three private names of asyncio's streams).
pyproject.toml pins aiosmtpd to the minor range this was checked on, and this file checks
every one of those names on the installed aiosmtpd - as it is used, on a real loopback
connection where it can be - so an upgrade that changes one fails here, naming what changed
and what in server.py depends on it, instead of a gateway that quietly misbehaves
(README: "aiosmtpd: pinned, with a contract test").

The sessions here are stock aiosmtpd (a thin recording subclass), not GatewaySMTP: what is
tested is aiosmtpd, not our changes to it.
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import importlib.metadata
import inspect
import re
import ssl
import textwrap
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import aiosmtpd
import aiosmtpd.smtp as asmtp
from aiosmtpd.controller import Controller
from aiosmtpd.proxy_protocol import ProxyData
from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session

ROOT = Path(__file__).resolve().parent.parent
# The range every entry below was checked against. Moving the pin in pyproject.toml fails
# test_pin_is_the_tested_range until each entry has been re-checked on the new versions.
TESTED_RANGE = {">=1.4.6", "<1.5"}

# Methods of aiosmtpd's SMTP (or of asyncio.StreamReaderProtocol under it) that GatewaySMTP
# defines again: name -> (coroutine?, parameter names, what server.py does with it).
OVERRIDDEN = {
    "connection_made": (False, ["self", "transport"],
                        "GatewaySMTP.connection_made: per-client admission, the STARTTLS re-entry"),
    "connection_lost": (False, ["self", "error"], "GatewaySMTP.connection_lost: releases the session's slot"),
    "data_received": (False, ["self", "data"],
                      "GatewaySMTP.data_received: every byte re-arms the idle timer, command-line deadline"),
    "eof_received": (False, ["self"], "GatewaySMTP.eof_received: half-close answered before closing"),
    "_timeout_cb": (False, ["self"], "GatewaySMTP._timeout_cb: 421 on idle instead of a silent close"),
    "_handle_client": (True, ["self"], "GatewaySMTP._handle_client: swallows the client's reset"),
    "_call_handler_hook": (True, ["self", "command", "args"],
                           "GatewaySMTP._call_handler_hook: drops 250-AUTH from EHLO, counts PROXY clients"),
    "_getaddr": (False, ["self", "arg"], "GatewaySMTP._getaddr: strict addresses and a fast path"),
    "_getparams": (False, ["self", "params"], "GatewaySMTP._getparams: SIZE in ASCII digits only"),
    "push": (True, ["self", "status"], "GatewaySMTP.push: enhanced status codes, bounded drain"),
    "handle_exception": (True, ["self", "error"], "GatewaySMTP.handle_exception: TLS failures, clients gone"),
    "smtp_DATA": (True, ["self", "arg"], "GatewaySMTP.smtp_DATA: the chunked reader with a byte budget"),
    "smtp_STARTTLS": (True, ["self", "arg"], "GatewaySMTP.smtp_STARTTLS: refused inside TLS or a transaction"),
    "smtp_AUTH": (True, ["self", "arg"], "GatewaySMTP.smtp_AUTH: 502, AUTH is not offered"),
    "_reset_timeout": (False, ["self", "duration"],
                       "GatewaySMTP._reset_timeout: the idle deadline moves; the one timer is not replaced per command"),
}
# Attributes of aiosmtpd's SMTP that GatewaySMTP sets itself, on purpose.
SHARED_ON_PURPOSE = {
    "line_length_limit": "GatewaySMTP.__init__ sets it before SMTP.__init__, which sizes the reader from it",
    "_timeout_handle": "GatewaySMTP._reset_timeout/_idle_timer keep the idle timer in it; SMTP.connection_lost cancels it",
}
# Methods server.py calls without redefining them: name -> (coroutine?, parameter names, where).
CALLED = {
    "_set_post_data_state": (False, ["self"], "GatewaySMTP.smtp_DATA ends the transaction with it"),
    "check_helo_needed": (True, ["self", "helo"], "GatewaySMTP.smtp_DATA, aiosmtpd's own precondition"),
    "check_auth_needed": (True, ["self", "caller_method"], "GatewaySMTP.smtp_DATA, aiosmtpd's own precondition"),
}
# The keyword arguments app.py passes through GatewaySMTP to SMTP.__init__.
INIT_KWARGS = {"data_size_limit", "enable_SMTPUTF8", "hostname", "ident", "tls_context", "require_starttls",
               "timeout", "loop", "proxy_protocol_timeout"}
# Methods server.py replaces without calling (or only sometimes calling) aiosmtpd's: a change
# upstream - a security fix above all - does not reach us by itself. Fingerprints of their
# source in aiosmtpd 1.4.6; when one fails, read the upstream diff, port what matters into
# server.py, then update the fingerprint.
REPLACED_SOURCE = {
    "smtp_DATA": ("3a33f30d3fd6d02f", "GatewaySMTP.smtp_DATA/_read_data reimplement it (terminator, "
                                      "dot-unstuffing, size and line limits, its replies)"),
    "push": ("15f4f1de5e30c337", "GatewaySMTP.push replaces it"),
    "_timeout_cb": ("10a7351f9bec2818", "GatewaySMTP._timeout_cb replaces it"),
    "_reset_timeout": ("fef19b94d28dff31", "GatewaySMTP._reset_timeout replaces it (aiosmtpd's _handle_client and "
                                           "connection_made call it)"),
    "eof_received": ("baab5aaf93160933", "GatewaySMTP.eof_received bypasses it on a half-close"),
    "_getaddr": ("0aeb21c56ac1260e", "GatewaySMTP._getaddr's fast path skips it for plain addresses "
                                     "(it would also skip a new check there)"),
}


def _fingerprint(name: str) -> str:
    return hashlib.sha256(inspect.getsource(getattr(SMTP, name)).encode()).hexdigest()[:16]


def _where_defined(name: str) -> type | None:
    for cls in SMTP.__mro__:
        if name in vars(cls):
            return cls
    return None


# -- version ---------------------------------------------------------------------------------

def _pinned() -> Requirement:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    [req] = [Requirement(d) for d in deps if Requirement(d).name == "aiosmtpd"]
    return req


def test_pin_is_the_tested_range():
    spec = {str(s) for s in _pinned().specifier}
    assert spec == TESTED_RANGE, (
        f"pyproject.toml now pins aiosmtpd {sorted(spec)}, this contract was checked for "
        f"{sorted(TESTED_RANGE)}: run this file on the new versions, re-check what it lists, "
        f"then update TESTED_RANGE")


def test_installed_aiosmtpd_is_in_the_pinned_range():
    installed = importlib.metadata.version("aiosmtpd")
    assert _pinned().specifier.contains(Version(installed), prereleases=True), (
        f"aiosmtpd {installed} is installed, outside the pinned {_pinned().specifier}: "
        f"smtp/server.py was written against that range")
    assert aiosmtpd.__version__ == installed


# -- names and shapes ------------------------------------------------------------------------

def test_module_level_names():
    for name in ("MISSING", "SMTP", "TLSSetupException", "syntax", "Session", "Envelope"):
        assert hasattr(asmtp, name), f"aiosmtpd.smtp.{name} is gone: smtp/server.py imports it"
    assert issubclass(asmtp.TLSSetupException, Exception), \
        "aiosmtpd.smtp.TLSSetupException changed: GatewaySMTP.handle_exception tells TLS failures by it"
    assert list(inspect.signature(asmtp.syntax).parameters) == ["text", "extended", "when"], \
        "aiosmtpd.smtp.syntax() changed its parameters: GatewaySMTP.smtp_STARTTLS uses syntax(..., when=...)"
    assert SMTP.__bases__ == (asyncio.StreamReaderProtocol,), (
        f"SMTP's bases are now {SMTP.__bases__}: GatewaySMTP.eof_received calls "
        f"asyncio.StreamReaderProtocol.eof_received(self) to skip aiosmtpd's on a half-close")
    assert callable(vars(asyncio.StreamReaderProtocol).get("eof_received")), \
        "asyncio.StreamReaderProtocol.eof_received is gone: GatewaySMTP.eof_received calls it"


@pytest.mark.parametrize("name", sorted(OVERRIDDEN))
def test_overridden_method_keeps_its_shape(name):
    is_async, params, where = OVERRIDDEN[name]
    owner = _where_defined(name)
    assert owner is not None, f"SMTP.{name} no longer exists: {where} now overrides nothing"
    fn = vars(owner)[name]
    assert inspect.iscoroutinefunction(fn) == is_async, \
        f"{owner.__name__}.{name} is {'no longer' if is_async else 'now'} a coroutine: {where}"
    got = list(inspect.signature(fn).parameters)
    assert got == params, f"{owner.__name__}.{name}{inspect.signature(fn)} changed (was {params}): {where}"


@pytest.mark.parametrize("name", sorted(CALLED))
def test_called_method_keeps_its_shape(name):
    is_async, params, where = CALLED[name]
    fn = vars(SMTP).get(name)
    assert fn is not None, f"SMTP.{name} is gone: {where}"
    assert inspect.iscoroutinefunction(fn) == is_async, f"SMTP.{name} changed between sync and async: {where}"
    got = list(inspect.signature(fn).parameters)
    assert got == params, f"SMTP.{name}{inspect.signature(fn)} changed (was {params}): {where}"


def test_init_takes_what_app_passes():
    params = inspect.signature(SMTP.__init__).parameters
    missing = INIT_KWARGS - set(params)
    assert not missing, f"SMTP.__init__ no longer takes {sorted(missing)}: app.py passes them through GatewaySMTP"
    assert isinstance(SMTP.line_length_limit, int), \
        "SMTP.line_length_limit is no longer an int class attribute: GatewaySMTP and smtp/sink.py set it"


@pytest.mark.parametrize("name", sorted(REPLACED_SOURCE))
def test_replaced_method_is_unchanged_upstream(name):
    expected, where = REPLACED_SOURCE[name]
    assert _fingerprint(name) == expected, (
        f"aiosmtpd changed SMTP.{name} (source fingerprint {_fingerprint(name)}, checked: {expected}); "
        f"{where}: read the upstream change, port it to smtp/server.py, update the fingerprint")


def test_upstream_source_does_what_server_assumes():
    """What cannot be seen on a plain connection (TLS, PROXY), read from aiosmtpd's source."""
    def src(name: str) -> str:
        return textwrap.dedent(inspect.getsource(getattr(SMTP, name)))

    checks = [
        ("smtp_STARTTLS", r"self\._tls_protocol = sslproto\.SSLProtocol\(",
         "GatewaySMTP.end/smtp_STARTTLS read _tls_protocol to tell a handshake in progress"),
        ("smtp_STARTTLS", r"self\._original_transport = self\.transport",
         "GatewaySMTP.abort_session aborts _original_transport (the TCP one) under TLS"),
        ("smtp_STARTTLS", r"raise TLSSetupException\(\) from error",
         "GatewaySMTP.handle_exception logs a failed handshake from TLSSetupException.__cause__"),
        ("connection_made", r"self\.session = self\._create_session\(\)",
         "GatewaySMTP._new_session_after_starttls: aiosmtpd starts a new session at the handshake"),
        ("connection_made", r"seen_starttls = \(self\._original_transport is not None\)",
         "GatewaySMTP.connection_made: the second call (after STARTTLS) is told by transport/_original_transport"),
        ("connection_made", r"self\._reader\._buffer\.clear\(\)",
         "GatewaySMTP.connection_made cancels the command-line deadline: bytes before TLS are dropped"),
        ("_handle_client", r"self\._reset_timeout\(self\._proxy_timeout\)",
         "GatewaySMTP._awaiting_proxy/data_received: the PROXY deadline is the idle timer, not re-armed by bytes"),
        ("_handle_client", r"self\.session\.proxy_data = await get_proxy\(self\._reader\)",
         "GatewaySMTP._awaiting_proxy tells a session waiting for its PROXY header by session.proxy_data"),
        ("_handle_client", r'_call_handler_hook\("PROXY", self\.session\.proxy_data\)',
         "GatewaySMTP._call_handler_hook counts the client named by the PROXY header"),
        ("_handle_client", r"if status is MISSING or not status:",
         "GatewaySMTP._call_handler_hook returns False to close a session over its client's limit"),
        ("_handle_client", r"status = await self\.handle_exception\(error\)",
         "GatewaySMTP.handle_exception's reply is what the client is told"),
        ("_handle_client", r"isinstance\(error, TLSSetupException\)",
         "GatewaySMTP.handle_exception: aiosmtpd closes the connection after a failed handshake"),
        ("connection_lost", r"self\._handler_coroutine\.cancel\(\)",
         "GatewaySMTP._cut: a command being handled is cancelled with the session"),
        ("smtp_EHLO", r'response = await self\._call_handler_hook\("EHLO", hostname, response\)',
         "GatewaySMTP._call_handler_hook filters the EHLO lines handed to the hook"),
        ("smtp_EHLO", r'"250-AUTH " \+',
         "GatewaySMTP._call_handler_hook drops the line starting 250-AUTH"),
        ("__init__", r"asyncio\.StreamReader\(loop=self\.loop, limit=self\.line_length_limit\)",
         "GatewaySMTP.__init__ sets line_length_limit before SMTP.__init__ to size the reader"),
    ]
    for name, pattern, where in checks:
        assert re.search(pattern, src(name)), f"SMTP.{name} no longer contains /{pattern}/: {where}"


def test_no_name_of_ours_shadows_aiosmtpd():
    """GatewaySMTP's own methods and attributes must not land on a name aiosmtpd (or asyncio)
    starts using: the newcomer would be silently replaced, or would overwrite ours."""
    from smtp_offload.smtp.server import GatewaySMTP

    theirs = set(dir(SMTP)) | _instance_names()
    defined = {n for n in vars(GatewaySMTP) if not (n.startswith("__") and n.endswith("__"))}
    assigned = set()
    for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(GatewaySMTP)))):
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
        for t in targets:
            if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self":
                assigned.add(t.attr)
    clashes = ((defined | assigned) & theirs) - set(OVERRIDDEN) - set(SHARED_ON_PURPOSE)
    assert not clashes, (
        f"GatewaySMTP (smtp/server.py) defines or sets {sorted(clashes)}, which aiosmtpd's SMTP now also "
        f"has: rename ours, or add it to OVERRIDDEN here if it is meant to replace aiosmtpd's")
    stale = set(OVERRIDDEN) - defined
    assert not stale, f"GatewaySMTP no longer overrides {sorted(stale)}: drop them from OVERRIDDEN"


def _instance_names() -> set[str]:
    """Attribute names a stock SMTP sets on itself in __init__ (no connection needed)."""
    loop = asyncio.new_event_loop()
    try:
        return set(vars(SMTP(_Recorder(), loop=loop)))
    finally:
        loop.close()


# -- on a real connection --------------------------------------------------------------------

class _Recorder:
    """A handler with the hooks handler.py implements, recording what aiosmtpd passes."""

    def __init__(self):
        self.calls: list[tuple] = []

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.calls.append(("EHLO", hostname, list(responses)))
        session.host_name = hostname
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        self.calls.append(("MAIL", address, mail_options, envelope.smtp_utf8))
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.calls.append(("RCPT", address, rcpt_options))
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_NOOP(self, server, session, envelope, arg):
        raise RuntimeError("a hook failing")

    async def handle_QUIT(self, server, session, envelope):
        return "221 2.0.0 Bye"


class _Probe(SMTP):
    """Stock aiosmtpd, recording the calls GatewaySMTP intercepts."""

    def __init__(self, handler, **kwargs):
        self.line_length_limit = 4321  # an instance attribute, set first, as GatewaySMTP does
        self.seen: list[tuple] = []
        super().__init__(handler, **kwargs)

    def data_received(self, data):
        self.seen.append(("data_received", data))
        super().data_received(data)

    async def push(self, status):
        self.seen.append(("push", status))
        await super().push(status)

    async def _call_handler_hook(self, command, *args):
        self.seen.append(("hook", command, args))
        return await super()._call_handler_hook(command, *args)

    def _getaddr(self, arg):
        self.seen.append(("_getaddr", arg))
        return super()._getaddr(arg)

    def _getparams(self, params):
        self.seen.append(("_getparams", params))
        return super()._getparams(params)

    async def handle_exception(self, error):
        self.seen.append(("handle_exception", type(error).__name__))
        return "451 4.3.0 probe"

    def _timeout_cb(self):
        self.seen.append(("_timeout_cb",))

    async def smtp_AUTH(self, arg):  # undecorated, like GatewaySMTP's
        await self.push("502 5.5.1 probe")


class _Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    async def command(self, line: bytes) -> list[bytes]:
        self.writer.write(line + b"\r\n")
        return await self.reply()

    async def reply(self) -> list[bytes]:
        lines = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), 5)
            assert line, "connection closed"
            lines.append(line.rstrip(b"\r\n"))
            if line[3:4] != b"-":
                return lines


async def _session(handler=None, **kwargs):
    loop = asyncio.get_running_loop()
    made: asyncio.Future = loop.create_future()
    handler = handler or _Recorder()

    def factory():
        proto = _Probe(handler, loop=loop, hostname="probe.test", **kwargs)
        if not made.done():
            made.set_result(proto)
        return proto

    server = await loop.create_server(factory, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    client = _Client(*await asyncio.open_connection(host, port))
    proto = await asyncio.wait_for(made, 5)
    greeting = await client.reply()
    return server, client, proto, handler, greeting


async def _close(server, client):
    client.writer.close()
    server.close()
    await server.wait_closed()


async def test_attributes_server_reads_on_a_connection():
    server, client, proto, handler, greeting = await _session(timeout=7, data_size_limit=1000)
    try:
        assert greeting[0].startswith(b"220 "), greeting
        r = proto._reader
        assert isinstance(r, asyncio.StreamReader), \
            "SMTP._reader is no StreamReader: GatewaySMTP._read_data reads DATA from it in chunks"
        assert isinstance(proto._writer, asyncio.StreamWriter), \
            "SMTP._writer is no StreamWriter: GatewaySMTP.push writes and drains through it"
        assert r._limit == 4321, (
            "the StreamReader's _limit no longer comes from line_length_limit set before SMTP.__init__: "
            "GatewaySMTP.__init__ sizes the command line limit that way")
        assert isinstance(r._buffer, bytearray), (
            "asyncio.StreamReader._buffer is no bytearray: GatewaySMTP._read_data gives pipelined bytes "
            "back with _buffer[0:0] = ..., GatewaySMTP.eof_received tests it for waiting commands")
        assert isinstance(getattr(r, "_paused", None), bool), \
            "asyncio.StreamReader._paused is gone: GatewaySMTP._command_too_slow waits while reading is paused"
        assert isinstance(proto._paused, bool), (
            "asyncio's FlowControlMixin._paused is gone from the protocol: GatewaySMTP.push tells a client "
            "that reads nothing by it")
        proto.pause_writing()
        assert proto._paused is True, "pause_writing() no longer sets _paused: GatewaySMTP.push relies on it"
        proto.resume_writing()
        assert proto._paused is False

        assert proto._timeout_duration == 7, \
            "SMTP._timeout_duration no longer holds timeout=: GatewaySMTP.push bounds a drain by it"
        first = proto._timeout_handle
        assert isinstance(first, asyncio.TimerHandle), \
            "SMTP._timeout_handle is no TimerHandle: GatewaySMTP.data_received/_timeout_cb use the idle timer"
        proto._reset_timeout(0.01)
        assert first.cancelled() and proto._timeout_handle is not first, \
            "SMTP._reset_timeout() no longer replaces _timeout_handle: GatewaySMTP re-arms the idle timer with it"
        await asyncio.sleep(0.1)
        assert ("_timeout_cb",) in proto.seen, \
            "the idle timer no longer calls self._timeout_cb: GatewaySMTP._timeout_cb (421, then close) never runs"
        proto._reset_timeout()

        for name in ("_tls_protocol", "_original_transport", "_proxy_timeout"):
            assert name in vars(proto) and getattr(proto, name) is None, \
                f"SMTP.{name} is not set (None) on a plain session: GatewaySMTP reads it (TLS state, PROXY)"
        assert isinstance(proto.session, Session) and isinstance(proto.envelope, Envelope)
        assert proto.transport is not None and proto.loop is asyncio.get_running_loop()
        assert proto.event_handler is handler and proto.data_size_limit == 1000
        assert "tls_context" in vars(proto), "SMTP.tls_context is gone: smtp_STARTTLS's @syntax(when=...) names it"
        for name in ("peer", "ssl", "host_name", "extended_smtp", "proxy_data"):
            assert hasattr(proto.session, name), f"Session.{name} is gone: server.py/handler.py read it"
        for name in ("mail_from", "mail_options", "rcpt_tos", "rcpt_options", "smtp_utf8", "content",
                     "original_content"):
            assert hasattr(proto.envelope, name), f"Envelope.{name} is gone: server.py/handler.py use it"
        old = proto.envelope
        proto._set_post_data_state()
        assert isinstance(proto.envelope, Envelope) and proto.envelope is not old, \
            "SMTP._set_post_data_state() no longer starts a fresh envelope: GatewaySMTP.smtp_DATA ends with it"
        assert proto._proxy_timeout is None
    finally:
        await _close(server, client)


async def test_what_a_session_passes_through_the_overridden_methods():
    server, client, proto, handler, greeting = await _session(auth_require_tls=False, data_size_limit=1000)
    try:
        assert ("push", greeting[0].decode()) in proto.seen, \
            "the greeting no longer goes through self.push: GatewaySMTP.push (enhanced codes) is bypassed"
        await client.command(b"EHLO client.test")
        [ehlo] = [c for c in handler.calls if c[0] == "EHLO"]
        assert any(line.startswith("250-AUTH ") for line in ehlo[2]), (
            f"EHLO lines handed to the hook are now {ehlo[2]}: GatewaySMTP._call_handler_hook drops "
            f"the one starting 250-AUTH")
        assert ("hook", "EHLO", ("client.test", ehlo[2])) in proto.seen, \
            "EHLO reaches the hook other than as _call_handler_hook('EHLO', hostname, responses)"

        await client.command(b"MAIL FROM:<a@b.test> SIZE=10")
        assert ("_getaddr", "<a@b.test> SIZE=10") in proto.seen, \
            "MAIL no longer parses its argument with self._getaddr(arg): GatewaySMTP._getaddr is bypassed"
        assert ("_getparams", ["SIZE=10"]) in proto.seen, \
            "MAIL no longer checks parameters with self._getparams(list): GatewaySMTP._getparams is bypassed"
        assert ("MAIL", "a@b.test", ["SIZE=10"], False) in handler.calls, \
            "handle_MAIL no longer gets (address, mail_options) with envelope.smtp_utf8 set: handler.py"
        await client.command(b"RCPT TO:<c@d.test>")
        assert ("RCPT", "c@d.test", []) in handler.calls, "handle_RCPT no longer gets (address, rcpt_options)"

        assert data_seen(proto), \
            "client bytes no longer arrive through self.data_received: GatewaySMTP re-arms its timers there"
        reply = await client.command(b"NOOP")
        assert ("handle_exception", "RuntimeError") in proto.seen and reply == [b"451 4.3.0 probe"], (
            f"a failing hook is no longer answered with self.handle_exception()'s reply (got {reply}): "
            f"GatewaySMTP.handle_exception")
        assert await proto._call_handler_hook("VRFY", "x") is MISSING, \
            "a command without a handler hook no longer gives MISSING: GatewaySMTP.smtp_DATA and " \
            "_call_handler_hook compare hook results to it"
        reply = await client.command(b"AUTH PLAIN")
        assert reply == [b"502 5.5.1 probe"], \
            "smtp_* commands are no longer dispatched to the subclass's methods: GatewaySMTP.smtp_DATA/AUTH/STARTTLS"
        handle = proto._timeout_handle
        assert (await client.command(b"QUIT"))[0].startswith(b"221")
        assert await asyncio.wait_for(client.reader.read(), 5) == b""
        assert proto.transport is None and handle.cancelled(), \
            "connection_lost no longer clears transport / cancels the idle timer: GatewaySMTP checks transport"
    finally:
        await _close(server, client)


def data_seen(proto: _Probe) -> bool:
    return any(s[0] == "data_received" for s in proto.seen)


async def test_a_reader_takes_bytes_given_back():
    """GatewaySMTP._read_data puts bytes pipelined after the DATA terminator back in front of
    the reader's buffer; the command loop must read them first."""
    reader = asyncio.StreamReader(limit=1000)
    reader.feed_data(b"RSET\r\n")
    reader._buffer[0:0] = b"NOOP\r\n"  # type: ignore[attr-defined]
    assert await reader.readuntil() == b"NOOP\r\n" and await reader.readuntil() == b"RSET\r\n", \
        "asyncio.StreamReader no longer reads what is inserted into _buffer: GatewaySMTP._read_data's leftover"


async def test_the_texts_smtp_replies_maps_are_aiosmtpds():
    """smtp/replies.py's _SPECIFIC maps aiosmtpd's exact texts to ours; a text aiosmtpd no
    longer says leaves its entry dead (the reply silently falls back to a generic status)."""
    from smtp_offload.smtp.replies import _SPECIFIC

    said: set[str] = set()

    async def run(commands, **kwargs):
        server, client, proto, _, _ = await _session(**kwargs)
        try:
            for c in commands:
                await client.command(c)
            said.update(s[1] for s in proto.seen if s[0] == "push" and isinstance(s[1], str))
        finally:
            await _close(server, client)

    await run([b"MAIL FROM:<a@b.test>", b"EHLO c.test", b"RCPT TO:<c@d.test>",
               b"MAIL FROM:<a@b.test> SIZE=5000", b"MAIL FROM:<a@b.test>", b"MAIL FROM:<a@b.test>"],
              data_size_limit=1000)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    await run([b"EHLO c.test", b"MAIL FROM:<a@b.test>"], tls_context=tls, require_starttls=True)
    dead = set(_SPECIFIC) - said
    assert not dead, f"aiosmtpd no longer says {sorted(dead)}: their entries in smtp/replies.py _SPECIFIC are dead"


def test_sink_controller_hooks():
    """smtp/sink.py overrides Controller.factory() and builds its SMTP from SMTP_kwargs."""
    assert list(inspect.signature(Controller.factory).parameters) == ["self"], \
        "Controller.factory() changed: smtp/sink.py's _Controller overrides it"
    loop = asyncio.new_event_loop()
    try:
        handler = _Recorder()
        c = Controller(handler, loop=loop, hostname="127.0.0.1", port=0, data_size_limit=None,
                       enable_SMTPUTF8=True)
        assert c.handler is handler and c.SMTP_kwargs == {"data_size_limit": None, "enable_SMTPUTF8": True}, \
            "Controller no longer keeps handler / SMTP_kwargs: smtp/sink.py's _Controller.factory uses them"
    finally:
        loop.close()


def test_proxy_data_names_the_client():
    assert "src_addr" in {a.name for a in ProxyData.__attrs_attrs__}, \
        "aiosmtpd's ProxyData.src_addr is gone: GatewaySMTP._call_handler_hook and handler.client_ip read it"
