"""A downstream SMTP server on loopback whose every reply says what it answers, and whose
(mis)behaviour a test scripts command by command.

Replies carry a tag — `mail:<sender>`, `rcpt:<address>`, `data:<sender>`, `dot:<token>` —
so a client of the proxy can tell whether the reply it got was meant for its own command.
`decide(conn, verb, arg)` returns an `Act` for each command (verb "DOT" is the end of the
message, arg its token); the default is to behave. It runs an asyncio loop in a thread, so
sync and async tests can use it alike.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from tests.support.net import free_port

TAG = re.compile(rb"\b(mail|rcpt|data|dot|extra):<([^>]*)>")
TOKEN = re.compile(rb"TOKEN-[A-Za-z0-9-]+")


@dataclass
class Act:
    """How to answer one command.

    kind: "ok" (the normal answer), "refuse" (`code` with a tag), "drop" (close, no reply),
    "garbage" (a line that is no SMTP reply), "wrong" (`code` instead of the right one, as
    if accepted: e.g. 250 to DATA), "defer" (say nothing now; the answer goes out just before
    the answer to the next command on this connection), "accept_drop" (DOT only: keep the
    message, then close without a reply).
    extra: also send an unsolicited reply in the same write, after the answer.
    stale: send the previous reply on this connection again, in the same write, before it.
    """

    kind: str = "ok"
    code: int = 0
    delay: float = 0.0
    extra: bool = False
    stale: bool = False
    abort: bool = False  # "drop" with a TCP reset instead of a FIN
    close_after: bool = False  # answer, then close the connection (a downstream idle timeout between commands)


@dataclass
class Delivery:
    conn: int
    sender: str
    rcpts: list[str]
    token: str
    body: bytes


@dataclass
class Conn:
    n: int
    writer: asyncio.StreamWriter
    sender: str | None = None
    rcpts: list[str] = field(default_factory=list)
    deferred: bytes = b""
    last: bytes = b""
    closed: bool = False


def _s(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


class ScriptedDownstream:
    def __init__(self, decide: Callable[[Conn, str, str], Act] | None = None, pipelining: bool = False):
        self.decide = decide or (lambda conn, verb, arg: Act())
        self.pipelining = pipelining  # offer PIPELINING (RFC 2920) in the EHLO reply
        self.port = free_port()
        self.deliveries: list[Delivery] = []
        self.commands: list[tuple[int, bytes]] = []
        self.conns: list[Conn] = []
        self.errors: list[Exception] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = self._call(asyncio.start_server(self._session, "127.0.0.1", self.port))

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    # -- what the tests look at ---------------------------------------------
    def wait_for(self, cond: Callable[[], bool], what: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.02)

    def saw(self, line: bytes) -> bool:
        return any(c == line for _, c in list(self.commands))

    def inject(self, conn: int, data: bytes) -> None:
        """Write bytes nobody asked for on connection `conn` (1-based)."""
        writer = self.conns[conn - 1].writer

        async def send() -> None:
            writer.write(data)
            await writer.drain()
        self._call(send())

    def stop(self) -> None:
        async def close() -> None:
            self.server.close()
            for c in self.conns:
                c.writer.close()
        self._call(close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    # -- the server ------------------------------------------------------------
    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Conn(len(self.conns) + 1, writer)
        self.conns.append(conn)
        try:
            writer.write(b"220 scripted.test ESMTP\r\n")
            while True:
                line = await reader.readline()
                if not line:
                    return
                self.commands.append((conn.n, line.rstrip(b"\r\n")))
                if not await self._command(conn, reader, line.rstrip(b"\r\n")):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except Exception as exc:  # a bug in this script: the test must not pass over it
            self.errors.append(exc)
        finally:
            conn.closed = True
            writer.close()

    async def _command(self, conn: Conn, reader: asyncio.StreamReader, line: bytes) -> bool:
        verb = _s(line[:4]).upper()
        arg = _s(line[5:])
        if verb in ("EHLO", "HELO"):
            pipelining = "250-PIPELINING\r\n" if self.pipelining else ""
            return await self._answer(conn, verb, arg, f"250-scripted.test\r\n{pipelining}250-8BITMIME\r\n250 SMTPUTF8\r\n")
        if verb == "MAIL":
            sender = _addr(arg)
            act = self.decide(conn, verb, sender)
            if act.kind in ("ok", "defer"):  # deferred: accepted, only said late
                conn.sender, conn.rcpts = sender, []
            return await self._answer(conn, verb, sender, f"250 2.1.0 mail:<{sender}> ok\r\n", act,
                                      refuse=f"{act.code} {act.code // 100}.1.0 mail:<{sender}> refused\r\n")
        if verb == "RCPT":
            rcpt = _addr(arg)
            act = self.decide(conn, verb, rcpt)
            if conn.sender is None and act.kind == "ok":
                act = Act("refuse", 503)
            if act.kind in ("ok", "defer"):
                conn.rcpts.append(rcpt)
            return await self._answer(conn, verb, rcpt, f"250 2.1.5 rcpt:<{rcpt}> ok\r\n", act,
                                      refuse=f"{act.code} {act.code // 100}.1.1 rcpt:<{rcpt}> refused\r\n")
        if verb == "DATA":
            sender = conn.sender or ""
            act = self.decide(conn, verb, sender)
            if not conn.rcpts and act.kind == "ok":
                act = Act("refuse", 554)
            refuse = f"{act.code} {act.code // 100}.5.0 data:<{sender}> refused\r\n"
            go_ahead = f"354 data:<{sender}> go ahead\r\n"
            if act.kind != "ok":  # no message follows: a deferred 354 is said late, in command mode
                conn.sender, conn.rcpts = None, []
                return await self._answer(conn, verb, sender, go_ahead, act, refuse=refuse)
            if not await self._answer(conn, verb, sender, go_ahead, act):
                return False
            return await self._message(conn, reader)
        if verb == "RSET":
            conn.sender, conn.rcpts = None, []
            return await self._answer(conn, verb, "", "250 2.0.0 reset\r\n", self.decide(conn, verb, ""))
        if verb == "QUIT":
            conn.writer.write(b"221 2.0.0 bye\r\n")
            return False
        if verb == "NOOP":
            return await self._answer(conn, verb, "", "250 2.0.0 noop\r\n", Act())
        conn.writer.write(b"500 5.5.2 unknown command\r\n")
        return True

    async def _message(self, conn: Conn, reader: asyncio.StreamReader) -> bool:
        lines = []
        while True:
            line = await reader.readline()
            if not line:
                return False
            if line == b".\r\n":
                break
            lines.append(line[1:] if line.startswith(b".") else line)
        body = b"".join(lines)
        m = TOKEN.search(body)
        token = _s(m.group()) if m else ""
        sender, rcpts = conn.sender or "", list(conn.rcpts)
        conn.sender, conn.rcpts = None, []
        act = self.decide(conn, "DOT", token)
        if act.kind in ("ok", "accept_drop", "defer"):
            self.deliveries.append(Delivery(conn.n, sender, rcpts, token, body))
        if act.kind == "accept_drop":
            act = Act("drop", delay=act.delay)
        return await self._answer(conn, "DOT", token, f"250 2.0.0 dot:<{token}> queued\r\n", act,
                                  refuse=f"{act.code} {act.code // 100}.6.0 dot:<{token}> refused\r\n")

    async def _answer(self, conn: Conn, verb: str, arg: str, ok: str, act: Act | None = None,
                      refuse: str = "") -> bool:
        act = act or Act()
        if act.delay:
            await asyncio.sleep(act.delay)
        w = conn.writer
        if act.kind == "drop":
            if act.abort:
                w.transport.abort()
            return False
        if act.kind == "refuse":
            out = refuse.encode()
        elif act.kind == "wrong":
            out = f"{act.code} 2.0.0 {verb.lower()}:<{arg}> as if accepted\r\n".encode()
        elif act.kind == "garbage":
            out = b"* this is not an SMTP reply\r\n"
        else:
            out = ok.encode()
        if act.kind == "defer":
            conn.deferred, out = out, b""
        elif conn.deferred:
            out, conn.deferred = conn.deferred + out, b""
        head = conn.last if act.stale else b""
        tail = f"250 2.0.0 extra:<{conn.n}> nobody asked\r\n".encode() if act.extra else b""
        if out:
            conn.last = out
        w.write(head + out + tail)  # one write: the proxy reads it as one chunk
        await w.drain()
        return not act.close_after


def _addr(arg: str) -> str:
    """`FROM:<a@b> SIZE=1` -> `a@b`."""
    start, end = arg.find("<"), arg.find(">")
    return arg[start + 1:end] if 0 <= start < end else arg.partition(":")[2].strip()
