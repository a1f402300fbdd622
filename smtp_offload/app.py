"""Composition root: build every piece from the config, start them, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import sys
from pathlib import Path

from . import __version__, sdnotify, spool, startup
from .admin import AdminServer
from .config import Backend, Config, LinksMode, parse_hostport
from .auth import Authenticator, check_start
from .api.files import FilesApi
from .links.secret import load_secrets
from .links.server import LinkServer
from .portal.service import Portal
from .quarantine.records import Holder
from .quarantine.service import Quarantine
from .metrics import Metrics, Readiness, downstream_probe
from .delivery.decide import DecidePolicy
from .delivery.pipeline import Pipeline
from .delivery.policy import Fit
from .delivery.prepare import Preparer
from .notices import NoticeError, Notices
from .relay import Downstream
from .relay.pool import DownstreamPool
from .smtp.handler import Handler
from .errors import ConfigError, StartupError, StorageError
from .smtp.server import TOO_MANY, GatewaySMTP, Limits, Refuse
from .storage import Store, close_store, open_store
from .storage.routed import stores_of

# Reserved from the in-flight byte budget for a message whose sender declared no SIZE.
DEFAULT_RESERVE = 10 * 1024 * 1024
START_CHECK_SECONDS = 10.0  # a hanging store must not hold up the start: it fails open per message


def _tls_context(cfg: Config) -> ssl.SSLContext | None:
    s = cfg.server
    if not s.tls_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(s.tls_cert, s.tls_key)
    return ctx


def decide_policy(cfg: Config) -> DecidePolicy:
    """What decide() reads, from [policy], [downstream] (what fits) and [server] (bare newlines)."""
    d, p = cfg.downstream, cfg.policy
    return DecidePolicy(inspect=p.inspect, plan=p.plan, mime=p.mime, fit=Fit(d.max_message_bytes, d.max_attachments),
                        bare_newlines=cfg.server.bare_newlines)


def build_pipeline(cfg: Config, store, secret: list[bytes] | None, log, metrics: Metrics, hostname: str,
                   auth: Authenticator, cls: type[Pipeline] = Pipeline) -> Pipeline:
    """The delivery pipeline, its stages given their own policies (composed from the config once)."""
    p = cfg.policy
    policy = decide_policy(cfg)
    holder = Holder(store, timeout=p.prepare.storage_timeout, log=log, metrics=metrics) \
        if p.hold.quarantine and store is not None else None
    preparer = Preparer(store=store, secret=secret[0] if secret else None, links=cfg.links, policy=p.prepare,
                        fit=policy.fit, tenant_from=cfg.storage.tenant_from, auth=auth, hostname=hostname, log=log,
                        metrics=metrics, seal_unchanged=cfg.auth.arc.seal_unchanged, holder=holder,
                        notices=Notices(cfg.notices, upload_links=cfg.portal.enabled))
    return cls(decide_policy=policy, signed=p.signed, preparer=preparer, auth=auth, metrics=metrics)


def make_portal(cfg: Config, preparer: Preparer, secrets: list[bytes], hostname: str, log,
                metrics: Metrics | None = None) -> Portal:
    """The upload portal: the mail rules, the mail store and links, the mail downstream."""
    helo = cfg.downstream.helo_name or hostname
    return Portal(preparer=preparer, policy=decide_policy(cfg), cfg=cfg.portal, links=cfg.links, secrets=secrets,
                  downstream=lambda: Downstream(cfg.downstream, helo), accepted_domains=cfg.server.accepted_domains,
                  hostname=hostname, log=log, metrics=metrics)


def make_quarantine(cfg: Config, preparer: Preparer, hostname: str, log, metrics: Metrics | None = None) -> Quarantine:
    """The quarantine's admin side: the mail store, the mail downstream, the offload threshold."""
    helo = cfg.downstream.helo_name or hostname
    return Quarantine(store=preparer.store, policy=cfg.policy.hold, preparer=preparer,
                      offload_over_bytes=cfg.policy.plan.offload_over_bytes,
                      downstream=lambda: Downstream(cfg.downstream, helo), hostname=hostname, log=log, metrics=metrics)


