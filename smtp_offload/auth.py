"""Authentication on arrival (DKIM and the incoming ARC chain, recorded as
Authentication-Results) and an ARC seal after a rewrite, so a downstream that checks DMARC
can still trust what this hop saw.

DNS is looked up first, asynchronously and within one time budget (`auth.dns_timeout`);
the signature checks then run in a worker thread against those answers only, so a slow
resolver never holds the event loop and a DNS failure is `temperror`, never a lost or
refused message. Tests pass their own `resolver` (an async callable name -> TXT), or point
`auth.dns_servers` at a DNS server of their own.
"""

from __future__ import annotations

import asyncio
import logging
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

import authres
import authres.arc
import dkim
import dkim.crypto
import dkim.util

from .config import AuthConfig, parse_dns_server
from .errors import ConfigError
from .mime import headers
from .smtp.policy import domain_accepted
from .spool import FileBytes, SpoolWriter, in_thread

Resolver = Callable[[str], Awaitable[str | None]]
# What may appear as a value in our Authentication-Results: a stray "(" or '"' from a
# sender's d= would make the field unparseable (dkimpy then finds no arc= result and
# silently makes no seal). Anything else is shown as "invalid", not trimmed into a name
# it never was ("pay(pal.com" must not read "paypal.com").
_NAME = re.compile(r"[A-Za-z0-9._-]{1,253}")
_SEALED = (b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"reply-to", b"mime-version",
           b"content-type", b"content-transfer-encoding")
_ARC_HEADERS = (b"arc-seal", b"arc-message-signature", b"arc-authentication-results")
MAX_SIGNATURES = 5  # more are not verified (each one costs a DNS lookup and an RSA check)
MAX_ARC_SETS = 50  # RFC 8617 4.2.1: i= runs from 1 to 50; a longer chain is failed
MAX_ARC_KEYS = 10  # distinct keys looked up for one chain (a real chain has a handful of hops)

# dkimpy logs every verification failure at ERROR through stdlib logging; the outcome is
# recorded in Authentication-Results instead, so its chatter must not reach stderr.
_DKIMPY_LOG = logging.getLogger("smtp_offload.dkimpy")
_DKIMPY_LOG.addHandler(logging.NullHandler())
_DKIMPY_LOG.propagate = False


class SealError(Exception):
    """This message could not be sealed (the key itself was checked at start)."""


class DnsFailure(Exception):
    """The key could not be fetched (timeout, SERVFAIL): a temporary error, not a failure."""


def make_dns_resolver(servers: list[str]) -> Any:
    """A dnspython resolver asking exactly `servers` ("host" or "host:port"); None: the system's."""
    if not servers:
        return None
    import dns.asyncresolver
    import dns.nameserver

    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [dns.nameserver.Do53Nameserver(*parse_dns_server(f"auth.dns_servers[{i}]", s))
                            for i, s in enumerate(servers)]
    resolver.use_edns(0, 0, 1232)  # a 2048-bit key's TXT record does not fit 512 bytes
    return resolver


async def dns_resolver(name: str, timeout: float, resolver: Any = None) -> str | None:
    import dns.asyncresolver
    import dns.exception
    import dns.resolver

    try:
        if resolver is None:
            answer = await dns.asyncresolver.resolve(name, "TXT", lifetime=timeout)
        else:
            answer = await resolver.resolve(name, "TXT", lifetime=timeout)
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
    # False with an l= tag: the signature covers only the first bytes of the body, so
    # anything may have been appended after signing.
    whole_body: bool = True


@dataclass(frozen=True)
class ArcResult:
    """The incoming ARC chain, as RFC 8617 5.2 evaluates it."""
    result: str = "none"  # pass | fail | none
    instance: int = 0  # the newest set's i= (0: no chain)
    ams: tuple[str, str] = ("", "")  # d=, s= of the newest ARC-Message-Signature
    seal: tuple[str, str] = ("", "")  # d=, s= of the newest ARC-Seal


@dataclass(frozen=True)
class AuthResults:
    dkim: list[DkimResult] = field(default_factory=list)
    arc: ArcResult = ArcResult()


_NOTHING_CHECKED = AuthResults()


def _head(data: bytes | FileBytes) -> bytes:
    """The top header block, lower-cased: a quick look for a field name before reading fields.
    (Of a spooled message only the header block is read: all of it only when there is no
    body; decide refuses a block larger than policy.max_header_bytes.)"""
    end = data.find(b"\r\n\r\n")
    return data[:end if end >= 0 else len(data)].lower()  # bytes sliced whole is itself, not a copy


