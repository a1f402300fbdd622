"""Fetch a file at a URL a caller gives, without letting the caller aim us at our own network.

Contact-center flows (e.g. Genesys web messaging) hand over an attachment as a short-lived
signed URL: we fetch it at once, back off when its server answers 429/503, and tell the
caller plainly when the link has expired (401/403/410). The URL comes from outside, so it
must not reach what only we can reach (SSRF): loopback, the private network, cloud metadata
at 169.254.169.254. Two layers guard that:

- check_url(), before any request: https only, no user:pass@, a valid port, and an IP literal
  host must be public. aiohttp never asks a resolver about an IP literal, so this check is
  the only one such a host meets.
- SafeResolver, in the connector of every session we fetch with: a host name is resolved
  once, and refused when ANY of its addresses is not public. The connector then connects to
  exactly the addresses that were checked, so a name re-resolving to 127.0.0.1 between the
  check and the connection (DNS rebinding) has nothing to win.

Redirects are followed by hand, and every Location meets both layers again.
api.fetch_allow_hosts (FetchPolicy.allow_hosts) lets an operator open a private host, e.g. an
internal file server, which may then use http too.

No message carries the URL's path or query: a signed URL's signature is a credential.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import socket
import time
import typing
import weakref
from dataclasses import dataclass
from datetime import timezone
from email.utils import parsedate_to_datetime

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from smtp_offload.units import human_size

IPAddress = typing.Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = typing.Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

MAX_REDIRECTS = 3
CHUNK = 64 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_EXPIRED = frozenset({401, 403, 410})
_RETRIED = {429: "too many requests", 503: "service unavailable"}
# 2002::/16 (6to4) and 64:ff9b::/96 (NAT64) carry an IPv4 address that a gateway would reach.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# "127.1", "2130706433", "0x7f.1": inet_aton() forms of an address that look like host names.
_NUMERIC_LABEL = re.compile(r"(0x[0-9a-f]*|[0-9]+)", re.IGNORECASE)
_ALLOW_HINT = "only public hosts can be fetched, unless api.fetch_allow_hosts lists this one"


MAX_MESSAGE = 500


class FetchError(Exception):
    """A fetch that failed, as the API answers it: `status` is OUR HTTP status, `error` the
    machine code of the error body, `message` its text for a person."""

    def __init__(self, status: int, error: str, message: str):
        if len(message) > MAX_MESSAGE:  # it may echo a host or scheme of any length: answers stay small
            message = message[:MAX_MESSAGE] + "…"
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message


@dataclass(frozen=True)
class FetchPolicy:
    allow_hosts: tuple[str, ...] = ()   # host names, IPs or CIDRs that may be private/loopback and may use http
    timeout: float = 30.0               # total seconds for the whole fetch incl. retries
    max_retries: int = 3                # retries after 429/503
    max_bytes: int = 100 * 1024 * 1024

    def __post_init__(self) -> None:
        # The config may hand a list: keep a tuple, hashable and comparable.
        object.__setattr__(self, "allow_hosts", tuple(self.allow_hosts))
        # A mistyped CIDR ("10.0.0.0/33") fails when the config loads, not silently on a fetch.
        allow_list(self.allow_hosts)


def _not_allowed(message: str) -> FetchError:
    return FetchError(400, "url_not_allowed", message)


def _fetch_failed(message: str) -> FetchError:
    return FetchError(502, "fetch_failed", message)


def _norm_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def parse_ip(host: str) -> IPAddress | None:
    """The address `host` spells (brackets and a zone allowed), IPv4-mapped IPv6 as its IPv4; else None."""
    try:
        ip = ipaddress.ip_address(_norm_host(host))
    except ValueError:
        return None
    # ::ffff:127.0.0.1 is 127.0.0.1 to the kernel: judge and allow-list it as such.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_public(ip: IPAddress) -> bool:
    """May a fetch reach `ip` without the allow-list? Only globally routed unicast addresses."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_public(ip.ipv4_mapped)
        embedded = ip.sixtofour or (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in _NAT64 else None)
        if embedded is not None and not is_public(embedded):
            return False
    # is_global alone lets multicast through (224.0.0.0/4, ff0e::/16): name every class we refuse.
    return ip.is_global and not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
                                 or ip.is_reserved or ip.is_unspecified)