def check_files(cfg: Config) -> None:
    """What the config names on disk and `serve` must refuse before anything starts (also
    `check-config`): the ARC key, and notice templates that cannot render. ConfigError."""
    check_start(cfg.auth)
    try:
        Notices(cfg.notices, upload_links=cfg.portal.enabled).check()
    except NoticeError as exc:
        raise ConfigError(str(exc)) from None
    problem = spool.unusable(cfg.server.spool_dir)
    if problem:
        raise ConfigError(f"server.spool_dir {cfg.server.spool_dir}: {problem}")


def prepare_spool(cfg: Config) -> None:
    """server.spool_dir made (0700) and swept of what a crash left, once per start before any
    message arrives; a directory that cannot hold spool files stops the start, in one line."""
    try:
        spool.ready(cfg.server.spool_dir)
    except OSError as exc:
        why = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        raise StartupError(f"server.spool_dir {cfg.server.spool_dir}: {why}") from None


class App:
    def __init__(self, cfg: Config, log, pipeline_class: type[Pipeline] = Pipeline, reuse_port: bool = False,
                 worker: int | None = None,
                 resolver=None):
        self.cfg = cfg
        self.reuse_port = reuse_port  # several worker processes share the listening ports
        self.worker = worker  # this worker's index with server.workers > 1
        self.pipeline_class = pipeline_class
        self.resolver = resolver  # async DNS TXT lookup for DKIM (tests pass their own)
        self.log = log
        self.hostname = cfg.server.hostname or socket.getfqdn()
        self.smtp_server: asyncio.base_events.Server | None = None
        self.link_server: LinkServer | None = None
        self.admin_server: AdminServer | None = None
        self.readiness: Readiness | None = None
        self.pool: DownstreamPool | None = None
        self.quarantine: Quarantine | None = None
        self.store: Store | None = None
        s = cfg.server
        self.limits = Limits(max_sessions=s.max_sessions, max_inflight_bytes=s.max_inflight_bytes,
                             data_timeout=s.data_timeout, command_timeout=s.command_timeout,
                             envelope_timeout=s.envelope_timeout, max_sessions_per_client=s.max_sessions_per_client)
        self.metrics = Metrics()  # this process's registry, served at /metrics
        self.metrics.watch_limits(self.limits)

    async def start(self) -> None:
        cfg = self.cfg
        if self.worker is None:  # (with workers, the parent did it before forking)
            prepare_spool(cfg)
        secret = load_secrets(cfg.links, self.log)
        store = self.store = open_store(cfg)
        await check_store(cfg, store, self.log)
        pipeline = build_pipeline(cfg, store, secret, self.log, self.metrics, self.hostname,
                                  Authenticator(cfg.auth, self.hostname, self.resolver), self.pipeline_class)
        try:  # an admin's template that cannot render must stop the start, not a customer's message
            pipeline.preparer.notices.check()
        except NoticeError as exc:
            raise StartupError(str(exc)) from None
        self.pool = DownstreamPool(lambda: Downstream(cfg.downstream, cfg.downstream.helo_name or self.hostname),
                                   cfg.downstream.pool_size, cfg.downstream.pool_idle_seconds)
        handler = Handler(pipeline, self.pool, self.log, self.metrics, accepted_domains=cfg.server.accepted_domains,
                          max_recipients=cfg.server.max_recipients, proxy_protocol=cfg.server.proxy_protocol)
        tls = _tls_context(cfg)
        loop = asyncio.get_running_loop()

        def factory() -> GatewaySMTP | Refuse:
            if len(self.limits.sessions) >= self.limits.max_sessions:
                self.log.warning("session_refused", reason="max_sessions", sessions=len(self.limits.sessions))
                self.metrics.refused("max_sessions")
                return Refuse(TOO_MANY)
            return GatewaySMTP(
                handler, limits=self.limits, line_length_limit=cfg.server.max_line_length,
                default_reserve=min(DEFAULT_RESERVE, cfg.server.max_message_bytes),
                data_size_limit=cfg.server.max_message_bytes, enable_SMTPUTF8=cfg.server.smtputf8,
                hostname=self.hostname, ident=f"smtp-offload {__version__}", tls_context=tls,
                require_starttls=cfg.server.require_tls, timeout=cfg.server.idle_timeout, loop=loop,
                metrics=self.metrics, log=self.log,
                spool_over_bytes=cfg.server.spool_over_bytes, spool_dir=cfg.server.spool_dir,
                proxy_protocol_timeout=cfg.server.proxy_protocol_timeout if cfg.server.proxy_protocol else None,
            )

        readiness = self.readiness = Readiness(
            store, downstream_probe(cfg.downstream, cfg.downstream.helo_name or self.hostname),
            log=self.log, draining=lambda: self.limits.draining)
        files = FilesApi(preparer=pipeline.preparer, policy=decide_policy(cfg), cfg=cfg.api, log=self.log)
        portal = make_portal(cfg, pipeline.preparer, secret, self.hostname, self.log, self.metrics) \
            if cfg.portal.enabled else None
        # Always, even with policy.quarantine off: what was held before must still be released
        # or purged on time.
        self.quarantine = make_quarantine(cfg, pipeline.preparer, self.hostname, self.log, self.metrics)
        self.link_server = LinkServer(store, secret, cfg.links, log=self.log, metrics=self.metrics,
                                      readiness=readiness, api_cfg=cfg.api, files=files, portal=portal,
                                      quarantine=self.quarantine, admin_routes=not cfg.admin.listen,
                                      branding=cfg.branding)
        # Every bind failure names its key and address (startup.bind_error): "server.listen
        # 127.0.0.1:2525: address already in use", never a bare OSError.
        lhost, lport = parse_hostport("links.listen", cfg.links.listen)
        own_port = cfg.links.worker_port_base + self.worker if self.worker is not None and \
            cfg.links.worker_port_base else None
        try:
            await self.link_server.start(lhost, lport, reuse_port=self.reuse_port, own_port=own_port)
        except OSError as exc:
            if own_port and startup.failed_port(exc) == own_port:
                raise startup.bind_error("links.worker_port_base", lhost, own_port, exc,
                                         f" (worker {self.worker})") from None
            raise startup.bind_error("links.listen", lhost, lport, exc) from None
        if cfg.admin.listen:
            # Its own listener, not shared between workers: worker i on port + i (port 0: any).
            (key, ahost, aport, note), = [a for a in startup.listen_addresses(cfg, self.worker)
                                          if a[0] == "admin.listen"]
            self.admin_server = AdminServer(self.metrics, readiness)
            try:
                await self.admin_server.start(ahost, aport)
            except OSError as exc:
                raise startup.bind_error(key, ahost, aport, exc, note) from None
        host, port = parse_hostport("server.listen", cfg.server.listen)
        try:
            self.smtp_server = await loop.create_server(factory, host, port, reuse_address=True,
                                                        reuse_port=self.reuse_port or None)
        except OSError as exc:
            raise startup.bind_error("server.listen", host, port, exc) from None
        self.quarantine.start()
        self.log.info("started", smtp=cfg.server.listen, links=cfg.links.listen, admin=cfg.admin.listen or None,
                      config=cfg.source,
                      downstream=f"{cfg.downstream.host}:{cfg.downstream.port}", version=__version__,
                      storage=describe_store(cfg))

    async def stop(self, drain: float | None = None) -> None:
        """Stop accepting; idle sessions get 421 at once, messages in flight may finish
        (up to `drain` seconds, then their connections are closed too: no 250 was given,
        so the senders still hold those messages)."""
        drain = self.cfg.server.drain_seconds if drain is None else drain
        loop = asyncio.get_running_loop()
        if self.smtp_server is not None:
            self.smtp_server.close()
            self.limits.draining = True
            in_flight = [p for p in self.limits.sessions if p.in_flight]
            self.log.info("draining", sessions=len(self.limits.sessions), in_flight=len(in_flight))
            for p in list(self.limits.sessions):
                p.shutdown()
            deadline = loop.time() + drain
            while self.limits.sessions and loop.time() < deadline:
                await asyncio.sleep(0.05)
            for p in list(self.limits.sessions):
                p.abort_session()
        if self.pool is not None:
            self.pool.close()
        if self.quarantine is not None:
            await self.quarantine.stop()
        if self.link_server is not None:
            await self.link_server.stop()
        if self.admin_server is not None:
            await self.admin_server.stop()
        if self.store is not None:
            await close_store(self.store)
        self.log.info("stopped")


