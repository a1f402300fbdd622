"""Configuration: one TOML file, validated completely at start (fail fast, like uvicorn's Config.load()).

Every problem is reported with the dotted key that caused it. Unknown keys are errors too:
a typo in a mail gateway's config should stop it, not silently fall back to a default.
The dataclass defaults below ARE the embedded default configuration
(config/default.toml mirrors them; a test keeps the two equal).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import ipaddress
import json
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .delivery.policy import BareNewlines, HoldPolicy, PlanPolicy, PreparePolicy, Signed, SignedPolicy
from .errors import ConfigError
from .inspect.policy import InspectPolicy
from . import options as option_types
from .options import positive
from .mime.scan import Limits as MimeLimits

SECRET_ENV = "SMTP_OFFLOAD_LINK_SECRET"
API_KEYS_ENV = "SMTP_OFFLOAD_API_KEYS"


class DownstreamTls(enum.StrEnum):
    NONE = "none"
    OPPORTUNISTIC = "opportunistic"
    REQUIRED = "required"


class Backend(enum.StrEnum):
    LOCAL = "local"
    S3 = "s3"
    AZURE = "azure"
    GCS = "gcs"


class LinksMode(enum.StrEnum):
    REDIRECT = "redirect"  # the link service mints a short-lived URL per click
    PRESIGNED = "presigned"  # the store's own URL goes into the mail


class Sse(enum.StrEnum):
    NONE = ""
    AES256 = "AES256"
    KMS = "aws:kms"


class Addressing(enum.StrEnum):
    AUTO = "auto"
    PATH = "path"
    VIRTUAL = "virtual"


class LogFormat(enum.StrEnum):
    JSON = "json"
    CONSOLE = "console"


class LogLevel(enum.StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class Scope(enum.StrEnum):
    """What an API key may do (links.api_keys)."""
    INSPECT = "inspect"  # POST /api/v1/inspect
    UPLOAD = "upload"  # POST /api/v1/upload/attachment, GET /api/v1/jobs/{id}
    LINKS = "links"  # /api/v1/links/refresh, revoke, show
    PORTAL = "portal"  # /api/v1/portal/sessions: upload links for customers
    QUARANTINE = "quarantine"  # /api/v1/quarantine: list, show, release and delete held files


class TenantFrom(enum.Enum):
    NONE = "none"
    RECIPIENT_DOMAIN = "recipient-domain"
    HEADER = "header"


class _Options:
    """Values given as plain strings (code and tests write mode="presigned") become the option's
    Enum, checked like the file's (options.check)."""

    def __post_init__(self) -> None:
        option_types.coerce(self)


def flat(cls):
    """A stage's policy whose options sit directly in the enclosing table ([policy] on_empty = ...)."""
    return field(default_factory=cls, metadata={"flat": True})


@dataclass
class ServerConfig(_Options):
    listen: str = "127.0.0.1:2525"
    hostname: str = ""  # name in the greeting and Received header; empty = this host's FQDN
    accepted_domains: list[str] = field(default_factory=lambda: ["localhost"])
    max_message_bytes: int = positive(100 * 1024 * 1024)
    max_recipients: int = positive(100)
    max_line_length: int = 8192  # longer DATA lines are refused (RFC 5321 says 1000; real mail is sloppier)
    idle_timeout: float = positive(300.0)  # seconds without a byte from the client (re-armed while DATA flows)
    data_timeout: float = positive(1800.0)  # most seconds one message may take to arrive
    # Deadlines no byte re-arms (the idle timeout alone lets a trickle hold a session forever):
    command_timeout: float = positive(60.0)  # one command line, from its first byte to its line end (421 4.4.2)
    envelope_timeout: float = positive(300.0)  # connect (or end of the last message) until DATA is accepted (421 4.4.2)
    max_sessions: int = positive(500)  # more concurrent connections get 421 4.3.2
    # Like Postfix's smtpd_client_connection_count_limit (also 50): one address cannot take
    # every session. 0 = off. IPv6 clients are counted per /64.
    max_sessions_per_client: int = 50  # more from one address get 421 4.7.0
    max_inflight_bytes: int = positive(1024 * 1024 * 1024)  # message bytes arriving or processed at once (451 4.3.2 past it)
    # A message larger than this (or declared larger with SIZE=, then from its first byte) is
    # written to a private file in spool_dir as it arrives and processed from there, so memory
    # does not grow with message size (the file has no name: nothing is left behind, even by a
    # crash). Spooled bytes count in max_inflight_bytes too.
    spool_over_bytes: int = positive(1024 * 1024)
    spool_dir: str = "var/spool"
    drain_seconds: float = positive(60.0)  # on SIGTERM, how long messages in flight may take to finish
    workers: int = positive(1)  # processes sharing the ports (SO_REUSEPORT), each a full proxy
    smtputf8: bool = True
    # Bare CR or LF in DATA (like Postfix's smtpd_forbid_bare_newline): "normalize" turns them
    # into CRLF before anything is judged; "reject" refuses the message with 554 5.5.2.
    bare_newlines: BareNewlines = BareNewlines.NORMALIZE
    tls_cert: str = ""
    tls_key: str = ""
    require_tls: bool = False
    # PROXY protocol (v1 or v2) from a load balancer (HAProxy send-proxy, AWS NLB...): every
    # connection must start with its header, which gives the real client address. Only
    # enable it when every connection comes through the load balancer: anyone who can
    # reach the port directly could claim any address.
    proxy_protocol: bool = False
    proxy_protocol_timeout: float = positive(5.0)  # seconds for the header to arrive, else the connection is closed


