"""Load without loss: many concurrent sessions, a mix of clean, attachment, oversized and
hostile messages. Every 250 must have exactly one copy downstream, every refusal must be
a 4xx/5xx the client saw, and the proxy must not leak memory or file descriptors.

The short version runs by default; the long one is `pytest -m soak`
(SMTP_OFFLOAD_SOAK_SECONDS, default 300, and SMTP_OFFLOAD_SOAK_SESSIONS, default 200)."""

from __future__ import annotations

import asyncio
import collections
import email.parser
import email.policy
import os
import time
from pathlib import Path

import aiosmtplib
import pytest

from tests.support import samples
from tests.support.mail import attachment, message, multipart, text

_parser = email.parser.BytesHeaderParser(policy=email.policy.compat32)
MIN_ACCEPTED = 0.95  # share of the load that must get 250 (and then be found downstream)


def _mix(i: int) -> bytes:
    kind = i % 5
    if kind == 0:
        body = text("x" * 2000 + "\r\n")
    elif kind == 1:
        body = multipart(text(), attachment(samples.png(), "logo.png", "image/png"))
    elif kind == 2:
        body = multipart(text(), attachment(samples.big_pdf(150_000 + i), "big.pdf", "application/pdf"))
    elif kind == 3:
        body = multipart(text(), attachment(samples.pe_exe(), "invoice.pdf", "application/pdf"))
    else:  # hostile shapes: bare LF, a missing final boundary, an empty file
        body = (multipart(text("bare\nlf\n"), attachment(b"", "empty.txt", "text/plain"))
                .replace(b"--\r\n", b"\r\n"))
    return message(body, subject=f"soak {i}", message_id=f"<soak-{i}@sender.test>")


async def _session(port: int, ids: list[int], results: dict[int, object]) -> None:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=60)
    try:
        await client.connect()
        for i in ids:
            try:
                resp = await client.sendmail("load@sender.test", ["support@example.com"], _mix(i))
                results[i] = 250 if not resp[0] else resp
            except aiosmtplib.SMTPResponseException as exc:
                results[i] = exc.code
        await client.quit()
    except (aiosmtplib.SMTPException, OSError) as exc:
        for i in ids:
            results.setdefault(i, exc)


async def _load(port: int, sessions: int, per_session: int, start: int = 0) -> dict[int, object]:
    results: dict[int, object] = {}
    await asyncio.gather(*(_session(port, list(range(start + s * per_session, start + (s + 1) * per_session)), results)
                           for s in range(sessions)))
    return results


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _check(results: dict[int, object], sink, proxy, expected: int) -> None:
    assert len(results) == expected
    unexpected = {i: r for i, r in results.items() if not isinstance(r, int)}
    assert not unexpected, f"client-side failures: {list(unexpected.items())[:3]}"
    accepted = {i for i, r in results.items() if r == 250}
    refused = {i: r for i, r in results.items() if r != 250}
    assert all(400 <= r < 600 for r in refused.values())
    # The load must really have been taken: a proxy that answered 451 to everything loses no
    # mail, but it is no soak. Every message of the mix is deliverable under the soak's policy.
    assert len(accepted) >= MIN_ACCEPTED * expected, \
        f"only {len(accepted)} of {expected} accepted; replies: {collections.Counter(refused.values())}"
    downstream: dict[str, int] = {}
    for m in sink.messages:
        mid = _parser.parsebytes(m.content).get("Message-ID", "")
        downstream[mid] = downstream.get(mid, 0) + 1
    for i in accepted:
        assert downstream.get(f"<soak-{i}@sender.test>") == 1, f"message {i}: {downstream.get(f'<soak-{i}@sender.test>')}"
    assert sum(downstream.values()) == len(accepted), "a refused message reached the downstream"
    errors = [e for e in proxy.events() if e.get("level") in ("error", "critical")]
    assert not errors, errors[:3]


def _run(make_proxy, sink, sessions: int, per_session: int, seconds: float | None) -> None:
    # Every session comes from 127.0.0.1: the per-address limit would be what is tested.
    proxy = make_proxy({"policy": {"offload_over_bytes": 100_000},
                        "server": {"max_sessions": sessions + 50, "max_sessions_per_client": 0}})
    pid = proxy.proc.pid
    warm = asyncio.run(_load(proxy.smtp_port, 20, 2, start=10_000_000))  # imports, caches, pools
    assert all(r == 250 for r in warm.values())
    rss0, fds0 = _rss_kib(pid), _fds(pid)
    sink.recorder.messages.clear()
    total: dict[int, object] = {}
    deadline = time.monotonic() + (seconds or 0)
    rnd = 0
    while True:
        total.update(asyncio.run(_load(proxy.smtp_port, sessions, per_session, start=rnd * sessions * per_session)))
        rnd += 1
        if seconds is None or time.monotonic() >= deadline:
            break
    _check(total, sink, proxy, rnd * sessions * per_session)
    # Closed sessions are reaped a moment after the clients are done: wait for that, not a while.
    deadline = time.monotonic() + 20
    while _fds(pid) > fds0 + 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    rss1, fds1 = _rss_kib(pid), _fds(pid)
    # Margins: allocator arenas and caches grow with concurrency, leaks grow with messages.
    assert rss1 < rss0 * 1.5 + 60 * 1024, (rss0, rss1)
    assert fds1 <= fds0 + 10, (fds0, fds1)


def test_short_soak(make_proxy, sink):
    _run(make_proxy, sink, sessions=50, per_session=4, seconds=None)


@pytest.mark.soak
def test_long_soak(make_proxy, sink):
    _run(make_proxy, sink, sessions=int(os.environ.get("SMTP_OFFLOAD_SOAK_SESSIONS", "200")), per_session=5,
         seconds=float(os.environ.get("SMTP_OFFLOAD_SOAK_SECONDS", "300")))


def test_the_check_refuses_a_load_that_was_not_accepted(make_proxy, sink):
    """The soak's own check can fail: a load the downstream deferred (every reply a 451, no mail
    lost) is not a passed soak."""
    proxy = make_proxy({"policy": {"offload_over_bytes": 100_000}})
    sink.recorder.data_reply = "451 4.3.0 Try again later"
    results = asyncio.run(_load(proxy.smtp_port, 5, 2))
    assert set(results.values()) == {451}
    with pytest.raises(AssertionError, match="only 0 of 10 accepted"):
        _check(results, sink, proxy, 10)