def describe_store(cfg: Config, name: str = "") -> str:
    """Where the default store (or storage.stores.<name>) keeps files, for logs and messages."""
    sc = cfg.storage.stores[name] if name else cfg.storage
    if sc.backend is Backend.S3:
        s3 = sc.s3
        return f"s3://{s3.bucket}/{s3.prefix.strip('/')}" + (f" at {s3.endpoint_url}" if s3.endpoint_url else "")
    if sc.backend is Backend.GCS:
        gcs = sc.gcs
        return f"gs://{gcs.bucket}/{gcs.prefix.strip('/')}" + (f" at {gcs.endpoint_url}" if gcs.endpoint_url else "")
    if sc.backend is Backend.AZURE:
        from .storage.azure import endpoint_of

        return f"azure://{sc.azure.container}/{sc.azure.prefix.strip('/')} at {endpoint_of(sc.azure)}"
    return str(Path(sc.local.path).resolve())


async def check_store(cfg: Config, store: Store, log) -> None:
    """Refuse to start on a store that cannot work (wrong bucket, no credentials); start
    anyway, failing open per message, when it is merely unreachable right now. Every named
    store (storage.stores) is checked the same way."""
    for name, one in stores_of(store).items():
        where = describe_store(cfg) if not name else f"{name} ({describe_store(cfg, name)})"
        try:
            await asyncio.wait_for(one.check(), START_CHECK_SECONDS)
        except asyncio.TimeoutError:
            log.warning("storage_unavailable_at_start", storage=where,
                        reason=f"no answer within {START_CHECK_SECONDS:.0f} s")
        except StorageError as exc:
            backend = (cfg.storage.stores[name] if name else cfg.storage).backend
            if backend is Backend.LOCAL or exc.permanent:
                raise StartupError((f"storage.stores.{name}: " if name else "") + f"storage {where}: {exc}") from None
            log.warning("storage_unavailable_at_start", storage=where, reason=str(exc))
    if cfg.links.mode is LinksMode.PRESIGNED:
        # Found now, not as a failed link in every mail: a store that cannot sign URLs at all.
        for name, one in stores_of(store).items():
            problem = await one.presign_problem() if hasattr(one, "presign_problem") else None
            if problem:
                raise StartupError(f'links.mode = "presigned": storage {describe_store(cfg, name)}: {problem}')
    if cfg.links.mode is LinksMode.PRESIGNED and hasattr(store, "credentials"):
        found, temporary = store.credentials()
        if temporary:
            log.warning("presigned_links_with_temporary_credentials",
                        message="links in mails will stop working when these temporary credentials expire, "
                                "possibly long before links.ttl_seconds; use links.mode = \"redirect\"")