def _header_fields(data: bytes) -> list[tuple[bytes, bytes]]:
    """(lower-case name, value without its last line break) of each top-level header field,
    read as dkimpy reads them: a line without a colon is no field, and its continuation lines
    belong to the field before it (dkimpy skips a "From " line so, and refuses the message on
    any other such line, or on continuation lines before the first field)."""
    out: list[tuple[bytes, bytes]] = []
    for f in headers.fields(data):
        if f.colon:
            out.append((f.name.encode("latin-1"), f.value.removesuffix(b"\r\n")))
        elif out and (eol := f.raw.find(b"\r\n")) >= 0 and f.raw[eol + 2:]:
            out[-1] = (out[-1][0], out[-1][1] + f.raw[eol:].removesuffix(b"\r\n"))
    return out


def _tags(value: bytes) -> dict[bytes, bytes]:
    """A signature's tags read exactly as dkimpy reads them (names are case-sensitive: "D=" is
    not "d="), so the keys we fetch are the ones it will check; {} when it would refuse them."""
    try:
        return {k: re.sub(rb"\s+", b"", v) for k, v in dkim.util.parse_tag_value(value).items()}
    except Exception:
        return {}


def _text(value: bytes) -> str:
    return value.decode("ascii", "replace")


def dkim_signatures(fields: list[tuple[bytes, bytes]]) -> list[tuple[str, str, bool]]:
    """(domain, selector, covers the whole body) of each DKIM-Signature, top first."""
    out = []
    for name, value in fields:
        if name == b"dkim-signature":
            tags = _tags(value)
            out.append((_text(tags.get(b"d", b"")), _text(tags.get(b"s", b"")), b"l" not in tags))
    return out[:MAX_SIGNATURES]


@dataclass
class _Chain:
    """What the ARC header fields on arrival claim, before anything is verified."""
    present: bool = False
    instance: int = 0
    keys: set[str] = field(default_factory=set)
    ams: tuple[str, str] = ("", "")
    seal: tuple[str, str] = ("", "")


def _arc_chain(fields: list[tuple[bytes, bytes]]) -> _Chain:
    chain = _Chain()
    sets: dict[int, dict[bytes, dict[bytes, bytes]]] = {}
    for name, value in fields:
        if name not in _ARC_HEADERS:
            continue
        chain.present = True
        m = dkim.ARC.INSTANCE_RE.search(b" ".join(value.split()))  # the way dkimpy finds i=
        if m is None:
            continue
        digits = m.group(1).lstrip(b"0") or b"0"
        tags = _tags(value)
        sets.setdefault(int(digits) if len(digits) <= 4 else MAX_ARC_SETS + 1, {})[name] = tags
        if name != b"arc-authentication-results" and tags.get(b"d") and tags.get(b"s"):
            chain.keys.add(f"{_text(tags[b's'])}._domainkey.{_text(tags[b'd'])}")
    if sets:
        chain.instance = max(sets)
        newest = sets[chain.instance]
        for attr, header in (("ams", b"arc-message-signature"), ("seal", b"arc-seal")):
            tags = newest.get(header, {})
            setattr(chain, attr, (_text(tags.get(b"d", b"")), _text(tags.get(b"s", b""))))
    return chain


def domain_listed(domain: str, listed: list[str]) -> bool:
    """Exact match, or a subdomain when the entry starts with a dot (".example.com"),
    case-insensitive: the rule of server.accepted_domains."""
    return domain_accepted(domain, tuple(e.lower().rstrip(".") for e in listed))


def signed_by(results: AuthResults, domains: tuple[str, ...] | list[str]) -> bool:
    """A signature that verified, over the whole body, from one of `domains`: what lets a message
    through uninspected under policy.on_signed = "skip". Anyone can add a DKIM-Signature
    header; only the listed domains' keys can make one that passes."""
    return any(r.result == "pass" and r.whole_body and domain_listed(r.domain, list(domains))
               for r in results.dkim)


def _clean(value: str) -> str:
    if not value:
        return "unknown"
    return value if _NAME.fullmatch(value) else "invalid"


