"""One storage abstraction over ``file://`` folders and ``s3://`` (S3, MinIO, rclone, any S3 API).

Every stage reads and writes only through :class:`Store`. Keys are ``/``-separated paths relative to
the store root. Writes of plain objects are atomic on a local folder (temp file + rename); on S3 a
PUT is atomic by nature. :meth:`Store.put_exclusive` is the commit primitive (design.md §4).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from schemas.config import StoreConfig
from synth_core.storage.errors import ObjectExistsError, StoreAccessError, StoreError

log = logging.getLogger(__name__)

_BLOCK = 8 * 1024 * 1024
_AUTH_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken", "403", "401"}
)


@dataclass(frozen=True, repr=False)
class S3Credentials:
    """Explicit S3 credentials (otherwise the standard AWS environment/profile chain is used)."""

    access_key_id: str
    secret_access_key: str
    session_token: str | None = None

    def __repr__(self) -> str:  # never print the secret
        key = self.access_key_id
        shown = key[:4] + "…" if len(key) > 4 else "…"
        return f"S3Credentials(access_key_id={shown!r}, secret_access_key='***')"

    __str__ = __repr__


def _check_key(key: str) -> str:
    if not isinstance(key, str):
        raise StoreError(f"store key: expected a str, received {type(key).__name__}")
    key = key.strip("/")
    parts = key.split("/") if key else []
    if any(p in ("", ".", "..") for p in parts):
        raise StoreError(f"store key: expected a relative path without '.', '..' or empty parts, received {key!r}")
    return key


class Store:
    """A store root (``file:///abs/path`` or ``s3://bucket/prefix``) and the operations every stage needs."""

    def __init__(self, config: StoreConfig | str, credentials: S3Credentials | None = None) -> None:
        self.config = config if isinstance(config, StoreConfig) else StoreConfig(url=config)
        self.url = self.config.url
        parsed = urlparse(self.url)
        self.scheme = parsed.scheme
        self._credentials = credentials
        self._fs: Any = None
        self._client: Any = None
        self._conditional: bool | None = {"enforced": True, "unsupported": False}.get(
            self.config.conditional_writes
        )
        if self.scheme == "file":
            self._root = Path(parsed.path)
            self.bucket = ""
            self.prefix = ""
        else:
            self._root = None
            self.bucket = parsed.netloc
            self.prefix = parsed.path.strip("/")

    # ----------------------------------------------------------------- basics
    def __repr__(self) -> str:
        endpoint = f", endpoint={self.config.endpoint_url!r}" if self.config.endpoint_url else ""
        return f"Store({self.url!r}{endpoint})"

    @property
    def is_local(self) -> bool:
        return self.scheme == "file"

    def url_for(self, key: str) -> str:
        key = _check_key(key)
        return f"{self.url}/{key}" if key else self.url

    def local_path(self, key: str) -> Path:
        """Filesystem path of ``key`` (local stores only)."""
        if self._root is None:
            raise StoreError(f"local_path: store {self.url} is not a local folder")
        key = _check_key(key)
        return self._root / key if key else self._root

    def _s3_key(self, key: str) -> str:
        key = _check_key(key)
        return "/".join(p for p in (self.prefix, key) if p)

    def _fs_path(self, key: str) -> str:
        return f"{self.bucket}/{self._s3_key(key)}".rstrip("/")

    def storage_options(self, *, asynchronous: bool = False) -> dict[str, Any]:
        """s3fs keyword arguments for this store (credentials included: never log them)."""
        opts: dict[str, Any] = {"use_listings_cache": False, "skip_instance_cache": True}
        if self._credentials is not None:
            opts.update(key=self._credentials.access_key_id, secret=self._credentials.secret_access_key)
            if self._credentials.session_token:
                opts["token"] = self._credentials.session_token
        if self.config.endpoint_url:
            opts["endpoint_url"] = self.config.endpoint_url
        client_kwargs: dict[str, Any] = {}
        if self.config.region:
            client_kwargs["region_name"] = self.config.region
        if client_kwargs:
            opts["client_kwargs"] = client_kwargs
        mode = self.config.effective_checksum_mode
        if mode:
            opts["config_kwargs"] = {
                "request_checksum_calculation": mode,
                "response_checksum_validation": mode,
            }
        if asynchronous:
            opts["asynchronous"] = True
        return opts

    @property
    def fs(self) -> Any:
        if self._fs is None:
            if self.is_local:
                raise StoreError("fs: a local store uses the operating system directly")
            import s3fs

            self._fs = s3fs.S3FileSystem(**self.storage_options())
        return self._fs

    @property
    def client(self) -> Any:
        """A boto3 S3 client for S3 specifics (conditional writes)."""
        if self._client is None:
            if self.is_local:
                raise StoreError("client: a local store has no S3 client")
            import boto3
            from botocore.config import Config

            cfg: dict[str, Any] = {"s3": {"addressing_style": "path"}, "retries": {"max_attempts": 3}}
            mode = self.config.effective_checksum_mode
            if mode:
                cfg.update(request_checksum_calculation=mode, response_checksum_validation=mode)
            kwargs: dict[str, Any] = {"config": Config(**cfg)}
            if self.config.endpoint_url:
                kwargs["endpoint_url"] = self.config.endpoint_url
            if self.config.region:
                kwargs["region_name"] = self.config.region
            if self._credentials is not None:
                kwargs.update(
                    aws_access_key_id=self._credentials.access_key_id,
                    aws_secret_access_key=self._credentials.secret_access_key,
                    aws_session_token=self._credentials.session_token,
                )
            self._client = boto3.session.Session().client("s3", **kwargs)
        return self._client

    # ----------------------------------------------------------------- access
    def check_access(self) -> None:
        """Fail early and clearly when the store cannot be used (bad credentials, missing bucket)."""
        if self.is_local:
            try:
                self._root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreAccessError(f"store {self.url}: cannot create the folder: {exc.strerror}") from exc
            if not os.access(self._root, os.W_OK):
                raise StoreAccessError(f"store {self.url}: the folder is not writable")
            return
        from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

        where = f"S3 store {self.url}" + (f" at endpoint {self.config.endpoint_url}" if self.config.endpoint_url else "")
        try:
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=self._s3_key(""), MaxKeys=1)
        except NoCredentialsError as exc:
            raise StoreAccessError(
                f"{where}: no credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                f"(or a profile), or name a Prefect Secret block in store.credentials_block"
            ) from exc
        except EndpointConnectionError as exc:
            raise StoreAccessError(f"{where}: cannot connect to the endpoint") from exc
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            if code in _AUTH_CODES or status in ("401", "403"):
                raise StoreAccessError(
                    f"{where}: the server refused the credentials ({code or status}); check "
                    f"AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or store.credentials_block"
                ) from None
            if code == "NoSuchBucket" or status == "404":
                raise StoreAccessError(f"{where}: bucket {self.bucket!r} does not exist; create it first") from None
            raise StoreAccessError(f"{where}: the server answered {code or status}") from None

    # ----------------------------------------------------------------- objects
    def put_bytes(self, key: str, data: bytes) -> None:
        """Write one object atomically (readers see the old or the new content, never a mix)."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise StoreError(f"put_bytes({key!r}): expected bytes, received {type(data).__name__}")
        if self.is_local:
            path = self.local_path(key)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
            return
        self.client.put_object(Bucket=self.bucket, Key=self._s3_key(key), Body=bytes(data))

    def put_exclusive(self, key: str, data: bytes) -> None:
        """Create ``key`` only if it does not exist; raise :class:`ObjectExistsError` otherwise.

        Local: the content is written to a temp file and hard-linked into place (``link`` fails if the
        name exists: exclusive and never half-written). S3: ``If-None-Match: *``; on servers that ignore
        it (see :meth:`conditional_writes_enforced`) an existence check narrows the race and the caller's
        Prefect concurrency limit closes it.
        """
        if self.is_local:
            path = self.local_path(key)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    raise ObjectExistsError(f"{self.url_for(key)} already exists") from None
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            return
        from botocore.exceptions import ClientError

        if not self.conditional_writes_enforced() and self.exists(key):
            raise ObjectExistsError(f"{self.url_for(key)} already exists")
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._s3_key(key), Body=bytes(data), IfNoneMatch="*")
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
                raise ObjectExistsError(f"{self.url_for(key)} already exists") from None
            raise

    def conditional_writes_enforced(self) -> bool:
        """Whether the store refuses a second ``If-None-Match: *`` PUT (probed once per store)."""
        if self.is_local:
            return True
        if self._conditional is None:
            from botocore.exceptions import ClientError

            probe = self._s3_key(f"_probe/conditional-{uuid.uuid4().hex}")
            self.client.put_object(Bucket=self.bucket, Key=probe, Body=b"1", IfNoneMatch="*")
            try:
                self.client.put_object(Bucket=self.bucket, Key=probe, Body=b"2", IfNoneMatch="*")
                enforced = False
            except ClientError as exc:
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if status not in (409, 412):
                    raise
                enforced = True
            finally:
                self.client.delete_object(Bucket=self.bucket, Key=probe)
            self._conditional = enforced
            if not enforced:
                log.warning(
                    "store %s ignores If-None-Match: exclusive commits rely on the per-dataset Prefect "
                    "concurrency limit on this store",
                    self.url,
                )
        return self._conditional

    def get_bytes(self, key: str) -> bytes:
        if self.is_local:
            return self.local_path(key).read_bytes()
        with self.fs.open(self._fs_path(key), "rb") as fh:
            return fh.read()

    def open_read(self, key: str) -> Any:
        if self.is_local:
            return open(self.local_path(key), "rb")
        return self.fs.open(self._fs_path(key), "rb", block_size=_BLOCK)

    def exists(self, key: str) -> bool:
        if self.is_local:
            return self.local_path(key).is_file()
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._s3_key(key))
            return True
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return False
            raise

    def size(self, key: str) -> int:
        if self.is_local:
            return self.local_path(key).stat().st_size
        return int(self.fs.size(self._fs_path(key)))

    def sha256(self, key: str) -> tuple[str, int]:
        """Read ``key`` back and return (sha256 hex, size in bytes)."""
        h = hashlib.sha256()
        n = 0
        with self.open_read(key) as fh:
            while True:
                block = fh.read(_BLOCK)
                if not block:
                    break
                h.update(block)
                n += len(block)
        return h.hexdigest(), n

    def list(self, prefix: str = "") -> list[str]:
        """All object keys under ``prefix`` (recursive, sorted), relative to the store root."""
        prefix = _check_key(prefix)
        if self.is_local:
            base = self.local_path(prefix)
            if not base.is_dir():
                return []
            out = []
            for dirpath, _dirs, files in os.walk(base):
                for name in files:
                    if name.startswith(".") and name.endswith(".tmp"):
                        continue  # an in-flight atomic write
                    rel = Path(dirpath, name).relative_to(self._root).as_posix()
                    out.append(rel)
            return sorted(out)
        root = self._s3_key("")
        s3_prefix = self._s3_key(prefix)
        paginator = self.client.get_paginator("list_objects_v2")
        out = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=(s3_prefix + "/") if s3_prefix else ""):
            for item in page.get("Contents", []):
                key = item["Key"]
                out.append(key[len(root) + 1 :] if root else key)
        return sorted(out)

    def list_dirs(self, prefix: str = "") -> list[str]:
        """Immediate child 'folder' names under ``prefix``."""
        prefix = _check_key(prefix)
        if self.is_local:
            base = self.local_path(prefix)
            return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
        s3_prefix = self._s3_key(prefix)
        paginator = self.client.get_paginator("list_objects_v2")
        out: set[str] = set()
        for page in paginator.paginate(
            Bucket=self.bucket, Prefix=(s3_prefix + "/") if s3_prefix else "", Delimiter="/"
        ):
            for cp in page.get("CommonPrefixes", []):
                out.add(cp["Prefix"].rstrip("/").rsplit("/", 1)[-1])
        return sorted(out)

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object under ``prefix``; returns how many. Used by garbage collection only."""
        keys = self.list(prefix)
        if self.is_local:
            import shutil

            base = self.local_path(_check_key(prefix))
            if base.is_dir():
                shutil.rmtree(base)
            return len(keys)
        for i in range(0, len(keys), 1000):
            batch = [{"Key": self._s3_key(k)} for k in keys[i : i + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        return len(keys)

    def delete(self, key: str) -> None:
        if self.is_local:
            with contextlib.suppress(FileNotFoundError):
                self.local_path(key).unlink()
            return
        self.client.delete_object(Bucket=self.bucket, Key=self._s3_key(key))

    # ----------------------------------------------------------------- zarr
    def zarr_store(self, key: str, *, read_only: bool = False) -> Any:
        """A zarr v3 store rooted at ``key`` (LocalStore or FsspecStore over s3fs)."""
        from zarr.storage import FsspecStore, LocalStore

        if self.is_local:
            path = self.local_path(key)
            if not read_only:
                path.mkdir(parents=True, exist_ok=True)
            return LocalStore(path, read_only=read_only)
        return FsspecStore.from_url(
            f"s3://{self._fs_path(key)}", storage_options=self.storage_options(), read_only=read_only
        )


def open_store(config: StoreConfig | str, credentials: S3Credentials | None = None, *, check: bool = True) -> Store:
    """Open a store and (by default) verify it is usable, with a clear error when it is not."""
    store = Store(config, credentials)
    if check:
        store.check_access()
    return store


__all__ = ["S3Credentials", "Store", "open_store"]
