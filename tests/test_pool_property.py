"""The promise under a hostile downstream and impatient clients, through the real proxy with
its connection pool (issue 11, item 2).

A scripted downstream (tests/support/scripted.py) that, driven by a seeded generator, delays its
answers, drops the connection, answers DATA with 250, sends garbage, an unsolicited reply
or a stale one, and answers a replayed MAIL or RCPT (the proxy opening a transaction again
after losing its connection mid-envelope) differently than the first time; meanwhile many
clients, some pipelining their commands, hang up at random points (while the proxy waits
for the answer to MAIL or RCPT, mid-message, right after the final dot). Whatever the
schedule:

- every 250 a client gets for a message has exactly one copy downstream, with the client's
  sender and exactly the recipients it got 250 for (a fault mid-envelope, followed by more
  RCPTs, must not lose the earlier ones), and no message arrives twice;
- every reply a client reads is its own: the downstream's replies name what they answer
  (`rcpt:<address>`, `dot:<token>` ...), and a client never sees another's.

The seeds are fixed, so each run draws the same faults; the invariant must hold for
whatever interleaving the scheduler picks.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from dataclasses import dataclass, field

import pytest

from tests.support.mail import message, text
from tests.support.scripted import TAG, Act, Conn, ScriptedDownstream

SESSIONS = 160
CONCURRENCY = 12
HANG_UPS = ["rcpt", "data_cmd", "mid_body", "after_dot"]
REPLY_TIMEOUT = 30  # far above the proxy's downstream timeouts (5 s) and the scripted delays


def downstream_script(seed: int):
    """Faults drawn per command from (seed, command, how often that exact command came):
    the same faults for every run, and a replayed command may get another answer."""
    seen: dict[tuple[str, str], int] = {}

    def decide(conn: Conn, verb: str, arg: str) -> Act:
        n = seen[verb, arg] = seen.get((verb, arg), 0) + 1
        r = random.Random(f"{seed}|{verb}|{arg}|{n}")
        delay = r.choice([0, 0, 0, 0.01, 0.05, 0.12])
        x = r.random()
        if verb in ("EHLO", "RSET"):
            return Act("drop") if x < 0.03 else Act()
        if n == 2 and verb in ("MAIL", "RCPT") and r.random() < (0.6 if verb == "MAIL" else 0.15):
            # Addresses are unique to a session: a command seen again is the proxy replaying a
            # transaction whose connection was lost, and a downstream may answer it otherwise
            # (once: the transaction must survive that and be replayed again).
            return Act("refuse", 451 if verb == "MAIL" else 450, delay=delay)
        faults: list[tuple[float, Act]] = [
            (0.04, Act("drop", abort=r.random() < 0.5, delay=delay)),
            (0.04, Act("garbage", delay=delay)),
            (0.05, Act(extra=True, delay=delay)),
            (0.04, Act(stale=True, delay=delay)),
        ]
        if verb == "MAIL":
            faults += [(0.04, Act("refuse", 451))]
        elif verb == "RCPT":
            faults += [(0.05, Act("refuse", 550)), (0.04, Act("refuse", 452))]
        elif verb == "DATA":
            faults += [(0.08, Act("wrong", 250)), (0.03, Act("wrong", 334)), (0.04, Act("refuse", 451))]
        elif verb == "DOT":
            faults += [(0.05, Act("refuse", 554)), (0.04, Act("refuse", 451)),
                       (0.05, Act("accept_drop", delay=delay))]
        for p, act in faults:
            if x < p:
                return act
            x -= p
        return Act(delay=delay)

    return decide


@dataclass
class Outcome:
    n: int
    sender: str
    rcpts: list[str]
    token: str
    accepted: list[str] = field(default_factory=list)  # recipients that got 250
    claimed: bool = False  # the final reply was 250
    problems: list[str] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)  # every reply line read after EHLO
    hang_up: str | None = None
    resumed: bool = False  # a RCPT got 250 after an earlier one did and a later one got 4.4.x


class Client:
    """One raw SMTP session that checks that every reply it reads answers its own command."""

    def __init__(self, port: int, seed: int, n: int):
        self.port = port
        r = self.r = random.Random(f"client|{seed}|{n}")
        k = r.choice([1, 2, 3, 6, 8])  # enough recipients for a fault mid-envelope to be followed by more
        self.out = Outcome(n, f"s{n}@sender.test", [f"r{n}x{i}@example.com" for i in range(k)], f"TOKEN-{seed}-{n}")
        self.hang_up = self.out.hang_up = r.choice(HANG_UPS) if r.random() < 0.4 else None
        self.pipelining = r.random() < 0.5

    def check(self, what: str, code: int, line: str, allowed: set[tuple[str, str]], must: tuple[str, str] | None):
        found = {(k.decode(), v.decode()) for k, v in TAG.findall(line.encode())}
        if found - allowed or (must and must not in found):
            self.out.problems.append(f"{what}: got {line!r}")
        if code == 500 or not 200 <= code < 600:
            self.out.problems.append(f"{what}: invalid reply {line!r}")

    async def reply(self) -> tuple[int, str]:
        while True:
            line = (await asyncio.wait_for(self.reader.readline(), REPLY_TIMEOUT)).decode()
            if not line:
                raise ConnectionError("proxy closed the connection")
            if line[3:4] != "-":
                self.out.replies.append(line.rstrip("\r\n"))
                return int(line[:3]), line.rstrip("\r\n")

    def close(self, abort: bool) -> None:
        if abort:  # a reset, not a FIN: as if the client crashed
            sock = self.writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.close()

    async def run(self) -> Outcome:
        o, r = self.out, self.r
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            await self._session(o, r)
        except ConnectionError:
            pass  # the proxy may close on us only after a 421; check() saw that reply
        except asyncio.TimeoutError:  # every downstream wait is bounded: the proxy is stuck
            o.problems.append(f"no reply within {REPLY_TIMEOUT} s")
        finally:
            self.close(abort=r.random() < 0.3)
        return o

    async def _session(self, o: Outcome, r: random.Random) -> None:
        w = self.writer
        await self.reply()
        w.write(b"EHLO client.test\r\n")
        await self.reply()
        mail = f"MAIL FROM:<{o.sender}>\r\n".encode()
        rcpts = [f"RCPT TO:<{a}>\r\n".encode() for a in o.rcpts]
        if self.pipelining:
            w.write(mail + b"".join(rcpts) + (b"" if self.hang_up == "rcpt" else b"DATA\r\n"))
            if self.hang_up in ("rcpt", "data_cmd"):
                return
            replies = [await self.reply() for _ in range(len(rcpts) + 2)]
        else:
            w.write(mail)
            replies = [await self.reply()]
            for i, cmd in enumerate(rcpts):
                w.write(cmd)
                if self.hang_up == "rcpt" and i == len(rcpts) - 1:
                    return
                replies.append(await self.reply())
            w.write(b"DATA\r\n")
            if self.hang_up == "data_cmd":
                return
            replies.append(await self.reply())
        code, line = replies[0]
        if code != 250:
            o.problems.append(f"MAIL: {line!r}")
        own_mail = ("mail", o.sender)
        fault = False
        for rcpt, (code, line) in zip(o.rcpts, replies[1:-1]):
            fault = fault or bool(o.accepted and " 4.4." in line)
            if code == 250:
                o.resumed = o.resumed or fault
                o.accepted.append(rcpt)
                self.check("RCPT", code, line, {("rcpt", rcpt)}, ("rcpt", rcpt))
            else:
                self.check("RCPT", code, line, {("rcpt", rcpt), own_mail}, None)
        code, line = replies[-1]
        if code != 354:
            self.check("DATA", code, line, set(), None)
            return
        body = message(text(f"{o.token}\r\n.dot-stuffed line\r\n"), subject=o.token)
        if self.hang_up == "mid_body":
            w.write(body[: len(body) // 2])
            await w.drain()
            return
        w.write(body + b".\r\n")
        if self.hang_up == "after_dot":
            await w.drain()
            return
        code, line = await self.reply()
        if code == 250:
            o.claimed = True
            self.check("end of data", code, line, set(), None)
        else:
            self.check("end of data", code, line, {("data", o.sender), ("dot", o.token)}, None)
        if r.random() < 0.5:
            w.write(b"QUIT\r\n")
            await self.reply()


async def drive(port: int, seed: int) -> list[Outcome]:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(n: int) -> Outcome:
        async with gate:
            return await Client(port, seed, n).run()

    return list(await asyncio.gather(*(one(n) for n in range(SESSIONS))))


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_every_250_has_one_copy_and_every_reply_is_its_own(make_proxy, seed):
    ds = ScriptedDownstream(downstream_script(seed))
    try:
        proxy = make_proxy({"downstream": {"command_timeout": 5, "data_timeout": 5, "pool_size": 4}},
                           downstream_port=ds.port)
        outcomes = asyncio.run(drive(proxy.smtp_port, seed))
    finally:
        ds.stop()
    assert ds.errors == []
    problems = [f"session {o.n}: {p}" for o in outcomes for p in o.problems]
    copies: dict[str, list] = {}
    for d in ds.deliveries:
        copies.setdefault(d.token, []).append(d)
    for o in outcomes:
        got = copies.get(o.token, [])
        if len(got) > 1:
            problems.append(f"session {o.n}: {len(got)} copies downstream")
        if o.claimed and [(d.sender, d.rcpts) for d in got] != [(o.sender, o.accepted)]:
            problems.append(f"session {o.n}: 250 upstream, downstream has {[(d.sender, d.rcpts) for d in got]}")
    assert not problems, "\n".join(problems[:30])
    assert not proxy.events("message_internal_error") and not proxy.events("smtp_internal_error")
    # A client hanging up is ordinary: no traceback ("Task exception was never retrieved") for it.
    assert "Traceback" not in proxy.log_path.read_text(errors="replace")
    # The run exercised what it claims to: messages went through, protocol errors were met,
    # clients hung up, pooled connections served more than one session, and a message got 250
    # after a downstream fault mid-envelope was followed by more recipients.
    replies = [line for o in outcomes for line in o.replies]
    senders: dict[int, set[bytes]] = {}
    for conn, line in ds.commands:
        if line.startswith(b"MAIL"):
            senders.setdefault(conn, set()).add(line)
    stats = (sum(o.claimed for o in outcomes), sum(" 4.4.2 " in line for line in replies),
             sum(o.hang_up is not None for o in outcomes), sum(len(s) > 1 for s in senders.values()),
             sum(o.resumed and o.claimed for o in outcomes))
    print("claimed, 4.4.2 replies, hang-ups, connections reused, 250 after a fault mid-envelope:", stats)
    assert stats[0] >= SESSIONS // 10 and all(stats[1:])
