"""Where offloaded attachments go: the Store contract and its implementations."""

from __future__ import annotations

from smtp_offload.storage.base import (
    CHUNK_SIZE,
    InvalidKey,
    Store,
    StoredObject,
    make_key,
    safe_filename,
)
from smtp_offload.storage.local import LocalStore

__all__ = ["CHUNK_SIZE", "InvalidKey", "LocalStore", "Store", "StoredObject", "make_key", "safe_filename"]