async def serve(cfg: Config, log, reuse_port: bool = False, worker: int | None = None) -> int:
    app = App(cfg, log, reuse_port=reuse_port, worker=worker)
    await app.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Reloading in place would have to swap listeners, TLS, storage and secrets under live
    # sessions; a drained restart (systemctl restart) is safe and quick, so SIGHUP only says so.
    loop.add_signal_handler(signal.SIGHUP, lambda: log.warning(
        "sighup_ignored", message="configuration is read at start only; restart to apply changes"))
    if worker in (None, 0) and app.readiness is not None and startup.for_people(cfg):
        # Once, however many workers: where it listens, whether the downstream answered, and
        # what to do when it did not. By /readyz's own check (2 s at most), kept for /readyz
        # for its few seconds, so the two say the same.
        _, body = await app.readiness.check()
        sys.stderr.write(startup.summary(cfg, body, describe_store(cfg)))
        sys.stderr.flush()
    summary = _summary(cfg)
    sdnotify.ready(summary)  # every listener is up (a worker tells its parent; see sdnotify)
    pings = asyncio.ensure_future(sdnotify.keepalive(lambda: f"{len(app.limits.sessions)} sessions; {summary}"))
    await stop.wait()
    sdnotify.stopping(f"draining {len(app.limits.sessions)} sessions")
    await app.stop()
    pings.cancel()
    return 0


