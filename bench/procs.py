"""Child processes for the bench: start, wait for the port, stop (always), and measure RSS.

Every process the bench starts is registered in a `Children` and put in its own session
(process group), so `Children.kill_all()` in a `finally` ends it and anything it forked,
whatever happened (exception, Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what or 'process'} exited with {proc.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{what or 'process'}: port {port} not listening after {timeout:.0f} s")


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.pop("SMTP_OFFLOAD_LINK_SECRET", None)
    return env


class Child:
    def __init__(self, name: str, proc: subprocess.Popen, log_path: Path | None):
        self.name, self.proc, self.log_path = name, proc, log_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 3000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-n:]

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the process group, SIGKILL it after `grace` seconds."""
        if self.proc.poll() is None:
            _signal_group(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        _signal_group(self.proc.pid, signal.SIGKILL)  # leftovers of the group (forked workers)
        if self.proc.poll() is None:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class Children:
    """Registry of every process the bench started."""

    def __init__(self, logdir: Path):
        self.logdir = logdir
        self.items: list[Child] = []
        self.started = 0
        self._lock = threading.Lock()

    def start(self, name: str, argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
              port: int | None = None, extra_ports: tuple[int, ...] = (), timeout: float = 30.0,
              log: bool = True) -> Child:
        with self._lock:  # candidates are started from several threads at once
            self.started += 1
            log_path = self.logdir / f"{self.started:03d}-{name}.log" if log else None
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL
        try:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=cwd or ROOT, env=child_env(env), start_new_session=True)
        finally:
            if log_path:
                out.close()
        child = Child(name, proc, log_path)
        self.items.append(child)
        try:
            for p in ((port,) if port else ()) + tuple(extra_ports):
                wait_port(p, proc, timeout, what=name)
        except (RuntimeError, TimeoutError) as exc:
            child.stop(1)
            raise RuntimeError(f"{exc}\n--- {name} output ---\n{child.log_tail()}") from None
        return child

    def adopt(self, child) -> None:
        """Register a process started some other way (a daemon such as Postfix's master):
        anything with `name`, `pid`, `alive()`, `log_path`, `log_tail()` and `stop(grace)`."""
        self.items.append(child)

    def stop(self, child: Child) -> None:
        child.stop()
        if child in self.items:
            self.items.remove(child)

    def kill_all(self) -> None:
        for child in reversed(self.items):
            child.stop(grace=3.0)
        self.items.clear()


# --- memory -------------------------------------------------------------------

def _status(pid: int) -> dict[str, int]:
    out = {}
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith((b"VmRSS:", b"VmHWM:")):
                    k, v = line.split(b":", 1)
                    out[k.decode()] = int(v.split()[0]) * 1024
    except (FileNotFoundError, ProcessLookupError, ValueError):
        pass
    return out