@dataclass(frozen=True)
class AllowList:
    names: frozenset[str]
    networks: tuple[IPNetwork, ...]

    def host(self, host: str) -> bool:
        """Is the URL's host listed, by name or (an IP literal) by address?"""
        if _norm_host(host) in self.names:
            return True
        ip = parse_ip(host)
        return ip is not None and self.address(ip)

    def address(self, ip: IPAddress) -> bool:
        return any(ip in net for net in self.networks)  # a v4 address is never in a v6 network


@functools.lru_cache(maxsize=64)
def allow_list(entries: tuple[str, ...]) -> AllowList:
    """Parse fetch_allow_hosts: an IP or CIDR is an address range, anything else a host name."""
    names, networks = set(), []
    for entry in entries:
        text = _norm_host(entry)
        if not text:
            continue
        ip = parse_ip(text)
        if ip is not None:
            networks.append(ipaddress.ip_network(ip))
        elif "/" in text:
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                raise ValueError(f"fetch_allow_hosts: {entry!r} is not a valid IP network (CIDR)") from None
        else:
            names.add(text)
    return AllowList(frozenset(names), tuple(networks))


def parse_url(url: str | URL) -> URL:
    """A URL as we will send it. A signed URL goes out byte for byte (encoded=True): yarl's
    re-quoting would turn %2F in the signature into / and break it. Text that is not
    printable ASCII is not a signed URL; yarl quotes it."""
    if isinstance(url, URL):
        return url
    try:
        return URL(url, encoded=url.isascii() and url.isprintable() and " " not in url)
    except (ValueError, TypeError):
        raise _not_allowed("the link is not a valid URL") from None


def check_url(url: str | URL, allow_hosts: tuple[str, ...] = ()) -> URL:
    """The checks a URL meets before any connection; returns it parsed. Raises FetchError(400)."""
    u = parse_url(url)
    try:
        scheme, host, port = u.scheme, u.host, u.port
    except ValueError:  # e.g. a port out of range
        raise _not_allowed("the link's port is not valid") from None
    allow = allow_list(tuple(allow_hosts))
    if scheme not in ("https", "http"):
        shown = f"this link is {scheme}:" if scheme else "this link has no scheme"
        raise _not_allowed(f"only https links can be fetched, and {shown}")
    if not host:
        raise _not_allowed("the link has no host name")
    if u.user is not None or u.password is not None or "@" in (u.raw_authority or ""):
        raise _not_allowed("the link carries a user name or password (user:pass@host), which is not "
                           "accepted; pass a signed URL instead")
    if port is None or not 0 < port < 65536:
        raise _not_allowed("the link's port is not valid")
    if scheme == "http" and not allow.host(host):
        raise _not_allowed(f"the link must use https: plain http is accepted only for hosts that "
                           f"api.fetch_allow_hosts lists, and {host} is not one")
    ip = parse_ip(host)
    if ip is None and all(_NUMERIC_LABEL.fullmatch(label) for label in host.rstrip(".").split(".")):
        raise _not_allowed(f"the link's host {host} is an IP address in a non-standard form; "
                           "write it as a dotted quad, or better, use the host's name")
    if ip is not None and not is_public(ip) and not allow.address(ip):
        raise _not_allowed(f"the link's host {host} is a private, loopback or otherwise internal "
                           f"address; {_ALLOW_HINT}")
    return u


class _Refused(OSError):
    """SafeResolver's refusal. An OSError so that aiohttp passes it on (as the os_error of a
    ClientConnectorDNSError) like any resolver failure; fetch() turns it into a 400."""


