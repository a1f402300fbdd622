"""The benchmark: receiver, baselines and proxy as separate processes on 127.0.0.1, the same
load against each, a table on stdout and the results as JSON.

    python -m bench                # full run (about 3 minutes)
    python -m bench --quick        # every scenario about 1 s, the large message/upload/burst a few MiB
    python -m bench --show FILE    # print the table of an earlier results file

See bench/README.md for what is measured and how.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from smtp_offload.config import dump_sections
from smtp_offload.units import human_size

from . import postfix as pf
from .procs import ROOT, Child, Children, CpuWatch, RssSampler, cpu_seconds, free_port, tree

PY = sys.executable
RESULTS = Path(__file__).resolve().parent / "results"
SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
AWS_ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true"}
MB = 1_000_000  # decimal: only to read the mb_per_s of old results files
MIB = 1024 * 1024  # every size the bench prints is in IEC units
# The proxy's API key in (f): any 24+ characters (links.api_keys); the upload's URL path.
API_KEY = "bench-api-key-0123456789abcdef"
UPLOAD_PATH = "/api/v1/upload/attachment"


class BenchTimeout(Exception):
    pass


def postfix_version() -> str | None:
    try:
        out = subprocess.run(["postconf", "-d", "-h", "mail_version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


# --- configuration -------------------------------------------------------------

def write_toml(path: Path, sections: dict[str, dict]) -> Path:
    path.write_text(dump_sections(sections))
    return path


def workers_supported() -> tuple[bool, str]:
    """Whether smtp_offload's config has `server.workers` (read at run time, in a subprocess)."""
    code = ("import dataclasses, smtp_offload.config as c; "
            "print('workers' in {f.name for f in dataclasses.fields(c.ServerConfig)})")
    try:
        out = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return False, "could not import smtp_offload.config (timeout)"
    if out.returncode != 0:
        return False, f"could not import smtp_offload.config: {out.stderr.strip().splitlines()[-1:]}"
    if out.stdout.strip() == "True":
        return True, ""
    return False, "smtp_offload/config.py has no server.workers key (ServerConfig); scenario skipped"


# --- candidates ------------------------------------------------------------------

class Candidate:
    """A running server under test: its process, its port and what to check afterwards.
    `http_port`: where it takes HTTP uploads (the proxy's link server, the aiohttp discard server).
    `postfix`: the private Postfix instance when the candidate is Postfix (then `child` is it too)."""

    def __init__(self, name: str, child: Child | pf.PostfixRelay, port: int, store: Path | None = None,
                 bucket: str | None = None, http_port: int | None = None, postfix: pf.PostfixRelay | None = None):
        self.name, self.child, self.port, self.store, self.bucket = name, child, port, store, bucket
        self.http_port = http_port
        self.postfix = postfix

    def log_errors(self) -> int:
        if self.child.log_path is None or not self.child.log_path.exists():
            return 0
        n = 0
        for line in self.child.log_path.read_text(errors="replace").splitlines():
            if re.search(r'"level":\s*"(error|critical|exception)"|^Traceback|\[error\s*\]'
                         r"|\]: (fatal|panic|error): ", line):  # the last: Postfix's maillog
                n += 1
        return n


