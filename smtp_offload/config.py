"""Configuration: one TOML file, validated completely at start (fail fast, like uvicorn's Config.load()).

Every problem is reported with the dotted key that caused it. Unknown keys are errors too:
a typo in a mail gateway's config should stop it, not silently fall back to a default.
The dataclass defaults below ARE the embedded default configuration
(config/default.toml mirrors them; a test keeps the two equal).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError
from .inspect import tables as inspect_tables

ACTIONS = ("strip", "reject")
# Keys of [policy] handed to inspect.InspectPolicy under the same names.
INSPECT_KEYS = ("suspicious_names", "block_active_content", "on_unknown", "on_polyglot", "on_encrypted_archive",
                "on_macros", "on_archive_limit", "archive_max_entries", "archive_max_depth",
                "archive_max_total_bytes", "archive_max_ratio", "archive_max_inflate_bytes")
SECRET_ENV = "SMTP_OFFLOAD_LINK_SECRET"
API_KEYS_ENV = "SMTP_OFFLOAD_API_KEYS"


@dataclass
class ServerConfig:
    listen: str = "127.0.0.1:2525"
    hostname: str = ""  # name in the greeting and Received header; empty = this host's FQDN
    accepted_domains: list[str] = field(default_factory=lambda: ["localhost"])
    max_message_bytes: int = 100 * 1024 * 1024
    max_recipients: int = 100
    max_line_length: int = 8192  # longer DATA lines are refused (RFC 5321 says 1000; real mail is sloppier)
    idle_timeout: float = 300.0  # seconds without a byte from the client (re-armed while DATA flows)
    data_timeout: float = 1800.0  # most seconds one message may take to arrive
    # Deadlines no byte re-arms (the idle timeout alone lets a trickle hold a session forever):
    command_timeout: float = 60.0  # one command line, from its first byte to its line end (421 4.4.2)
    envelope_timeout: float = 300.0  # connect (or end of the last message) until DATA is accepted (421 4.4.2)
    max_sessions: int = 500  # more concurrent connections get 421 4.3.2
    # Like Postfix's smtpd_client_connection_count_limit (also 50): one address cannot take
    # every session. 0 = off. IPv6 clients are counted per /64.
    max_sessions_per_client: int = 50  # more from one address get 421 4.7.0
    max_inflight_bytes: int = 1024 * 1024 * 1024  # message bytes arriving or processed at once (451 4.3.2 past it)
    drain_seconds: float = 60.0  # on SIGTERM, how long messages in flight may take to finish
    workers: int = 1  # processes sharing the ports (SO_REUSEPORT), each a full proxy
    smtputf8: bool = True
    # Bare CR or LF in DATA (like Postfix's smtpd_forbid_bare_newline): "normalize" turns them
    # into CRLF before anything is judged; "reject" refuses the message with 554 5.5.2.
    bare_newlines: str = "normalize"
    tls_cert: str = ""
    tls_key: str = ""
    require_tls: bool = False
    # PROXY protocol (v1 or v2) from a load balancer (HAProxy send-proxy, AWS NLB...): every
    # connection must start with its header, which gives the real client address. Only
    # enable it when every connection comes through the load balancer: anyone who can
    # reach the port directly could claim any address.
    proxy_protocol: bool = False
    proxy_protocol_timeout: float = 5.0  # seconds for the header to arrive, else the connection is closed


@dataclass
class DownstreamConfig:
    host: str = "127.0.0.1"
    port: int = 2526
    max_message_bytes: int = 40_000_000  # Genesys Cloud / NICE CXone: ~40 MB including base64
    max_attachments: int = 50  # Genesys Cloud caps an inbound email at 50 attachments
    helo_name: str = ""
    tls: str = "opportunistic"  # "none" | "opportunistic" | "required"
    tls_verify: bool = True
    connect_timeout: float = 30.0
    command_timeout: float = 120.0
    data_timeout: float = 600.0
    pool_size: int = 16  # idle connections kept for the next sessions (0: connect per session)
    pool_idle_seconds: float = 30.0  # kept no longer than this (below the downstream's idle timeout)


@dataclass
class PolicyConfig:
    offload_over_bytes: int = 10 * 1024 * 1024  # decoded file size
    on_empty: str = "strip"
    on_spoofed: str = "strip"
    on_blocked: str = "strip"
    on_storage_failure: str = "keep"  # "keep" (fail open) | "strip" (remove with a notice)
    # Blocked whatever they are called: categories ("executable", "disk-image", "onenote",
    # "archive") or detected MIME types.
    blocked_types: list[str] = field(default_factory=lambda: sorted(inspect_tables.DEFAULT_BLOCKED_TYPES))
    blocked_extensions: list[str] = field(default_factory=lambda: sorted(inspect_tables.DEFAULT_BLOCKED_EXTENSIONS))
    allowed_types: list[str] = field(default_factory=list)  # empty = no allow-list
    suspicious_names: bool = True  # bidi controls, double extensions, CLSID names, paths... -> spoofed
    block_active_content: bool = True  # HTML/SVG with script -> blocked
    on_unknown: str = "keep"  # bytes nothing recognises: "keep" | "block"
    on_polyglot: str = "block"  # a PDF or image that is also a ZIP
    on_encrypted_archive: str = "keep"  # cannot be looked into
    on_macros: str = "keep"  # macro-enabled Office files (a .docx with macros is spoofed regardless)
    on_archive_limit: str = "block"  # an archive past a bound below
    archive_max_entries: int = 10_000
    archive_max_depth: int = 3
    archive_max_total_bytes: int = 1 << 30
    archive_max_ratio: float = 200.0
    archive_max_inflate_bytes: int = 8 << 20  # most bytes decompressed to judge one attachment
    storage_timeout: float = 120.0  # budget for storing all files of one message
    on_signed: str = "rewrite"  # DKIM-signed mail: "rewrite" (then ARC-seal) or "skip" (relay untouched)
    # With on_signed = "skip", only mail with a passing DKIM signature from one of these
    # domains skips inspection (".example.com" also takes subdomains); empty: none does.
    skip_signed_domains: list[str] = field(default_factory=list)
    # Hidden carriers (README, Security model): Outlook winmail.dat, message/partial fragments,
    # encrypted mail, uuencoded files inside body text.
    on_tnef: str = "strip"  # "keep" | "strip" | "reject"
    on_partial: str = "reject"  # "keep" | "reject"
    on_encrypted: str = "keep"  # "keep" | "reject"
    on_uuencode: str = "inspect"  # "inspect" (a bad file refuses the message) | "keep"
    # MIME that parsers read differently (duplicate content headers, conflicting names, a
    # missing closing boundary): "rebuild" into the one form we judged, or "reject" (550 5.6.0).
    on_ambiguous_mime: str = "rebuild"
    # Bounds on the work one message may cause; past them the message gets 550 5.6.0.
    max_mime_depth: int = 30
    max_mime_parts: int = 1000
    max_header_bytes: int = 512 * 1024  # one header block
    max_header_params: int = 64
    max_encoded_words: int = 64  # in one Content-Type / Content-Disposition
    breaker_failures: int = 5  # consecutive messages whose storage failed before the breaker opens
    breaker_cooldown_seconds: float = 30.0  # then one probe message is let through


@dataclass
class LocalStorageConfig:
    path: str = "var/store"


@dataclass
class S3StorageConfig:
    # Credentials never come from this file: boto3's standard chain (environment, shared
    # profile, instance or task role) supplies them.
    bucket: str = ""
    region: str = ""
    endpoint_url: str = ""  # MinIO, Ceph, R2, GCS interoperability...; empty = AWS
    prefix: str = "smtp-offload"
    sse: str = ""  # "" | "AES256" | "aws:kms"
    kms_key_id: str = ""
    addressing_style: str = "auto"  # "auto" | "path" | "virtual"
    multipart_threshold: int = 16 * 1024 * 1024
    part_size: int = 8 * 1024 * 1024
    max_concurrent_uploads: int = 4  # across all messages of this process
    connect_timeout: float = 10.0
    read_timeout: float = 60.0


@dataclass
class StorageConfig:
    backend: str = "local"
    # Optional key segment so retention rules can target a customer: "" (none),
    # "recipient-domain", or "header:<Name>" (e.g. "header:X-Customer-Id").
    tenant: str = ""
    local: LocalStorageConfig = field(default_factory=LocalStorageConfig)
    s3: S3StorageConfig = field(default_factory=S3StorageConfig)


@dataclass
class LinksConfig:
    mode: str = "redirect"  # "redirect" (link service mints a short URL per click) | "presigned"
    listen: str = "127.0.0.1:8025"
    base_url: str = "http://127.0.0.1:8025"
    ttl_seconds: int = 7 * 24 * 3600
    click_ttl_seconds: int = 300  # lifetime of the URL minted at each click (redirect mode)
    # The signing secret; prefer SMTP_OFFLOAD_LINK_SECRET or secret_file (first line signs,
    # further lines still verify, for rotation).
    secret: str = ""
    old_secrets: list[str] = field(default_factory=list)  # still accepted, never used to sign
    secret_file: str = "var/link-secret"
    # Bearer keys for the refresh/revoke API; empty disables it. Env: SMTP_OFFLOAD_API_KEYS (comma-separated).
    api_keys: list[str] = field(default_factory=list)
    # With server.workers > 1, worker i also serves this app (/metrics, /readyz...) on the
    # links.listen host at port worker_port_base + i, so each worker can be scraped; the
    # shared port reaches an arbitrary worker. 0 = off.
    worker_port_base: int = 0


@dataclass
class ArcConfig:
    enabled: bool = False
    selector: str = ""
    domain: str = ""  # the ADMD the downstream must trust (see README)
    private_key_file: str = ""  # PEM RSA key; the public key is published at <selector>._domainkey.<domain>
    seal_unchanged: bool = False  # also seal messages the proxy did not change


@dataclass
class AuthConfig:
    authserv_id: str = ""  # in Authentication-Results and ARC; empty: server.hostname
    verify_dkim: bool = True
    dns_timeout: float = 5.0  # budget for all DNS lookups of one message; past it: temperror
    dns_servers: list[str] = field(default_factory=list)  # "ip" or "ip:port"; empty: the system's resolver
    arc: ArcConfig = field(default_factory=ArcConfig)


@dataclass
class LogConfig:
    format: str = "json"  # "json" | "console"
    level: str = "info"


@dataclass
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    downstream: DownstreamConfig = field(default_factory=DownstreamConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    links: LinksConfig = field(default_factory=LinksConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    log: LogConfig = field(default_factory=LogConfig)
    source: str = field(default="<embedded default>", metadata={"internal": True})


def load(path: str | os.PathLike | None = None, env: typing.Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file; None gives the embedded default."""
    env = os.environ if env is None else env
    raw: dict = {}
    source = "<embedded default>"
    if path is not None:
        source = str(path)
        try:
            with open(path, "rb") as fh:
                raw = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    cfg = _build(Config, raw, "")
    cfg.source = source
    if env.get(SECRET_ENV):
        cfg.links.secret = env[SECRET_ENV]
    if env.get(API_KEYS_ENV):
        cfg.links.api_keys = [k.strip() for k in env[API_KEYS_ENV].split(",") if k.strip()]
    validate(cfg)
    return cfg