class SafeResolver(AbstractResolver):
    """Resolves through `inner` (aiohttp's ThreadedResolver) and refuses a host name when any
    address it resolves to is not public, unless the name or the address is allow-listed.
    Refusing the whole name rather than dropping the bad addresses: a public name that also
    points inside is either a misconfiguration or an attack, not something to half-serve."""

    def __init__(self, allow_hosts: tuple[str, ...] = (), inner: AbstractResolver | None = None):
        self._allow = allow_list(tuple(allow_hosts))
        self._inner = inner if inner is not None else aiohttp.ThreadedResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if self._allow.names and _norm_host(host) in self._allow.names:
            return results
        for result in results:
            ip = parse_ip(result["host"])
            if ip is None or not (is_public(ip) or self._allow.address(ip)):
                raise _Refused(f"the link's host {_norm_host(host)} resolves to a private, loopback or "
                               f"otherwise internal address ({result['host']}); {_ALLOW_HINT}")
        return results

    async def close(self) -> None:
        await self._inner.close()


# Sessions made by open_session(), with the allow-list their resolver enforces: fetch() takes
# no other session, since one without a SafeResolver would connect wherever DNS says.
_SAFE_SESSIONS: weakref.WeakKeyDictionary[aiohttp.ClientSession, tuple[str, ...]] = weakref.WeakKeyDictionary()


def open_session(policy: FetchPolicy) -> aiohttp.ClientSession:
    """A session for fetch(), e.g. to share among fetches; the caller closes it."""
    connector = aiohttp.TCPConnector(
        resolver=SafeResolver(policy.allow_hosts),
        use_dns_cache=False,  # every connection meets the resolver's check, with no cached answer
    )
    # trust_env=False: an HTTP(S)_PROXY from the environment would have the proxy's address
    # checked instead of the target's. Time is bounded by fetch() itself.
    session = aiohttp.ClientSession(connector=connector, trust_env=False,
                                    timeout=aiohttp.ClientTimeout(total=None))
    _SAFE_SESSIONS[session] = tuple(policy.allow_hosts)
    return session


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds a Retry-After header asks to wait (delay-seconds or an HTTP-date); None when
    absent or unreadable. A date in the past is 0."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"[0-9]+", value):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def status_error(status: int, host: str) -> FetchError:
    """The error for an answer we do not retry, follow or read."""
    if status in _EXPIRED:
        return FetchError(422, "url_expired", f"the file's link has expired or was refused (HTTP {status}); "
                                              "fetch a fresh URL and try again")
    if status == 404:
        return FetchError(422, "url_not_found", "the file's server has no file at this link (HTTP 404); "
                                                "check the link or fetch a fresh one")
    return _fetch_failed(f"the file's server ({host}) answered HTTP {status}; try again later, "
                         "or check the link if it keeps failing")


def _client_error(exc: aiohttp.ClientError, host: str, policy: FetchPolicy) -> FetchError:
    """A readable error for what aiohttp raised: no traceback, no URL (its str() has both)."""
    if isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, _Refused):
        return _not_allowed(str(exc.os_error))
    if isinstance(exc, asyncio.TimeoutError):
        return _timeout(host, policy)
    if isinstance(exc, aiohttp.InvalidURL):
        return _not_allowed("the link (or a redirect it led to) is not a valid URL")
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        reason = f"{host}'s TLS certificate was not accepted (not valid for this name, or not from a trusted authority)"
    elif isinstance(exc, aiohttp.ClientSSLError):
        reason = f"the TLS handshake with {host} failed (is it an https server?)"
    elif isinstance(exc, aiohttp.ClientConnectorDNSError):
        # The link names no host that exists: the caller's input to fix, not our gateway failing.
        return FetchError(422, "url_unreachable", f"the file could not be fetched: the host name {host} "
                                                  "could not be resolved; check the link")
    elif isinstance(exc, aiohttp.ClientConnectorError):
        what = "refused the connection" if isinstance(exc.os_error, ConnectionRefusedError) else "could not be reached"
        reason = f"{host} {what}"
    elif isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError)):
        reason = f"the connection to {host} broke before the whole file arrived"
    else:
        reason = f"{host} gave an answer that could not be read ({type(exc).__name__})"
    return _fetch_failed(f"the file could not be fetched: {reason}; try again later")