class Bench:
    def __init__(self, opts: argparse.Namespace, tmp: Path):
        self.o = opts
        self.tmp = tmp
        (tmp / "logs").mkdir()
        self.children = Children(tmp / "logs")
        self.notes: list[str] = []
        self.receiver_port = 0
        self.receiver = ""
        self.s3_endpoint = ""
        self._n = 0
        self._lock = threading.Lock()
        # Postfix as a candidate: None when it can run here, else why not (also in the JSON).
        self.postfix_missing = pf.unavailable()
        self.sink_missing = None if os.access(SMTP_SINK, os.X_OK) else f"{SMTP_SINK} not found (Debian package postfix)"

    # receiver and S3 ------------------------------------------------------------
    def start_receiver(self) -> None:
        want = self.o.receiver
        if want in ("auto", "smtp-sink") and os.access(SMTP_SINK, os.X_OK):
            port = free_port()
            argv = [SMTP_SINK] + (["-u", "postfix"] if os.geteuid() == 0 else []) + [f"127.0.0.1:{port}", "1000"]
            try:
                self.children.start("receiver-smtp-sink", argv, port=port, timeout=10)
                self.receiver_port, self.receiver = port, "smtp-sink (Postfix)"
                return
            except RuntimeError as exc:
                if want == "smtp-sink":
                    raise
                self.notes.append(f"smtp-sink did not start, using the aiosmtpd sink: {exc}".splitlines()[0])
        elif want == "smtp-sink":
            raise RuntimeError(f"{SMTP_SINK} not found (Debian package postfix)")
        elif want == "auto":
            self.notes.append("smtp-sink not found (Debian package postfix): receiver is the aiosmtpd sink")
        port = free_port()
        self.children.start("receiver-aiosmtpd", [PY, "-m", "bench.servers", "sink", "--listen", f"127.0.0.1:{port}"],
                            port=port)
        self.receiver_port, self.receiver = port, "aiosmtpd sink (bench/servers.py)"

    def start_s3(self) -> None:
        if self.s3_endpoint:
            return
        port = free_port()
        self.children.start("moto-s3", [PY, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], port=port,
                            env=AWS_ENV, timeout=60)
        self.s3_endpoint = f"http://127.0.0.1:{port}"

    def s3(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.s3_endpoint, region_name="us-east-1",
                            aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"])

    # candidates ---------------------------------------------------------------------
    def start(self, name: str, *, log_level: str = "warning", backend: str = "local", workers: int | None = None,
              offload_over: int | None = None, api: bool = False) -> Candidate:
        with self._lock:  # start() runs in several threads at once (see start_all)
            self._n += 1
            n = self._n
        if name == "postfix":
            relay = pf.PostfixRelay(name, self.receiver_port)
            self.children.adopt(relay)  # stopped by kill_all whatever happens, even if start() fails
            relay.start()
            return Candidate(name, relay, relay.port, postfix=relay)
        port = free_port()
        if name == "smtp-sink":
            # A receiver of its own (not the shared one), so that its CPU is its alone.
            argv = [SMTP_SINK] + (["-u", "postfix"] if os.geteuid() == 0 else []) + [f"127.0.0.1:{port}", "1000"]
            return Candidate(name, self.children.start(name, argv, port=port, timeout=10), port)
        if name == "http-discard":
            child = self.children.start(name, [PY, "-m", "bench.servers", "http-discard", "--listen",
                                               f"127.0.0.1:{port}"], port=port)
            return Candidate(name, child, port, http_port=port)
        if name == "discard":
            child = self.children.start(name, [PY, "-m", "bench.servers", "discard", "--listen", f"127.0.0.1:{port}"],
                                        port=port)
            return Candidate(name, child, port)
        if name in ("passthrough", "passthrough-pooled"):
            child = self.children.start(name, [PY, "-m", "bench.servers", name, "--listen",
                                               f"127.0.0.1:{port}", "--downstream",
                                               f"127.0.0.1:{self.receiver_port}"], port=port)
            return Candidate(name, child, port)
        assert name == "proxy"
        d = self.tmp / f"proxy{n}"
        d.mkdir()
        links = free_port()
        # max_sessions_per_client off: every load-generator session comes from 127.0.0.1. Large
        # messages are spooled in the run's temp dir; the in-flight budget holds the whole burst (g).
        (d / "spool").mkdir()
        server = {"listen": f"127.0.0.1:{port}", "accepted_domains": ["example.com"], "hostname": "mx.bench",
                  "max_sessions_per_client": 0, "spool_dir": str(d / "spool"),
                  # a message is ~1.37x its base64 PDF: 2x covers the burst with room to spare
                  "max_inflight_bytes": max(1024 * MIB, 2 * self.o.burst * self.o.pdf_size)}
        if self.o.spool_over is not None:
            server["spool_over_bytes"] = self.o.spool_over
        if workers is not None:
            server["workers"] = workers
        sections = {
            "server": server,
            "downstream": {"host": "127.0.0.1", "port": self.receiver_port, "tls": "none"},
            "policy": {"offload_over_bytes": offload_over or self.o.offload_over},
            "storage": {"backend": backend},
            "storage.local": {"path": str(d / "store")},
            "links": {"listen": f"127.0.0.1:{links}", "base_url": f"http://127.0.0.1:{links}",
                      "secret_file": str(d / "link-secret")},
            "log": {"format": "json", "level": log_level},
        }
        if api:
            # A synchronous 200 for the whole body (not a 202 job): max_sync_bytes above its size.
            sections["links"]["api_keys"] = [API_KEY]
            (d / "api-spool").mkdir()
            sections["api"] = {"max_sync_bytes": 100 * 1024 * 1024, "max_bytes": 200 * 1024 * 1024,
                               "sync_deadline_seconds": 600, "spool_dir": str(d / "api-spool")}
        bucket = None
        env = {}
        if backend == "s3":
            bucket = f"bench-{n}"
            self.s3().create_bucket(Bucket=bucket)
            sections["storage.s3"] = {"bucket": bucket, "endpoint_url": self.s3_endpoint, "region": "us-east-1",
                                      "addressing_style": "path"}
            env = AWS_ENV
        config = write_toml(d / "smtp-offload.toml", sections)
        child = self.children.start(name, [PY, "-m", "smtp_offload", "serve", "--config", str(config)], cwd=d,
                                    env=env, port=port, extra_ports=(links,), timeout=60)
        deadline = time.monotonic() + 20
        while workers and workers > 1 and len(tree(child.pid)) < workers + 1 and time.monotonic() < deadline:
            time.sleep(0.05)  # every worker forked (each binds its own SO_REUSEPORT socket)
        if workers and workers > 1:
            time.sleep(0.5)
        return Candidate(name, child, port, store=d / "store", bucket=bucket, http_port=links)

    def start_all(self, specs: dict[str, dict]) -> dict[str, Candidate]:
        """Start every candidate of `specs` at once (each waits for its own ports): the start-ups
        overlap instead of adding up. If one fails, the others are stopped and the error raised."""
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(specs) or 1) as pool:
            futures = {lbl: pool.submit(self.start, **kw) for lbl, kw in specs.items()}
        started, error = {}, None
        for lbl, fut in futures.items():
            try:
                started[lbl] = fut.result()
            except Exception as exc:  # noqa: BLE001 - re-raised below, after the others are stopped
                error = error or exc
        if error is not None:
            for cand in started.values():
                self.stop(cand)
            raise error
        return started

    def stop(self, cand: Candidate) -> None:
        self.children.stop(cand.child)

    # load -------------------------------------------------------------------------
    def load(self, port: int, *extra: str, timeout: float) -> dict:
        argv = [PY, "-m", "bench.load", "--port", str(port), *extra]
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                                 env={**os.environ, "PYTHONPATH": str(ROOT)})
        except subprocess.TimeoutExpired:
            return {"error": f"load generator timed out after {timeout:.0f} s", "throughput": 0.0, "unexpected": 1}
        if out.returncode != 0:
            return {"error": f"load generator exited {out.returncode}: {out.stderr.strip()[-500:]}",
                    "throughput": 0.0, "unexpected": 1}
        return json.loads(out.stdout.strip().splitlines()[-1])

    def upload(self, cand: Candidate, pdf_size: int, timeout: float) -> dict:
        """One HTTP POST of a `pdf_size`-byte PDF to the candidate's HTTP port (bench.load --kind upload)."""
        assert cand.http_port is not None, cand.name
        return self.load(cand.http_port, "--kind", "upload", "--once", "--pdf-size", str(pdf_size),
                         "--path", UPLOAD_PATH, "--api-key", API_KEY, "--filename", "big.pdf",
                         "--timeout", "300", timeout=timeout)

    def smtp_source(self, port: int, duration: float, warmup: float) -> dict:
        """Postfix's smtp-source against `port` for warm-up + duration; its running counter gives the rate."""
        o = self.o
        argv = [SMTP_SOURCE, "-c", "-d", "-s", str(o.sessions), "-m", "100000000", "-l", "2048",
                "-f", "customer@sender.test", "-t", "support@example.com", f"127.0.0.1:{port}"]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        points: list[tuple[float, int]] = []

        def reader():
            buf = b""
            while chunk := proc.stdout.read1(65536):
                buf += chunk
                nums = buf.replace(b"\n", b"\r").split(b"\r")
                buf = nums.pop()
                if nums and nums[-1].strip().isdigit():
                    points.append((time.perf_counter(), int(nums[-1])))

        t = threading.Thread(target=reader, daemon=True)
        start = time.perf_counter()
        t.start()
        t_measure, t_stop = start + warmup, start + warmup + duration
        try:
            time.sleep(max(0.0, t_stop - time.perf_counter()))
        finally:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        t.join(2)
        err = proc.stderr.read().decode(errors="replace")
        window = [p for p in points if t_measure <= p[0] <= t_stop]
        if len(window) >= 2:
            (ta, ca), (tb, cb) = window[0], window[-1]
            rate, count, elapsed = (cb - ca) / (tb - ta) if tb > ta else 0.0, cb - ca, tb - ta
        else:
            rate, count, elapsed, ca = 0.0, 0, 0.0, 0
        bad = [line for line in err.splitlines() if re.search(r"fatal|error|warning", line)]
        return {"mode": "throughput", "client": "smtp-source", "kind": "small", "sessions": o.sessions,
                "elapsed_s": elapsed, "messages_ok": count, "warmup_ok": ca, "throughput": rate,
                "message_bytes": [2048], "latencies_ms": [], "replies": {},
                "errors": {"stderr": bad[:5]} if bad else {}, "unexpected": len(bad)}

    # scenarios ----------------------------------------------------------------------
    def throughput(self, specs: dict[str, dict], kind: str) -> dict[str, dict]:
        """Every candidate of `specs` ({label: start keywords}) running at once, measured in turn:
        `rounds` slices of duration/rounds each, in alternating order, so that a change in the
        machine's background load hits all candidates alike. Returns {label: result}."""
        o = self.o
        cands: dict[str, Candidate] = {}
        samplers: dict[str, RssSampler] = {}
        cpu0: dict[str, float] = {}
        slices: dict[str, list[dict]] = {k: [] for k in specs}
        try:
            cands.update(self.start_all(specs))
            time.sleep(0.5)
            for lbl, cand in cands.items():
                cpu0[lbl] = cpu_seconds(cand.child.pid)
                samplers[lbl] = RssSampler(cand.child.pid).__enter__()
            per = o.duration / o.rounds
            for r in range(o.rounds):
                order = list(cands) if r % 2 == 0 else list(reversed(cands))
                for lbl in order:
                    warm = o.warmup if r == 0 else min(o.warmup, 0.2)
                    cand = cands[lbl]
                    c0 = cpu_seconds(cand.child.pid)
                    with CpuWatch(self.children) as machine:
                        if o.client == "smtp-source" and kind == "small":
                            res = self.smtp_source(cand.port, per, warm)
                        else:
                            res = self.load(cand.port, "--kind", kind, "--sessions", str(o.sessions),
                                            "--duration", str(per), "--warmup", str(warm), "--raw",
                                            timeout=per + warm + 180)
                        if cand.postfix:
                            # Postfix answers 250 once a message is queued and relays it after: its
                            # slice ends when the queue is empty, so that its relaying is in its own
                            # CPU figure and does not run during the next candidate's slice.
                            t = time.perf_counter()
                            if not cand.postfix.drain(60):
                                res["unexpected"] = res.get("unexpected", 0) + 1
                                res["error"] = f"Postfix queue not empty 60 s after the load: {cand.postfix.queued()}"
                            res["drain_s"] = time.perf_counter() - t
                    res["other_cpu_pct"] = machine.other_pct
                    n = res.get("messages_ok", 0) + res.get("warmup_ok", 0)
                    res["server_cpu_s"] = cpu_seconds(cand.child.pid) - c0
                    res["server_cpu_ms_per_msg"] = res["server_cpu_s"] / n * 1000 if n else None
                    slices[lbl].append(res)
            out = {}
            for lbl, cand in cands.items():
                samplers[lbl].__exit__(None, None, None)
                res = merge_slices(slices[lbl])
                # CPU per message: over its own slices (warm-up messages included), not while it
                # sat idle during the other candidates' slices (timers, Postfix's qmgr wake-ups);
                # the whole scenario's figure is kept as server_cpu_s_total.
                res["server_cpu_s_total"] = cpu_seconds(cand.child.pid) - cpu0[lbl]
                res["rss"] = samplers[lbl].result()
                cpu = sum(x.get("server_cpu_s", 0.0) for x in slices[lbl])
                res["server_cpu_s"] = cpu
                total = res["messages_ok"] + res["warmup_ok"]
                res["server_cpu_ms_per_msg"] = cpu / total * 1000 if total else None
                res["log_errors"] = cand.log_errors()
                if cand.postfix:
                    # smtp-source counts no replies: then only "none deferred, none left queued"
                    accepted = (None if res.get("client") == "smtp-source"
                                else res["replies"].get("END", {}).get("250", 0))
                    self.check_relayed(cand.postfix, res, accepted)
                if not cand.child.alive():
                    res["unexpected"] += 1
                    res["error"] = f"{lbl} died: {cand.child.log_tail(500)}"
                out[lbl] = res
                print(f"  {lbl:<22} {res['throughput']:9.1f} msg/s  (rounds: "
                      + " ".join(f"{x['throughput']:.0f}" for x in res["rounds"])
                      + f")  unexpected={res['unexpected']}"
                      + (f"  ERROR {res['error'][:200]}" if res.get("error") else ""), flush=True)
            return out
        finally:
            for sampler in samplers.values():
                sampler.__exit__(None, None, None)
            for cand in cands.values():
                self.stop(cand)

    def once(self, specs: dict[str, dict], client: str = "smtp") -> dict[str, dict]:
        """The large message (client "smtp") or the large HTTP upload (client "http"): `large_runs`
        rounds; in each, every candidate of `specs` in turn on a fresh process (one small warm-up
        message or upload first). Returns {label: result}."""
        o = self.o
        runs: dict[str, list[dict]] = {k: [] for k in specs}
        for i in range(o.large_runs):
            order = list(specs) if i % 2 == 0 else list(reversed(specs))
            for lbl in order:
                res = self.once_run(lbl, specs[lbl], client)
                runs[lbl].append(res)
                t = res.get("time_s")
                print(f"  {lbl:<22} run {i + 1}: " + (f"{t:7.3f} s" if t is not None else "failed")
                      + f"  RSS+ {res.get('rss', {}).get('peak_above_idle_bytes', 0) / MIB:7.1f} MiB"
                      + f"  unexpected={res.get('unexpected')}"
                      + (f"  ERROR {res['error'][:200]}" if res.get("error") else ""), flush=True)
        return {lbl: merge_runs(r, proxy=specs[lbl]["name"] == "proxy") for lbl, r in runs.items()}

    def once_run(self, lbl: str, kw: dict, client: str = "smtp") -> dict:
        o = self.o
        http = client == "http"
        cand = self.start(**kw)
        try:
            if http:
                warm = self.upload(cand, 4096, timeout=60)
            else:
                warm = self.load(cand.port, "--kind", "small", "--once", timeout=60)
            time.sleep(0.3)
            before = self.stored(cand)
            cpu0 = cpu_seconds(cand.child.pid)
            with CpuWatch(self.children) as machine, RssSampler(cand.child.pid) as rss:
                if http:
                    res = self.upload(cand, o.pdf_size, timeout=400)
                else:
                    res = self.load(cand.port, "--kind", "large", "--once", "--pdf-size", str(o.pdf_size),
                                    "--timeout", "300", timeout=400)
            res["server_cpu_s"] = cpu_seconds(cand.child.pid) - cpu0
            res["rss"] = rss.result()
            res["other_cpu_pct"] = machine.other_pct
            res["warmup_unexpected"] = warm.get("unexpected", 1)
            res["unexpected"] = res.get("unexpected", 0) + res["warmup_unexpected"]
            if kw["name"] == "proxy":
                res["offloaded"] = self.stored(cand) > before
                res["log_errors"] = cand.log_errors()
            if http:
                self.check_upload(kw["name"], res)
            if not cand.child.alive():
                res["unexpected"] += 1
                res["error"] = f"{lbl} died: {cand.child.log_tail(500)}"
            return res
        finally:
            self.stop(cand)
            if cand.bucket:
                self.empty_bucket(cand.bucket)

    def burst(self, specs: dict[str, dict]) -> dict[str, dict]:
        """(g): `burst` large messages at once, on as many connections, into each candidate of
        `specs` on a fresh process; `burst_runs` rounds in alternating order. {label: result}."""
        o = self.o
        runs: dict[str, list[dict]] = {k: [] for k in specs}
        for i in range(o.burst_runs):
            order = list(specs) if i % 2 == 0 else list(reversed(specs))
            for lbl in order:
                res = self.burst_run(lbl, specs[lbl])
                runs[lbl].append(res)
                t = res.get("time_s")
                print(f"  {lbl:<22} run {i + 1}: " + (f"{t:7.3f} s" if t is not None else "failed")
                      + (f" (queue empty at {res['drained_s']:.3f} s)" if res.get("drained_s") else "")
                      + f"  RSS+ {res.get('rss', {}).get('peak_above_idle_bytes', 0) / MIB:7.1f} MiB"
                      + f"  unexpected={res.get('unexpected')}"
                      + (f"  ERROR {res['error'][:200]}" if res.get("error") else ""), flush=True)
        return {lbl: merge_burst(r) for lbl, r in runs.items()}

    def burst_run(self, lbl: str, kw: dict) -> dict:
        o = self.o
        cand = self.start(**kw)
        try:
            warm = self.load(cand.port, "--kind", "small", "--once", timeout=60)
            if cand.postfix:
                cand.postfix.drain(30)
            time.sleep(0.3)
            before = self.stored(cand)
            cpu0 = cpu_seconds(cand.child.pid)
            with CpuWatch(self.children) as machine, RssSampler(cand.child.pid) as rss:
                res = self.load(cand.port, "--kind", "large", "--burst", str(o.burst), "--pdf-size", str(o.pdf_size),
                                "--timeout", "300", timeout=400)
                if cand.postfix:
                    # Postfix has queued the burst; it is done when it has relayed it (info only).
                    if cand.postfix.drain(300) and res.get("t0_perf") is not None:
                        res["drained_s"] = time.perf_counter() - res["t0_perf"]
            res["server_cpu_s"] = cpu_seconds(cand.child.pid) - cpu0
            res["rss"] = rss.result()
            res["other_cpu_pct"] = machine.other_pct
            res["warmup_unexpected"] = warm.get("unexpected", 1)
            res["unexpected"] = res.get("unexpected", 0) + res["warmup_unexpected"]
            if kw["name"] == "proxy":
                res["stored"] = self.stored(cand) - before
                res["offloaded"] = res["stored"] == o.burst
                res["log_errors"] = cand.log_errors()
                if not res["offloaded"]:
                    res["unexpected"] += 1
                    res["error"] = f"{res['stored']} files of the burst's {o.burst} landed in the store"
            if cand.postfix:
                self.check_relayed(cand.postfix, res, int(res.get("replies", {}).get("END", {}).get("250", 0))
                                   + (1 if warm.get("messages_ok") else 0))
            if not cand.child.alive():
                res["unexpected"] += 1
                res["error"] = f"{lbl} died: {cand.child.log_tail(500)}"
            return res
        finally:
            self.stop(cand)

    @staticmethod
    def check_relayed(relay: pf.PostfixRelay, res: dict, accepted: int | None) -> None:
        """Postfix: every message it answered 250 (`accepted`, None: not counted) was relayed to
        the receiver (its log says status=sent once per message), none is deferred or left in
        the queue."""
        deadline = time.monotonic() + 5  # postlogd writes the last lines a moment after the queue empties
        while (got := relay.deliveries()).get("sent", 0) < (accepted or 0) and time.monotonic() < deadline:
            time.sleep(0.05)
        res["postfix"] = {"accepted": accepted, "deliveries": got, "queued": relay.queued()}
        bad = (abs(got.get("sent", 0) - accepted) if accepted is not None else 0) + relay.queued() \
            + sum(v for k, v in got.items() if k != "sent")
        if bad:
            res["unexpected"] = res.get("unexpected", 0) + bad
            res["error"] = (f"Postfix accepted {accepted} messages, relayed {got}, {relay.queued()} queued: "
                            + relay.log_tail(400))

    @staticmethod
    def check_upload(name: str, res: dict) -> None:
        """(f): the answer must say what the server did with the whole body, else "unexpected"."""
        if res.get("status") != 200:
            return  # already counted by the client
        size = res.get("message_bytes", [0])[0]
        answer = res.get("response") or {}
        problems = []
        if name == "proxy":
            if answer.get("verdict") != "accepted":
                problems.append(f"verdict {answer.get('verdict')!r}, not 'accepted'")
            if answer.get("fileSize") != size:
                problems.append(f"fileSize {answer.get('fileSize')!r}, sent {size}")
            if not res.get("offloaded"):
                problems.append("no file of that size in the store")
        elif answer.get("bytes") != size:
            problems.append(f"read {answer.get('bytes')!r} bytes, sent {size}")
        if problems:
            res["unexpected"] = res.get("unexpected", 0) + len(problems)
            res["error"] = "; ".join(problems)

    def stored(self, cand: Candidate) -> int:
        """How many stored objects at least half the PDF's size (proof that the file was offloaded)."""
        big = self.o.pdf_size // 2
        if cand.bucket:
            resp = self.s3().list_objects_v2(Bucket=cand.bucket)
            return sum(1 for obj in resp.get("Contents", []) if obj["Size"] >= big)
        if cand.store and cand.store.exists():
            return sum(1 for p in cand.store.rglob("*") if p.is_file() and p.stat().st_size >= big)
        return 0

    def empty_bucket(self, bucket: str) -> None:
        try:
            s3 = self.s3()
            for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
                s3.delete_object(Bucket=bucket, Key=obj["Key"])
        except Exception as exc:  # housekeeping only
            self.notes.append(f"could not empty bucket {bucket}: {exc}")


