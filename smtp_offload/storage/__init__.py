"""Where offloaded attachments go: the Store contract and its implementations."""

from __future__ import annotations

from pathlib import Path

from smtp_offload.storage.base import (
    CHUNK_SIZE,
    InvalidKey,
    Store,
    StoredObject,
    content_disposition,
    make_key,
    safe_filename,
)
from smtp_offload.config import Backend
from smtp_offload.storage.local import LocalStore

__all__ = ["CHUNK_SIZE", "InvalidKey", "LocalStore", "Store", "StoredObject", "content_disposition", "make_key",
           "open_store", "safe_filename"]


def open_store(cfg) -> Store:
    """The store the config names (cfg is a smtp_offload.config.Config)."""
    if cfg.storage.backend is Backend.S3:
        from smtp_offload.storage.s3 import S3Store  # boto3 is imported only when S3 is used

        return S3Store(cfg.storage.s3)
    return LocalStore(Path(cfg.storage.local.path))
