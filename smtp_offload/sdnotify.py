"""sd_notify(3) without a dependency: readiness, stopping, status and watchdog pings to
systemd over the datagram socket named by $NOTIFY_SOCKET (a path, or "@name" for the
abstract namespace). Every function is a no-op when NOTIFY_SOCKET is unset, so the proxy
behaves the same outside systemd.

With `server.workers > 1` the unit keeps `NotifyAccess=main`: systemd hears only from the
parent process, and the parent speaks for its workers (`Workers`). Each forked worker sends
its READY=1 and WATCHDOG=1 over a private socketpair to the parent; the parent sends
READY=1 once *every* worker has its listeners up, and WATCHDOG=1 only while *every* worker's
event loop has pinged within the last watchdog interval. So a single frozen worker stops the
pings and systemd restarts the service (within two intervals), which neither "the parent says READY after forking" (it would claim ports that are
not bound yet and ping for loops it cannot see) nor `NotifyAccess=all` (the first worker's
READY would count for all, and any healthy worker's ping would hide a frozen one) gives.
"""

from __future__ import annotations

import os
import select
import socket
import time

__all__ = ["notify", "ready", "stopping", "status", "watchdog", "watchdog_interval", "enabled", "Workers"]

# In a forked worker: (socket to the parent, the parent's watchdog interval). Set by
# Workers.in_worker(); then every notification goes to the parent instead of systemd.
_parent: tuple[socket.socket, float | None] | None = None


def _address() -> str | None:
    path = os.environ.get("NOTIFY_SOCKET", "")
    if path.startswith("@"):
        return "\0" + path[1:]  # abstract namespace
    if path.startswith("/"):
        return path
    return None  # unset, or a kind we do not speak (vsock:)


def enabled() -> bool:
    return _parent is not None or _address() is not None


def _send(sock: socket.socket, data: bytes, address: str | None = None) -> bool:
    try:
        # Never block the event loop on a full socket buffer: a lost ping is better.
        if address is None:
            sock.send(data, socket.MSG_DONTWAIT)
        else:
            sock.sendto(data, socket.MSG_DONTWAIT, address)
        return True
    except OSError:
        return False


def notify(*assignments: str) -> bool:
    """Send "KEY=value" lines as one datagram; True when sent. Never raises."""
    if not assignments:
        return False
    data = "\n".join(assignments).encode("utf-8", "replace")
    if _parent is not None:
        return _send(_parent[0], f"{os.getpid()}\n".encode() + data)
    address = _address()
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            return _send(sock, data, address)
    except OSError:
        return False


def _one_line(text: str) -> str:
    return " ".join(text.split())


def ready(text: str | None = None) -> bool:
    return notify("READY=1", *([f"STATUS={_one_line(text)}"] if text else []))


def stopping(text: str | None = None) -> bool:
    return notify("STOPPING=1", *([f"STATUS={_one_line(text)}"] if text else []))


def status(text: str) -> bool:
    return notify(f"STATUS={_one_line(text)}")


def watchdog() -> bool:
    return notify("WATCHDOG=1")


def watchdog_interval() -> float | None:
    """systemd's watchdog timeout in seconds ($WATCHDOG_USEC), or None when there is none or
    it is meant for another process ($WATCHDOG_PID). Ping at half of it."""
    if _parent is not None:
        return _parent[1]
    if _address() is None:
        return None
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec / 1_000_000


async def keepalive(summary=None) -> None:
    """Run as a task on the event loop: WATCHDOG=1 (and STATUS=summary() when given) every
    half watchdog interval. A loop that stops turning stops the pings, and systemd restarts
    the service. Returns at once when there is no watchdog."""
    import asyncio

    interval = watchdog_interval()
    if not interval:
        return
    while True:
        lines = ["WATCHDOG=1"]
        if summary is not None:
            try:
                lines.append(f"STATUS={_one_line(summary())}")
            except Exception:  # noqa: BLE001 - a status line must never stop the pings
                pass
        notify(*lines)
        await asyncio.sleep(interval / 2)