@dataclass
class DownstreamConfig(_Options):
    host: str = "127.0.0.1"
    port: int = positive(2526)
    max_message_bytes: int = positive(40_000_000)  # Genesys Cloud / NICE CXone: ~40 MB including base64
    max_attachments: int = positive(50)  # Genesys Cloud caps an inbound email at 50 attachments
    helo_name: str = ""
    tls: DownstreamTls = DownstreamTls.OPPORTUNISTIC
    tls_verify: bool = True
    connect_timeout: float = positive(30.0)
    command_timeout: float = positive(120.0)
    data_timeout: float = positive(600.0)
    pool_size: int = 16  # idle connections kept for the next sessions (0: connect per session)
    pool_idle_seconds: float = positive(30.0)  # kept no longer than this (below the downstream's idle timeout)


@dataclass(frozen=True)
class PolicyConfig:
    """[policy]: each stage's options, side by side in one flat table (see each type)."""

    plan: PlanPolicy = flat(PlanPolicy)  # delivery/policy.py: what happens to the message
    prepare: PreparePolicy = flat(PreparePolicy)  # delivery/policy.py: storing offloaded files
    inspect: InspectPolicy = flat(InspectPolicy)  # inspect/policy.py: what files are refused
    signed: SignedPolicy = flat(SignedPolicy)  # delivery/policy.py: DKIM-signed mail
    mime: MimeLimits = flat(MimeLimits)  # mime/scan.py: bounds on the work one message may cause
    hold: HoldPolicy = flat(HoldPolicy)  # quarantine/: keeping stripped files for release


@dataclass
class LocalStorageConfig:
    path: str = "var/store"


@dataclass
class S3StorageConfig(_Options):
    # Credentials never come from this file: boto3's standard chain (environment, shared
    # profile, instance or task role) supplies them.
    bucket: str = ""
    region: str = ""
    endpoint_url: str = ""  # MinIO, Ceph, R2, GCS interoperability...; empty = AWS
    prefix: str = "smtp-offload"
    sse: Sse = Sse.NONE
    kms_key_id: str = ""
    addressing_style: Addressing = Addressing.AUTO
    multipart_threshold: int = 16 * 1024 * 1024
    part_size: int = 8 * 1024 * 1024
    max_concurrent_uploads: int = positive(4)  # across all messages of this process
    connect_timeout: float = positive(10.0)
    read_timeout: float = positive(60.0)


@dataclass
class AzureStorageConfig(_Options):
    # Either a connection string (Azurite, or an account key: prefer the environment variable
    # AZURE_STORAGE_CONNECTION_STRING to this file) or the account URL, whose credentials then
    # come from the Azure identity chain (environment, managed identity, Azure CLI...).
    container: str = ""
    connection_string: str = ""
    account_url: str = ""  # https://<account>.blob.core.windows.net
    prefix: str = "smtp-offload"
    max_concurrent_uploads: int = positive(4)  # across all messages of this process
    connect_timeout: float = positive(10.0)
    read_timeout: float = positive(60.0)


@dataclass
class GcsStorageConfig(_Options):
    # Credentials: Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, the metadata
    # server...). Presigned links need credentials that can sign (a service account).
    bucket: str = ""
    project: str = ""
    prefix: str = "smtp-offload"
    endpoint_url: str = ""  # an emulator (fake-gcs-server, gcp-storage-emulator); empty = Google
    # A service-account JSON key: used for requests and for signing links instead of ADC. With
    # endpoint_url (anonymous requests) it only signs, so presigned links can be tested there.
    credentials_file: str = ""
    max_concurrent_uploads: int = positive(4)
    timeout: float = positive(60.0)


@dataclass
class StoreConfig(_Options):
    """One store: the default one ([storage]) or a named one ([storage.stores.<name>])."""

    backend: Backend = Backend.LOCAL
    local: LocalStorageConfig = field(default_factory=LocalStorageConfig)
    s3: S3StorageConfig = field(default_factory=S3StorageConfig)
    azure: AzureStorageConfig = field(default_factory=AzureStorageConfig)
    gcs: GcsStorageConfig = field(default_factory=GcsStorageConfig)


@dataclass
class StorageConfig(StoreConfig):
    # Optional key segment so retention rules can target a customer: "" (none),
    # "recipient-domain", or "header:<Name>" (e.g. "header:X-Customer-Id").
    tenant: str = ""
    # Data residency: more stores, by name, and which tenants' files go to which one
    # (tenant -> store name); everyone else's go to the store above.
    stores: dict[str, StoreConfig] = field(default_factory=dict)
    routes: dict[str, str] = field(default_factory=dict)

    @property
    def tenant_from(self) -> tuple[TenantFrom, str]:
        """The tenant rule as (kind, header name or "")."""
        if self.tenant.startswith("header:"):
            return TenantFrom.HEADER, self.tenant[len("header:"):]
        return (TenantFrom.RECIPIENT_DOMAIN if self.tenant else TenantFrom.NONE), ""


