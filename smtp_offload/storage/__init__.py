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
from smtp_offload.config import Backend, StoreConfig
from smtp_offload.storage.local import LocalStore
from smtp_offload.storage.routed import RoutedStore, close_store

__all__ = ["CHUNK_SIZE", "InvalidKey", "LocalStore", "RoutedStore", "Store", "StoredObject", "close_store",
           "content_disposition", "make_key", "open_one", "open_store", "safe_filename"]


def open_one(sc: StoreConfig) -> Store:
    """One store as its config table describes it; each SDK is imported only when used."""
    if sc.backend is Backend.S3:
        from smtp_offload.storage.s3 import S3Store

        return S3Store(sc.s3)
    if sc.backend is Backend.AZURE:
        from smtp_offload.storage.azure import AzureStore

        return AzureStore(sc.azure)
    if sc.backend is Backend.GCS:
        from smtp_offload.storage.gcs import GcsStore

        return GcsStore(sc.gcs)
    return LocalStore(Path(sc.local.path))


def open_store(cfg) -> Store:
    """The store the config names (cfg is a smtp_offload.config.Config): the default one, or a
    RoutedStore over it and storage.stores when tenants are routed to named stores."""
    default = open_one(cfg.storage)
    if not cfg.storage.stores:
        return default
    return RoutedStore(default, {name: open_one(sc) for name, sc in cfg.storage.stores.items()},
                       cfg.storage.routes)
