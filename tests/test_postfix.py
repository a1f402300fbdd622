"""No message lost or doubled, proven with a real sending MTA: Debian's Postfix relays through
the proxy to the recording downstream, and every message is counted by its Message-ID.

One private Postfix instance serves the module (tests/support/postfix.py); its relayhost is a fixed
port pair on which each test starts (and restarts) its proxy. Postfix retries every second or
two, and the tests flush its queue while they wait, so a retry never waits for a timer.
"""

from __future__ import annotations

import collections
import hashlib

import pytest

from tests.support import samples
from tests.support.env import missing
from tests.support.http import get
from tests.support.net import free_port
from tests.support.postfix import (
    HangingS3, Postfix, Sent, arrivals, compose, deliver_all, postfix_unavailable, proxy_on_ports, received,
    submit_all, wait_for,
)
from tests.support.proc import AWS_ENV
from tests.support.relayed import LINK, attachment_payloads, body_text

_unavailable = postfix_unavailable()


@pytest.fixture(scope="module", autouse=True)
def _postfix_available() -> None:  # first of the module's fixtures: before any Postfix is started
    if _unavailable is not None:
        missing(_unavailable)

THRESHOLD = 50_000  # policy.offload_over_bytes: every "big" file below is offloaded


# --- fixtures --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def relay_ports() -> tuple[int, int]:
    """(SMTP, links) ports of every proxy in this module: Postfix's relayhost points there."""
    return free_port(), free_port()


@pytest.fixture(scope="module")
def postfix(relay_ports):
    pf = Postfix(relay_port=relay_ports[0])
    try:
        pf.start()
        yield pf
    finally:
        pf.stop()


@pytest.fixture
def mta(postfix):
    """The module's Postfix, with an empty queue before and after the test."""
    assert postfix.queue() == [], postfix.diagnose()
    yield postfix
    postfix.delete_all()


@pytest.fixture
def proxies(tmp_path, sink, relay_ports):
    """start(name, overrides) -> a proxy on the module's fixed ports, stopped after the test."""
    started = []

    def start(name: str, overrides: dict[str, dict]):
        p = proxy_on_ports(tmp_path / name, sink.port, *relay_ports, overrides, env=AWS_ENV)
        started.append(p)
        return p.start()

    yield start
    for p in started:
        if hasattr(p, "_log"):
            p.stop()


def s3_storage(endpoint: str, bucket: str, **s3) -> dict[str, dict]:
    return {"storage": {"backend": "s3"},
            "storage.s3": {"bucket": bucket, "endpoint_url": endpoint, "region": "us-east-1", "prefix": "offload",
                           "addressing_style": "path", **s3},
            "policy": {"offload_over_bytes": THRESHOLD}}


# --- messages --------------------------------------------------------------------------

def assert_exactly_once(mta: Postfix, sink, sent: list[Sent]) -> None:
    assert arrivals(sink) == collections.Counter({s.message_id: 1 for s in sent})
    attempts = mta.deliveries()
    for s in sent:  # and Postfix agrees: its last attempt was accepted, with the proxy's own 250
        status, reply = attempts[s.queue_id][-1]
        assert status == "sent" and "250 2.0.0 Ok: queued as" in reply, (s.message_id, attempts[s.queue_id])


def assert_offloaded(got: bytes, s: Sent) -> None:
    """The big files left the message, the small ones stayed byte for byte, and every link
    in the notice downloads exactly one of the big files."""
    assert attachment_payloads(got) == s.small
    links = sorted({u.decode() for u in LINK.findall(body_text(got).encode())})
    assert len(links) == len(s.big), links
    downloaded = set()
    for link in links:
        status, _, body = get(link.rstrip("/") + "/download")  # follows the redirect to storage
        assert status == 200, (link, status)
        downloaded.add(hashlib.sha256(body).hexdigest())
    assert downloaded == {hashlib.sha256(d).hexdigest() for d in s.big.values()}


# --- 1. the proxy is SIGKILLed while Postfix waits for its answer to DATA -----------------

