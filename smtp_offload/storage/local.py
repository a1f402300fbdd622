"""Offloaded files on a local (or mounted) file system.

Layout: `<root>/<key>` holds the bytes and `<root>/<dir>/.<name>.meta.json` the
metadata. The sidecar is written last, so it doubles as the commit marker: an
object exists once its sidecar does. Every name that starts with a dot (sidecars,
temp files) is internal, and keys that reach one are refused.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from smtp_offload.errors import StorageError
from smtp_offload.storage.base import (CHUNK_SIZE, RECORD_NAME, RECORDS, Body, InvalidKey, StoredObject, check_key,
                                       check_range, OPTIONAL_META, as_kept, check_record_name, open_body)

_DIR_MODE = 0o700
_FILE_MODE = 0o600  # mkstemp's default; the files may hold anyone's mail attachments
_COPY_CHUNK = 256 * 1024  # bytes of a spooled file copied at once


class LocalStore:
    def __init__(self, root: Path) -> None:
        root = Path(root)
        if not root.exists():
            try:
                root.mkdir(mode=_DIR_MODE, parents=True)
                os.chmod(root, _DIR_MODE)  # mkdir's mode is filtered by the umask
            except FileExistsError:
                pass  # another process sharing this store (a worker, a CLI) made it first
        self._root = root.resolve()

    @property
    def root(self) -> Path:
        return self._root

    # -- key handling -------------------------------------------------------

    def _path(self, key: str) -> Path:
        """Map a key to a path inside root, or raise InvalidKey; a key is attacker-shaped input.

        Touches the file system (resolve), so only call it from a worker thread.
        """
        path = self._root.joinpath(*check_key(key).split("/"))  # no "", ".", "..", internal dotfiles
        # Lexical checks cannot see symlinks planted inside root; resolving can.
        if not path.resolve().is_relative_to(self._root):
            raise InvalidKey(key)
        return path

    @staticmethod
    def _meta_path(path: Path) -> Path:
        return path.with_name(f".{path.name}.meta.json")

    # -- Store API ----------------------------------------------------------

    key_prefix = ""

    async def put(self, data: Body, obj: StoredObject) -> StoredObject:
        if obj.size != len(data):
            raise ValueError("size does not match the data")
        try:
            # A spooled file is copied from a file of its own, opened here (see open_body).
            source = data if isinstance(data, bytes) else open_body(data)
            await asyncio.to_thread(self._put_sync, obj.key, source, obj)
        except OSError as e:
            raise StorageError(f"storing {obj.key} failed: {e}") from e
        return obj

    def _put_sync(self, key: str, data: bytes | BinaryIO, obj: StoredObject) -> None:
        try:
            path = self._path(key)
            # Checked here, off the loop: a wrong hash would later be shown to users as the
            # file's. A file is hashed as it is copied, and checked before it takes the key.
            if isinstance(data, bytes) and hashlib.sha256(data).hexdigest() != obj.sha256:
                raise ValueError("sha256 does not match the data")
            self._mkdirs(path.parent)
            meta = json.dumps(dataclasses.asdict(as_kept(obj)),
                              ensure_ascii=False).encode("utf-8")
            _atomic_write(path, data, sha256=obj.sha256)
        finally:
            if not isinstance(data, bytes):
                data.close()
        try:
            _atomic_write(self._meta_path(path), meta)
            _fsync_dir(path.parent)
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    def _mkdirs(self, directory: Path) -> None:
        # One by one, because os.makedirs applies `mode` only to the leaf.
        missing: list[Path] = []
        d = directory
        while d != self._root and not d.is_dir():
            missing.append(d)
            d = d.parent
        for d in reversed(missing):
            try:
                d.mkdir(mode=_DIR_MODE)
            except FileExistsError:
                continue  # a concurrent put of the same day created it
            os.chmod(d, _DIR_MODE)

    async def stat(self, key: str) -> StoredObject:
        return await asyncio.to_thread(self._stat_sync, key)

    def _stat_sync(self, key: str) -> StoredObject:
        path = self._path(key)
        try:
            meta = json.loads(self._meta_path(path).read_bytes())
            size = path.stat().st_size
        except FileNotFoundError:
            self._raise_if_root_gone()
            raise KeyError(key) from None
        except (OSError, ValueError) as e:
            raise StorageError(f"reading {key} failed: {e}") from e
        try:
            obj = StoredObject(
                key=key,
                size=int(meta["size"]),
                sha256=str(meta["sha256"]),
                content_type=str(meta["content_type"]),
                filename=str(meta["filename"]),
                **{k: meta.get(k) for k in OPTIONAL_META},
            )
        except (KeyError, TypeError, ValueError) as e:
            raise StorageError(f"metadata of {key} is corrupt") from e
        if obj.size != size:
            # Serving it would send a Content-Length that the body cannot honour.
            raise StorageError(f"{key} is {size} bytes, metadata says {obj.size}")
        return obj

    def _raise_if_root_gone(self) -> None:
        # An unmounted volume must read as "storage down" (503), not "file deleted" (404).
        if not self._root.is_dir():
            raise StorageError("storage root is missing")

    async def open(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        check_range(start, end)

        def _open() -> BinaryIO:
            path = self._path(key)
            try:
                if not self._meta_path(path).exists():
                    raise FileNotFoundError(path)  # not yet committed, or half deleted
                fh = open(path, "rb")
                fh.seek(start)
                return fh
            except FileNotFoundError:
                self._raise_if_root_gone()
                raise KeyError(key) from None
            except OSError as e:
                raise StorageError(f"opening {key} failed: {e}") from e

        return _ChunkReader(await asyncio.to_thread(_open), None if end is None else end - start)

    async def delete(self, key: str) -> None:
        def _delete() -> None:
            path = self._path(key)
            try:
                # Sidecar first: from then on the object no longer exists for stat/open.
                self._meta_path(path).unlink(missing_ok=True)
                path.unlink(missing_ok=True)
            except OSError as e:
                raise StorageError(f"deleting {key} failed: {e}") from e
            try:
                path.parent.rmdir()  # the per-object uuid directory, if now empty
            except OSError:
                pass

        await asyncio.to_thread(_delete)

    async def check(self) -> None:
        def _check() -> None:
            if not self._root.is_dir():
                raise StorageError(f"storage root {self._root} is not a directory")
            # os.access lies on some mounts (read-only NFS, root on a ro bind); a real write does not.
            try:
                fd, probe = tempfile.mkstemp(prefix=".probe-", dir=self._root)
                os.close(fd)
                os.unlink(probe)
            except OSError as e:
                raise StorageError(f"storage root {self._root} is not writable: {e}") from e

        await asyncio.to_thread(_check)

    async def presign(self, obj: StoredObject, ttl: int) -> str | None:
        return None  # the link service streams local files itself

    # Revocations are marker files under a dot-directory that no object key can reach
    # (keys may not have dot segments), so every instance sharing the directory sees them.
    def _revoked_path(self, token_id: str) -> Path:
        if not token_id.isalnum() or len(token_id) > 64:
            raise InvalidKey(token_id)
        return self._root / ".revoked" / token_id

    async def revoke(self, token_id: str, key: str | None = None) -> None:
        def _revoke() -> None:
            path = self._revoked_path(token_id)
            path.parent.mkdir(mode=_DIR_MODE, exist_ok=True)
            _atomic_write(path, b"")

        try:
            await asyncio.to_thread(_revoke)
        except OSError as e:
            raise StorageError(f"recording revocation failed: {e}") from e

    async def is_revoked(self, token_id: str, key: str | None = None) -> bool:
        def _is_revoked() -> bool:
            if self._revoked_path(token_id).exists():
                return True
            self._raise_if_root_gone()  # a revoked link must not read as live while the volume is away
            return False

        try:
            return await asyncio.to_thread(_is_revoked)
        except OSError as e:
            raise StorageError(f"reading revocations failed: {e}") from e


    def _record_path(self, name: str) -> Path:
        return self._root / RECORDS / check_record_name(name)

    async def put_record(self, name: str, data: Body) -> None:
        def _put(source: bytes | BinaryIO) -> None:
            try:
                path = self._record_path(name)
                for d in (path.parent.parent, path.parent):
                    d.mkdir(mode=_DIR_MODE, exist_ok=True)
                _atomic_write(path, source)
            finally:
                if not isinstance(source, bytes):
                    source.close()

        try:
            await asyncio.to_thread(_put, data if isinstance(data, bytes) else open_body(data))
        except OSError as e:
            raise StorageError(f"writing record {name} failed: {e}") from e

    async def get_record(self, name: str) -> bytes:
        path = self._record_path(name)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            self._raise_if_root_gone()
            raise KeyError(name) from None
        except OSError as e:
            raise StorageError(f"reading record {name} failed: {e}") from e

    async def delete_record(self, name: str) -> None:
        path = self._record_path(name)
        try:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        except OSError as e:
            raise StorageError(f"deleting record {name} failed: {e}") from e


    async def list_records(self, kind: str, prefix: str = "") -> list[str]:
        """The names (`kind/name`) of the records of one kind whose name starts with `prefix`."""
        check_record_name(f"{kind}/x")
        try:
            names = await asyncio.to_thread(os.listdir, self._root / RECORDS / kind)
        except FileNotFoundError:
            self._raise_if_root_gone()
            return []
        except OSError as e:
            raise StorageError(f"listing records failed: {e}") from e
        # Skips the temporary files of writes in progress (_atomic_write), which are no records.
        return sorted(f"{kind}/{n}" for n in names if n.startswith(prefix) and RECORD_NAME.fullmatch(f"{kind}/{n}"))

    async def sweep_records(self, max_age: float, kinds: tuple[str, ...] = ("jobs", "answers", "bodies", "idem")) -> int:
        """Delete records of these kinds older than `max_age` seconds (finished jobs, staged
        bodies of jobs nobody asked about again, old Idempotency-Key answers); the number
        deleted. S3 leaves this to a lifecycle rule on the prefix's .records/ (README, "HTTP API")."""
        def _sweep() -> int:
            cutoff, n = time.time() - max_age, 0
            for path in (p for kind in kinds for p in (self._root / RECORDS / kind).glob("*")):
                try:
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                        n += 1
                except FileNotFoundError:
                    continue  # another instance swept it first
            return n

        try:
            return await asyncio.to_thread(_sweep)
        except OSError as e:
            raise StorageError(f"sweeping records failed: {e}") from e