@dataclass(frozen=True)
class ApiKey:
    """One entry of links.api_keys: a plain string (every scope) or a table."""

    key: str
    id: str = ""  # names the key in audit events and job records; default: derived from the key
    scopes: tuple[Scope, ...] = tuple(Scope)
    customer: str = ""  # bound to one customer id: X-CustomerId must be this one (or absent)
    rate_per_minute: int = 0  # 0: api.rate_per_minute

    def __post_init__(self) -> None:
        scopes = self.scopes if isinstance(self.scopes, (list, tuple, frozenset, set)) else (self.scopes,)
        object.__setattr__(self, "scopes", tuple(option_types.check(Scope, {}, s) for s in scopes))
        if not self.id and isinstance(self.key, str):
            # Not secret, stable across instances and restarts: the audit log can say which key.
            object.__setattr__(self, "id", "key-" + hashlib.sha256(self.key.encode("utf-8")).hexdigest()[:10])


@dataclass
class ApiConfig(_Options):
    """[api]: the upload and inspect API on the link server (issue 13)."""

    max_bytes: int = positive(100 * 1024 * 1024)  # a larger body gets 413
    # Genesys data actions time out after 1-60 s, CXone REST actions after at most 90 s: a file
    # bigger than this, or work taking longer than the deadline, is answered 202 with a job to poll.
    max_sync_bytes: int = positive(25 * 1024 * 1024)
    sync_deadline_seconds: float = positive(8.0)
    rate_per_minute: int = positive(600)  # per key, unless the key sets its own
    job_lease_seconds: float = positive(30.0)  # a PENDING job untouched this long is finished by any instance
    job_ttl_seconds: int = positive(24 * 3600)  # how long job and idempotency records answer
    # Inspect-by-URL: hosts, IPs or CIDRs that may be fetched although private or loopback
    # (and over http); everything else must be a public https URL.
    fetch_allow_hosts: list[str] = field(default_factory=list)
    fetch_timeout_seconds: float = positive(30.0)
    fetch_max_retries: int = 3
    spool_dir: str = ""  # request bodies are spooled here; "" = the system's temporary directory
    # Bodies judged and stored at once are held in memory: past this total, 503 with Retry-After.
    max_inflight_bytes: int = positive(512 * 1024 * 1024)


# What a customer may send through the portal unless [portal] accepted_types says otherwise:
# documents and pictures, the files a case needs. Judged by their bytes like any attachment.
PORTAL_TYPES = ["pdf", "jpg", "jpeg", "png", "gif", "heic", "tif", "tiff", "bmp", "webp", "doc", "docx", "xls",
                "xlsx", "ppt", "pptx", "odt", "ods", "odp", "rtf", "txt", "csv", "eml", "msg", "zip"]


@dataclass
class PortalConfig(_Options):
    """[portal]: the direct upload page for customers on the link server (issue 14)."""

    enabled: bool = True  # POST /api/v1/portal/sessions and the /u/ pages
    # The From of the message that delivers a session's files; "" = portal@<server.hostname>.
    sender: str = ""
    sender_name: str = "Customer upload portal"
    ttl_seconds: int = positive(7 * 24 * 3600)  # a session's lifetime unless ttlSeconds asks less
    max_ttl_seconds: int = positive(30 * 24 * 3600)
    max_file_bytes: int = positive(100 * 1024 * 1024)
    max_session_bytes: int = positive(500 * 1024 * 1024)
    max_files: int = positive(20)  # per session, refused files included
    sessions_per_customer: int = positive(20)  # open at once, per customerId
    uploads_per_minute: int = positive(30)  # new files per client address (each instance counts its own)
    form_max_bytes: int = positive(20 * 1024 * 1024)  # the upload form for browsers without JavaScript
    chunk_bytes: int = positive(8 * 1024 * 1024)  # one resumable (tus) request; what a cut-off can cost
    accepted_types: list[str] = field(default_factory=lambda: list(PORTAL_TYPES))  # extensions; [] = any
    # Files sent by themselves this long after the last upload; 0 = only when the customer presses Send.
    quiet_seconds: int = 0
    retry_seconds: float = positive(60.0)  # first delay after the downstream refused or was down; doubles
    max_retry_seconds: float = positive(3600.0)
    # Resumable uploads in progress live here until they are complete (then in the store's staging
    # area). Behind a balancer, route /u/ by path to one instance or share this directory.
    spool_dir: str = "var/portal"