def _timeout(host: str, policy: FetchPolicy) -> FetchError:
    return FetchError(504, "fetch_timeout", f"the file's server ({host}) did not deliver the file within "
                                            f"{policy.timeout:g} seconds; try again later")


def _too_large(policy: FetchPolicy) -> FetchError:
    return FetchError(413, "too_large", f"the file is larger than the {human_size(policy.max_bytes)} limit")


async def fetch(url: str, dest: typing.BinaryIO, policy: FetchPolicy, *, session: aiohttp.ClientSession | None = None,
                sleep: typing.Callable[[float], typing.Awaitable[object]] = asyncio.sleep) -> int:
    """Stream the body into dest (a file opened wb); return the number of bytes. Raises FetchError.

    `session`, when given, must come from open_session(policy). On an error `dest` may hold
    part of a body: the caller discards it."""
    target = check_url(url, policy.allow_hosts)  # refused before anything is opened
    host = target.host or ""
    if session is not None and _SAFE_SESSIONS.get(session) != tuple(policy.allow_hosts):
        raise ValueError("fetch() needs a session made by open_session() with the same policy")
    own = session is None
    active = open_session(policy) if session is None else session
    try:
        # One deadline for everything, retries and their waits included.
        async with asyncio.timeout(policy.timeout):
            return await _fetch(active, target, dest, policy, sleep)
    except TimeoutError:
        raise _timeout(host, policy) from None
    except aiohttp.ClientError as exc:
        raise _client_error(exc, host, policy) from None
    finally:
        if own:
            await active.close()


async def _fetch(session: aiohttp.ClientSession, url: URL, dest: typing.BinaryIO, policy: FetchPolicy,
                 sleep: typing.Callable[[float], typing.Awaitable[object]]) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + policy.timeout
    redirects = retries = 0
    while True:
        async with session.get(url, allow_redirects=False) as resp:
            if resp.status == 200:
                return await _stream(resp, dest, policy)
            status, headers = resp.status, resp.headers
        # The response is released here: its connection goes back before we wait or move on.
        if status in _REDIRECTS:
            location = headers.get("Location")
            if not location:
                raise _fetch_failed(f"the file's server ({url.host}) answered a redirect (HTTP {status}) "
                                    "without saying where to; check the link")
            redirects += 1
            if redirects > MAX_REDIRECTS:
                raise _fetch_failed(f"the file's server redirected more than {MAX_REDIRECTS} times; "
                                    "check the link")
            try:
                url = check_url(url.join(parse_url(location)), policy.allow_hosts)
            except FetchError as exc:
                raise _not_allowed(f"the file's server redirected to another link, which was refused: "
                                   f"{exc.message}") from None
            continue
        if status not in _RETRIED:
            raise status_error(status, url.host or "")
        if retries >= policy.max_retries:
            raise _fetch_failed(f"the file's server kept answering {status} ({_RETRIED[status]}) after "
                                f"{retries} retries; try again later")
        asked = retry_after(headers.get("Retry-After"))
        remaining = max(0.0, deadline - loop.time())
        if asked is not None and asked > remaining:
            # Waiting would outlast the deadline and end in a timeout: say what really happened.
            raise _fetch_failed(f"the file's server answered {status} ({_RETRIED[status]}) and asked to "
                                f"wait {asked:g} seconds, longer than this fetch may still take; try again later")
        await sleep(min(asked if asked is not None else 2.0 ** retries, remaining))
        retries += 1


async def _stream(resp: aiohttp.ClientResponse, dest: typing.BinaryIO, policy: FetchPolicy) -> int:
    # A declared length over the limit is refused unread; the count below holds a server
    # that sends no length (chunked), or lies about it, or compresses.
    if resp.content_length is not None and resp.content_length > policy.max_bytes:
        raise _too_large(policy)
    total = 0
    async for chunk in resp.content.iter_chunked(CHUNK):
        total += len(chunk)
        if total > policy.max_bytes:
            raise _too_large(policy)
        dest.write(chunk)  # a local file: 64 KiB writes do not stall the loop noticeably
    return total