def merge_slices(slices: list[dict]) -> dict:
    """One result from the slices (rounds) of one candidate: totals, pooled latencies."""
    from .load import percentiles

    ok = sum(x.get("messages_ok", 0) for x in slices)
    elapsed = sum(x.get("elapsed_s", 0.0) for x in slices)
    lat = [v / 1000 for x in slices for v in x.get("latencies_ms", [])]
    replies: dict[str, dict[str, int]] = {}
    errors: dict[str, int] = {}
    for x in slices:
        for step, codes in (x.get("replies") or {}).items():
            for code, n in codes.items():
                replies.setdefault(step, {})[code] = replies.get(step, {}).get(code, 0) + n
        for k, v in (x.get("errors") or {}).items():
            errors[k] = errors.get(k, 0) + v if isinstance(v, int) else v
        if x.get("error"):
            errors[x["error"][:200]] = errors.get(x["error"][:200], 0) + 1
    first = slices[0] if slices else {}
    return {
        "mode": "throughput", "kind": first.get("kind"), "client": first.get("client", "bench.load"),
        "sessions": first.get("sessions"), "message_bytes": first.get("message_bytes"),
        "elapsed_s": elapsed, "messages_ok": ok, "throughput": ok / elapsed if elapsed > 0 else 0.0,
        "warmup_ok": sum(x.get("warmup_ok", 0) for x in slices),
        "messages_failed": sum(x.get("messages_failed", 0) for x in slices),
        "latency_ms": percentiles(lat) if lat else {"p50": None, "p90": None, "p99": None, "mean": None,
                                                   "max": None},
        "replies": replies, "errors": errors, "unexpected": sum(x.get("unexpected", 0) for x in slices),
        "client_cpu_s": sum(x.get("client_cpu_s", 0.0) for x in slices),
        "other_cpu_pct": (sum(x.get("other_cpu_pct", 0.0) * x.get("elapsed_s", 0.0) for x in slices) / elapsed
                          if elapsed > 0 else 0.0),
        "other_cpu_pct_max": max((x.get("other_cpu_pct", 0.0) for x in slices), default=0.0),
        "rounds": [{"throughput": x.get("throughput", 0.0), "elapsed_s": x.get("elapsed_s", 0.0),
                    "messages_ok": x.get("messages_ok", 0), "other_cpu_pct": x.get("other_cpu_pct"),
                    "p50_ms": (x.get("latency_ms") or {}).get("p50"),
                    "cpu_ms_per_msg": x.get("server_cpu_ms_per_msg"),
                    **({"drain_s": x["drain_s"]} if "drain_s" in x else {})} for x in slices],
    }