@dataclass
class LinksConfig(_Options):
    mode: LinksMode = LinksMode.REDIRECT
    listen: str = "127.0.0.1:8025"
    base_url: str = "http://127.0.0.1:8025"
    ttl_seconds: int = positive(7 * 24 * 3600)
    click_ttl_seconds: int = positive(300)  # lifetime of the URL minted at each click (redirect mode)
    # The signing secret; prefer SMTP_OFFLOAD_LINK_SECRET or secret_file (first line signs,
    # further lines still verify, for rotation).
    secret: str = ""
    old_secrets: list[str] = field(default_factory=list)  # still accepted, never used to sign
    secret_file: str = "var/link-secret"
    # Bearer keys for the API (/api/v1/...); empty disables it. Each a string (every scope) or a
    # table {key, id, scopes, customer, rate_per_minute}. Env: SMTP_OFFLOAD_API_KEYS (comma-separated).
    api_keys: list[ApiKey] = field(default_factory=list)
    # With server.workers > 1, worker i also serves this app (/metrics, /readyz...) on the
    # links.listen host at port worker_port_base + i, so each worker can be scraped; the
    # shared port reaches an arbitrary worker. 0 = off.
    worker_port_base: int = 0
    # The agent who opens a link, as the SSO reverse proxy in front of the link server names them
    # (oauth2-proxy: X-Auth-Request-Email or X-Forwarded-Email): the first of these headers present,
    # believed only on requests whose TCP peer is one of trusted_proxies (IPs or CIDRs).
    agent_headers: list[str] = field(default_factory=lambda: ["X-Auth-Request-Email", "X-Forwarded-Email"])
    trusted_proxies: list[str] = field(default_factory=list)
    # Without a trusted identity, the link page explains how to sign in instead of serving the file.
    require_agent: bool = False
    sign_in_url: str = ""  # where that page sends the agent (e.g. the proxy's /oauth2/start); "" = none
    # Links in mail as <base_url>/f/<id>: a short random id whose grant is kept in the store
    # (under 100 characters with a 30-character base_url). false: the older self-contained
    # signed tokens (a few hundred characters). Links of either kind keep working until they expire.
    short: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self.api_keys = [ApiKey(k) if isinstance(k, str) else k for k in self.api_keys]


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
    dns_timeout: float = positive(5.0)  # budget for all DNS lookups of one message; past it: temperror
    dns_servers: list[str] = field(default_factory=list)  # "ip" or "ip:port"; empty: the system's resolver
    arc: ArcConfig = field(default_factory=ArcConfig)


@dataclass
class AdminConfig(_Options):
    # /metrics, /healthz and /readyz on an address of their own, apart from the public link
    # pages (then the links listener no longer serves /metrics and /readyz). "" = on links.listen,
    # as before. With server.workers > 1, worker i listens on this port + i.
    listen: str = ""


@dataclass
class NoticesConfig(_Options):
    # The text put into changed messages (smtp_offload/notices/templates/<language>/).
    language: str = "en"  # "en" or "de", or any language templates_dir holds
    # A directory of your own templates: <language>/<template name> there wins over the shipped
    # one of the same name, so one file can be changed and the rest kept.
    templates_dir: str = ""


@dataclass
class BrandingConfig(_Options):
    # The link pages and the upload portal: whose service this is.
    name: str = ""  # in page titles and headings, e.g. "Example Insurance"; "" = none
    logo_file: str = ""  # PNG, JPEG, GIF or SVG up to 256 KiB, embedded in the pages
    accent_colour: str = "#1f5fbf"  # buttons and links: #rgb or #rrggbb
    support_text: str = ""  # a line on every page, e.g. "Questions? The service desk: 0800 123 456"
    support_url: str = ""  # where that line links to (https://, mailto: or tel:)


@dataclass
class LogConfig(_Options):
    format: LogFormat = LogFormat.JSON
    level: LogLevel = LogLevel.INFO
    # A few lines for people on stderr once started: where it listens, the downstream and
    # whether it answered (one probe connection), the store, the link base URL, what to do.
    summary: bool = True