class _ChunkReader:
    """Async iterator over an open file that reads off the event loop and always closes it."""

    def __init__(self, fh: BinaryIO, length: int | None = None) -> None:
        self._fh: BinaryIO | None = fh
        self._left = length  # bytes still to read; None: to the end

    def __aiter__(self) -> _ChunkReader:
        return self

    async def __anext__(self) -> bytes:
        if self._fh is None:
            raise StopAsyncIteration
        want = CHUNK_SIZE if self._left is None else min(CHUNK_SIZE, self._left)
        try:
            chunk = await asyncio.to_thread(self._fh.read, want) if want else b""
            if self._left is not None:
                self._left -= len(chunk)
        except OSError as e:
            await self.aclose()
            raise StorageError(f"reading failed: {e}") from e
        if not chunk:
            await self.aclose()
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            await asyncio.to_thread(fh.close)


def _atomic_write(path: Path, data: bytes | BinaryIO, sha256: str | None = None) -> None:
    """`data` (bytes, or a file copied a chunk at a time) as the file at `path`. With `sha256`,
    a copied file must hash to it or nothing is written (ValueError)."""
    # Same directory so os.replace is a rename, never a cross-device copy; readers see
    # either nothing or the whole file.
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), _FILE_MODE)
            if isinstance(data, bytes):
                f.write(data)
            else:
                digest = _copy(data, f)
                if sha256 is not None and digest != sha256:
                    raise ValueError("sha256 does not match the data")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _copy(src: BinaryIO, dst: BinaryIO) -> str:
    """Copy src to dst through one reused buffer (memory: a chunk, whatever the size); the
    sha256 of what was copied."""
    h = hashlib.sha256()
    buf = bytearray(_COPY_CHUNK)
    view = memoryview(buf)
    while n := src.readinto(buf):
        h.update(view[:n])
        dst.write(view[:n])
    return h.hexdigest()


def _fsync_dir(directory: Path) -> None:
    # The mail is relayed without the attachment once put returns, so the renames must survive a crash.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
