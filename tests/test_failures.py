"""Fail-open on storage failure, internal errors, and time budgets that must not cut mail off."""

from __future__ import annotations

import asyncio
import shutil
import socket
import time

import aiosmtplib
import pytest

from smtp_offload import config as config_mod
from smtp_offload import log as log_mod
from smtp_offload.app import App
from smtp_offload.delivery.pipeline import Pipeline
from tests.support import samples
from tests.support.mail import attachment, message, multipart, text
from tests.support.net import RawSession
from tests.support.proc import Sink
from tests.support.relayed import attachment_payloads, body_text


def break_storage(proxy) -> None:
    # The store's directory becomes a plain file: every write fails with an OSError.
    shutil.rmtree(proxy.store)
    proxy.store.write_text("not a directory")


def test_storage_failure_fails_open_when_message_fits(make_proxy, sink):
    proxy = make_proxy({"policy": {"offload_over_bytes": 10_000}})
    break_storage(proxy)
    big = samples.big_pdf(50_000)
    msg = message(multipart(text(), attachment(big, "big.pdf", "application/pdf")))
    code, reply = proxy.send(msg)
    assert code == 250, reply
    got = sink.messages[0].content
    assert attachment_payloads(got) == {"big.pdf": big}
    assert b"X-Smtp-Offload-Warning: offload failed; attachments kept" in got
    assert b"offload=failed" in got
    assert proxy.events("offload_failed")


def test_storage_failure_defers_when_message_too_big_for_downstream(make_proxy, sink):
    proxy = make_proxy({"policy": {"offload_over_bytes": 10_000}, "downstream": {"max_message_bytes": 60_000}})
    break_storage(proxy)
    msg = message(multipart(text(), attachment(samples.big_pdf(80_000), "big.pdf", "application/pdf")))
    code, reply = proxy.send(msg)
    assert code == 451 and reply.startswith(b"4.3.0") and b"storage" in reply
    assert sink.messages == []


def test_storage_failure_strip_policy(make_proxy, sink):
    proxy = make_proxy({"policy": {"offload_over_bytes": 10_000, "on_storage_failure": "strip"}})
    break_storage(proxy)
    msg = message(multipart(text(), attachment(samples.big_pdf(50_000), "big.pdf", "application/pdf")))
    assert proxy.send(msg)[0] == 250
    got = sink.messages[0].content
    assert attachment_payloads(got) == {}
    assert "could not be stored" in body_text(got)
    assert b"attachments removed" in got


class BrokenPipeline(Pipeline):
    """A pipeline with a bug: the SMTP side must answer 451, never 500."""

    async def deliver(self, inbound, ds):
        raise ZeroDivisionError("simulated bug")


async def test_internal_error_gives_451_and_nothing_is_lost(tmp_path):
    sink = Sink()
    try:
        cfg = config_mod.load(None)
        port = _free()
        cfg.server.listen = f"127.0.0.1:{port}"
        cfg.server.accepted_domains = ["example.com"]
        cfg.links.listen = f"127.0.0.1:{_free()}"
        cfg.links.secret_file = str(tmp_path / "secret")
        cfg.storage.local.path = str(tmp_path / "store")
        cfg.downstream.port, cfg.downstream.tls = sink.port, "none"
        log_mod.configure("json", "info")
        app = App(cfg, log_mod.get(), pipeline_class=BrokenPipeline)
        await app.start()
        try:
            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
            await client.connect()
            for _ in range(2):  # the session stays usable after the error
                with pytest.raises(aiosmtplib.SMTPDataError) as err:
                    await client.sendmail("a@sender.test", ["b@example.com"], message(text()))
                assert err.value.code == 451 and err.value.message.startswith("4.3.0")
                assert "ZeroDivision" not in err.value.message and "simulated" not in err.value.message
            await client.quit()
        finally:
            await app.stop(drain=1)
        assert sink.messages == []
    finally:
        sink.stop()


def _free() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_slow_client_is_not_cut_off_by_idle_timeout(make_proxy, sink):
    """aiosmtpd arms its timer once per command; a DATA that trickles in for longer than the
    idle timeout must still arrive, as long as bytes keep coming."""
    proxy = make_proxy({"server": {"idle_timeout": 1}})
    msg = message(multipart(text(), attachment(samples.big_pdf(60_000), "a.pdf", "application/pdf")))
    with RawSession(proxy.smtp_port) as s:
        assert s.start_data().startswith(b"354")
        step = len(msg) // 6
        for i in range(0, len(msg), step):  # about 3 s in all, never 1 s without a byte
            s.send(msg[i:i + step])
            time.sleep(0.5)
        s.send(b"\r\n.\r\n")
        assert s.reply().startswith(b"250 2.0.0")
    assert len(sink.messages) == 1


def test_slow_downstream_is_not_cut_off_by_idle_timeout(make_proxy, sink):
    proxy = make_proxy({"server": {"idle_timeout": 1}})

    async def slow_data(server, session, envelope):
        await asyncio.sleep(2.5)
        sink.recorder.messages.append(envelope)
        return "250 2.0.0 Ok"

    sink.recorder.handle_DATA = slow_data
    code, reply = proxy.send(message(text()))
    assert code == 250, reply
    assert len(sink.messages) == 1
