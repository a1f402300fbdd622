"""Large messages received without holding them (issue 17, item 3): past server.spool_over_bytes
DATA goes to a spool file as it arrives, and the file is closed on every path.

The equivalence test drives the real reader (GatewaySMTP._read_data) over random messages cut
into random chunks, once held in memory and once spooled from a random point on: the spooled
file must hold exactly what the pipeline makes of the in-memory content
(scan.normalize_line_endings), with the same flags. The proxy tests run the product as in
production: every spool file closed whatever became of the message, and a large message
relayed and offloaded as the in-memory path does it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtp_offload import replies as R
from smtp_offload.mime import scan
from smtp_offload.spool import FileBytes
from smtp_offload.smtp.server import GatewaySMTP, Limits
from tests.support.http import get
from tests.support.mail import attachment, message, multipart, text
from tests.support.proc import refused_start
from tests.support.relayed import LINK, attachment_payloads, body_text
from tests.support.samples import big_pdf

MIB = 1024 * 1024


class ChunkReader:
    """Stands in for the session's StreamReader: read() gives the next chunk as the network
    would have cut it; bytes given back (pipelined after the terminator) go to _buffer."""

    def __init__(self, chunks: list[bytes], stall: asyncio.Event | None = None):
        self.chunks = list(chunks)
        self._buffer = bytearray()
        self.stall = stall  # when set: after the chunks, wait for it instead of reporting EOF

    async def read(self, n: int) -> bytes:
        if self.chunks:
            return self.chunks.pop(0)
        if self.stall is not None:
            await self.stall.wait()
        return b""


def spool_fds(directory: Path) -> list[str]:
    """This process's open descriptors on files in `directory` (nameless ones read "#123 (deleted)")."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        with_target = os.path.join("/proc/self/fd", fd)
        try:
            target = os.readlink(with_target)
        except OSError:
            continue
        if target.startswith(str(directory) + "/"):
            out.append(target)
    return out


async def read_data(chunks: list[bytes], *, spool_over: int, spool_dir: Path, line_limit: int = 10**6,
                    size_limit: int = 10**9, stall: asyncio.Event | None = None):
    """_read_data as smtp_DATA calls it: (content, problem, bytes given back, bytes charged)."""
    limits = Limits(max_sessions=1, max_inflight_bytes=10**9, data_timeout=60)
    proto = GatewaySMTP(object(), limits=limits, line_length_limit=line_limit, default_reserve=0,
                        spool_over_bytes=spool_over, spool_dir=str(spool_dir), loop=asyncio.get_running_loop(),
                        data_size_limit=size_limit)
    proto._reader = ChunkReader(chunks, stall)
    content, problem = await proto._read_data()
    unread = bytes(proto._reader._buffer) + b"".join(proto._reader.chunks)  # what the command loop reads next
    return content, problem, unread, limits.inflight_bytes