@dataclass
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    downstream: DownstreamConfig = field(default_factory=DownstreamConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    links: LinksConfig = field(default_factory=LinksConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    portal: PortalConfig = field(default_factory=PortalConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    notices: NoticesConfig = field(default_factory=NoticesConfig)
    branding: BrandingConfig = field(default_factory=BrandingConfig)
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
        cfg.links.api_keys = [ApiKey(k.strip()) for k in env[API_KEYS_ENV].split(",") if k.strip()]
    validate(cfg)
    return cfg


def options(cls) -> dict[str, tuple[tuple[str, ...], dataclasses.Field, typing.Any]]:
    """The scalar options of a config table: TOML key -> (attribute path, field, type hint).
    A stage's policy marked `flat` contributes its own options (under their "key" when the
    stage's name for a field differs from the config's)."""
    out = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if f.metadata.get("internal"):
            continue
        if f.metadata.get("flat"):
            out.update({k: ((f.name, *path), g, h) for k, (path, g, h) in options(hint).items()})
        elif not dataclasses.is_dataclass(hint):
            out[f.metadata.get("key", f.name)] = ((f.name,), f, hint)
    return out


def tables(cls) -> dict[str, typing.Any]:
    """The sub-tables of a config table: name -> dataclass."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)
            if dataclasses.is_dataclass(hints[f.name]) and not f.metadata.get("flat")}


def _build(cls, raw: typing.Any, prefix: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a table")
    scalars, subtables = options(cls), tables(cls)
    for key in raw:
        if key not in scalars and key not in subtables:
            hint = ""
            if any(w in key.lower() for w in ("access_key", "secret_key", "session_token", "credential")):
                hint = (" (credentials never go in this file: use the environment, a shared profile or an "
                        "instance/task role)")
            raise ConfigError(f"{prefix}{key}: unknown key{hint}")
    values: dict[tuple[str, ...], typing.Any] = {}
    for key, (path, f, hint) in scalars.items():
        if key in raw:
            values[path] = _coerce(f"{prefix}{key}", raw[key], hint, f.metadata)
    for name, sub in subtables.items():
        if name in raw:
            values[(name,)] = _build(sub, raw[name], f"{prefix}{name}.")
    return _make(cls, values)


def _make(cls, values: dict[tuple[str, ...], typing.Any]):
    """cls(**values), building flat stages from the values whose path goes through them."""
    hints = typing.get_type_hints(cls)
    kwargs = {path[0]: v for path, v in values.items() if len(path) == 1}
    for f in dataclasses.fields(cls):
        inner = {path[1:]: v for path, v in values.items() if len(path) > 1 and path[0] == f.name}
        if inner:
            kwargs[f.name] = _make(hints[f.name], inner)
    return cls(**kwargs)


def _coerce(key: str, value: typing.Any, hint, meta: typing.Mapping = {}) -> typing.Any:
    """The TOML value as the type the option declares, within its declared bounds."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):  # "X | None": None only via meta["empty"]
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):  # a list entry given as a string or a table (links.api_keys)
        if isinstance(value, str) and hint is ApiKey:
            return hint(value)
        required = [f.name for f in dataclasses.fields(hint)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if isinstance(value, dict) and (missing := [r for r in required if r not in value]):
            raise ConfigError(f"{key}.{missing[0]}: required")
        return _build(hint, value, f"{key}.")
    if origin is dict:  # a table whose keys are names the admin chooses (storage.stores, storage.routes)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {type(value).__name__}")
        return {str(k): _coerce(f"{key}.{k}", v, args[1]) for k, v in value.items()}
    if origin in (list, tuple, frozenset):
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
        items = [_coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value)]
        if not items and "empty" in meta:
            return meta["empty"]
        return origin(items)
    if isinstance(hint, type) and issubclass(hint, enum.Enum) and not isinstance(value, str):
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        value = float(value)
    if hint is bool and not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if hint is str and not isinstance(value, str):
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    try:
        return option_types.check(hint, meta, value)
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None


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


def validate(cfg: Config) -> None:
    """What one option's type and bounds cannot say (those were checked as the file was read)."""
    s, d, p, links = cfg.server, cfg.downstream, cfg.policy, cfg.links
    parse_hostport("server.listen", s.listen)
    parse_hostport("links.listen", links.listen)
    if not s.accepted_domains:
        raise ConfigError("server.accepted_domains: must name at least one domain (this hop is not an open relay)")
    for i, dom in enumerate(s.accepted_domains):
        if not dom.strip(".") or any(c.isspace() or c in "@,;<>" for c in dom):
            raise ConfigError(f"server.accepted_domains[{i}]: not a domain name: {dom!r}")
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
    if p.signed.on_signed is Signed.SKIP and not cfg.auth.verify_dkim:
        # Unverified, any DKIM-Signature header (anyone can write one) would skip inspection.
        raise ConfigError('policy.on_signed: "skip" needs auth.verify_dkim = true '
                          "(only a verified signature from policy.skip_signed_domains may skip inspection)")
    for i, dom in enumerate(p.signed.skip_signed_domains):
        if not dom.strip(".") or any(c.isspace() or c in "@,;<>" for c in dom):
            raise ConfigError(f"policy.skip_signed_domains[{i}]: not a domain name: {dom!r}")
    if cfg.auth.authserv_id and not re.fullmatch(r"[A-Za-z0-9._-]+", cfg.auth.authserv_id):
        raise ConfigError(f"auth.authserv_id: expected a host name, got {cfg.auth.authserv_id!r}")
    for i, server in enumerate(cfg.auth.dns_servers):
        parse_dns_server(f"auth.dns_servers[{i}]", server)
    _validate_storage(cfg.storage)
    if not links.base_url.startswith(("http://", "https://")):
        raise ConfigError(f"links.base_url: must start with http:// or https://, got {links.base_url!r}")
    if links.secret and len(links.secret) < 32:
        raise ConfigError(f"links.secret: must be at least 32 characters (or set {SECRET_ENV})")
    for i, old in enumerate(links.old_secrets):
        if len(old) < 32:
            raise ConfigError(f"links.old_secrets[{i}]: must be at least 32 characters")
    _validate_api_keys(links.api_keys)
    for i, host in enumerate(cfg.api.fetch_allow_hosts):
        bad = not host.strip() or any(c.isspace() for c in host)
        if "/" in host and not bad:
            try:
                ipaddress.ip_network(host, strict=False)
            except ValueError:
                bad = True
        if bad:
            raise ConfigError(f"api.fetch_allow_hosts[{i}]: expected a host name, an IP address or a CIDR, got {host!r}")
    _validate_portal(cfg.portal)
    if cfg.api.max_sync_bytes > cfg.api.max_bytes:
        raise ConfigError("api.max_sync_bytes: must not exceed api.max_bytes")
    if cfg.api.fetch_max_retries < 0:
        raise ConfigError(f"api.fetch_max_retries: must be 0 or more, got {cfg.api.fetch_max_retries}")
    if not 0 <= links.worker_port_base <= 65535 - s.workers + 1:
        raise ConfigError(f"links.worker_port_base: must be 0 (off) or a port number, got {links.worker_port_base}")
    for i, proxy in enumerate(links.trusted_proxies):
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(f"links.trusted_proxies[{i}]: expected an IP address or a CIDR, got {proxy!r}") from None
    for i, name in enumerate(links.agent_headers):
        if not re.fullmatch(r"[A-Za-z0-9-]{1,64}", name):
            raise ConfigError(f"links.agent_headers[{i}]: expected a header name, got {name!r}")
    if links.require_agent and links.mode is LinksMode.PRESIGNED:
        raise ConfigError('links.require_agent: cannot work with links.mode = "presigned" (the mail holds the '
                          "store's own URL, which never reaches the link server); use \"redirect\"")
    if links.require_agent and not links.trusted_proxies:
        raise ConfigError("links.require_agent: needs links.trusted_proxies (the SSO proxy that names the agent)")
    if links.sign_in_url and not links.sign_in_url.startswith(("http://", "https://", "/")):
        raise ConfigError(f"links.sign_in_url: expected an http(s) URL or a path, got {links.sign_in_url!r}")
    _validate_admin(cfg)
    _validate_notices(cfg.notices)
    _validate_branding(cfg.branding)
    hold = cfg.policy.hold
    if hold.quarantine_sender and not re.fullmatch(r"[^@\s<>]+@[^@\s<>]+", hold.quarantine_sender):
        raise ConfigError(f"policy.quarantine_sender: expected an address like postmaster@example.com, "
                          f"got {hold.quarantine_sender!r}")
    if links.click_ttl_seconds > 7 * 24 * 3600:
        raise ConfigError("links.click_ttl_seconds: a store's signed URL lives 7 days (604800) at most")
    if links.mode is LinksMode.PRESIGNED:
        every = [cfg.storage, *cfg.storage.stores.values()]
        if any(sc.backend is Backend.LOCAL for sc in every):
            raise ConfigError('links.mode: "presigned" needs a store that can presign (storage.backend = '
                              '"s3", "azure" or "gcs", and the same for every storage.stores entry)')
        if links.ttl_seconds > 7 * 24 * 3600:
            raise ConfigError("links.ttl_seconds: presigned URLs cannot live longer than 7 days (604800); "
                              'use links.mode = "redirect" for longer links')


def _validate_api_keys(keys: list[ApiKey]) -> None:
    seen_keys: set[str] = set()
    seen_ids: set[str] = set()
    for i, k in enumerate(keys):
        where = f"links.api_keys[{i}]"
        if not isinstance(k.key, str) or len(k.key) < 24:
            raise ConfigError(f"{where}: must be at least 24 characters")
        if any(c.isspace() for c in k.key) or not k.key.isprintable():
            raise ConfigError(f"{where}.key: must not contain spaces or control characters")
        if not k.scopes:
            raise ConfigError(f"{where}.scopes: must name at least one of {', '.join(s.value for s in Scope)}")
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", k.id):
            raise ConfigError(f"{where}.id: letters, digits, '.', '_' and '-' only (1 to 64), got {k.id!r}")
        if k.customer and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", k.customer):
            raise ConfigError(f"{where}.customer: 1 to 63 letters, digits, '.', '_' or '-', got {k.customer!r}")
        if k.rate_per_minute < 0:
            raise ConfigError(f"{where}.rate_per_minute: must be 0 (api.rate_per_minute) or more")
        if k.key in seen_keys:
            raise ConfigError(f"{where}: the same key is listed twice")
        if k.id in seen_ids:
            raise ConfigError(f"{where}.id: {k.id!r} is used by another key")
        seen_keys.add(k.key)
        seen_ids.add(k.id)


STORE_NAME = re.compile(r"[a-z][a-z0-9]{0,15}")


def _validate_storage(st: StorageConfig) -> None:
    t = st.tenant
    if t not in ("", "recipient-domain") and not (t.startswith("header:") and len(t) > len("header:")):
        raise ConfigError(f'storage.tenant: must be "", "recipient-domain" or "header:<Name>", got {t!r}')
    _validate_store("storage", st)
    for name, sc in st.stores.items():
        if not STORE_NAME.fullmatch(name):
            raise ConfigError(f"storage.stores.{name}: a store name is 1 to 16 lower-case letters and digits, "
                              "starting with a letter")
        _validate_store(f"storage.stores.{name}", sc)
    for tenant, name in st.routes.items():
        if name not in st.stores:
            known = ", ".join(sorted(st.stores)) or "none configured"
            raise ConfigError(f"storage.routes.{tenant}: no store named {name!r} in storage.stores ({known})")
        if not tenant.strip():
            raise ConfigError("storage.routes: a tenant must not be empty")


def _validate_store(where: str, sc: StoreConfig) -> None:
    if sc.backend is Backend.LOCAL and not sc.local.path:
        raise ConfigError(f"{where}.local.path: must not be empty")
    if sc.backend is Backend.S3:
        _validate_s3(f"{where}.s3", sc.s3)
    if sc.backend is Backend.AZURE:
        az = sc.azure
        if not 3 <= len(az.container) <= 63 or not re.fullmatch(r"[a-z0-9](?:[a-z0-9]|-(?!-))*[a-z0-9]", az.container):
            raise ConfigError(f'{where}.azure.container: required with backend = "azure" (3 to 63 lower-case '
                              f"letters, digits and single hyphens), got {az.container!r}")
        if bool(az.connection_string) == bool(az.account_url) and not os.environ.get("AZURE_STORAGE_CONNECTION_STRING"):
            raise ConfigError(f"{where}.azure.connection_string: set exactly one of connection_string "
                              "(or AZURE_STORAGE_CONNECTION_STRING) and account_url")
        if az.account_url and not az.account_url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}.azure.account_url: must start with http:// or https://, got {az.account_url!r}")
        if "?" in az.account_url or "#" in az.account_url:
            # A SAS in the URL would be printed wherever the endpoint is (logs, check-config --show).
            raise ConfigError(f"{where}.azure.account_url: no query string; a SAS goes in connection_string "
                              "(SharedAccessSignature=...) or AZURE_STORAGE_CONNECTION_STRING")
        _validate_prefix(f"{where}.azure.prefix", az.prefix)
    if sc.backend is Backend.GCS:
        g = sc.gcs
        if not 3 <= len(g.bucket) <= 222:
            raise ConfigError(f'{where}.gcs.bucket: required with backend = "gcs" (3 or more characters)')
        if g.endpoint_url and not g.endpoint_url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}.gcs.endpoint_url: must start with http:// or https://, got {g.endpoint_url!r}")
        _validate_prefix(f"{where}.gcs.prefix", g.prefix)