def _summary(cfg: Config) -> str:
    return (f"SMTP {cfg.server.listen} -> {cfg.downstream.host}:{cfg.downstream.port}, "
            f"links {cfg.links.listen}")


def _die_with_parent(parent: int) -> None:
    """Ask Linux to send this worker SIGTERM when the supervising process dies, however it
    dies (even SIGKILL): a worker must never outlive its supervisor and keep the port."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the supervisor's own SIGTERM forwarding still applies
    # The parent died before prctl took effect. Compared with the parent's own pid, not with 1:
    # an orphan goes to the nearest subreaper, and a supervisor that is pid 1 (a container's
    # entry point) would otherwise see every worker exit at start and respawn it forever.
    if os.getppid() != parent:
        os._exit(1)


# A (re)started worker's time to READY before the watchdog counts its silence: the storage
# check's budget plus ample room for a loaded machine (sdnotify.Workers).
WORKER_START_GRACE = START_CHECK_SECONDS + 50.0


def run(cfg: Config, log) -> int:
    """Serve in this process, or with server.workers > 1 in that many forked workers sharing
    the ports (SO_REUSEPORT: the kernel spreads connections). The parent creates the link
    secret (and a local store's directory) before forking, so every worker signs and verifies
    with the same one; it passes SIGTERM/SIGINT on, restarts a worker that died (not more
    than once a second), and exits 0 after all workers drained."""
    import time

    check_files(cfg)  # before any worker is forked: a broken key must not make them die in turn
    # Ports taken (a second instance) or addresses not ours: one line naming the key, at once,
    # not after the storage check or as workers dying in turn.
    startup.check_binds(startup.addresses_to_check(cfg))
    if cfg.server.workers <= 1:
        return asyncio.run(serve(cfg, log))
    prepare_spool(cfg)  # once, before any worker spools: a sweep must not race their files
    load_secrets(cfg.links, log)
    if cfg.storage.backend is Backend.LOCAL:
        # Made here, once, like the secret: an unusable path stops the start with one message
        # instead of every worker dying and being restarted (LocalStore also tolerates
        # processes creating the directory at the same moment).
        open_store(cfg)
    children: dict[int, int] = {}
    stopping = False
    # systemd hears from this process only: READY=1 once every worker is up, WATCHDOG=1 while
    # every worker's loop pings it (sdnotify.Workers; all no-ops without NOTIFY_SOCKET).
    notifier = sdnotify.Workers(cfg.server.workers, _summary(cfg), start_grace=WORKER_START_GRACE)

    def spawn(index: int) -> None:
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the worker: a full proxy of its own
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            _die_with_parent(parent)
            notifier.in_worker()
            code = 1
            try:
                code = asyncio.run(serve(cfg, log.bind(worker=index), reuse_port=True, worker=index))
            except Exception as exc:  # os._exit would end the worker without a word of why
                # A StartupError says it in words for people ("admin.listen 127.0.0.1:8027 (worker 1):
                # address already in use"); the traceback stays for the rest.
                reason = {"reason": str(exc)} if isinstance(exc, StartupError) else {}
                log.error("worker_failed", worker=index, exc_info=exc, **reason)
            finally:
                os._exit(code)
        children[pid] = index
        notifier.add(pid)

    def forward(signum, frame) -> None:
        nonlocal stopping
        stopping = stopping or signum in (signal.SIGTERM, signal.SIGINT)
        if stopping:
            notifier.stop()
        for pid in list(children):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    for i in range(cfg.server.workers):
        spawn(i)
    log.info("workers_started", workers=cfg.server.workers, pids=sorted(children))
    status = 0
    while children:
        try:
            pid, wstatus = notifier.wait()  # os.wait(), serving the workers' notifications meanwhile
        except ChildProcessError:
            break
        index = children.pop(pid, None)
        code = os.waitstatus_to_exitcode(wstatus)
        if index is None:
            continue
        if stopping:
            status = status or (code if code > 0 else 0)
            continue
        log.error("worker_died", worker=index, pid=pid, exit=code)
        time.sleep(1)
        if not stopping:  # SIGTERM came during the pause: a worker forked now would never get it
            spawn(index)
    return status
