"""Load generator: raw asyncio streams, no SMTP library, run as its own process.

    python -m bench.load --port P --kind small --sessions 20 --duration 10 --warmup 1
    python -m bench.load --port P --kind large --pdf-size 26214400 --once
    python -m bench.load --port P --kind large --pdf-size 26214400 --burst 10
    python -m bench.load --port P --kind upload --pdf-size 26214400 --once --path /api/v1/upload/attachment \
        --api-key KEY

Throughput mode: N concurrent sessions, each sending messages back to back in one
connection (MAIL, RCPT, DATA, ... then QUIT). A message's latency is MAIL sent -> final
reply to the data. Messages started during the warm-up are not counted; no message is
started after warm-up + duration; the measured window ends with the last reply.
Once mode: one connection, one message; the time runs from the connect() call (the
client's first byte) to the final reply.
Burst (--burst N): N connections opened together, each sending one large message (the
same as once mode's, its own Message-ID) in 1 MiB writes; the time runs from the first
connect() call to the last final reply.
Upload (--kind upload, always once): one HTTP/1.1 POST with http.client of a PDF of
--pdf-size bytes as the raw body (Content-Length, `X-Filename: big.pdf`, `Authorization:
Bearer KEY` with --api-key); the time runs from connect() to the last byte of the response.
Any status but 200 is "unexpected"; the response's JSON is in the output ("response").

Prints one JSON object on stdout. Every reply code is counted per step; any code other
than the expected one (220, 250, 250, 250, 354, 250, 221) is "unexpected", and so is every
connection error or timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import http.client
import json
import math
import resource
import sys
import time

from . import messages

EXPECTED = {"greeting": 220, "EHLO": 250, "MAIL": 250, "RCPT": 250, "DATA": 354, "END": 250, "QUIT": 221}
MAIL_FROM = f"MAIL FROM:<{messages.SENDER}>".encode()
RCPT_TO = f"RCPT TO:<{messages.RCPT}>\r\n".encode()


class Unexpected(Exception):
    pass


class Stats:
    def __init__(self) -> None:
        self.replies: dict[str, collections.Counter] = {k: collections.Counter() for k in EXPECTED}
        self.errors: collections.Counter = collections.Counter()
        self.latencies: list[float] = []  # measured window, messages answered 250
        self.measured_ok = 0
        self.measured_failed = 0
        self.warmup_ok = 0
        self.bytes_ok = 0
        self.last_end = 0.0
        self.unexpected = 0

    def count(self, step: str, code: int) -> bool:
        self.replies[step][code] += 1
        if code != EXPECTED[step]:
            self.unexpected += 1
            return False
        return True


async def read_reply(reader: asyncio.StreamReader) -> tuple[int, list[bytes]]:
    lines = []
    while True:
        line = await reader.readline()
        if not line.endswith(b"\n"):
            raise ConnectionError("connection closed by the server")
        lines.append(line)
        if line[3:4] != b"-":
            return int(line[:3]), lines


async def open_session(host: str, port: int, st: Stats) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 16)
    code, _ = await read_reply(reader)
    if not st.count("greeting", code):
        writer.close()
        raise Unexpected(f"greeting {code}")
    writer.write(b"EHLO load.bench\r\n")
    code, lines = await read_reply(reader)
    if not st.count("EHLO", code):
        writer.close()
        raise Unexpected(f"EHLO {code}")
    has_size = any(l[4:].upper().startswith(b"SIZE") for l in lines)
    return reader, writer, has_size


async def transaction(reader, writer, payload: bytes, size: int, has_size: bool, st: Stats) -> int:
    """One MAIL/RCPT/DATA; returns the final reply code (0 when refused before the data)."""
    writer.write(MAIL_FROM + (b" SIZE=%d\r\n" % size if has_size else b"\r\n"))
    code, _ = await read_reply(reader)
    if not st.count("MAIL", code):
        await _rset(reader, writer, code)
        return 0
    writer.write(RCPT_TO)
    code, _ = await read_reply(reader)
    if not st.count("RCPT", code):
        await _rset(reader, writer, code)
        return 0
    writer.write(b"DATA\r\n")
    code, _ = await read_reply(reader)
    if not st.count("DATA", code):
        await _rset(reader, writer, code)
        return 0
    writer.write(payload)
    await writer.drain()
    code, _ = await read_reply(reader)
    st.count("END", code)
    return code


async def _rset(reader, writer, code: int) -> None:
    if code == 421:
        raise ConnectionError("421 from the server")
    writer.write(b"RSET\r\n")
    await read_reply(reader)


async def _quit(reader, writer, st: Stats) -> None:
    try:
        writer.write(b"QUIT\r\n")
        code, _ = await asyncio.wait_for(read_reply(reader), 10)
        st.count("QUIT", code)
    except (OSError, ConnectionError, asyncio.TimeoutError, ValueError) as exc:
        st.errors[f"QUIT:{type(exc).__name__}"] += 1
        st.unexpected += 1
    finally:
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 5)
        except (OSError, asyncio.TimeoutError):
            pass


class Clock:
    seq = 0


async def session(host: str, port: int, payloads: list[tuple[bytes, int]], st: Stats, t_measure: float,
                  t_stop: float, msg_timeout: float, offset: int) -> None:
    reconnects = 0
    n = offset
    while time.perf_counter() < t_stop and reconnects <= 10:
        writer = None
        try:
            async with asyncio.timeout(msg_timeout):
                reader, writer, has_size = await open_session(host, port, st)
            while (t0 := time.perf_counter()) < t_stop:
                template, size = payloads[n % len(payloads)]
                n += 1
                Clock.seq += 1
                payload = template.replace(messages.MSGID, b"<bench-%012d@load.test>" % Clock.seq, 1)
                async with asyncio.timeout(msg_timeout):
                    code = await transaction(reader, writer, payload, size, has_size, st)
                t1 = time.perf_counter()
                if t0 >= t_measure:
                    st.last_end = max(st.last_end, t1)
                    if code == 250:
                        st.measured_ok += 1
                        st.bytes_ok += size
                        st.latencies.append(t1 - t0)
                    else:
                        st.measured_failed += 1
                elif code == 250:
                    st.warmup_ok += 1
            await _quit(reader, writer, st)
            return
        except (OSError, ConnectionError, TimeoutError, Unexpected, ValueError) as exc:
            st.errors[type(exc).__name__] += 1
            st.unexpected += 1
            reconnects += 1
            if writer is not None:
                writer.close()
            await asyncio.sleep(0.05)


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "p99": None, "mean": None, "max": None}
    v = sorted(values)

    def rank(p: float) -> float:
        return v[max(0, math.ceil(p / 100 * len(v)) - 1)]

    return {"p50": rank(50) * 1000, "p90": rank(90) * 1000, "p99": rank(99) * 1000,
            "mean": sum(v) / len(v) * 1000, "max": v[-1] * 1000}


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def throughput(host: str, port: int, kind: str, sessions: int, duration: float, warmup: float,
                     msg_timeout: float, raw: bool = False) -> dict:
    templates = messages.build(kind)
    payloads = [(messages.wire(m), len(m)) for m in templates]
    st = Stats()
    cpu0 = _cpu()
    start = time.perf_counter()
    t_measure, t_stop = start + warmup, start + warmup + duration
    tasks = [asyncio.create_task(session(host, port, payloads, st, t_measure, t_stop, msg_timeout, i))
             for i in range(sessions)]
    await asyncio.wait(tasks, timeout=warmup + duration + msg_timeout + 30)
    for t in tasks:
        if not t.done():
            t.cancel()
            st.errors["session_hung"] += 1
            st.unexpected += 1
    await asyncio.gather(*tasks, return_exceptions=True)
    elapsed = max(t_stop, st.last_end) - t_measure
    return {
        "mode": "throughput", "kind": kind, "sessions": sessions, "duration_s": duration, "warmup_s": warmup,
        "elapsed_s": elapsed, "messages_ok": st.measured_ok, "messages_failed": st.measured_failed,
        "warmup_ok": st.warmup_ok, "throughput": st.measured_ok / elapsed if elapsed > 0 else 0.0,
        "mb_per_s": st.bytes_ok / elapsed / 1e6 if elapsed > 0 else 0.0,
        "mib_per_s": st.bytes_ok / elapsed / (1 << 20) if elapsed > 0 else 0.0,
        "message_bytes": [len(m) for m in templates],
        "latency_ms": percentiles(st.latencies), "replies": _replies(st), "errors": dict(st.errors),
        "unexpected": st.unexpected, "client_cpu_s": _cpu() - cpu0,
        **({"latencies_ms": [round(x * 1000, 3) for x in st.latencies]} if raw else {}),
    }


async def once(host: str, port: int, kind: str, pdf_size: int, timeout: float) -> dict:
    message = messages.build(kind, pdf_size)[0]
    payload = messages.wire(message)
    st = Stats()
    result: dict = {"mode": "once", "kind": kind, "message_bytes": [len(message)], "pdf_bytes": pdf_size}
    try:
        async with asyncio.timeout(timeout):
            t0 = time.perf_counter()
            reader, writer, has_size = await open_session(host, port, st)
            writer.write(MAIL_FROM + (b" SIZE=%d\r\n" % len(message) if has_size else b"\r\n"))
            for step, line in (("MAIL", None), ("RCPT", RCPT_TO), ("DATA", b"DATA\r\n")):
                if line:
                    writer.write(line)
                code, _ = await read_reply(reader)
                if not st.count(step, code):
                    raise Unexpected(f"{step} {code}")
            t_data = time.perf_counter()
            writer.write(payload)
            await writer.drain()
            t_sent = time.perf_counter()
            code, _ = await read_reply(reader)
            t1 = time.perf_counter()
            st.count("END", code)
            await _quit(reader, writer, st)
        ok = code == 250
        result.update({"time_s": t1 - t0, "upload_s": t_sent - t_data, "after_upload_s": t1 - t_sent,
                       "messages_ok": int(ok), "throughput": (1 / (t1 - t0)) if ok else 0.0,
                       "mb_per_s": len(message) / (t1 - t0) / 1e6 if ok else 0.0,
                       "mib_per_s": len(message) / (t1 - t0) / (1 << 20) if ok else 0.0,
                       "latency_ms": percentiles([t1 - t0] if ok else [])})
    except (OSError, ConnectionError, TimeoutError, Unexpected, ValueError) as exc:
        st.errors[type(exc).__name__] += 1
        st.unexpected += 1
        result.update({"time_s": None, "messages_ok": 0, "throughput": 0.0, "latency_ms": percentiles([])})
    result.update({"replies": _replies(st), "errors": dict(st.errors), "unexpected": st.unexpected})
    return result


async def burst(host: str, port: int, kind: str, pdf_size: int, n: int, timeout: float) -> dict:
    """`n` sessions started together, one large message each (see the module docstring)."""
    message = messages.build(kind, pdf_size)[0]
    payload = memoryview(messages.wire(message))
    # Each connection's own Message-ID without n copies of the payload: the part before the
    # ID, the ID, the rest (the ID is in the headers, the first write).
    at = bytes(payload[:65536]).index(messages.MSGID)
    head, tail = payload[:at], payload[at + len(messages.MSGID):]
    st = Stats()
    ends: list[float] = []
    times: list[float | None] = [None] * n
    cpu0 = _cpu()

    async def one(i: int, t0: float) -> None:
        writer = None
        try:
            async with asyncio.timeout(timeout):
                reader, writer, has_size = await open_session(host, port, st)
                writer.write(MAIL_FROM + (b" SIZE=%d\r\n" % len(message) if has_size else b"\r\n"))
                for step, line in (("MAIL", None), ("RCPT", RCPT_TO), ("DATA", b"DATA\r\n")):
                    if line:
                        writer.write(line)
                    code, _ = await read_reply(reader)
                    if not st.count(step, code):
                        raise Unexpected(f"{step} {code}")
                writer.write(bytes(head) + b"<bench-%012d@load.test>" % (port * 1000 + i))
                for k in range(0, len(tail), 1 << 20):
                    writer.write(tail[k:k + (1 << 20)])
                    await writer.drain()
                code, _ = await read_reply(reader)
                t1 = time.perf_counter()
                if st.count("END", code):
                    st.measured_ok += 1
                    times[i] = t1 - t0
                ends.append(t1)
                await _quit(reader, writer, st)
        except (OSError, ConnectionError, TimeoutError, Unexpected, ValueError) as exc:
            st.errors[type(exc).__name__] += 1
            st.unexpected += 1
            if writer is not None:
                writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i, t0) for i in range(n)))
    ok = st.measured_ok == n
    total = (max(ends) - t0) if ends and ok else None
    return {"mode": "burst", "kind": kind, "sessions": n, "message_bytes": [len(message)], "pdf_bytes": pdf_size,
            "time_s": total, "times_s": times, "messages_ok": st.measured_ok, "t0_perf": t0,
            "throughput": n / total if total else 0.0,
            "mib_per_s": n * len(message) / total / (1 << 20) if total else 0.0,
            "latency_ms": percentiles([t for t in times if t is not None]), "replies": _replies(st),
            "errors": dict(st.errors), "unexpected": st.unexpected, "client_cpu_s": _cpu() - cpu0}


def upload(host: str, port: int, path: str, pdf_size: int, api_key: str | None, filename: str,
           timeout: float) -> dict:
    """One POST of a PDF of `pdf_size` bytes; the body is built before the clock starts."""
    body = messages.samples.big_pdf(pdf_size)
    result: dict = {"mode": "once", "kind": "upload", "client": "http.client", "message_bytes": [len(body)],
                    "pdf_bytes": pdf_size, "path": path}
    errors: collections.Counter = collections.Counter()
    replies: dict[str, dict[str, int]] = {}
    unexpected = 0
    cpu0 = _cpu()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        t0 = time.perf_counter()
        conn.connect()
        conn.putrequest("POST", path, skip_accept_encoding=True)
        if api_key:
            conn.putheader("Authorization", f"Bearer {api_key}")
        conn.putheader("X-Filename", filename)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        t_body = time.perf_counter()
        conn.send(body)
        t_sent = time.perf_counter()
        resp = conn.getresponse()
        raw = resp.read()
        t1 = time.perf_counter()
        replies["POST"] = {str(resp.status): 1}
        ok = resp.status == 200
        if not ok:
            unexpected += 1
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = {"unparsed": raw[:500].decode(errors="replace")}
        result.update({"status": resp.status, "response": answer, "time_s": t1 - t0, "upload_s": t_sent - t_body,
                       "after_upload_s": t1 - t_sent, "messages_ok": int(ok),
                       "throughput": (1 / (t1 - t0)) if ok else 0.0,
                       "mb_per_s": len(body) / (t1 - t0) / 1e6 if ok else 0.0,
                       "mib_per_s": len(body) / (t1 - t0) / (1 << 20) if ok else 0.0,
                       "latency_ms": percentiles([t1 - t0] if ok else [])})
    except (OSError, http.client.HTTPException) as exc:
        errors[type(exc).__name__] += 1
        unexpected += 1
        result.update({"time_s": None, "messages_ok": 0, "throughput": 0.0, "latency_ms": percentiles([]),
                       "error": f"{type(exc).__name__}: {exc}"[:300]})
    finally:
        conn.close()
    result.update({"replies": replies, "errors": dict(errors), "unexpected": unexpected, "client_cpu_s": _cpu() - cpu0})
    return result


def _replies(st: Stats) -> dict[str, dict[str, int]]:
    return {step: {str(k): v for k, v in sorted(c.items())} for step, c in st.replies.items() if c}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.load")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--kind", choices=["small", "mix", "large", "upload"], default="small",
                    help="upload: one HTTP POST of a PDF (--path, --api-key; always once)")
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--once", action="store_true", help="one connection, one message")
    ap.add_argument("--burst", type=int, metavar="N", help="N connections at once, one message each")
    ap.add_argument("--pdf-size", type=int, default=25 * 1024 * 1024)
    ap.add_argument("--timeout", type=float, default=120.0, help="per message")
    ap.add_argument("--raw", action="store_true", help="include every latency (ms) in the output")
    ap.add_argument("--path", default="/api/v1/upload/attachment", help="upload: the URL path")
    ap.add_argument("--api-key", help="upload: sent as Authorization: Bearer KEY")
    ap.add_argument("--filename", default="big.pdf", help="upload: the X-Filename header")
    args = ap.parse_args(argv)
    if args.kind == "upload":
        res = upload(args.host, args.port, args.path, args.pdf_size, args.api_key, args.filename, args.timeout)
    elif args.burst:
        res = asyncio.run(burst(args.host, args.port, args.kind, args.pdf_size, args.burst, args.timeout))
    elif args.once:
        res = asyncio.run(once(args.host, args.port, args.kind, args.pdf_size, args.timeout))
    else:
        res = asyncio.run(throughput(args.host, args.port, args.kind, args.sessions, args.duration, args.warmup,
                                     args.timeout, args.raw))
    json.dump(res, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