def _validate_prefix(key: str, prefix: str) -> None:
    if any(p.startswith((".", "@")) for p in prefix.strip("/").split("/") if p):
        raise ConfigError(f"{key}: no segment may start with '.' or '@' (those are the store's own), got {prefix!r}")


def _validate_s3(where: str, s3: S3StorageConfig) -> None:
    if len(s3.bucket) < 3:
        raise ConfigError(f'{where}.bucket: required with backend = "s3" (3 or more characters)')
    if s3.endpoint_url and not s3.endpoint_url.startswith(("http://", "https://")):
        raise ConfigError(f"{where}.endpoint_url: must start with http:// or https://, got {s3.endpoint_url!r}")
    if s3.kms_key_id and s3.sse is not Sse.KMS:
        raise ConfigError(f'{where}.kms_key_id: only used with {where}.sse = "aws:kms"')
    _validate_prefix(f"{where}.prefix", s3.prefix)
    if s3.part_size < 5 * 1024 * 1024:
        raise ConfigError(f"{where}.part_size: S3 needs parts of at least 5 MiB (5242880)")
    if s3.multipart_threshold < s3.part_size:
        raise ConfigError(f"{where}.multipart_threshold: must be at least {where}.part_size")


def plain(value: typing.Any) -> typing.Any:
    """An option's value as TOML/JSON has it: enums by value, sets as sorted lists."""
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value):
        return table(value)
    if isinstance(value, (frozenset, set)):
        return sorted(value)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def table(obj: typing.Any) -> dict[str, typing.Any]:
    """One config table as the file would write it: its options (flat stages spread out, in
    declaration order) and its sub-tables, nested."""
    out: dict[str, typing.Any] = {}
    for key, (path, f, _hint) in options(type(obj)).items():
        value = obj
        for attr in path:
            value = getattr(value, attr)
        out[key] = [] if value is None and "empty" in f.metadata else plain(value)
    for name in tables(type(obj)):
        out[name] = table(getattr(obj, name))
    return out