def merge_runs(runs: list[dict], proxy: bool) -> dict:
    """One result from the runs of the large message: median time, worst memory."""
    times = [r["time_s"] for r in runs if r.get("time_s") is not None]
    size = runs[0].get("message_bytes", [0])[0] if runs else 0
    peak = max((r.get("rss", {}).get("peak_above_idle_bytes", 0) for r in runs), default=0)
    med = statistics.median(times) if times and len(times) == len(runs) else None
    out = {
        "runs": runs, "time_s": med, "times_s": times, "message_bytes": size,
        "throughput": (1 / med) if med else 0.0, "mb_per_s": size / med / MB if med else 0.0,
        "mib_per_s": size / med / MIB if med else 0.0,
        "upload_s": _median([r.get("upload_s") for r in runs]),
        "server_cpu_s": _median([r.get("server_cpu_s") for r in runs]),
        "after_upload_s": _median([r.get("after_upload_s") for r in runs]),
        "peak_above_idle_bytes": peak, "idle_bytes": _median([r.get("rss", {}).get("idle_bytes") for r in runs]),
        "pss_peak_above_idle_bytes": max((r["rss"]["pss_peak_above_idle_bytes"] for r in runs
                                          if "pss_peak_above_idle_bytes" in r.get("rss", {})), default=None),
        "rss_over_size": peak / size if size else None,
        "unexpected": sum(r.get("unexpected", 0) for r in runs),
        "other_cpu_pct": max((r.get("other_cpu_pct", 0.0) for r in runs), default=0.0),
        "messages_ok": sum(r.get("messages_ok", 0) for r in runs),
    }
    if proxy:
        out["offloaded"] = bool(runs) and all(r.get("offloaded") for r in runs)
        out["log_errors"] = sum(r.get("log_errors", 0) for r in runs)
    return out