class Authenticator:
    def __init__(self, cfg: AuthConfig, hostname: str, resolver: Resolver | None = None):
        self.cfg = cfg
        # The same in our header and in the seal. Lower-case: authres (and so dkimpy's arc_sign,
        # which looks for our Authentication-Results by it) reads it lower-cased.
        self.authserv_id = _clean(cfg.authserv_id or hostname).lower()
        self.resolver = resolver
        self.dns = make_dns_resolver(cfg.dns_servers) if resolver is None else None
        self.arc_key = load_arc_key(cfg) if cfg.arc.enabled else None
        self._nothing_checked: bytes | None = None

    # -- verify ---------------------------------------------------------------
    async def verify(self, data: bytes | FileBytes) -> AuthResults:
        # The chain is evaluated whenever it is recorded: with DKIM verification, and always
        # when we seal, because the seal's cv= must say what the chain was on arrival.
        if not self.cfg.verify_dkim and self.arc_key is None:
            return AuthResults()
        head = _head(data)
        if b"dkim-signature" not in head and b"arc-" not in head:  # most mail: nothing to verify
            return AuthResults()
        fields = _header_fields(data)
        sigs = dkim_signatures(fields) if self.cfg.verify_dkim else []
        chain = _arc_chain(fields)
        if not sigs and not chain.present:
            return AuthResults()
        names = {f"{s}._domainkey.{d}" for d, s, _ in sigs if d and s}
        verdict = None  # a chain failed before any lookup
        if chain.instance > MAX_ARC_SETS or len(chain.keys) > MAX_ARC_KEYS:
            verdict = ArcResult("fail", chain.instance, chain.ams, chain.seal)
        else:
            names |= chain.keys
        records = await self._lookup(names)
        return await in_thread(self._verify_sync, data, sigs, chain, verdict, records)

    async def _lookup(self, names: set[str]) -> dict[str, str | None | DnsFailure]:
        records: dict[str, str | None | DnsFailure] = {}

        async def lookup(name: str) -> None:
            try:
                if self.resolver is not None:
                    records[name] = await asyncio.wait_for(self.resolver(name), self.cfg.dns_timeout)
                else:
                    records[name] = await dns_resolver(name, self.cfg.dns_timeout, self.dns)
            except (asyncio.TimeoutError, DnsFailure) as exc:
                records[name] = DnsFailure(type(exc).__name__)

        await asyncio.gather(*(lookup(n) for n in names))
        return records

    def _verify_sync(self, data: bytes | FileBytes, sigs, chain: _Chain, verdict: ArcResult | None,
                     records) -> AuthResults:
        if isinstance(data, FileBytes):
            # dkimpy hashes one buffer: a spooled message that carries a signature or an ARC chain
            # is read into memory (its size, once, in this worker thread) to be verified.
            data = data.read()
        def dnsfunc(name, timeout=5):
            rec = records.get((name.decode() if isinstance(name, bytes) else name).rstrip("."))
            if isinstance(rec, DnsFailure):
                raise dkim.DnsTimeoutError(str(rec))
            return rec.encode() if rec else None

        return AuthResults(self._dkim(data, sigs, records, dnsfunc),
                           verdict or (self._arc(data, chain, dnsfunc) if chain.present else ArcResult()))

    def _dkim(self, data: bytes, sigs, records, dnsfunc) -> list[DkimResult]:
        out: list[DkimResult] = []
        if not sigs:
            return out
        try:
            d = dkim.DKIM(data, minkey=1024, logger=_DKIMPY_LOG)
        except Exception:  # a header block dkimpy cannot parse: no signature on it can be checked
            return [DkimResult("permerror", domain, selector, whole) for domain, selector, whole in sigs]
        for i, (domain, selector, whole) in enumerate(sigs):
            name = f"{selector}._domainkey.{domain}"
            if isinstance(records.get(name), DnsFailure):
                out.append(DkimResult("temperror", domain, selector, whole))
                continue
            try:
                d.signature_fields = {}  # dkimpy sets it again for the signature it checks
                ok = d.verify(idx=i, dnsfunc=dnsfunc)
                # What dkimpy verified, not what we read before: the result must name the
                # domain whose key made it pass (the skip decision trusts exactly that).
                sig = d.signature_fields
                if sig:
                    domain, selector, whole = _text(sig[b"d"]), _text(sig[b"s"]), b"l" not in sig
                out.append(DkimResult("pass" if ok and sig else "fail", domain, selector, whole))
            except dkim.DnsTimeoutError:
                out.append(DkimResult("temperror", domain, selector, whole))
            except Exception:  # DKIMException, or dkimpy tripping over a hostile header
                out.append(DkimResult("permerror", domain, selector, whole))
        return out

    def _arc(self, data: bytes, chain: _Chain, dnsfunc) -> ArcResult:
        # A key that could not be fetched makes its signature fail inside dkimpy: RFC 8617 has
        # no temporary result for a chain, and one that cannot be checked did not pass.
        try:
            cv = dkim.ARC(data, minkey=1024, logger=_DKIMPY_LOG).verify(dnsfunc=dnsfunc)[0]
        except Exception:  # dkimpy raises more than DKIMException on hostile ARC headers
            cv = dkim.CV_Fail
        # None: an earlier sealer already said cv=fail, so the chain ended there (RFC 8617 5.2).
        result = {dkim.CV_Pass: "pass", dkim.CV_None: "none"}.get(cv, "fail")
        return ArcResult(result, chain.instance, chain.ams, chain.seal)

    def results_header(self, results: AuthResults) -> bytes:
        """RFC 8601 Authentication-Results for this hop (none when nothing was checked and no
        ARC seal needs one). Its arc= result is what the seal's cv= is made from."""
        if not self.cfg.verify_dkim and self.arc_key is None:
            return b""
        if results == _NOTHING_CHECKED:  # most mail: no signature, no chain; the same field every time
            if self._nothing_checked is None:
                self._nothing_checked = self._results_field(results)
            return self._nothing_checked
        return self._results_field(results)

    def _results_field(self, results: AuthResults) -> bytes:
        clauses: list[authres.AuthenticationResult] = [
            authres.DKIMAuthenticationResult(result=r.result, header_d=_clean(r.domain), header_s=_clean(r.selector))
            for r in results.dkim] or [authres.DKIMAuthenticationResult(result="none")]
        arc = results.arc
        detail = None
        if arc.instance:  # which sets the verdict is about, as a comment (RFC 8601 2.2)
            detail = f"i={arc.instance} ams.d={_clean(arc.ams[0])} ams.s={_clean(arc.ams[1])}" \
                     f" as.d={_clean(arc.seal[0])} as.s={_clean(arc.seal[1])}"
        clauses.append(authres.arc.ARCAuthenticationResult(result=arc.result, result_comment=detail))
        ar = authres.AuthenticationResultsHeader(authserv_id=self.authserv_id, results=clauses)
        # authres writes one line; folded after each ";" (no value of ours holds one: _clean).
        value = ";\r\n\t".join([ar.authserv_id, *map(str, ar.results)])
        return f"{ar.HEADER_FIELD_NAME}: {value}\r\n".encode("ascii")

    def is_ours(self, value: bytes) -> bool:
        """An Authentication-Results field that claims our authserv-id (a forgery on arrival)."""
        first = value.strip().split(b";", 1)[0].strip().split()
        return bool(first) and first[0].decode("ascii", "replace").lower() == self.authserv_id.lower()

    # -- seal -----------------------------------------------------------------
    def seal(self, message: bytes) -> bytes:
        """The ARC set (AAR, AMS, AS) to prepend; `message` must carry our Authentication-Results.
        Raises SealError when no set can be made: the caller relays the message unsealed and
        says so, never silently."""
        arc = self.cfg.arc
        assert self.arc_key is not None
        # The usual identity and content headers, and every one of our decision headers: the
        # seal vouches for what we decided, not only for the body we changed.
        present = [name for name, _ in _header_fields(message)]
        sign = [n for n in _SEALED if n in present]
        sign += [n for n in present if n.startswith(b"x-smtp-offload")]
        try:
            lines = dkim.arc_sign(message, arc.selector.encode(), arc.domain.encode(), self.arc_key,
                                  self.authserv_id.encode(), include_headers=sign, linesep=b"\r\n",
                                  logger=_DKIMPY_LOG)
        except Exception as exc:  # hostile headers can trip dkimpy in more ways than DKIMException
            raise SealError(f"{type(exc).__name__}: {exc}") from exc
        if not lines:
            # dkimpy ends the chain without a word when it finds no Authentication-Results of
            # ours, or none with an arc= result for a message that already has a chain.
            raise SealError("no ARC set made: no usable arc= result in our Authentication-Results")
        return b"".join(lines)


