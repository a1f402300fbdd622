"""Misbehaving peers on loopback for fault injection: they really accept, hang or drop."""

from __future__ import annotations

import socket
import threading

from tests.support.net import free_port


class FaultyServer:
    """A TCP server that plays a scripted (bad) part.

    modes:
      hang            accept and never say anything (an SMTP greeting or HTTP reply that never comes)
      hang_after_data a normal SMTP dialogue until the final dot, then silence
      drop_mid_data   a normal SMTP dialogue until some message bytes arrived, then the connection drops
      record          a normal SMTP server that keeps the raw bytes of every DATA (`data_blocks`)
    """

    def __init__(self, mode: str):
        self.mode = mode
        self.port = free_port()
        self.sock = socket.create_server(("127.0.0.1", self.port))
        self.sock.settimeout(0.2)
        self.connections = 0
        self.received = bytearray()
        self.data_blocks: list[bytes] = []
        self.commands: list[bytes] = []
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            self._conns.append(conn)
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        f = conn.makefile("rb")
        try:
            if self.mode == "hang":
                while not self._stop.is_set():
                    try:
                        chunk = conn.recv(65536)
                    except socket.timeout:
                        continue
                    if not chunk:
                        return
                    self.received += chunk
                return
            conn.sendall(b"220 faulty.test ESMTP\r\n")
            for line in self._lines(f):
                cmd = line[:4].upper()
                self.commands.append(line)
                if cmd in (b"EHLO", b"HELO"):
                    conn.sendall(b"250-faulty.test\r\n250 8BITMIME\r\n")
                elif cmd == b"DATA":
                    conn.sendall(b"354 go ahead\r\n")
                    self._data(conn, f)
                    if self.mode != "record":
                        return
                    conn.sendall(b"250 recorded\r\n")
                elif cmd == b"QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                else:
                    conn.sendall(b"250 ok\r\n")
        except OSError:
            return
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def _lines(self, f):
        """The client's lines until it closes or the server stops (reads time out to see that)."""
        while not self._stop.is_set():
            try:
                line = f.readline()
            except socket.timeout:
                continue
            if not line:
                return
            yield line

    def _data(self, conn: socket.socket, f) -> None:
        start = len(self.received)
        for line in self._lines(f):
            self.received += line
            if self.mode == "drop_mid_data" and len(self.received) > 200:
                conn.shutdown(socket.SHUT_RDWR)
                return
            if line == b".\r\n":
                self.data_blocks.append(bytes(self.received[start:]))
                break
        else:
            return
        while self.mode == "hang_after_data" and not self._stop.is_set():
            self._stop.wait(0.2)

    def stop(self) -> None:
        self._stop.set()
        self.sock.close()
        for c in self._conns:
            try:
                c.close()
            except OSError:
                pass
