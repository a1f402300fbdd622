"""Tokens, the link secrets and URL building (the HTTP side is in test_link_service.py)."""

from __future__ import annotations

import hashlib
import re
import stat
from pathlib import Path

import aiohttp
import pytest
import structlog
from structlog.testing import capture_logs

from smtp_offload.config import LinksConfig
from smtp_offload.errors import ConfigError
from smtp_offload.links import BadToken, ExpiredToken, Grant, link_url, load_secrets, new_grant, sign, verify
from smtp_offload.links.server import LinkServer
from smtp_offload.storage import LocalStore

SECRET = b"s" * 32
OLD = b"o" * 32
KEY = "2024/05/01/0123456789abcdef0123456789abcdef/Отчёт 2024.pdf"
FUTURE = 4_000_000_000
GRANT = Grant(key=KEY, expires=FUTURE, token_id="0123456789abcdef", message_ref="fedcba9876543210")


# -- grants -------------------------------------------------------------------


def test_new_grant_binds_key_expiry_message_and_random_id() -> None:
    a = new_grant(KEY, 3600, "<abc@example.com>", now=1_700_000_000.7)
    b = new_grant(KEY, 3600, "<abc@example.com>", now=1_700_000_000)
    assert a.key == KEY and a.expires == 1_700_003_600
    assert re.fullmatch(r"[0-9a-f]{16}", a.token_id) and a.token_id != b.token_id
    assert a.message_ref == hashlib.sha256(b"<abc@example.com>").hexdigest()[:16] == b.message_ref
    assert new_grant(KEY, 60).message_ref is None


@pytest.mark.parametrize("ttl", [0, -1, 1.5, True, "60"])
def test_new_grant_refuses_bad_ttl(ttl) -> None:
    with pytest.raises(ValueError):
        new_grant(KEY, ttl)


# -- tokens -------------------------------------------------------------------


def test_sign_verify_round_trip() -> None:
    token = sign(GRANT, SECRET)
    assert verify(token, [SECRET]) == GRANT
    assert token.startswith("v2.")
    assert re.fullmatch(r"[A-Za-z0-9_.-]+", token)  # URL-safe, no padding
    assert KEY not in token and "=" not in token and "<" not in token
    without_ref = Grant(KEY, FUTURE, "0123456789abcdef")
    assert verify(sign(without_ref, SECRET), [SECRET]) == without_ref


def test_key_with_dots_survives() -> None:
    grant = Grant("a.b/c.d/..e.tar.gz", FUTURE, "0123456789abcdef")
    assert verify(sign(grant, SECRET), [SECRET]).key == "a.b/c.d/..e.tar.gz"


def _swap_char(s: str, i: int) -> str:
    return s[:i] + ("A" if s[i] != "A" else "B") + s[i + 1 :]


def test_tampered_payload_is_bad() -> None:
    token = sign(GRANT, SECRET)
    _, payload, mac = token.split(".")
    with pytest.raises(BadToken):
        verify(f"v2.{_swap_char(payload, 5)}.{mac}", [SECRET])
    # A payload naming another key (or a later expiry) under the original signature.
    other = sign(Grant("2024/05/01/ffff/other.pdf", FUTURE + 1, GRANT.token_id), b"x" * 32).split(".")[1]
    with pytest.raises(BadToken):
        verify(f"v2.{other}.{mac}", [SECRET])


def test_tampered_signature_is_bad() -> None:
    token = sign(GRANT, SECRET)
    with pytest.raises(BadToken):
        verify(_swap_char(token, len(token) - 3), [SECRET])


def test_wrong_secret_is_bad() -> None:
    with pytest.raises(BadToken):
        verify(sign(GRANT, SECRET), [b"t" * 32])


def test_rotation_first_secret_signs_all_verify() -> None:
    old_token = sign(GRANT, OLD)
    assert verify(old_token, [SECRET, OLD]) == GRANT  # mailed before the rotation: still works
    with pytest.raises(BadToken):
        verify(old_token, [SECRET])  # ...until the old secret is dropped


@pytest.mark.parametrize("secrets", [[], [b""], b"s" * 32, [SECRET, b""]])
def test_verify_needs_real_secrets(secrets) -> None:
    with pytest.raises(ValueError):
        verify(sign(GRANT, SECRET), secrets)


@pytest.mark.parametrize("cut", [1, 10, 43, 44, 60])
def test_truncated_is_bad(cut: int) -> None:
    token = sign(GRANT, SECRET)
    with pytest.raises(BadToken):
        verify(token[:-cut], [SECRET])


@pytest.mark.parametrize(
    "token", ["", "v2.", "v2..", "garbage", "v1" + sign(GRANT, SECRET)[2:], "v2.ä.ö", "v2." + "A" * 10_000, None]
)
def test_malformed_is_bad(token) -> None:
    with pytest.raises(BadToken):
        verify(token, [SECRET])


def test_old_v1_tokens_are_refused() -> None:
    # The v1 format had no token_id, so it could never be revoked: it is not accepted.
    import base64
    import hmac

    payload = base64.urlsafe_b64encode(f"{FUTURE}.{KEY}".encode()).rstrip(b"=").decode()
    mac = base64.urlsafe_b64encode(hmac.new(SECRET, f"v1.{payload}".encode(), hashlib.sha256).digest())
    with pytest.raises(BadToken):
        verify(f"v1.{payload}.{mac.rstrip(b'=').decode()}", [SECRET])