def merge_burst(runs: list[dict]) -> dict:
    """One result from the runs of the burst: median time, worst memory (over ONE message's size)."""
    out = merge_runs(runs, proxy=False)
    out["sessions"] = runs[0].get("sessions") if runs else None
    out["drained_s"] = _median([r.get("drained_s") for r in runs])
    n = out["sessions"] or 0
    out["throughput"] = n / out["time_s"] if out["time_s"] else 0.0
    out["mb_per_s"] = n * out["message_bytes"] / out["time_s"] / MB if out["time_s"] else 0.0
    out["mib_per_s"] = n * out["message_bytes"] / out["time_s"] / MIB if out["time_s"] else 0.0
    if any("stored" in r for r in runs):
        out["stored"] = [r.get("stored") for r in runs]
        out["offloaded"] = all(r.get("offloaded") for r in runs)
        out["log_errors"] = sum(r.get("log_errors", 0) for r in runs)
    if any("postfix" in r for r in runs):
        out["postfix"] = [r.get("postfix") for r in runs]
    return out


def _median(values: list) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


# --- the run ---------------------------------------------------------------------------

def run(opts: argparse.Namespace) -> dict:
    started = dt.datetime.now().astimezone()
    t_start = time.monotonic()
    scen = set(opts.scenarios)
    results: dict = {"meta": {}, "scenarios": {}, "checks": []}
    tmp = Path(tempfile.mkdtemp(prefix="smtp-offload-bench-"))
    bench = Bench(opts, tmp)
    try:
        bench.start_receiver()
        print(f"receiver: {bench.receiver} on 127.0.0.1:{bench.receiver_port}; "
              f"{os.cpu_count()} CPUs; quick={opts.quick}", flush=True)
        S = results["scenarios"]
        small_title = f"small {human_size(2048)} text, {opts.sessions} sessions, {opts.duration:g} s"

        rounds = f", {opts.rounds} interleaved rounds" if opts.rounds > 1 else ""
        if bench.postfix_missing:
            bench.notes.append(f"postfix candidate skipped: {bench.postfix_missing}")
        if bench.sink_missing:
            bench.notes.append(f"smtp-sink candidate skipped: {bench.sink_missing}")

        def skipped(*names: str) -> dict[str, str]:
            why = {"postfix": bench.postfix_missing, "smtp-sink": bench.sink_missing}
            return {n: why[n] for n in names if why.get(n)}

        def a():
            print(f"(a) {small_title}{rounds}", flush=True)
            specs = {"discard": {"name": "discard"}, "smtp-sink": {"name": "smtp-sink"},
                     "passthrough": {"name": "passthrough"}, "passthrough-pooled": {"name": "passthrough-pooled"},
                     "postfix": {"name": "postfix"}, "proxy": {"name": "proxy"}}
            if opts.info_log:
                specs["proxy (log=info)"] = {"name": "proxy", "log_level": "info"}
            skip = skipped("smtp-sink", "postfix")
            S["a"] = {"title": small_title + rounds, "mode": "throughput", "skipped_candidates": skip}
            specs = {k: v for k, v in specs.items() if k not in skip}
            S["a"]["candidates"] = bench.throughput(specs, "small")

        def b():
            title = (f"mix: {human_size(2048)} text and small kept PNG/PDF attachments, {opts.sessions} sessions, "
                     f"{opts.duration:g} s{rounds}")
            print(f"(b) {title}", flush=True)
            specs = {"discard": {"name": "discard"}, "passthrough-pooled": {"name": "passthrough-pooled"},
                     "proxy": {"name": "proxy"}}
            S["b"] = {"title": title, "mode": "throughput", "candidates": bench.throughput(specs, "mix")}

        big = f"{human_size(opts.pdf_size)} PDF"
        c_title = (f"one large message ({big}, base64), offload to the local store; median of {opts.large_runs} "
                   "(runs interleaved)")
        d_title = f"(c) with S3 on loopback (moto server); median of {opts.large_runs}"
        s3 = {"name": "proxy", "backend": "s3"}

        def c():
            print(f"(c) {c_title}" + (" -- with (d) in the same rounds" if "d" in scen else ""), flush=True)
            specs = {"discard": {"name": "discard"}, "passthrough": {"name": "passthrough"}, "proxy": {"name": "proxy"}}
            if "d" in scen:
                try:
                    bench.start_s3()
                    specs["proxy (S3)"] = s3
                except Exception as exc:
                    bench.notes.append(f"moto S3 server did not start: {exc}".splitlines()[0])
            res = bench.once(specs)
            s3res = res.pop("proxy (S3)", None)
            S["c"] = {"title": c_title, "mode": "once", "candidates": res}
            if s3res is not None:
                S["d"] = {"title": d_title, "mode": "once", "candidates": {"proxy (S3)": s3res}}

        def d():
            if "d" in S:
                return
            print(f"(d) {d_title}", flush=True)
            bench.start_s3()
            specs = {"proxy (S3)": s3}
            if "c" not in scen:
                specs["passthrough"] = {"name": "passthrough"}
            S["d"] = {"title": d_title, "mode": "once", "candidates": bench.once(specs)}

        f_title = (f"one {big} upload, POST {UPLOAD_PATH} on the link server (sync 200, local store) vs a bare "
                   f"aiohttp handler that discards the body; median of {opts.large_runs} (runs interleaved)")

        def f():
            print(f"(f) {f_title}", flush=True)
            specs = {"aiohttp discard": {"name": "http-discard"}, "proxy (API)": {"name": "proxy", "api": True}}
            S["f"] = {"title": f_title, "mode": "once", "client": "http", "candidates": bench.once(specs, "http")}

        def e():
            ok, why = workers_supported()
            if not ok:
                print(f"(e) skipped: {why}", flush=True)
                S["e"] = {"title": "(a) with server.workers = 1 vs 2", "skipped": True, "reason": why}
                return
            print(f"(e) {small_title}{rounds}: workers 1 vs 2", flush=True)
            specs = {"proxy (workers=1)": {"name": "proxy", "workers": 1},
                     "proxy (workers=2)": {"name": "proxy", "workers": 2}}
            S["e"] = {"title": f"{small_title}{rounds}: server.workers 1 vs 2", "mode": "throughput",
                      "candidates": bench.throughput(specs, "small")}

        g_title = (f"burst: {opts.burst} messages like (c) at once, each on its own connection, started together; "
                   f"local store; median of {opts.burst_runs}")

        def g():
            print(f"(g) {g_title}", flush=True)
            specs = {"discard": {"name": "discard"}, "postfix": {"name": "postfix"}, "proxy": {"name": "proxy"}}
            skip = skipped("postfix")
            S["g"] = {"title": g_title, "mode": "burst", "skipped_candidates": skip}
            S["g"]["candidates"] = bench.burst({k: v for k, v in specs.items() if k not in skip})

        for key, fn in (("a", a), ("b", b), ("c", c), ("d", d), ("e", e), ("f", f), ("g", g)):
            if key not in scen:
                continue
            t_scenario = time.monotonic()
            try:
                fn()
            except Exception as exc:  # one broken scenario must not hide the others
                print(f"({key}) FAILED: {type(exc).__name__}: {exc}", flush=True)
                S[key] = {"title": S.get(key, {}).get("title", ""), "error": f"{type(exc).__name__}: {exc}",
                          "candidates": {}}
            if key in S:
                S[key]["seconds"] = round(time.monotonic() - t_scenario, 1)
    finally:
        bench.children.kill_all()
        results["meta"] = {
            "started": started.isoformat(timespec="seconds"),
            "seconds": round(time.monotonic() - t_start, 1),
            "quick": opts.quick,
            "receiver": bench.receiver,
            "client": ("smtp-source (scenario a, e)" if opts.client == "smtp-source" else "bench.load (asyncio)")
                      + ("; (f) http.client" if "f" in scen else ""),
            "host": {"cpus": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release(),
                     "machine": platform.machine()},
            "options": {k: v for k, v in vars(opts).items() if k not in ("show",)},
            "notes": bench.notes,
            "postfix": {"candidate": not bench.postfix_missing, "reason": bench.postfix_missing,
                        "version": postfix_version()},
        }
        if opts.keep_tmp:
            print(f"logs and configs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    results["checks"] = checks(results["scenarios"])
    return results


# --- checks and table -------------------------------------------------------------------

def _ratio(a, b):
    return a / b if a and b else None


def checks(S: dict) -> list[dict]:
    """The ratios the issue targets (PASS/FAIL) and a few more (info). `per_round` holds the
    same ratio round by round (run by run for the large message and the burst): its spread
    shows the noise. A ratio against a candidate that was skipped (Postfix not here) is SKIP."""
    out = []

    def cand(s, c):
        return S.get(s, {}).get("candidates", {}).get(c, {})

    def add(name, value, target=None, op=None, per_round=None, scenario=None, peer=None):
        if value is None and peer and peer in S.get(scenario, {}).get("skipped_candidates", {}):
            result = "SKIP"
        elif value is None:
            result = "n/a"
        elif target is None:
            result = "info"
        else:
            result = "PASS" if (value >= target if op == ">=" else value <= target) else "FAIL"
        out.append({"name": name, "value": value, "target": f"{op} {target}" if target is not None else "",
                    "result": result, "per_round": per_round or []})

    def rounds_of(s, a, b, key):
        return [r for r in (_ratio(p.get(key), q.get(key)) for p, q in
                            zip(cand(s, a).get("rounds", []), cand(s, b).get("rounds", []))) if r is not None]

    def tp(s, a, b, *target):
        x, y = cand(s, a), cand(s, b)
        add(f"({s}) {a} / {b} throughput", _ratio(x.get("throughput"), y.get("throughput")), *target,
            per_round=rounds_of(s, a, b, "throughput"), scenario=s, peer=b)

    def cpu(s, a, b, *target):
        x, y = cand(s, a), cand(s, b)
        add(f"({s}) {a} / {b} CPU ms per message",
            _ratio(x.get("server_cpu_ms_per_msg"), y.get("server_cpu_ms_per_msg")), *target,
            per_round=rounds_of(s, a, b, "cpu_ms_per_msg"), scenario=s, peer=b)

    def tm(s, a, sb, b, *target):
        x, y = cand(s, a), cand(sb, b)
        rounds = [_ratio(p, q) for p, q in zip(x.get("times_s", []), y.get("times_s", []))]
        add(f"({s}) {a} time / {b} time", _ratio(x.get("time_s"), y.get("time_s")), *target,
            per_round=[r for r in rounds if r is not None], scenario=sb, peer=b)

    def rss(s, a, what, *target):
        x = cand(s, a)
        size = x.get("message_bytes")
        add(f"({s}) {a} peak RSS above idle / {what}", x.get("rss_over_size"), *target,
            per_round=[r.get("rss", {}).get("peak_above_idle_bytes", 0) / size for r in x.get("runs", []) if size],
            scenario=s, peer=a)

    if "a" in S:
        tp("a", "proxy", "discard", 0.8, ">=")
        cpu("a", "proxy", "discard", 1.3, "<=")
        tp("a", "proxy", "passthrough-pooled", 1.0, ">=")
        tp("a", "proxy", "postfix")
        cpu("a", "proxy", "postfix")
        tp("a", "proxy", "passthrough")
        cpu("a", "proxy", "smtp-sink")
        if "proxy (log=info)" in S["a"].get("candidates", {}):
            tp("a", "proxy (log=info)", "proxy")
            cpu("a", "proxy (log=info)", "proxy")
    if "b" in S:
        tp("b", "proxy", "passthrough-pooled")
        tp("b", "proxy", "discard")
        cpu("b", "proxy", "discard")
    if "c" in S:
        tm("c", "proxy", "c", "discard", 0.5, "<=")
        rss("c", "proxy", "message size", 0.5, "<=")
        tm("c", "proxy", "c", "passthrough")
    if "d" in S:
        tm("d", "proxy (S3)", "d" if cand("d", "passthrough") else "c", "passthrough")
        rss("d", "proxy (S3)", "message size")
    if "e" in S:
        if S["e"].get("skipped"):
            out.append({"name": "(e) proxy (workers=2) / proxy (workers=1) throughput", "value": None,
                        "target": "", "result": "SKIP", "per_round": []})
        else:
            tp("e", "proxy (workers=2)", "proxy (workers=1)")
            cpu("e", "proxy (workers=2)", "proxy (workers=1)")
    if "f" in S:
        api, peer = cand("f", "proxy (API)"), cand("f", "aiohttp discard")
        runs = api.get("runs", [])
        size = api.get("message_bytes")
        add("(f) api upload time / aiohttp discard time", _ratio(api.get("time_s"), peer.get("time_s")),
            per_round=[r for r in (_ratio(p, q) for p, q in zip(api.get("times_s", []), peer.get("times_s", [])))
                       if r is not None])
        add("(f) api upload peak RSS above idle / body size", api.get("rss_over_size"),
            per_round=[r.get("rss", {}).get("peak_above_idle_bytes", 0) / size for r in runs if size])
    if "g" in S:
        rss("g", "proxy", "one message's size", 1.5, "<=")
        # The target compares the same event: the proxy's last 250 comes once the downstream has
        # taken the message; Postfix's 250 once the message is in its queue, and the
        # downstream has it when the queue is empty. Its reply time is shown too (info).
        pfx, prx = cand("g", "postfix"), cand("g", "proxy")
        drained = [r.get("drained_s") for r in pfx.get("runs", [])]
        add("(g) proxy time / postfix time to an empty queue", _ratio(prx.get("time_s"), pfx.get("drained_s")),
            1.0, "<=",
            per_round=[r for r in (_ratio(p, q) for p, q in zip(prx.get("times_s", []), drained)) if r is not None],
            scenario="g", peer="postfix")
        tm("g", "proxy", "g", "postfix")
        tm("g", "proxy", "g", "discard")
        rss("g", "postfix", "one message's size")
    return out


def _f(v, fmt: str, dash: str = "-") -> str:
    return dash if v is None else format(v, fmt)


# How a candidate is named in the table where its JSON key is kept for older results.
DISPLAY = {"passthrough": "passthrough (new conn)"}


def _mib(v) -> float | None:
    return None if v is None else v / MIB


def _mib_per_s(r: dict) -> float | None:
    if r.get("mib_per_s") is not None:
        return r["mib_per_s"]
    return r["mb_per_s"] * MB / MIB if r.get("mb_per_s") is not None else None  # an older results file


def render(results: dict) -> str:
    m = results.get("meta", {})
    h = m.get("host", {})
    pfx = m.get("postfix") or {}
    lines = [f"smtp-offload bench  {m.get('started', '')}  ({m.get('seconds', '?')} s"
             f"{', QUICK' if m.get('quick') else ''})",
             f"receiver: {m.get('receiver')}   client: {m.get('client')}   host: {h.get('cpus')} CPUs, "
             f"Python {h.get('python')}, Linux {h.get('kernel')}"
             + (f", Postfix {pfx.get('version')}" if pfx.get("version") else ""), ""]
    w = 26
    for key, s in sorted(results.get("scenarios", {}).items()):
        lines.append(f"({key}) {s.get('title', '')}")
        if s.get("skipped"):
            lines += [f"    skipped: {s.get('reason')}", ""]
            continue
        if s.get("error"):
            lines += [f"    FAILED: {s['error'][:300]}", ""]
            continue
        cands = s["candidates"]
        if s.get("mode") == "throughput":
            lines.append(f"    {'candidate':<{w}}{'CPU ms/msg':>11}{'msgs/s':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}"
                         f"{'RSS+ MiB':>9}{'PSS+ MiB':>9}{'idle MiB':>9}{'ok':>8}{'unexp':>7}{'other%':>8}")
            for name, r in cands.items():
                lat, rss = r.get("latency_ms") or {}, r.get("rss") or {}
                lines.append(
                    f"    {DISPLAY.get(name, name):<{w}}{_f(r.get('server_cpu_ms_per_msg'), '11.3f'):>11}"
                    f"{_f(r.get('throughput'), '9.1f'):>9}{_f(lat.get('p50'), '9.2f'):>9}"
                    f"{_f(lat.get('p90'), '9.2f'):>9}{_f(lat.get('p99'), '9.2f'):>9}"
                    f"{_f(_mib(rss.get('peak_above_idle_bytes', 0)) if rss else None, '9.1f'):>9}"
                    f"{_f(_mib(rss.get('pss_peak_above_idle_bytes')), '9.1f'):>9}"
                    f"{_f(_mib(rss.get('idle_bytes', 0)) if rss else None, '9.1f'):>9}"
                    f"{r.get('messages_ok', 0):>8}"
                    f"{r.get('unexpected', '?'):>7}{_f(r.get('other_cpu_pct'), '8.0f'):>8}"
                    + (f"  ERROR: {r['error'][:120]}" if r.get("error") else ""))
        elif s.get("mode") == "burst":
            lines.append(f"    {'candidate':<{w}}{'time s':>9}{'drained s':>10}{'MiB/s':>8}{'RSS+ MiB':>9}"
                         f"{'PSS+ MiB':>9}{'idle MiB':>9}{'RSS+/msg':>9}{'CPU s':>7}{'stored':>7}{'ok':>5}"
                         f"{'unexp':>7}{'other%':>8}")
            for name, r in cands.items():
                stored = r.get("stored")
                lines.append(
                    f"    {DISPLAY.get(name, name):<{w}}{_f(r.get('time_s'), '9.3f'):>9}"
                    f"{_f(r.get('drained_s'), '10.3f'):>10}{_f(_mib_per_s(r), '8.1f'):>8}"
                    f"{_f(_mib(r.get('peak_above_idle_bytes', 0)), '9.1f'):>9}"
                    f"{_f(_mib(r.get('pss_peak_above_idle_bytes')), '9.1f'):>9}"
                    f"{_f(_mib(r.get('idle_bytes')), '9.1f'):>9}"
                    f"{_f(r.get('rss_over_size'), '9.2f'):>9}{_f(r.get('server_cpu_s'), '7.2f'):>7}"
                    f"{'-' if stored is None else '/'.join(map(str, stored)):>7}"
                    f"{r.get('messages_ok', 0):>5}{r.get('unexpected', '?'):>7}{_f(r.get('other_cpu_pct'), '8.0f'):>8}"
                    + next((f"  ERROR: {x['error'][:120]}" for x in r.get("runs", []) if x.get("error")), ""))
        else:
            lines.append(f"    {'candidate':<{w}}{'time s':>9}{'upload s':>10}{'after s':>9}{'MiB/s':>8}"
                         f"{'RSS+ MiB':>9}{'idle MiB':>9}{'RSS+/size':>10}{'CPU s':>7}{'offloaded':>10}{'ok':>5}"
                         f"{'unexp':>7}{'other%':>8}")
            for name, r in cands.items():
                off = r.get("offloaded")
                lines.append(
                    f"    {DISPLAY.get(name, name):<{w}}{_f(r.get('time_s'), '9.3f'):>9}"
                    f"{_f(r.get('upload_s'), '10.3f'):>10}"
                    f"{_f(r.get('after_upload_s'), '9.3f'):>9}{_f(_mib_per_s(r), '8.1f'):>8}"
                    f"{_f(_mib(r.get('peak_above_idle_bytes', 0)), '9.1f'):>9}"
                    f"{_f(_mib(r.get('idle_bytes') or 0), '9.1f'):>9}"
                    f"{_f(r.get('rss_over_size'), '10.2f'):>10}{_f(r.get('server_cpu_s'), '7.2f'):>7}"
                    f"{'-' if off is None else ('yes' if off else 'NO'):>10}"
                    f"{r.get('messages_ok', 0):>5}{r.get('unexpected', '?'):>7}{_f(r.get('other_cpu_pct'), '8.0f'):>8}"
                    + next((f"  ERROR: {x['error'][:120]}" for x in r.get("runs", []) if x.get("error")), ""))
        for name, why in (s.get("skipped_candidates") or {}).items():
            lines.append(f"    {name:<{w}}skipped: {why}")
        lines.append("")
    lines.append(f"    {'check':<60}{'value':>7}{'target':>10}  {'result':<7}per round (run)")
    for c in results.get("checks", []):
        spread = " ".join(f"{x:.2f}" for x in c.get("per_round") or [])
        lines.append(f"    {c['name']:<60}{_f(c['value'], '7.2f'):>7}{c['target']:>10}  {c['result']:<7}{spread}")
    notes = list(m.get("notes") or [])
    other = max((r.get("other_cpu_pct") or 0.0 for s in results.get("scenarios", {}).values()
                 for r in s.get("candidates", {}).values()), default=0.0)
    if other > 5:
        notes.append(f"processes outside the bench used up to {other:.0f}% of the machine's CPU during a "
                     "measurement (column other%): those numbers are noisy; rerun on a quiet machine")
    if notes:
        lines += [""] + [f"note: {n}" for n in notes]
    lines.append("")
    lines.append("CPU ms/msg: the candidate's CPU (all its processes) per message over its own slices; msgs/s: "
                 "answered 250 in the measured window;\nlatency: MAIL sent -> final reply; RSS+: peak RSS above "
                 "idle (max over runs; summed over a candidate's processes); PSS+: the same in PSS (shared pages "
                 "counted once), multi-process candidates only;\ntime: connect -> final reply (median); "
                 "after s: last byte sent -> reply; (f): time: connect -> last byte of the HTTP response, RSS+/size: "
                 "over the body size;\n(g): time: first connect -> last final reply, drained s: until Postfix's "
                 "queue is empty, RSS+/msg: over ONE message's size, stored: files in the proxy's store;\n"
                 "CPU s: the candidate's CPU for the large message, upload or burst (median); other%: CPU used by "
                 "processes outside the bench.")
    return "\n".join(lines)


# --- command line ------------------------------------------------------------------------

def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description="smtp-offload benchmark (see bench/README.md)")
    ap.add_argument("--quick", action="store_true", help="about 1 s per scenario, a 3.8 MiB large message, "
                    "a 2.8 MiB upload and a burst of 3")
    ap.add_argument("--json", metavar="PATH", help="results file (default bench/results/<date>.json)")
    ap.add_argument("--duration", type=float, help="seconds measured per throughput scenario (10; quick 1)")
    ap.add_argument("--warmup", type=float, help="seconds of load before measuring (1; quick 0.3)")
    ap.add_argument("--sessions", type=int, default=20, help="concurrent sessions (20)")
    ap.add_argument("--rounds", type=int, help="throughput scenarios: the duration is split into this many "
                    "slices per candidate, interleaved between candidates (5; quick 1)")
    ap.add_argument("--large-runs", type=int, help="runs of the large message and of the upload; the median is "
                    "reported (3; quick 1)")
    ap.add_argument("--pdf-size", type=int, help="large PDF bytes (26214400 -> a 34.2 MiB message, a 25.0 MiB "
                    "upload; quick 2900000)")
    ap.add_argument("--offload-over", type=int, help="proxy policy.offload_over_bytes (10485760; quick 1048576)")
    ap.add_argument("--spool-over", type=int, help="proxy server.spool_over_bytes (its default, 1 MiB; quick "
                    "1048576, so that the quick run's messages are spooled too)")
    ap.add_argument("--burst", type=int, help="(g): messages sent at once (10; quick 3)")
    ap.add_argument("--burst-runs", type=int, help="(g): runs per candidate; the median is reported (2; quick 1)")
    ap.add_argument("--scenarios", default="abcdefg", help="which of a b c d e f g to run (abcdefg)")
    ap.add_argument("--receiver", choices=["auto", "smtp-sink", "aiosmtpd"], default="auto")
    ap.add_argument("--client", choices=["bench", "smtp-source"], default="bench",
                    help="load generator for (a)/(e): ours (default) or Postfix's smtp-source (no latencies)")
    ap.add_argument("--no-info-log", dest="info_log", action="store_false",
                    help="skip the extra (a) run of the proxy with log.level = info")
    ap.add_argument("--max-seconds", type=float, help="hard limit for the whole run (900; quick 170)")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs)")
    ap.add_argument("--show", metavar="FILE", help="print the table of a results file and exit")
    o = ap.parse_args(argv)
    q = o.quick
    o.duration = o.duration if o.duration is not None else (1.0 if q else 10.0)
    o.warmup = o.warmup if o.warmup is not None else (0.3 if q else 1.0)
    o.large_runs = o.large_runs if o.large_runs is not None else (1 if q else 3)
    o.rounds = max(1, o.rounds if o.rounds is not None else (1 if q else 5))
    o.pdf_size = o.pdf_size if o.pdf_size is not None else (2_900_000 if q else 25 * 1024 * 1024)
    o.offload_over = o.offload_over if o.offload_over is not None else (1024 * 1024 if q else 10 * 1024 * 1024)
    o.max_seconds = o.max_seconds if o.max_seconds is not None else (170.0 if q else 900.0)
    o.spool_over = o.spool_over if o.spool_over is not None else (1024 * 1024 if q else None)
    o.burst = max(1, o.burst if o.burst is not None else (3 if q else 10))
    o.burst_runs = max(1, o.burst_runs if o.burst_runs is not None else (1 if q else 2))
    o.info_log = o.info_log and not q  # the extra (a) candidate only measures logging: not in a quick run
    o.scenarios = [c for c in o.scenarios.lower() if c in "abcdefg"]
    return o


