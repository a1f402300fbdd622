"""The HMAC secret that signs download links.

It must survive restarts (or every link already mailed breaks) and stay private
(whoever has it can mint links to any stored file), hence: configured value, else a
0600 file, else one generated into that file on first start.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path
from typing import Any

from smtp_offload.errors import ConfigError

MIN_SECRET_CHARS = 32


def load_secret(value: str | None, path: Path, log: Any) -> bytes:
    """The link secret from `value` (config/env) if given, else from (or generated into) `path`."""
    if value is not None:
        if len(value) < MIN_SECRET_CHARS:
            raise ConfigError(f"links.secret must be at least {MIN_SECRET_CHARS} characters long")
        return value.encode("utf-8")
    path = Path(path)
    try:
        return _read(path)
    except FileNotFoundError:
        pass
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
    return generated.encode("ascii")


def _read(path: Path) -> bytes:
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
        data = f.read().strip()
    if len(data) < MIN_SECRET_CHARS:
        raise ConfigError(f"links.secret_file {path}: holds fewer than {MIN_SECRET_CHARS} characters")
    return data
