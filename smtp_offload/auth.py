"""Authentication on arrival (DKIM, recorded as Authentication-Results) and an ARC seal
after a rewrite, so a downstream that checks DMARC can still trust what this hop saw.

DNS is looked up first, asynchronously and within one time budget (`auth.dns_timeout`);
the signature checks then run in a worker thread against those answers only, so a slow
resolver never holds the event loop and a DNS failure is `temperror`, never a lost or
refused message. Tests pass their own `resolver` (an async callable name -> TXT).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable

import dkim
import dkim.crypto

from .config import AuthConfig
from .errors import ConfigError

Resolver = Callable[[str], Awaitable[str | None]]
_TAG = re.compile(rb"(?:^|;)\s*([a-z]+)\s*=\s*([^;]*)", re.IGNORECASE)
_UNPRINTABLE = re.compile(r"[^\x21-\x7e]")
_SEALED = (b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"reply-to", b"mime-version",
           b"content-type", b"content-transfer-encoding")
MAX_SIGNATURES = 5  # more are not verified (each one costs a DNS lookup and an RSA check)


class SealError(Exception):
    """This message could not be sealed (the key itself was checked at start)."""


class DnsFailure(Exception):
    """The key could not be fetched (timeout, SERVFAIL): a temporary error, not a failure."""


async def dns_resolver(name: str, timeout: float) -> str | None:
    import dns.asyncresolver
    import dns.exception
    import dns.resolver

    try:
        answer = await dns.asyncresolver.resolve(name, "TXT", lifetime=timeout)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return None
    except dns.exception.DNSException as exc:
        raise DnsFailure(type(exc).__name__) from exc
    return b"".join(b"".join(r.strings) for r in answer).decode("ascii", "replace")


@dataclass(frozen=True)
class DkimResult:
    result: str  # pass | fail | neutral | temperror | permerror | none
    domain: str = ""
    selector: str = ""


def _header_fields(data: bytes) -> list[tuple[bytes, bytes]]:
    head = data.split(b"\r\n\r\n", 1)[0]
    fields: list[tuple[bytes, bytes]] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + b"\r\n" + line)
        elif b":" in line:
            name, _, value = line.partition(b":")
            fields.append((name.strip().lower(), value))
    return fields


def dkim_signatures(data: bytes) -> list[tuple[str, str]]:
    """(domain, selector) of each DKIM-Signature, top first."""
    out = []
    for name, value in _header_fields(data):
        if name == b"dkim-signature":
            tags = {k.lower(): re.sub(rb"\s+", b"", v) for k, v in _TAG.findall(value)}
            out.append((tags.get(b"d", b"").decode("ascii", "replace"), tags.get(b"s", b"").decode("ascii", "replace")))
    return out[:MAX_SIGNATURES]


def _clean(value: str) -> str:
    return _UNPRINTABLE.sub("", value)[:253] or "unknown"


class Authenticator:
    def __init__(self, cfg: AuthConfig, hostname: str, resolver: Resolver | None = None):
        self.cfg = cfg
        self.authserv_id = cfg.authserv_id or hostname
        self.resolver = resolver
        self.arc_key = load_arc_key(cfg) if cfg.arc.enabled else None

    # -- verify ---------------------------------------------------------------
    async def verify(self, data: bytes) -> list[DkimResult]:
        if not self.cfg.verify_dkim:
            return []
        sigs = dkim_signatures(data)
        if not sigs:
            return []
        names = {f"{s}._domainkey.{d}" for d, s in sigs if d and s}
        records: dict[str, str | None | DnsFailure] = {}

        async def lookup(name: str) -> None:
            try:
                if self.resolver is not None:
                    records[name] = await asyncio.wait_for(self.resolver(name), self.cfg.dns_timeout)
                else:
                    records[name] = await dns_resolver(name, self.cfg.dns_timeout)
            except (asyncio.TimeoutError, DnsFailure) as exc:
                records[name] = DnsFailure(type(exc).__name__)

        await asyncio.gather(*(lookup(n) for n in names))
        return await asyncio.to_thread(self._verify_sync, data, sigs, records)

    def _verify_sync(self, data: bytes, sigs, records) -> list[DkimResult]:
        def dnsfunc(name, timeout=5):
            rec = records.get((name.decode() if isinstance(name, bytes) else name).rstrip("."))
            if isinstance(rec, DnsFailure):
                raise dkim.DnsTimeoutError(str(rec))
            return rec.encode() if rec else None

        out = []
        d = dkim.DKIM(data, minkey=1024)
        for i, (domain, selector) in enumerate(sigs):
            name = f"{selector}._domainkey.{domain}"
            if isinstance(records.get(name), DnsFailure):
                out.append(DkimResult("temperror", domain, selector))
                continue
            try:
                ok = d.verify(idx=i, dnsfunc=dnsfunc)
                out.append(DkimResult("pass" if ok else "fail", domain, selector))
            except dkim.DnsTimeoutError:
                out.append(DkimResult("temperror", domain, selector))
            except dkim.DKIMException:
                out.append(DkimResult("permerror", domain, selector))
        return out

    def results_header(self, results: list[DkimResult]) -> bytes:
        """RFC 8601 Authentication-Results for this hop (none when nothing was checked and no
        ARC seal needs one)."""
        if not self.cfg.verify_dkim and self.arc_key is None:
            return b""
        parts = [f"dkim={r.result} header.d={_clean(r.domain)} header.s={_clean(r.selector)}" for r in results]
        body = ";\r\n\t".join([_clean(self.authserv_id)] + (parts or ["dkim=none"]))
        return f"Authentication-Results: {body}\r\n".encode("ascii")

    def is_ours(self, value: bytes) -> bool:
        """An Authentication-Results field that claims our authserv-id (a forgery on arrival)."""
        first = value.strip().split(b";", 1)[0].strip().split()
        return bool(first) and first[0].decode("ascii", "replace").lower() == self.authserv_id.lower()

    # -- seal -----------------------------------------------------------------
    def seal(self, message: bytes) -> bytes:
        """The ARC set (AAR, AMS, AS) to prepend; `message` must carry our Authentication-Results."""
        arc = self.cfg.arc
        assert self.arc_key is not None
        # The usual identity and content headers, and every one of our decision headers: the
        # seal vouches for what we decided, not only for the body we changed.
        present = [name for name, _ in _header_fields(message)]
        sign = [n for n in _SEALED if n in present]
        sign += [n for n in present if n.startswith(b"x-smtp-offload")]
        try:
            lines = dkim.arc_sign(message, arc.selector.encode(), arc.domain.encode(), self.arc_key,
                                  self.authserv_id.encode(), include_headers=sign, linesep=b"\r\n")
        except dkim.DKIMException as exc:
            raise SealError(str(exc)) from exc
        return b"".join(lines)


def load_arc_key(cfg: AuthConfig) -> bytes:
    """The ARC private key, checked at start: a broken key is a config error, not a per-message one."""
    arc = cfg.arc
    for key in ("selector", "domain", "private_key_file"):
        if not getattr(arc, key):
            raise ConfigError(f"auth.arc.{key}: required when auth.arc.enabled = true")
    try:
        pem = Path(arc.private_key_file).read_bytes()
    except OSError as exc:
        raise ConfigError(f"auth.arc.private_key_file: cannot read {arc.private_key_file}: {exc.strerror}") from None
    try:
        dkim.crypto.parse_pem_private_key(pem)
    except Exception:
        raise ConfigError(f"auth.arc.private_key_file: {arc.private_key_file} is not a PEM RSA private key") from None
    return pem


def strip_forged(data: bytes, auth: Authenticator) -> bytes:
    """Remove Authentication-Results fields in the top header block that claim our
    authserv-id: only this hop may write those (RFC 8601 5)."""
    end = data.find(b"\r\n\r\n")
    head_end = len(data) if end < 0 else end + 2
    out, pos, keep_from = [], 0, 0
    while pos < head_end:
        eol = data.find(b"\r\n", pos, head_end)
        nxt = head_end if eol < 0 else eol + 2
        while nxt < head_end and data[nxt:nxt + 1] in (b" ", b"\t"):  # continuation lines
            eol = data.find(b"\r\n", nxt, head_end)
            nxt = head_end if eol < 0 else eol + 2
        name, _, value = data[pos:nxt].partition(b":")
        if name.strip().lower() == b"authentication-results" and auth.is_ours(value):
            out.append(data[keep_from:pos])
            keep_from = nxt
        pos = nxt
    if not out:
        return data
    return b"".join(out) + data[keep_from:]