def main(argv: list[str] | None = None) -> int:
    opts = parse(argv)
    if opts.show:
        try:
            results = json.loads(Path(opts.show).read_text())
        except (OSError, ValueError) as exc:
            print(f"error: cannot read {opts.show}: {exc}", file=sys.stderr)
            return 2
        if not isinstance(results, dict) or not isinstance(results.get("scenarios"), dict):
            print(f"error: {opts.show} is not a bench results file (no scenarios)", file=sys.stderr)
            return 2
        print(render(results))
        return 0

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    def on_alarm(signum, frame):
        raise BenchTimeout(f"the bench ran past --max-seconds={opts.max_seconds:g}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)  # even when started with SIGINT ignored (`cmd &` in a script)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, opts.max_seconds)
    try:
        results = run(opts)
    except KeyboardInterrupt:
        print("interrupted; every process the bench started was stopped", file=sys.stderr)
        return 130
    except BenchTimeout as exc:
        print(f"error: {exc}; every process the bench started was stopped", file=sys.stderr)
        return 3
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    print()
    print(render(results))
    path = Path(opts.json) if opts.json else RESULTS / f"{dt.datetime.now():%Y-%m-%dT%H%M%S}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults: {path}")
    bad = [s for s in results["scenarios"].values() if s.get("error")]
    bad += [r for s in results["scenarios"].values() for r in s.get("candidates", {}).values()
            if r.get("unexpected") or not r.get("throughput")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