def toml_key(key: str) -> str:
    """A key as TOML writes it: "example.de" must be quoted, or TOML reads a nested table."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def toml_value(value: typing.Any) -> str:
    """A scalar or list of scalars as TOML (JSON's strings, numbers and lists are TOML too)."""
    value = plain(value)
    if isinstance(value, dict):  # an inline table (a links.api_keys entry, storage.routes)
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list) and any(isinstance(v, dict) for v in value):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value).lower() if isinstance(value, bool) else json.dumps(value)


def dump_sections(sections: dict[str, dict[str, typing.Any]]) -> str:
    """`{"server": {"listen": ...}, "storage.s3": {...}}` as a TOML document."""
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def to_toml(values: dict[str, typing.Any], prefix: str = "") -> str:
    """A config table (as `table` or `as_dict` give it) as a TOML document, one [section] per
    table (check-config --show, config/default.toml)."""
    out: list[str] = []
    scalars = [(k, v) for k, v in values.items() if not isinstance(v, dict)]
    if scalars and prefix:
        out.append(f"\n[{prefix}]")
    out += [f"{toml_key(k)} = {toml_value(v)}" for k, v in scalars]
    for k, v in values.items():
        if isinstance(v, dict):
            out.append(to_toml(v, f"{prefix}.{toml_key(k)}" if prefix else toml_key(k)).rstrip("\n"))
    return "\n".join(line for line in out if line) + "\n" if out else ""