def _build(cls, raw: typing.Any, prefix: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    for key in raw:
        if key not in fields:
            hint = ""
            if any(w in key.lower() for w in ("access_key", "secret_key", "session_token", "credential")):
                hint = (" (credentials never go in this file: use the environment, a shared profile or an "
                        "instance/task role)")
            raise ConfigError(f"{prefix}{key}: unknown key{hint}")
    kwargs = {}
    for name in fields:
        if name not in raw:
            continue
        key, value, hint = f"{prefix}{name}", raw[name], hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, key + ".")
        else:
            kwargs[name] = _coerce(key, value, hint)
    return cls(**kwargs)


def _coerce(key: str, value: typing.Any, hint) -> typing.Any:
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
        return [_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if hint is bool and not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if hint is str and not isinstance(value, str):
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


def parse_hostport(key: str, value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{key}: expected \"host:port\", got {value!r}")
    return host, int(port)


def parse_dns_server(key: str, value: str) -> tuple[str, int]:
    """"192.0.2.53", "192.0.2.53:5353", "2001:db8::53" or "[2001:db8::53]:5353" -> (ip, port)."""
    host, port = value, "53"
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                host = ""
            port = rest[1:]
    elif value.count(":") == 1:
        host, _, port = value.partition(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        host = ""
    if not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ConfigError(f'{key}: expected an IP address or "ip:port" of a DNS server, got {value!r}')
    return host, int(port)


def _choice(key: str, value: str, choices: typing.Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{key}: must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")


def _positive(key: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{key}: must be greater than 0, got {value!r}")


def validate(cfg: Config) -> None:
    s, d, p, links = cfg.server, cfg.downstream, cfg.policy, cfg.links
    parse_hostport("server.listen", s.listen)
    parse_hostport("links.listen", links.listen)
    if not s.accepted_domains:
        raise ConfigError("server.accepted_domains: must name at least one domain (this hop is not an open relay)")
    for i, dom in enumerate(s.accepted_domains):
        if not dom.strip(".") or any(c.isspace() or c in "@,;<>" for c in dom):
            raise ConfigError(f"server.accepted_domains[{i}]: not a domain name: {dom!r}")
    for key, val in (
        ("server.max_message_bytes", s.max_message_bytes), ("server.max_recipients", s.max_recipients),
        ("server.idle_timeout", s.idle_timeout), ("downstream.port", d.port),
        ("server.data_timeout", s.data_timeout), ("server.max_sessions", s.max_sessions),
        ("server.command_timeout", s.command_timeout), ("server.envelope_timeout", s.envelope_timeout),
        ("server.max_inflight_bytes", s.max_inflight_bytes), ("server.drain_seconds", s.drain_seconds),
        ("server.workers", s.workers), ("server.proxy_protocol_timeout", s.proxy_protocol_timeout),
        ("downstream.max_message_bytes", d.max_message_bytes), ("downstream.max_attachments", d.max_attachments),
        ("downstream.connect_timeout", d.connect_timeout), ("downstream.command_timeout", d.command_timeout),
        ("downstream.data_timeout", d.data_timeout), ("policy.offload_over_bytes", p.offload_over_bytes),
        ("downstream.pool_idle_seconds", d.pool_idle_seconds),
        ("policy.storage_timeout", p.storage_timeout), ("links.ttl_seconds", links.ttl_seconds),
        ("policy.breaker_failures", p.breaker_failures), ("policy.breaker_cooldown_seconds", p.breaker_cooldown_seconds),
    ):
        _positive(key, val)
    _choice("server.bare_newlines", s.bare_newlines, ("normalize", "reject"))
    if s.max_line_length < 1000:
        raise ConfigError(f"server.max_line_length: must be at least 1000 (RFC 5321), got {s.max_line_length}")
    if bool(s.tls_cert) != bool(s.tls_key):
        raise ConfigError("server.tls_cert: tls_cert and tls_key must be set together")
    if s.require_tls and not s.tls_cert:
        raise ConfigError("server.require_tls: needs server.tls_cert and server.tls_key")
    for key in ("tls_cert", "tls_key"):
        val = getattr(s, key)
        if val and not Path(val).is_file():
            raise ConfigError(f"server.{key}: file not found: {val}")
    if s.max_sessions_per_client < 0:
        raise ConfigError(f"server.max_sessions_per_client: must be 0 (off) or more, got {s.max_sessions_per_client}")
    if d.pool_size < 0:
        raise ConfigError(f"downstream.pool_size: must be 0 or more, got {d.pool_size}")
    if d.port > 65535:
        raise ConfigError(f"downstream.port: not a port number: {d.port}")
    if not d.host:
        raise ConfigError("downstream.host: must not be empty")
    _choice("downstream.tls", d.tls, ("none", "opportunistic", "required"))
    for key in ("on_empty", "on_spoofed", "on_blocked"):
        _choice(f"policy.{key}", getattr(p, key), ACTIONS)
    _choice("policy.on_storage_failure", p.on_storage_failure, ("keep", "strip"))
    _choice("policy.on_ambiguous_mime", p.on_ambiguous_mime, ("rebuild", "reject"))
    for key in ("on_unknown", "on_polyglot", "on_encrypted_archive", "on_macros", "on_archive_limit"):
        _choice(f"policy.{key}", getattr(p, key), ("keep", "block"))
    for key in ("archive_max_entries", "archive_max_depth", "archive_max_total_bytes", "archive_max_ratio",
                "archive_max_inflate_bytes"):
        _positive(f"policy.{key}", getattr(p, key))
    _choice("policy.on_tnef", p.on_tnef, ("keep", "strip", "reject"))
    _choice("policy.on_signed", p.on_signed, ("rewrite", "skip"))
    if p.on_signed == "skip" and not cfg.auth.verify_dkim:
        # Unverified, any DKIM-Signature header (anyone can write one) would skip inspection.
        raise ConfigError('policy.on_signed: "skip" needs auth.verify_dkim = true '
                          "(only a verified signature from policy.skip_signed_domains may skip inspection)")
    for i, dom in enumerate(p.skip_signed_domains):
        if not dom.strip(".") or any(c.isspace() or c in "@,;<>" for c in dom):
            raise ConfigError(f"policy.skip_signed_domains[{i}]: not a domain name: {dom!r}")
    _positive("auth.dns_timeout", cfg.auth.dns_timeout)
    if cfg.auth.authserv_id and not re.fullmatch(r"[A-Za-z0-9._-]+", cfg.auth.authserv_id):
        raise ConfigError(f"auth.authserv_id: expected a host name, got {cfg.auth.authserv_id!r}")
    for i, server in enumerate(cfg.auth.dns_servers):
        parse_dns_server(f"auth.dns_servers[{i}]", server)
    if cfg.auth.arc.enabled:
        from .auth import load_arc_key  # reads and parses the key: a broken key stops the start

        load_arc_key(cfg.auth)
    _choice("policy.on_partial", p.on_partial, ("keep", "reject"))
    _choice("policy.on_encrypted", p.on_encrypted, ("keep", "reject"))
    _choice("policy.on_uuencode", p.on_uuencode, ("inspect", "keep"))
    for key in ("max_mime_depth", "max_mime_parts", "max_header_bytes", "max_header_params", "max_encoded_words"):
        _positive(f"policy.{key}", getattr(p, key))
    _choice("storage.backend", cfg.storage.backend, ("local", "s3"))
    if cfg.storage.backend == "s3":
        _validate_s3(cfg.storage.s3)
    t = cfg.storage.tenant
    if t not in ("", "recipient-domain") and not (t.startswith("header:") and len(t) > len("header:")):
        raise ConfigError(f'storage.tenant: must be "", "recipient-domain" or "header:<Name>", got {t!r}')
    if not cfg.storage.local.path:
        raise ConfigError("storage.local.path: must not be empty")
    if not links.base_url.startswith(("http://", "https://")):
        raise ConfigError(f"links.base_url: must start with http:// or https://, got {links.base_url!r}")
    if links.secret and len(links.secret) < 32:
        raise ConfigError(f"links.secret: must be at least 32 characters (or set {SECRET_ENV})")
    for i, old in enumerate(links.old_secrets):
        if len(old) < 32:
            raise ConfigError(f"links.old_secrets[{i}]: must be at least 32 characters")
    for i, key in enumerate(links.api_keys):
        if len(key) < 24:
            raise ConfigError(f"links.api_keys[{i}]: must be at least 24 characters")
    _choice("links.mode", links.mode, ("redirect", "presigned"))
    _positive("links.click_ttl_seconds", links.click_ttl_seconds)
    if not 0 <= links.worker_port_base <= 65535 - s.workers + 1:
        raise ConfigError(f"links.worker_port_base: must be 0 (off) or a port number, got {links.worker_port_base}")
    if links.mode == "presigned":
        if cfg.storage.backend != "s3":
            raise ConfigError('links.mode: "presigned" needs storage.backend = "s3"')
        if links.ttl_seconds > 7 * 24 * 3600:
            raise ConfigError("links.ttl_seconds: presigned URLs cannot live longer than 7 days (604800); "
                              'use links.mode = "redirect" for longer links')
    _choice("log.format", cfg.log.format, ("json", "console"))
    _choice("log.level", cfg.log.level, ("debug", "info", "warning", "error"))


def _validate_s3(s3: S3StorageConfig) -> None:
    if len(s3.bucket) < 3:
        raise ConfigError('storage.s3.bucket: required with storage.backend = "s3" (3 or more characters)')
    if s3.endpoint_url and not s3.endpoint_url.startswith(("http://", "https://")):
        raise ConfigError(f"storage.s3.endpoint_url: must start with http:// or https://, got {s3.endpoint_url!r}")
    _choice("storage.s3.sse", s3.sse, ("", "AES256", "aws:kms"))
    if s3.kms_key_id and s3.sse != "aws:kms":
        raise ConfigError('storage.s3.kms_key_id: only used with storage.s3.sse = "aws:kms"')
    _choice("storage.s3.addressing_style", s3.addressing_style, ("auto", "path", "virtual"))
    if s3.part_size < 5 * 1024 * 1024:
        raise ConfigError("storage.s3.part_size: S3 needs parts of at least 5 MiB (5242880)")
    if s3.multipart_threshold < s3.part_size:
        raise ConfigError("storage.s3.multipart_threshold: must be at least storage.s3.part_size")
    for key in ("max_concurrent_uploads", "connect_timeout", "read_timeout"):
        _positive(f"storage.s3.{key}", getattr(s3, key))


def toml_value(value: typing.Any) -> str:
    """A scalar or list of scalars as TOML (JSON's strings, numbers and lists are TOML too)."""
    return str(value).lower() if isinstance(value, bool) else json.dumps(value)


def dump_sections(sections: dict[str, dict[str, typing.Any]]) -> str:
    """`{"server": {"listen": ...}, "storage.s3": {...}}` as a TOML document."""
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def as_dict(cfg: Config) -> dict:
    """The effective config with secrets masked (for check-config)."""
    out = dataclasses.asdict(cfg)
    out.pop("source", None)
    for key in ("secret", "old_secrets", "api_keys"):
        if out["links"][key]:
            out["links"][key] = "********" if isinstance(out["links"][key], str) else ["********"] * len(out["links"][key])
    return out
