"""A large message relayed as a stream (issue 17, item 3): Downstream.data() given a spool.Pieces
or FileBytes writes the DATA block a window at a time, with flow control, and the downstream
receives exactly what the same message given as bytes makes it receive.

A real aiosmtpd sink (the product's recording sink) on loopback takes both; the messages are
random, with dots at line starts, bare CR and LF (also split across chunk edges), NULs and
8-bit bytes, cut into pieces at random so every edge case meets a chunk edge.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtp_offload import spool
from smtp_offload.config import DownstreamConfig, DownstreamTls
from smtp_offload.linestream import data_block_chunks
from smtp_offload.relay.client import Downstream, _data_block
from tests.support.proc import Sink

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def module_sink():
    s = Sink()
    yield s
    s.stop()


def spooled(directory, data: bytes) -> spool.FileBytes:
    w = spool.SpoolWriter(str(directory))
    w.write(data)
    return w.finish(eight_bit=not data.isascii())


def pieces_of(fb: spool.FileBytes, data: bytes, points: list[int], literal: list[bool]) -> spool.Pieces:
    """`data` as a Pieces over `fb` (which holds it) cut at `points`: each piece a literal or a
    range of the file, as the rewriter makes them."""
    edges = sorted({p % (len(data) + 1) for p in points} | {0, len(data)})
    out: list[spool.Piece] = []
    for n, (a, b) in enumerate(zip(edges, edges[1:])):
        out.append(data[a:b] if literal[n % len(literal)] else (a, b))
    return spool.Pieces(fb, out)


async def send(port: int, message) -> int:
    ds = Downstream(DownstreamConfig(host="127.0.0.1", port=port, tls=DownstreamTls.NONE), "relay.test")
    try:
        assert (await ds.mail("a@sender.test", [])).ok
        assert (await ds.rcpt("b@example.com")).ok
        return (await ds.data(message)).code
    finally:
        await ds.quit()


TOKENS = st.sampled_from([b".", b"..", b"\r", b"\n", b"\r\n", b"\r\n.", b"\r\n..", b"\x00", b"\xe9\xff",
                          b"a", b"xyz", b"\r\n.\r", b".\r\n", b"\n.\n", b"\r\r\n"])


@settings(max_examples=120, deadline=None)
@given(body=st.lists(TOKENS, max_size=60).map(b"".join), points=st.lists(st.integers(0, 300), max_size=30),
       literal=st.lists(st.booleans(), min_size=1, max_size=4))
def test_streamed_message_arrives_as_the_bytes_path_sends_it(tmp_path_factory, module_sink, body, points, literal):
    # The same bytes arrive at a real SMTP server, from a Pieces and from a FileBytes.
    directory = tmp_path_factory.mktemp("relay")
    with spooled(directory, body) as fb:
        codes = asyncio.run(_send_three(module_sink.port, body, fb, pieces_of(fb, body, points, literal)))
    assert codes == [250, 250, 250]
    got = [m.content for m in module_sink.messages[-3:]]
    assert got[1] == got[0] and got[2] == got[0]


async def _send_three(port: int, body: bytes, fb, pieces) -> list[int]:
    return [await send(port, body), await send(port, pieces), await send(port, fb)]


TRICKY = b".a\r\n.b\r\n..c\r\r\n.\n.\r\x00\n\xe9\r\n.\r"


def test_every_one_and_two_chunk_edges_give_the_same_data_block():
    whole = _data_block(TRICKY)
    for i in range(len(TRICKY) + 1):
        for j in range(i, min(i + 4, len(TRICKY) + 1)):
            assert b"".join(data_block_chunks([TRICKY[:i], TRICKY[i:j], TRICKY[j:]])) == whole, (i, j)


def test_a_large_message_is_written_with_flow_control(tmp_path, module_sink, monkeypatch):
    """A 24 MiB FileBytes: never handed to the transport whole. Every write is at most a window
    plus a line end and the terminator, and a write follows only the drain of the one before."""
    from aiosmtplib.protocol import SMTPProtocol

    data = (b"line of a large message\r\n.dot-started line\r\n" * (24 * MIB // 45))
    writes: list[int] = []
    drains = []
    write, drain = SMTPProtocol.write, SMTPProtocol._drain_helper

    def counting_write(self, chunk: bytes) -> None:
        writes.append(len(chunk))
        write(self, chunk)

    async def counting_drain(self) -> None:
        drains.append(len(writes))
        await drain(self)

    monkeypatch.setattr(SMTPProtocol, "write", counting_write)
    monkeypatch.setattr(SMTPProtocol, "_drain_helper", counting_drain)
    with spooled(tmp_path, data) as fb:
        assert asyncio.run(send(module_sink.port, fb)) == 250
    assert module_sink.messages[-1].content == data
    big = [n for n in writes if n > 1000]  # the message's writes (not MAIL, RCPT, DATA, QUIT)
    assert len(big) >= 24 and max(big) <= spool.WINDOW + spool.WINDOW // 20  # dot-stuffing adds a few bytes
    assert len(drains) >= len(big)  # a drain after each write of the message


def test_a_refusal_sent_before_the_end_of_a_streamed_message_is_the_answer(tmp_path):
    """A downstream that answers 552 part-way through a 32 MiB message and reads no more (as a
    size-limited server may): that answer goes back (a permanent refusal, not a 451 the sender
    would retry for days), and the connection, mid-DATA, is closed rather than reused."""
    data = b"x" * 998 + b"\r\n"
    data *= 32 * MIB // len(data)

    async def scenario() -> tuple[int, bool]:
        go_on = asyncio.Event()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"220 small.test ESMTP\r\n")
            while (line := await reader.readline()).upper() != b"DATA\r\n":
                writer.write(b"250 ok\r\n")
            writer.write(b"354 go ahead\r\n")
            await reader.readexactly(256 * 1024)
            # Reading nothing more: once the sockets' buffers are full the client's writes
            # cannot drain, and only the reply can end its wait (the pause makes that likely;
            # the test holds without it, it then just proves less).
            await asyncio.sleep(0.5)
            writer.write(b"552 5.3.4 Message too big for this system\r\n")
            await go_on.wait()  # reads nothing more until the client has its answer
            while await reader.read(MIB):
                pass
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        cfg = DownstreamConfig(host="127.0.0.1", port=port, tls=DownstreamTls.NONE, data_timeout=20)
        ds = Downstream(cfg, "relay.test")
        try:
            assert (await ds.mail("a@sender.test", [])).ok and (await ds.rcpt("b@example.com")).ok
            with spooled(tmp_path, data) as fb:
                reply = await ds.data(fb)
            return reply.code, ds.connected
        finally:
            go_on.set()
            ds.close()
            server.close()
            await server.wait_closed()

    assert asyncio.run(scenario()) == (552, False)