def test_sigkill_mid_data_then_restart_delivers_every_message_once(mta, proxies, sink, s3server):
    hang = HangingS3()
    try:
        # Storage that takes the upload and never answers: the proxy holds the big messages
        # (a 120 s storage budget) while Postfix waits for the reply to its final dot.
        first = proxies("first", {**s3_storage(hang.endpoint, "hanging-bucket", connect_timeout=5,
                                               read_timeout=300),
                                  "policy": {"offload_over_bytes": THRESHOLD, "storage_timeout": 120}})
        big = [compose("kill-big-1", big={"contract.pdf": samples.big_pdf(300_000)}),
               compose("kill-big-2", big={"scan.pdf": samples.big_pdf(120_000)}, small={"logo.png": samples.png()}),
               compose("kill-big-3", big={"a.pdf": samples.big_pdf(90_000), "b.pdf": samples.big_pdf(200_000)})]
        plain = [compose("kill-plain-1"), compose("kill-plain-2", small={"logo.png": samples.png()})]
        sent = [big[0], plain[0], big[1], plain[1], big[2]]
        submit_all(mta, sent)

        # The plain messages go through (Postfix has their 250); every file of the big ones
        # reached the hanging store, so those messages sit after their DATA, unanswered.
        wait_for(lambda: len(hang.uploads) == 4, "4 uploads at the hanging store", timeout=60,
                 diagnose=lambda: f"uploads: {hang.uploads}\n{mta.diagnose()}")

        def plain_done_big_pending() -> bool:
            attempts = mta.deliveries()
            return (all(any(st == "sent" for st, _ in attempts.get(s.queue_id, [])) for s in plain)
                    and {q["queue_id"] for q in mta.queue()} == {s.queue_id for s in big})

        wait_for(plain_done_big_pending, "the plain messages sent and removed from Postfix's queue", timeout=60,
                 diagnose=mta.diagnose)
        assert sorted(arrivals(sink)) == sorted(s.message_id for s in plain)
        assert all(size >= THRESHOLD for _, size in hang.uploads)
        assert all(q["queue_name"] == "active" for q in mta.queue()), mta.diagnose()  # in delivery, not deferred
        assert all(len(mta.deliveries().get(s.queue_id, [])) == 0 for s in big)  # their first attempt is still on
        assert len(first.events("message")) == len(plain)  # the big ones have no outcome yet

        first.proc.kill()  # SIGKILL: no drain, no reply, no cleanup
        first.proc.wait(10)
        first.stop()

        # Postfix saw the connection drop after its final dot and kept the messages.
        def lost_after_dot() -> bool:
            attempts = mta.deliveries()
            return all(any(st == "deferred" and "while sending end of data" in txt
                           for st, txt in attempts.get(s.queue_id, [])) for s in big)

        wait_for(lost_after_dot, "Postfix to defer the big messages after the lost connection",
                 timeout=30, diagnose=mta.diagnose)
        assert {q["queue_id"] for q in mta.queue()} == {s.queue_id for s in big}
        assert len(sink.messages) == len(plain)

        # The same ports, now with working storage (moto's S3 server).
        bucket = s3server.new_bucket()
        second = proxies("second", s3_storage(s3server.endpoint, bucket))
        deliver_all(mta, sink, sent)

        assert_exactly_once(mta, sink, sent)
        for s in big:
            assert_offloaded(received(sink, s).content, s)
        for s in plain:
            got = received(sink, s).content
            assert got.endswith(s.raw) and attachment_payloads(got) == s.small
        keys = [k for k in s3server.keys(bucket) if "/." not in k]
        assert len(keys) == sum(len(s.big) for s in big)
        relayed = [e for e in second.events("message") if e.get("outcome") == "relayed"]
        assert sorted(e["message_id"] for e in relayed) == sorted(s.message_id for s in big)
    finally:
        hang.close()


# --- 2. the downstream answers 451 for a while --------------------------------------------

def test_downstream_451_for_a_while_then_every_message_once(mta, proxies, sink):
    proxy = proxies("p", {"policy": {"offload_over_bytes": THRESHOLD}})
    sink.recorder.data_reply = "451 4.3.0 try later"
    sent = [compose("defer-plain-1"), compose("defer-big", big={"report.pdf": samples.big_pdf(150_000)}),
            compose("defer-plain-2"), compose("defer-small", small={"logo.png": samples.png()})]
    submit_all(mta, sent)

    def all_deferred() -> bool:
        attempts = mta.deliveries()
        queued = {q["queue_id"] for q in mta.queue()}
        return all(s.queue_id in queued and any(st == "deferred" and "451 4.3.0 try later" in txt
                                                for st, txt in attempts.get(s.queue_id, [])) for s in sent)

    wait_for(all_deferred, "Postfix to defer every message with the downstream's 451", timeout=60,
             diagnose=mta.diagnose)
    assert sink.messages == []

    sink.recorder.data_reply = None
    deliver_all(mta, sink, sent)

    assert_exactly_once(mta, sink, sent)
    assert_offloaded(received(sink, sent[1]).content, sent[1])
    for s in (sent[0], sent[2], sent[3]):
        assert received(sink, s).content.endswith(s.raw)
    # Every refused attempt deleted what it had stored: one copy of the one big file is left.
    stored = [p for p in proxy.store.rglob("*") if p.is_file()
              and not any(part.startswith(".") for part in p.relative_to(proxy.store).parts)]
    assert len(stored) == 1 and stored[0].read_bytes() == sent[1].big["report.pdf"]
    outcomes = collections.Counter(e["outcome"] for e in proxy.events("message"))
    assert outcomes["relayed"] == len(sent) and outcomes["deferred"] >= len(sent)


# --- 3. storage down: fail open -----------------------------------------------------------

def test_storage_down_keeps_attachments_inline_with_a_warning(mta, proxies, sink):
    closed = f"http://127.0.0.1:{free_port()}"
    proxy = proxies("p", s3_storage(closed, "unreachable-bucket", connect_timeout=1, read_timeout=1))
    assert proxy.events("storage_unavailable_at_start")
    sent = [compose("down-big-1", big={"contract.pdf": samples.big_pdf(200_000)}),
            compose("down-plain"),
            compose("down-big-2", big={"scan.pdf": samples.big_pdf(80_000)}, small={"logo.png": samples.png()})]
    submit_all(mta, sent)
    deliver_all(mta, sink, sent)

    assert_exactly_once(mta, sink, sent)
    for s in (sent[0], sent[2]):
        got = received(sink, s).content
        assert attachment_payloads(got) == {**s.big, **s.small}
        assert b"X-Smtp-Offload-Warning: offload failed; attachments kept in the message" in got
        assert b"offload=failed" in got and not LINK.search(got)
    plain = received(sink, sent[1]).content
    assert b"X-Smtp-Offload-Warning" not in plain and plain.endswith(sent[1].raw)
