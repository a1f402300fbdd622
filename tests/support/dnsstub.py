"""A tiny DNS server on 127.0.0.1 (UDP, in a thread) answering TXT queries from a dict, so a
proxy subprocess can look up DKIM and ARC keys (`auth.dns_servers`) without the Internet."""

from __future__ import annotations

import socket
import threading

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
from dns.rdtypes.ANY.TXT import TXT


class DnsStub:
    def __init__(self, records: dict[str, str]):
        self.records = {k.lower().rstrip("."): v for k, v in records.items()}
        self.queries: list[str] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))  # the kernel's free port: no race with other tests
        self.sock.settimeout(0.1)  # lets the thread notice stop()
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def server(self) -> str:
        """The `auth.dns_servers` entry for this server."""
        return f"127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(4096)
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            try:
                self.sock.sendto(self.answer(data), addr)
            except Exception:  # a malformed query gets no answer, like from a real server
                continue

    def answer(self, wire: bytes) -> bytes:
        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        self.queries.append(name)
        if name not in self.records:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif question.rdtype == dns.rdatatype.TXT:
            text = self.records[name].encode()
            chunks = [text[i:i + 255] for i in range(0, len(text), 255)]  # one TXT string holds 255 bytes
            rrset = response.find_rrset(response.answer, question.name, dns.rdataclass.IN, dns.rdatatype.TXT,
                                        create=True)
            rrset.add(TXT(dns.rdataclass.IN, dns.rdatatype.TXT, chunks), ttl=60)
        return response.to_wire()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()