def check_start(cfg: AuthConfig) -> None:
    """The start-up check of `serve` and `check-config`: a broken ARC key (or no selector,
    domain or key file) is a config error before anything starts, never a per-message one."""
    if cfg.arc.enabled:
        load_arc_key(cfg)


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


def strip_forged(data: bytes | FileBytes, auth: Authenticator) -> bytes | FileBytes:
    """Remove Authentication-Results fields in the top header block that claim our
    authserv-id: only this hop may write those (RFC 8601 5).

    A spooled message that has some is copied without them into a new spool file beside it,
    streamed (the caller closes the copy; the rare forged message costs a disk copy, never its
    size in memory); without any, `data` itself comes back."""
    if b"authentication-results" not in _head(data):  # most mail: nothing to look at
        return data
    kept, keep_from = [], 0
    for f in headers.fields(data):
        if f.name == "authentication-results" and auth.is_ours(f.value):
            kept.append((keep_from, f.start))
            keep_from = f.end
    if not kept:
        return data
    kept.append((keep_from, len(data)))
    if isinstance(data, bytes):
        return b"".join(data[a:b] for a, b in kept)
    out = SpoolWriter(data.directory or tempfile.gettempdir())
    try:
        for a, b in kept:
            for chunk in data.chunks(a, b):
                out.write(chunk)
    except BaseException:
        out.abort()
        raise
    return out.finish(eight_bit=data.eight_bit, bare_newlines=data.bare_newlines)