def pss(pids: list[int]) -> int:
    """Proportional set size of `pids`, summed, in bytes: a page shared by k processes counts
    1/k in each, so the sum is what the processes hold together (RSS counts shared libraries
    once per process: it overstates a server of many processes, such as Postfix)."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup", "rb") as f:
                for line in f:
                    if line.startswith(b"Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except (OSError, ValueError):
            pass
    return total


def tree(pid: int) -> list[int]:
    """`pid` and its descendants (via /proc/<pid>/task/<tid>/children)."""
    pids, todo = [], [pid]
    while todo and len(pids) < 256:
        p = todo.pop()
        pids.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                try:
                    with open(f"/proc/{p}/task/{task}/children") as f:
                        todo += [int(c) for c in f.read().split()]
                except OSError:
                    pass
        except OSError:
            pass
    return pids


def rss(pid: int) -> int:
    """Resident set size of `pid` and its descendants, in bytes."""
    return sum(_status(p).get("VmRSS", 0) for p in tree(pid))


def reset_hwm(pid: int) -> bool:
    """Reset VmHWM (peak RSS) of `pid` to its current RSS (Linux: echo 5 > clear_refs)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class RssSampler:
    """Samples the RSS of a process tree every `interval` seconds in a thread.

    For a single process the peak is also taken from VmHWM (reset at start), which
    catches spikes between two samples; for a tree the sampled sum is used, and its PSS
    (see pss()) is sampled too, every `pss_every` samples (reading smaps costs more).
    """

    def __init__(self, pid: int, interval: float = 0.02, pss_every: int = 10):
        self.pid, self.interval, self.pss_every = pid, interval, pss_every
        self.idle = rss(pid)
        self.peak = self.idle
        self.pss_idle: int | None = None
        self.pss_peak = 0
        self.samples = 0
        self._hwm_ok = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"rss-{pid}")

    def __enter__(self) -> "RssSampler":
        self._hwm_ok = reset_hwm(self.pid)
        self.idle = rss(self.pid)
        self.peak = self.idle
        pids = tree(self.pid)
        if len(pids) > 1:
            self.pss_idle = self.pss_peak = pss(pids)
        self._thread.start()
        return self

    def _run(self) -> None:
        pids, refreshed = tree(self.pid), time.monotonic()
        while not self._stop.wait(self.interval):
            now = time.monotonic()
            if now - refreshed > 0.2:  # a multi-process server (Postfix) forks as the load arrives
                pids, refreshed = tree(self.pid), now
            total = sum(_status(p).get("VmRSS", 0) for p in pids)
            self.samples += 1
            if total > self.peak:
                self.peak = total
            if len(pids) > 1 and self.samples % self.pss_every == 0:
                if self.pss_idle is None:  # a server that forks only when the load arrives
                    self.pss_idle = self.pss_peak = pss([self.pid])
                self.pss_peak = max(self.pss_peak, pss(pids))

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(2)
        pids = tree(self.pid)
        if self._hwm_ok and len(pids) == 1:
            self.peak = max(self.peak, _status(self.pid).get("VmHWM", 0))
        self.peak = max(self.peak, rss(self.pid))
        if len(pids) > 1:  # a last PSS sample: a load shorter than pss_every samples is seen too
            if self.pss_idle is None:
                self.pss_idle = self.pss_peak = pss([self.pid])
            self.pss_peak = max(self.pss_peak, pss(pids))

    def result(self) -> dict:
        out = {"idle_bytes": self.idle, "peak_bytes": self.peak, "peak_above_idle_bytes": max(0, self.peak - self.idle),
               "samples": self.samples, "hwm": self._hwm_ok}
        if self.pss_idle is not None:
            out.update(pss_idle_bytes=self.pss_idle, pss_peak_bytes=self.pss_peak,
                       pss_peak_above_idle_bytes=max(0, self.pss_peak - self.pss_idle))
        return out


# --- CPU -----------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """User + system CPU of `pid` (with its reaped children) and its live descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15]) if p == pid else sum(int(x) for x in fields[11:13])
        except (OSError, IndexError, ValueError):
            pass
    return total / tick


def _machine() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat.

    Interrupt and softirq time is left out of "busy": on loopback most of it is the
    network stack carrying the bench's own traffic, which no process is charged for."""
    tick = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = v
    return (user + nice + system + steal) / tick, sum(v) / tick


def _own() -> float:
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


class CpuWatch:
    """How much of the machine's CPU went to processes that are not the bench's during a
    measurement (other work on the host makes the numbers noisy; this says how much)."""

    def __init__(self, children: "Children"):
        self.children = children

    def _ours(self) -> float:
        return _own() + sum(cpu_seconds(c.pid) for c in self.children.items if c.alive())

    def __enter__(self) -> "CpuWatch":
        self.m0, self.o0 = _machine(), self._ours()
        return self

    def __exit__(self, *exc) -> None:
        m1, o1 = _machine(), self._ours()
        busy, total = m1[0] - self.m0[0], m1[1] - self.m0[1]
        self.other_pct = max(0.0, (busy - (o1 - self.o0)) / total * 100) if total > 0 else 0.0
        self.busy_pct = busy / total * 100 if total > 0 else 0.0
