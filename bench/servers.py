"""The bench's own servers (SMTP, and one HTTP), each meant to run as its own process.

    python -m bench.servers discard      --listen 127.0.0.1:PORT
    python -m bench.servers sink         --listen 127.0.0.1:PORT       (receiver when smtp-sink is missing)
    python -m bench.servers passthrough  --listen 127.0.0.1:PORT --downstream 127.0.0.1:PORT
    python -m bench.servers passthrough-pooled --listen 127.0.0.1:PORT --downstream 127.0.0.1:PORT
    python -m bench.servers http-discard --listen 127.0.0.1:PORT

discard/sink: aiosmtpd that accepts every message and throws it away (the best an
aiosmtpd-based proxy can do). passthrough: aiosmtpd -> aiosmtplib with no parsing at
all; every message opens a NEW downstream connection, sends `envelope.original_content`
with the envelope's sender and recipients and returns the downstream's own reply.
passthrough-pooled: the same, but over persistent downstream connections: a pool of idle
connections, one in use per message in flight (so at most one per concurrent session),
each reused for the next message (MAIL/RCPT/DATA; RSET first when its last transaction was
refused midway; closed on any error), as the proxy keeps its downstream connections.
http-discard: a bare aiohttp server whose every POST reads the body in 256 KiB chunks,
drops them and answers 200 {"ok": true, "bytes": N} (the best an aiohttp-based upload
API can do; the peer of the proxy's POST /api/v1/upload/attachment).
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import aiosmtplib
from aiosmtpd.smtp import SMTP


class DiscardHandler:
    async def handle_DATA(self, server, session, envelope):
        return "250 2.0.0 Ok: discarded"


class PassthroughHandler:
    def __init__(self, host: str, port: int):
        self.host, self.port = host, port

    async def handle_DATA(self, server, session, envelope):
        client = aiosmtplib.SMTP(hostname=self.host, port=self.port, start_tls=False, use_tls=False,
                                 timeout=120, local_hostname="passthrough.bench")
        try:
            await client.connect()
            try:
                await client.ehlo()
                await client.mail(envelope.mail_from)
                for rcpt in envelope.rcpt_tos:
                    await client.rcpt(rcpt)
                resp = await client.data(envelope.original_content)
                return f"{resp.code} {resp.message}"
            finally:
                try:
                    await client.quit()
                except aiosmtplib.SMTPException:
                    client.close()
        except aiosmtplib.SMTPResponseException as exc:
            code = exc.code if 400 <= exc.code < 600 else 451
            return f"{code} {exc.message}"
        except (aiosmtplib.SMTPException, OSError) as exc:
            return f"451 4.4.1 downstream failed: {type(exc).__name__}"


class PooledPassthroughHandler:
    """aiosmtpd -> aiosmtplib over kept connections: the peer of a proxy that pools its
    downstream connections. No parsing; the downstream's reply is returned as it is."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.idle: list[aiosmtplib.SMTP] = []  # LIFO: the warmest connection first

    async def _take(self, pooled: bool = True) -> tuple[aiosmtplib.SMTP, bool]:
        """A connection, and whether it came from the pool (it may have been closed meanwhile)."""
        while pooled and self.idle:
            client = self.idle.pop()
            if client.is_connected:
                return client, True
        client = aiosmtplib.SMTP(hostname=self.host, port=self.port, start_tls=False, use_tls=False,
                                 timeout=120, local_hostname="passthrough.bench")
        await client.connect()
        try:
            await client.ehlo()
        except BaseException:
            client.close()
            raise
        return client, False

    async def handle_DATA(self, server, session, envelope):
        client: aiosmtplib.SMTP | None = None
        keep = False
        try:
            client, reused = await self._take()
            try:
                await client.mail(envelope.mail_from)
            except aiosmtplib.SMTPServerDisconnected:
                if not reused:
                    raise
                # The downstream closed the idle connection: once more on a new one (as the
                # proxy's downstream client reconnects once).
                client.close()
                client = None
                client, _ = await self._take(pooled=False)
                await client.mail(envelope.mail_from)
            for rcpt in envelope.rcpt_tos:
                await client.rcpt(rcpt)
            resp = await client.data(envelope.original_content)
            keep = True
            return f"{resp.code} {resp.message}"
        except aiosmtplib.SMTPResponseException as exc:
            if client is not None:
                # Refused midway: the transaction may still be open downstream; RSET before reuse.
                try:
                    await client.rset()
                    keep = True
                except (aiosmtplib.SMTPException, OSError):
                    pass
            code = exc.code if 400 <= exc.code < 600 else 451
            return f"{code} {exc.message}"
        except (aiosmtplib.SMTPException, OSError) as exc:
            return f"451 4.4.1 downstream failed: {type(exc).__name__}"
        finally:
            if client is not None:
                if keep and client.is_connected:
                    self.idle.append(client)
                else:
                    client.close()


def _hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host or "127.0.0.1", int(port)


async def serve(handler, listen: str) -> None:
    host, port = _hostport(listen)
    loop = asyncio.get_running_loop()

    def factory():
        # No size limit (aiosmtpd's default is 32 MiB: the 34.2 MiB message must get through).
        return SMTP(handler, data_size_limit=None, enable_SMTPUTF8=True, hostname="bench.test",
                    ident="bench", loop=loop)

    server = await loop.create_server(factory, host, port, reuse_address=True, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


async def serve_http_discard(listen: str) -> None:
    from aiohttp import web  # here, so that the SMTP servers' idle RSS does not carry aiohttp

    async def discard(request: web.Request) -> web.Response:
        n = 0
        async for chunk in request.content.iter_chunked(256 * 1024):
            n += len(chunk)
        return web.json_response({"ok": True, "bytes": n})

    host, port = _hostport(listen)
    app = web.Application()
    app.router.add_post("/{tail:.*}", discard)
    runner = web.AppRunner(app, access_log=None)  # as the proxy's link server: no access log
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True, backlog=1024).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.servers")
    ap.add_argument("kind", choices=["discard", "sink", "passthrough", "passthrough-pooled", "http-discard"])
    ap.add_argument("--listen", required=True)
    ap.add_argument("--downstream", help="host:port (passthrough)")
    args = ap.parse_args(argv)
    if args.kind == "http-discard":
        asyncio.run(serve_http_discard(args.listen))
        return
    if args.kind in ("passthrough", "passthrough-pooled"):
        if not args.downstream:
            ap.error(f"{args.kind} needs --downstream")
        cls = PassthroughHandler if args.kind == "passthrough" else PooledPassthroughHandler
        handler = cls(*_hostport(args.downstream))
    else:
        handler = DiscardHandler()
    asyncio.run(serve(handler, args.listen))


if __name__ == "__main__":
    main()
