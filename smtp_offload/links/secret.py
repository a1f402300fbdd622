"""The HMAC secrets that sign and verify link tokens.

They must survive restarts (or every link already mailed breaks) and stay private
(whoever has one can mint links to any stored file), hence: configured value, else a
0600 file, else one generated into that file on first start.

Rotation without breaking mailed links: the first secret signs, every secret verifies.
Prepend a new line to the secret file (or move `links.secret` into `links.old_secrets`
and set a new one), and drop the old line once the longest link lifetime has passed.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path
from typing import Any

from smtp_offload.config import LinksConfig
from smtp_offload.errors import ConfigError

MIN_SECRET_CHARS = 32


def load_secrets(cfg_links: LinksConfig, log: Any, *, create: bool = True) -> list[bytes]:
    """[signing secret, *secrets that only verify], without duplicates.

    The signing secret is `links.secret` (SMTP_OFFLOAD_LINK_SECRET is already merged into
    it by config.load) or else the first line of `links.secret_file`, whose further lines
    verify only; `links.old_secrets` verify only. A missing secret file is generated unless
    `create` is false (the CLI: a secret nobody else has would mint links no server accepts).
    """
    if cfg_links.secret:
        found = [_checked(cfg_links.secret, "links.secret")]
    else:
        found = _from_file(Path(cfg_links.secret_file), log, create)
    found += [_checked(s, f"links.old_secrets[{i}]") for i, s in enumerate(cfg_links.old_secrets)]
    return list(dict.fromkeys(found))  # keeps order: the signing secret stays first


def _checked(value: str, what: str) -> bytes:
    if len(value) < MIN_SECRET_CHARS:
        raise ConfigError(f"{what}: must be at least {MIN_SECRET_CHARS} characters long")
    return value.encode("utf-8")


def _from_file(path: Path, log: Any, create: bool) -> list[bytes]:
    try:
        return _read(path)
    except FileNotFoundError:
        if not create:
            raise ConfigError(f"links.secret_file {path}: not found (set links.secret, or start "
                              "the server once so that it generates the file)") from None
    generated = secrets.token_urlsafe(48)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # O_EXCL with the mode at creation: never briefly world-readable, and two
        # processes starting together cannot both win (the loser reads the winner's).
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read(path)
    except OSError as e:
        raise ConfigError(f"links.secret_file {path}: cannot create it: {e.strerror}") from e
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(generated + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        # A short file left behind would be refused on every later start.
        path.unlink(missing_ok=True)
        raise ConfigError(f"links.secret_file {path}: cannot write it: {e.strerror}") from e
    log.warning("link_secret_generated", path=str(path))
    return [generated.encode("ascii")]


def _read(path: Path) -> list[bytes]:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise ConfigError(f"links.secret_file {path}: cannot read it: {e.strerror}") from e
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())  # of what we opened, not of what the path names now
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"links.secret_file {path}: not a regular file")
        if st.st_mode & 0o077:
            raise ConfigError(
                f"links.secret_file {path}: mode {stat.S_IMODE(st.st_mode):04o} lets other "
                "users read it; run chmod 600 on it"
            )
        lines = [line.strip() for line in f.read().splitlines()]
    found = [line for line in lines if line]  # blank lines (e.g. a trailing one) mean nothing
    if not found:
        raise ConfigError(f"links.secret_file {path}: is empty")
    for n, line in enumerate(lines, 1):
        if line and len(line) < MIN_SECRET_CHARS:
            raise ConfigError(f"links.secret_file {path}: line {n} holds fewer than {MIN_SECRET_CHARS} characters")
    return found