@pytest.mark.parametrize("field,value", [("token_id", "xyz"), ("token_id", "0123456789ABCDEF"),
                                          ("message_ref", "short"), ("key", ""), ("expires", -1)])
def test_sign_refuses_malformed_grants(field: str, value) -> None:
    fields = {"key": KEY, "expires": FUTURE, "token_id": "0123456789abcdef", field: value}
    with pytest.raises(ValueError):
        sign(Grant(**fields), SECRET)


def test_expiry_uses_now_and_carries_the_grant() -> None:
    grant = Grant(KEY, 1_700_000_000, "0123456789abcdef")
    token = sign(grant, SECRET)
    assert verify(token, [SECRET], now=1_699_999_999) == grant
    with pytest.raises(ExpiredToken) as exc:
        verify(token, [SECRET], now=1_700_000_000)
    assert exc.value.grant == grant and exc.value.expires == 1_700_000_000
    assert not isinstance(exc.value, BadToken)


def test_expired_and_forged_is_bad_not_expired() -> None:
    # A forger must not learn anything from an "expired" answer.
    with pytest.raises(BadToken):
        verify(sign(Grant(KEY, 1, "0123456789abcdef"), b"t" * 32), [SECRET], now=2)


def test_link_url() -> None:
    assert link_url("https://files.example.com/", "v2.abc.def") == "https://files.example.com/f/v2.abc.def"
    assert link_url("https://example.com/dl", "v2.a_b-c.d") == "https://example.com/dl/f/v2.a_b-c.d"


# -- secrets ------------------------------------------------------------------


def _links(tmp_path: Path, **kw) -> LinksConfig:
    return LinksConfig(secret_file=str(tmp_path / "var" / "lib" / "link.secret"), **kw)


def test_secret_generated_private_and_reused(tmp_path: Path) -> None:
    cfg = _links(tmp_path)
    path = Path(cfg.secret_file)
    log = structlog.get_logger()
    with capture_logs() as logs:
        first = load_secrets(cfg, log)
    assert len(first) == 1 and len(first[0]) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().strip() == first[0]
    assert [e["event"] for e in logs] == ["link_secret_generated"]
    assert logs[0]["path"] == str(path)
    assert first[0].decode() not in repr(logs)

    with capture_logs() as logs:
        assert load_secrets(cfg, log) == first
    assert logs == []  # reused, not regenerated


def test_secret_file_not_created_when_told_not_to(tmp_path: Path) -> None:
    cfg = _links(tmp_path)
    with pytest.raises(ConfigError, match="not found"):
        load_secrets(cfg, structlog.get_logger(), create=False)
    assert not Path(cfg.secret_file).exists()


def test_secret_file_lines_rotate(tmp_path: Path) -> None:
    cfg = _links(tmp_path, old_secrets=["c" * 32])
    path = Path(cfg.secret_file)
    path.parent.mkdir(parents=True)
    path.write_text(f"{'n' * 40}\n\n{'a' * 32}\n{'c' * 32}\n")  # new first, then still-valid old ones
    path.chmod(0o600)
    assert load_secrets(cfg, structlog.get_logger()) == [b"n" * 40, b"a" * 32, b"c" * 32]  # no duplicates


def test_configured_secret_wins_plus_old_secrets(tmp_path: Path) -> None:
    cfg = _links(tmp_path, secret="k" * 32, old_secrets=["o" * 32])
    assert load_secrets(cfg, structlog.get_logger()) == [b"k" * 32, b"o" * 32]
    assert not Path(cfg.secret_file).exists()


@pytest.mark.parametrize("field", ["secret", "old_secrets"])
def test_short_secret_is_rejected(tmp_path: Path, field: str) -> None:
    cfg = _links(tmp_path, secret="k" * 32)
    setattr(cfg, field, "k" * 31 if field == "secret" else ["o" * 31])
    with pytest.raises(ConfigError, match=rf"links\.{field}"):
        load_secrets(cfg, structlog.get_logger())


def test_secret_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    cfg = _links(tmp_path)
    path = Path(cfg.secret_file)
    path.parent.mkdir(parents=True)
    path.write_text("z" * 64)
    path.chmod(0o640)
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        load_secrets(cfg, structlog.get_logger())


@pytest.mark.parametrize("content", ["short\n", "\n\n", "z" * 40 + "\nshort\n"])
def test_secret_file_with_a_short_line_is_refused(tmp_path: Path, content: str) -> None:
    cfg = _links(tmp_path)
    path = Path(cfg.secret_file)
    path.parent.mkdir(parents=True)
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        load_secrets(cfg, structlog.get_logger())


# -- server lifecycle ---------------------------------------------------------


async def test_server_port_and_restart(tmp_path: Path) -> None:
    server = LinkServer(LocalStore(tmp_path), [SECRET], LinksConfig(), log=structlog.get_logger())
    with pytest.raises(RuntimeError):
        server.port
    await server.start("127.0.0.1", 0)
    port = server.port
    assert port > 0
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/healthz") as r:
            assert r.status == 200 and await r.text() == "ok"
    await server.stop()
    await server.stop()  # idempotent
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.get(f"http://127.0.0.1:{port}/healthz")