def cut(data: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({p % (len(data) + 1) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in zip(edges, edges[1:]) if b > a]


# What makes unstuffing and line-end normalisation hard: dots at line starts, CR and LF alone
# or split from each other, NULs between them, 8-bit bytes, and near-terminators.
TOKENS = st.sampled_from([b".", b"..", b"\r", b"\n", b"\r\n", b"\r\n.", b"\r\n..", b"\x00", b"\r\x00\n",
                          b"\xe9", b"a", b"xyz", b"\r\n.\r", b".\r\n", b"\n.\n"])


@settings(max_examples=300, deadline=None)
@given(body=st.lists(TOKENS, max_size=50).map(b"".join), points=st.lists(st.integers(0, 400), max_size=40),
       over=st.integers(1, 120), after=st.sampled_from([b"", b"QUIT\r\n", b"MAIL FROM:<a@b.c>\r\n"]),
       line_limit=st.sampled_from([10**6, 12]), size_limit=st.sampled_from([10**9, 40]))
def test_spooled_content_is_what_the_pipeline_makes_of_the_held_content(tmp_path_factory, body, points, over,
                                                                         after, line_limit, size_limit):
    directory = tmp_path_factory.mktemp("spool")
    stream = body + b"\r\n.\r\n" + after
    chunks = cut(stream, points)

    async def both():
        held = await read_data(chunks, spool_over=10**9, spool_dir=directory, line_limit=line_limit,
                               size_limit=size_limit)
        spooled = await read_data(chunks, spool_over=over, spool_dir=directory, line_limit=line_limit,
                                  size_limit=size_limit)
        return held, spooled

    (mem, problem, left, charged), (fb, problem2, left2, charged2) = asyncio.run(both())
    assert (problem2, left2, charged2) == (problem, left, charged)  # refusals, pipelining, budget: unchanged
    if not isinstance(fb, FileBytes):  # refused (b"" both), or never past the threshold
        assert fb == mem
        assert problem is not None or len(mem) <= over
    else:
        with fb:
            assert fb.read() == scan.normalize_line_endings(mem)
            assert fb.bare_newlines == scan.has_bare_newlines(mem)
            assert fb.eight_bit == (not mem.isascii())
    assert spool_fds(directory) == []  # a refused message's file is closed at once
    assert list(directory.iterdir()) == []


# Every edge case at a chunk edge: the terminator split anywhere, a dot after a CRLF split
# between CR and LF or between LF and dot, a CR split from its LF, NULs between them.
TRICKY = b".a\r\n.b\r\n..c\r\r\n.\n.\r\x00\n\xe9\r" + b"\r\n.\r\n" + b"QUIT\r\n"


def test_every_one_and_two_chunk_edges_give_the_same_content(tmp_path):
    async def all_cuts():
        cuts = [[i] for i in range(1, len(TRICKY))] + \
            [[i, j] for i in range(1, len(TRICKY)) for j in range(i + 1, min(i + 4, len(TRICKY)))]
        held, *_ = await read_data([TRICKY], spool_over=10**9, spool_dir=tmp_path)
        for points in cuts:
            fb, problem, left, _ = await read_data(cut(TRICKY, points), spool_over=1, spool_dir=tmp_path)
            assert problem is None and left == b"QUIT\r\n", points
            with fb:
                assert (fb.read(), fb.bare_newlines, fb.eight_bit) == \
                    (scan.normalize_line_endings(held), True, True), points

    asyncio.run(all_cuts())


def test_spool_that_cannot_be_written_refuses_the_message_and_stays_in_step(tmp_path):
    chunks = [b"Subject: x\r\n\r\n" + b"y" * 100, b"\r\nmore\r\n.\r\nQUIT\r\n"]
    content, problem, left, _ = asyncio.run(read_data(chunks, spool_over=10, spool_dir=tmp_path / "gone"))
    assert (content, problem, left) == (b"", R.BUSY, b"QUIT\r\n")


def test_client_gone_or_cancelled_mid_data_closes_the_spool(tmp_path):
    chunks = [b"Subject: x\r\n\r\n", b"y" * 5000 + b"\r\n", b"z" * 5000]

    async def cancelled():
        stall = asyncio.Event()
        task = asyncio.ensure_future(read_data(chunks, spool_over=100, spool_dir=tmp_path, stall=stall))
        while not spool_fds(tmp_path):  # spooling has begun
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancelled())
    with pytest.raises(ConnectionResetError):  # the client hung up: no terminator, EOF
        asyncio.run(read_data(chunks, spool_over=100, spool_dir=tmp_path))
    deadline = time.monotonic() + 10  # a write still in its thread closes the file when it ends
    while spool_fds(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert spool_fds(tmp_path) == []


# -- the product, as in production ----------------------------------------------------------

def proxy_fds(proxy) -> list[str]:
    """The proxy's open descriptors on spool files (in its server.spool_dir: var/spool)."""
    spool = str(proxy.tmp / "var" / "spool")
    out = []
    for fd in os.listdir(f"/proc/{proxy.proc.pid}/fd"):
        try:
            target = os.readlink(f"/proc/{proxy.proc.pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(spool):
            out.append(target)
    return out


def wait_no_spool_fds(proxy, timeout: float = 15) -> list[str]:
    """The spool descriptors still open once the proxy had `timeout` to finish what it does
    after a reply or a reset (a reply is said before the session's last clean-up)."""
    deadline = time.monotonic() + timeout
    while (fds := proxy_fds(proxy)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return fds


def pdf_mail(size: int, name: str = "scan.pdf") -> tuple[bytes, bytes]:
    data = big_pdf(size)
    return message(multipart(text("Please find the scan attached."), attachment(data, name, "application/pdf"))), data


SPOOLING = {"server": {"spool_over_bytes": 64 * 1024}, "policy": {"offload_over_bytes": 10_000}}


def test_every_spool_file_is_closed_whatever_becomes_of_the_message(make_proxy, sink):
    proxy = make_proxy({**SPOOLING, "server": {**SPOOLING["server"], "bare_newlines": "reject"}})
    spool_dir = proxy.tmp / "var" / "spool"
    assert spool_dir.is_dir() and (spool_dir.stat().st_mode & 0o777) == 0o700
    msg, _ = pdf_mail(300_000)
    assert proxy.send(msg)[0] == 250  # relayed
    assert wait_no_spool_fds(proxy) == []
    # Refused by policy: a bare LF under bare_newlines = "reject" (known from the spool's flag).
    code, _ = proxy.send(msg.replace(b"\r\n\r\n", b"\r\n\n", 1))
    assert code == 554
    assert wait_no_spool_fds(proxy) == []
    # The downstream defers it.
    sink.recorder.data_reply = "451 4.3.0 try later"
    code, _ = proxy.send(msg)
    assert code == 451
    sink.recorder.data_reply = None
    assert wait_no_spool_fds(proxy) == []
    # The client hangs up half-way through DATA, once the spool file is open.
    c = proxy.client()
    c.ehlo("client.test")
    c.mail("customer@sender.test")
    c.rcpt("support@example.com")
    c.putcmd("data")
    assert c.getreply()[0] == 354
    c.sock.sendall(msg[:200_000])
    deadline = time.monotonic() + 15
    while not proxy_fds(proxy) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proxy_fds(proxy), "the message was not spooled"
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
    c.close()  # (the socket itself: smtplib's reader holds it open otherwise)
    assert wait_no_spool_fds(proxy) == []
    assert list(spool_dir.iterdir()) == []
    assert proxy.send(b"Subject: small\r\n\r\nstill serving\r\n")[0] == 250  # and the session slots are back


def test_unusable_spool_dir_stops_the_start_and_check_config_naming_the_key(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    (tmp_path / "p").mkdir()
    out = refused_start(tmp_path / "p", 1, {"server": {"spool_dir": str(blocker / "spool")}})
    one_line = r"smtp-offload: config error: server\.spool_dir \S+/a-file/spool: \S+/a-file is not a directory\n"
    assert re.fullmatch(one_line, out), out
    checked = subprocess.run([sys.executable, "-m", "smtp_offload", "check-config", "--offline",
                              "--config", str(tmp_path / "p" / "smtp-offload.toml")], capture_output=True, text=True)
    assert checked.returncode == 2
    assert re.fullmatch(one_line, checked.stderr), checked.stderr
    # Past what check-config can know (a filesystem that takes no directory): at start, one line.
    (tmp_path / "q").mkdir()
    out = refused_start(tmp_path / "q", 1, {"server": {"spool_dir": "/proc/smtp-offload-spool"}})
    assert re.fullmatch(r"smtp-offload: cannot start: server\.spool_dir /proc/smtp-offload-spool: [a-z ]+\n", out), out


def relayed_body(raw: bytes) -> bytes:
    """The message without our trace headers (Received: and X-Smtp-Offload: carry the queue id,
    the attachment's header its expiry) and with the notice's expiry time masked: what the two
    paths must agree on byte for byte."""
    head, _, body = raw.partition(b"\r\n\r\n")
    fields = re.split(rb"\r\n(?![ \t])", head)
    kept = [f for f in fields
            if not re.match(rb"(?i)(received|arc-[a-z-]+|authentication-results|x-smtp-offload(-[a-z-]+)?):", f)]
    body = re.sub(rb"\d{4}-\d\d-\d\d \d\d:\d\d UTC", b"<expiry>", body)
    return b"\r\n".join(kept) + b"\r\n\r\n" + body


def links_of(raw: bytes) -> list[str]:
    return [m.decode() for m in LINK.findall(body_text(raw).encode())]


def test_large_message_is_spooled_offloaded_and_relayed_as_in_memory(make_proxy, sink):
    msg, data = pdf_mail(6 * MIB)
    spooling = make_proxy({"server": {"spool_over_bytes": MIB}, "policy": {"offload_over_bytes": 100_000}})
    held = make_proxy({"server": {"spool_over_bytes": 64 * MIB}, "policy": {"offload_over_bytes": 100_000}})
    assert spooling.send(msg)[0] == 250, spooling.log_path.read_text()[-3000:]
    from_spool = sink.messages[-1].content
    assert held.send(msg)[0] == 250
    from_memory = sink.messages[-1].content
    assert attachment_payloads(from_spool) == {}  # offloaded
    (link,) = set(links_of(from_spool))
    status, _, got = get(link.rstrip("/") + "/download")
    assert status == 200 and hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()
    # Equal but for the link itself (each proxy has its own secret) and our trace headers.
    (other,) = set(links_of(from_memory))
    assert relayed_body(from_spool).replace(link.encode(), b"LINK") == \
        relayed_body(from_memory).replace(other.encode(), b"LINK")
    assert wait_no_spool_fds(spooling) == []


def vm_hwm_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))


def vm_rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))


def test_peak_memory_does_not_grow_with_the_message(make_proxy, sink):
    """A 32 MiB message through a proxy that spools past 1 MiB: its peak RSS above what it held
    before the message stays far below the message's size (the in-memory path holds it at
    least twice). A memory property, not a time: the bound is half the message, and what a
    spooled message costs is a few windows of a MiB."""
    size = 32 * MIB
    proxy = make_proxy({"server": {"spool_over_bytes": MIB}, "policy": {"offload_over_bytes": 100_000}})
    msg, data = pdf_mail(size)
    assert proxy.send(b"Subject: warm-up\r\n\r\nfirst\r\n")[0] == 250  # imports, pools, first-use costs
    warm, _ = pdf_mail(2 * MIB)
    assert proxy.send(warm)[0] == 250, proxy.log_path.read_text()[-3000:]
    pid = proxy.proc.pid
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS now
    before = vm_hwm_kib(pid)
    assert proxy.send(msg)[0] == 250, proxy.log_path.read_text()[-3000:]
    grown = (vm_hwm_kib(pid) - before) * 1024
    assert grown < 0.5 * len(msg), f"peak RSS grew by {grown / MIB:.1f} MiB for a {len(msg) / MIB:.1f} MiB message"
    (link,) = set(links_of(sink.messages[-1].content))
    status, _, got = get(link.rstrip("/") + "/download")
    assert status == 200 and hashlib.sha256(got).digest() == hashlib.sha256(data).digest()


@settings(max_examples=500, deadline=None)
@given(lines=st.lists(st.integers(0, 40), max_size=30), max_line=st.integers(1, 20), cr=st.booleans())
def test_long_line_check_answers_as_the_regex(lines, max_line, cr):
    """The stride check over a DATA chunk finds a too-long line exactly when the regex does."""
    from smtp_offload.smtp.server import long_line_after

    chunk = b"\n".join(((b"\r" if cr else b"") + b"x" * n) for n in lines)
    pattern = re.compile(rb"\n[^\n]{%d}" % (max_line + 1))
    first = chunk.find(b"\n")
    if first >= 0:
        assert long_line_after(chunk, first, max_line, pattern) == (pattern.search(chunk, first) is not None)


def test_a_message_declared_large_is_spooled_from_its_first_byte(make_proxy, sink):
    """SIZE= past server.spool_over_bytes: the spool file is open before the threshold's worth
    arrived (a burst of large messages is never held up to the threshold each); without SIZE,
    the same bytes are still held."""
    proxy = make_proxy({"server": {"spool_over_bytes": 1024 * 1024}})
    msg, _ = pdf_mail(300_000)

    def open_after_some_bytes(size: int | None) -> bool:
        c = proxy.client()
        c.ehlo("client.test")
        c.mail("customer@sender.test", [f"SIZE={size}"] if size else [])
        c.rcpt("support@example.com")
        c.putcmd("data")
        assert c.getreply()[0] == 354
        c.sock.sendall(msg[:100_000])
        deadline = time.monotonic() + 3
        while not (spooled := bool(proxy_fds(proxy))) and time.monotonic() < deadline:
            time.sleep(0.02)
        c.sock.sendall(msg[100_000:] + b"\r\n.\r\n")
        assert c.getreply()[0] == 250
        c.quit()
        return spooled

    assert open_after_some_bytes(5 * 1024 * 1024)
    assert wait_no_spool_fds(proxy) == []
    assert not open_after_some_bytes(None)
    assert len(sink.messages) == 2