class Workers:
    """The parent's side for forked workers (see the module docstring). Use:

        workers = Workers(count, summary)      # before the first fork
        pid = os.fork(); if pid == 0: workers.in_worker() ... else: workers.add(pid)
        pid, wstatus = workers.wait()          # instead of os.wait()

    Without NOTIFY_SOCKET every method is a plain pass-through (wait() is os.wait())."""

    def __init__(self, count: int, summary: str = "", start_grace: float = 0.0):
        self.count = count
        self.summary = summary
        # How long a worker may take from fork to READY=1 before its silence counts against
        # the watchdog (at least one interval). A respawned worker is not pinging while it
        # starts; judged by the interval alone, a slow start (a loaded machine, a storage
        # check that waits for its timeout) would stop the pings and systemd would kill
        # every healthy worker with it.
        self.start_grace = start_grace
        self.active = _parent is None and _address() is not None
        self.interval = watchdog_interval() if self.active else None
        self.live: dict[int, int | None] = {}  # pid -> pidfd (None without pidfd_open)
        self.started: set[int] = set()
        self.last_ping: dict[int, float] = {}
        self.ready_sent = False
        self.stopping = False
        self.next_ping = 0.0
        self.rx = self.tx = None
        if self.active:
            self.rx, self.tx = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.rx.setblocking(False)

    # -- in the worker --------------------------------------------------------------
    def in_worker(self) -> None:
        """Right after fork, in the child: talk to the parent from now on."""
        global _parent
        if not self.active:
            return
        self.rx.close()
        for fd in self.live.values():
            if fd is not None:
                os.close(fd)
        self.live.clear()
        _parent = (self.tx, self.interval)

    # -- in the parent ----------------------------------------------------------------
    def add(self, pid: int) -> None:
        if not self.active:
            return
        fd = None
        try:
            fd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            pass
        self.live[pid] = fd
        self.last_ping[pid] = time.monotonic()  # from here it has start_grace (or one interval) to be ready
        self._publish()

    def _forget(self, pid: int) -> None:
        fd = self.live.pop(pid, None)
        if fd is not None:
            os.close(fd)
        self.started.discard(pid)
        self.last_ping.pop(pid, None)
        self._publish()

    def _publish(self) -> None:
        up = len(self.started & self.live.keys())
        if not self.ready_sent and up >= self.count:
            self.ready_sent = True
            notify("READY=1", f"STATUS={up}/{self.count} workers up; {self.summary}")
        elif self.ready_sent and not self.stopping:
            notify(f"STATUS={up}/{self.count} workers up; {self.summary}")

    def stop(self) -> None:
        """The parent got SIGTERM/SIGINT: tell systemd draining has started."""
        if self.active and not self.stopping:
            self.stopping = True
            notify("STOPPING=1", f"STATUS=draining {len(self.live)} workers")

    def _receive(self) -> None:
        while True:
            try:
                data = self.rx.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            head, _, body = data.partition(b"\n")
            try:
                pid = int(head)
            except ValueError:
                continue
            if pid not in self.live:
                continue
            fields = body.decode("utf-8", "replace").split("\n")
            if "WATCHDOG=1" in fields or "READY=1" in fields:
                self.last_ping[pid] = time.monotonic()
            if "READY=1" in fields and pid not in self.started:
                self.started.add(pid)
                self._publish()

    def _tick(self) -> None:
        now = time.monotonic()
        if self.interval and self.ready_sent and now >= self.next_ping:
            self.next_ping = now + self.interval / 2
            # Every worker's loop answered within one interval (a starting one: within its
            # start grace): otherwise stay silent, and systemd's watchdog restarts the service.
            grace = max(self.interval, self.start_grace)
            if all(now - t <= (self.interval if pid in self.started else grace)
                   for pid, t in self.last_ping.items()):
                notify("WATCHDOG=1")

    def wait(self) -> tuple[int, int]:
        """os.wait(), handling the workers' notifications and pinging systemd meanwhile."""
        if not self.active:
            return os.wait()
        while True:
            pid, wstatus = os.waitpid(-1, os.WNOHANG)  # ChildProcessError when none is left
            if pid:
                self._forget(pid)
                return pid, wstatus
            self._receive()
            self._tick()
            fds = [self.rx] + [fd for fd in self.live.values() if fd is not None]
            timeout = 0.5 if None in self.live.values() else None  # no pidfd: poll for exits
            if self.interval and self.ready_sent:
                wake = max(0.0, self.next_ping - time.monotonic())
                timeout = wake if timeout is None else min(timeout, wake)
            try:
                select.select(fds, [], [], timeout)
            except InterruptedError:
                pass
