"""Loopback: free ports, waiting for a server, a raw SMTP client, a self-signed certificate."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.support.env import missing


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_free_ports() -> int:
    """A free port whose next port is free too (a base for per-worker ports)."""
    for _ in range(50):
        base = free_port()
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", base + 1))
            return base
        except OSError:
            continue
    raise RuntimeError("no two consecutive free ports")


def self_signed(directory: Path, cn: str = "mx.test") -> tuple[str, str]:
    """A self-signed certificate and its key, made with openssl in `directory`: (cert, key)."""
    if not shutil.which("openssl"):
        missing("openssl not installed (Debian package openssl)")
    crt, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={cn}",
                    "-keyout", str(key), "-out", str(crt)], check=True, capture_output=True)
    return str(crt), str(key)


def wait_smtp(port: int, proc: subprocess.Popen | None = None, timeout: float = 20.0) -> None:
    """Wait until the SMTP port greets, with probes that are over when this returns: each says
    QUIT and reads to the server's close, so the server no longer counts it (a probe it still
    counted would take a slot of server.max_sessions from the test)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                f = s.makefile("rb")
                if f.readline().startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    while f.readline():  # 221, then the server's close
                        pass
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"port {port} does not greet")


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} not listening")


class RawSession:
    """An SMTP client that writes exactly the bytes it is given (smtplib would fix them up)."""

    def __init__(self, port: int, timeout: float = 20):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.file = self.sock.makefile("rb")
        self.greeting = self.file.readline()

    def reply(self) -> bytes:
        """The last line of the next (possibly multi-line) reply."""
        line = self.file.readline()
        while line[3:4] == b"-":
            line = self.file.readline()
        return line

    def command(self, line: bytes) -> bytes:
        self.sock.sendall(line + b"\r\n")
        return self.reply()

    def start_data(self, mail: bytes = b"MAIL FROM:<a@sender.test>",
                   rcpt: bytes = b"RCPT TO:<support@example.com>") -> bytes:
        """EHLO, MAIL, RCPT, DATA; returns the reply to DATA (354 when all went well)."""
        for cmd in (b"EHLO client.test", mail, rcpt, b"DATA"):
            line = self.command(cmd)
        return line

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        # The reader made by makefile() holds the connection open too: close both.
        self.file.close()
        self.sock.close()

    def __enter__(self) -> "RawSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def closed(s: RawSession) -> bool:
    """The proxy closed the connection: EOF (or a reset, if a byte of ours crossed its close)."""
    try:
        return s.file.read(1) == b""
    except ConnectionResetError:
        return True