def as_dict(cfg: Config) -> dict:
    """The effective config with secrets masked (for check-config)."""
    out = table(cfg)
    for key in ("secret", "old_secrets"):
        if out["links"][key]:
            out["links"][key] = "********" if isinstance(out["links"][key], str) else ["********"] * len(out["links"][key])
    out["links"]["api_keys"] = [{**k, "key": "********"} for k in out["links"]["api_keys"]]
    for store in (out["storage"], *out["storage"]["stores"].values()):
        if store["azure"]["connection_string"]:
            store["azure"]["connection_string"] = "********"
    return out


def _validate_admin(cfg: Config) -> None:
    if not cfg.admin.listen:
        return
    host, port = parse_hostport("admin.listen", cfg.admin.listen)
    if port + cfg.server.workers - 1 > 65535:
        raise ConfigError(f"admin.listen: port {port} + server.workers is past 65535")
    for key, other in (("links.listen", cfg.links.listen), ("server.listen", cfg.server.listen)):
        if parse_hostport(key, other)[1] == port and port != 0:
            raise ConfigError(f"admin.listen: port {port} is already {key}'s")


NOTICE_TEMPLATES = Path(__file__).resolve().parent / "notices" / "templates"  # one directory per language


def _validate_notices(n: NoticesConfig) -> None:
    if not re.fullmatch(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})?", n.language):
        raise ConfigError(f'notices.language: expected a language tag like "en" or "de", got {n.language!r}')
    dirs = [NOTICE_TEMPLATES]
    if n.templates_dir:
        if not Path(n.templates_dir).is_dir():
            raise ConfigError(f"notices.templates_dir: not a directory: {n.templates_dir}")
        dirs.insert(0, Path(n.templates_dir))
    if not any((d / n.language).is_dir() for d in dirs):
        shipped = sorted(p.name for p in NOTICE_TEMPLATES.iterdir() if p.is_dir()) if NOTICE_TEMPLATES.is_dir() else []
        raise ConfigError(f"notices.language: no templates for {n.language!r} (shipped: {', '.join(shipped)}"
                          + (f"; none in {n.templates_dir}/{n.language}" if n.templates_dir else "") + ")")


MAX_LOGO_BYTES = 256 * 1024
_LOGO_TYPES = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg", b"GIF87a": "image/gif",
               b"GIF89a": "image/gif"}


def logo_type(data: bytes) -> str | None:
    """The image type of a branding logo by its bytes (PNG, JPEG, GIF, SVG), or None."""
    for magic, ctype in _LOGO_TYPES.items():
        if data.startswith(magic):
            return ctype
    head = data[:1024].lstrip().lower()
    if head.startswith((b"<svg", b"<?xml")) and b"<svg" in data[:4096].lower():
        return "image/svg+xml"
    return None


def _validate_branding(b: BrandingConfig) -> None:
    if not re.fullmatch(r"#(?:[0-9A-Fa-f]{3}|[0-9A-Fa-f]{6})", b.accent_colour):
        raise ConfigError(f'branding.accent_colour: expected a colour like "#1f5fbf", got {b.accent_colour!r}')
    for key in ("name", "support_text"):
        value = getattr(b, key)
        if len(value) > 300 or not value.isprintable():
            raise ConfigError(f"branding.{key}: expected one printable line of at most 300 characters")
    if b.support_url and not b.support_url.startswith(("https://", "http://", "mailto:", "tel:")):
        raise ConfigError(f"branding.support_url: expected an https://, mailto: or tel: URL, got {b.support_url!r}")
    if b.logo_file:
        try:
            with open(b.logo_file, "rb") as fh:
                data = fh.read(MAX_LOGO_BYTES + 1)
        except OSError as exc:
            raise ConfigError(f"branding.logo_file: cannot read {b.logo_file}: {exc.strerror}") from None
        if len(data) > MAX_LOGO_BYTES:
            raise ConfigError(f"branding.logo_file: larger than 256 KiB: {b.logo_file}")
        if logo_type(data) is None:
            raise ConfigError(f"branding.logo_file: not a PNG, JPEG, GIF or SVG image: {b.logo_file}")


def _validate_portal(p: PortalConfig) -> None:
    if p.ttl_seconds > p.max_ttl_seconds:
        raise ConfigError("portal.ttl_seconds: must not exceed portal.max_ttl_seconds")
    if p.max_file_bytes > p.max_session_bytes:
        raise ConfigError("portal.max_file_bytes: must not exceed portal.max_session_bytes")
    if p.quiet_seconds < 0:
        raise ConfigError(f"portal.quiet_seconds: must be 0 (off) or more, got {p.quiet_seconds}")
    if p.sender and not re.fullmatch(r"[^@\s<>]+@[^@\s<>]+", p.sender):
        raise ConfigError(f"portal.sender: expected an address like portal@example.com, got {p.sender!r}")
    for i, ext in enumerate(p.accepted_types):
        if not isinstance(ext, str) or not re.fullmatch(r"[a-z0-9]{1,10}", ext.lower().lstrip(".")):
            raise ConfigError(f"portal.accepted_types[{i}]: expected a file extension like \"pdf\", got {ext!r}")
    p.accepted_types = [e.lower().lstrip(".") for e in p.accepted_types]
