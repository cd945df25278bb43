"""Resumable, verified downloads and safe tar extraction for public datasets (design.md §6).

:func:`download` fetches one ``http(s)`` URL with the standard library only. It writes to
``<dest>.part``, resumes a partial file with an HTTP ``Range: bytes=N-`` request (RFC 9110 §14:
``206 Partial Content`` → append; ``200 OK`` → the server ignored the range, start again from byte
0; ``416 Range Not Satisfiable`` → the part file is already complete, verify it), verifies the
md5/sha256 at the end and renames the part file to ``dest`` atomically. A checksum mismatch deletes
the part file, so the next call starts clean.

:func:`safe_extract_tar` refuses, before anything is written, every member that could escape or
abuse the destination (absolute names, ``..`` components, symlinks, hardlinks, devices, FIFOs, a
total size above a cap, too many members), then extracts regular files and folders only, with sane
modes (no setuid/setgid/sticky, no group/other write), into a temporary folder beside ``dest`` that
is renamed to ``dest`` at the end: a failed extraction leaves nothing half-done.

Reference for the resume semantics: https://www.rfc-editor.org/rfc/rfc9110#name-range-requests
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import urlparse

__all__ = ["ALLOWED_SCHEMES", "download", "file_digest", "safe_extract_tar"]

logger = logging.getLogger(__name__)

ALLOWED_SCHEMES: tuple[str, ...] = ("http", "https")
_USER_AGENT = "synthmri-factory/0.1 (+urllib)"
_CONTENT_RANGE_RE = re.compile(r"^\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*$", re.IGNORECASE)
_HEX_RE = re.compile(r"^[0-9a-f]+$")


# ---------------------------------------------------------------------------------------------
# download
# ---------------------------------------------------------------------------------------------


class _SafeRedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to http/https (urllib would also follow ftp://)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        scheme = urlparse(newurl).scheme.lower()
        if scheme not in ALLOWED_SCHEMES:
            raise ValueError(
                f"download: {req.full_url!r} redirected to {newurl!r}; expected an http/https URL, "
                f"received scheme {scheme!r}"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(_SafeRedirectHandler())


def _check_url(url: str) -> None:
    if not isinstance(url, str):
        raise ValueError(f"url: expected an http/https URL string, received {url!r}")
    parsed = urlparse(url)
    if parsed.scheme.lower() not in ALLOWED_SCHEMES or not parsed.netloc:
        raise ValueError(
            f"url: expected an http:// or https:// URL with a host, received {url!r}; "
            f"valid schemes: {', '.join(ALLOWED_SCHEMES)}"
        )


def _check_digest(name: str, value: str | None, length: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) != length or not _HEX_RE.match(value.lower()):
        raise ValueError(f"{name}: expected {length} hexadecimal characters, received {value!r}")
    return value.lower()


def file_digest(path: Path, algorithm: str = "sha256", *, chunk: int = 1 << 20) -> str:
    """Hex digest of a file's bytes (``algorithm``: any name :func:`hashlib.new` accepts)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


class _Hashers:
    def __init__(self, md5: str | None, sha256: str | None) -> None:
        self.expected = {k: v for k, v in (("md5", md5), ("sha256", sha256)) if v is not None}
        self.reset()

    def reset(self) -> None:
        self.h = {k: hashlib.new(k) for k in self.expected}

    def update(self, data: bytes) -> None:
        for h in self.h.values():
            h.update(data)

    def feed_file(self, path: Path, chunk: int) -> None:
        if not self.h:
            return
        with open(path, "rb") as fh:
            while block := fh.read(chunk):
                self.update(block)

    def mismatch(self) -> tuple[str, str, str] | None:
        for k, expected in self.expected.items():
            got = self.h[k].hexdigest()
            if got != expected:
                return k, expected, got
        return None


def _verify_existing(url: str, dest: Path, md5: str | None, sha256: str | None, chunk: int) -> None:
    hashers = _Hashers(md5, sha256)
    hashers.feed_file(dest, chunk)
    bad = hashers.mismatch()
    if bad is not None:
        algo, expected, got = bad
        raise ValueError(
            f"download {url!r}: {dest} already exists with a different {algo}: expected {expected}, "
            f"received {got}; remove it to download again"
        )


def _fail_checksum(url: str, part: Path, bad: tuple[str, str, str]) -> None:
    algo, expected, got = bad
    part.unlink(missing_ok=True)
    raise ValueError(f"download {url!r}: {algo} mismatch: expected {expected}, received {got}; partial file removed")


def _header_int(headers: Any, name: str) -> int | None:
    raw = headers.get(name) if headers is not None else None
    if raw is None:
        return None
    try:
        value = int(str(raw).strip())
    except ValueError:
        return None
    return value if value >= 0 else None


def _parse_content_range(raw: str | None) -> tuple[int | None, int | None, int | None]:
    """``bytes a-b/total`` → (a, b, total); ``bytes */total`` → (None, None, total)."""
    if not raw:
        return None, None, None
    m = _CONTENT_RANGE_RE.match(raw)
    if not m:
        return None, None, None
    start = int(m.group(1)) if m.group(1) is not None else None
    end = int(m.group(2)) if m.group(2) is not None else None
    total = int(m.group(3)) if m.group(3) not in (None, "*") else None
    return start, end, total


def _too_big(url: str, part: Path, size: int, max_bytes: int) -> None:
    part.unlink(missing_ok=True)
    raise ValueError(
        f"download {url!r}: max_bytes exceeded: expected at most {max_bytes} bytes, received {size}; "
        "partial file removed"
    )


def _copy_stream(
    url: str, resp: IO[bytes], fh: IO[bytes], hashers: _Hashers, *, written: int, expected_total: int | None,
    part: Path, chunk: int, max_bytes: int | None,
) -> int:
    while True:
        block = resp.read(chunk)
        if not block:
            break
        written += len(block)
        if max_bytes is not None and written > max_bytes:
            fh.close()
            _too_big(url, part, written, max_bytes)
        fh.write(block)
        hashers.update(block)
    fh.flush()
    os.fsync(fh.fileno())
    if expected_total is not None and written < expected_total:
        # The connection ended early: keep the part file so the next attempt resumes.
        raise ConnectionError(
            f"download {url!r}: connection closed after {written} of {expected_total} bytes; "
            f"{part} kept for resuming"
        )
    return written


def _attempt(
    url: str, part: Path, hashers: _Hashers, *, timeout: float, chunk: int, max_bytes: int | None
) -> None:
    """One HTTP request: resume or (re)start ``part`` and stream to its end. Raises on network errors."""
    offset = part.stat().st_size if part.exists() else 0
    if max_bytes is not None and offset > max_bytes:
        _too_big(url, part, offset, max_bytes)
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset > 0:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers, method="GET")
    try:
        resp = _opener().open(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset > 0:
            _, _, total = _parse_content_range(exc.headers.get("Content-Range") if exc.headers else None)
            exc.close()
            if total is not None and total != offset:
                logger.debug("download %s: 416 with total %s != part size %s; restarting", url, total, offset)
                part.unlink(missing_ok=True)
                hashers.reset()
                _attempt(url, part, hashers, timeout=timeout, chunk=chunk, max_bytes=max_bytes)
                return
            logger.debug("download %s: 416 for bytes=%d-: part file is complete", url, offset)
            hashers.reset()
            hashers.feed_file(part, chunk)
            return
        raise
    with resp:
        status = getattr(resp, "status", None) or resp.getcode()
        length = _header_int(resp.headers, "Content-Length")
        if status == 206 and offset > 0:
            start, _, total = _parse_content_range(resp.headers.get("Content-Range"))
            if start != offset:
                raise ConnectionError(
                    f"download {url!r}: asked for bytes={offset}-, server answered Content-Range "
                    f"{resp.headers.get('Content-Range')!r}"
                )
            if max_bytes is not None and total is not None and total > max_bytes:
                _too_big(url, part, total, max_bytes)
            hashers.reset()
            hashers.feed_file(part, chunk)
            expected_total = offset + length if length is not None else total
            logger.debug("download %s: resuming at byte %d", url, offset)
            with open(part, "ab") as fh:
                _copy_stream(url, resp, fh, hashers, written=offset, expected_total=expected_total,
                             part=part, chunk=chunk, max_bytes=max_bytes)
            return
        if status != 200:
            raise ConnectionError(f"download {url!r}: expected HTTP 200 or 206, received {status}")
        if offset > 0:
            logger.debug("download %s: server ignored Range (200); restarting from byte 0", url)
        if max_bytes is not None and length is not None and length > max_bytes:
            _too_big(url, part, length, max_bytes)
        hashers.reset()
        with open(part, "wb") as fh:
            _copy_stream(url, resp, fh, hashers, written=0, expected_total=length,
                         part=part, chunk=chunk, max_bytes=max_bytes)


def download(
    url: str,
    dest: Path,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    timeout: float = 60.0,
    chunk: int = 1 << 20,
    max_bytes: int | None = None,
    retries: int = 3,
) -> Path:
    """Download ``url`` to ``dest`` (resumable, verified, atomic) and return ``dest``.

    - Only ``http``/``https`` URLs (redirects included) are accepted; anything else is a ``ValueError``.
    - Bytes go to ``dest`` + ``.part``; an existing part file is resumed with ``Range: bytes=N-``
      (206 → append, 200 → restart from 0, 416 → already complete).
    - ``md5`` / ``sha256`` (hex) are verified at the end; a mismatch deletes the part file and raises
      ``ValueError`` naming the URL, the expected and the received digest.
    - ``max_bytes`` caps the size (declared or streamed); exceeding it deletes the part file and raises.
    - Network failures are retried ``retries`` times (each retry resumes); then the last error is
      raised and the part file is kept for a later call.
    - If ``dest`` already exists it is returned as is when it matches the given checksums (no request
      is made); with a different checksum a ``ValueError`` is raised (nothing is overwritten).
    """
    _check_url(url)
    md5 = _check_digest("md5", md5, 32)
    sha256 = _check_digest("sha256", sha256, 64)
    if chunk <= 0:
        raise ValueError(f"chunk: expected a positive number of bytes, received {chunk}")
    if max_bytes is not None and max_bytes < 0:
        raise ValueError(f"max_bytes: expected None or a non-negative number of bytes, received {max_bytes}")
    if retries < 0:
        raise ValueError(f"retries: expected a non-negative integer, received {retries}")
    dest = Path(dest)
    if dest.is_symlink():
        raise ValueError(f"dest: expected a regular file path, received a symlink {dest}")
    if dest.exists():
        if not dest.is_file():
            raise ValueError(f"dest: expected a file path, received an existing non-file {dest}")
        _verify_existing(url, dest, md5, sha256, chunk)
        logger.debug("download %s: %s already present and verified", url, dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_suffix(dest.suffix + ".part")
    if part.is_symlink():
        raise ValueError(f"download {url!r}: refusing to write through a symlinked part file {part}")
    hashers = _Hashers(md5, sha256)
    last: BaseException | None = None
    for attempt in range(retries + 1):
        try:
            _attempt(url, part, hashers, timeout=timeout, chunk=chunk, max_bytes=max_bytes)
            last = None
            break
        except ValueError:
            raise
        except urllib.error.HTTPError as exc:
            if 400 <= exc.code < 500 and exc.code not in (408, 429):
                raise ConnectionError(f"download {url!r}: HTTP {exc.code} {exc.reason}") from exc
            last = exc
        except (OSError, ConnectionError, TimeoutError) as exc:  # URLError is an OSError
            last = exc
        logger.debug("download %s: attempt %d failed: %s", url, attempt + 1, last)
    if last is not None:
        raise ConnectionError(f"download {url!r} failed after {retries + 1} attempts: {last}") from last
    bad = hashers.mismatch()
    if bad is not None:
        _fail_checksum(url, part, bad)
    os.replace(part, dest)
    return dest


# ---------------------------------------------------------------------------------------------
# tar extraction
# ---------------------------------------------------------------------------------------------


def _member_path(member: tarfile.TarInfo) -> PurePosixPath | None:
    """Normalized relative path of a member (``None`` for the archive's own ``.`` entry); raises if unsafe."""
    name = member.name
    if "\x00" in name:
        raise ValueError(f"tar member {name!r}: refused: NUL byte in name")
    if name.startswith("/") or name.startswith("\\") or re.match(r"^[A-Za-z]:[\\/]", name):
        raise ValueError(f"tar member {name!r}: refused: absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise ValueError(f"tar member {name!r}: refused: '..' path component")
    if not parts:
        return None
    return PurePosixPath(*parts)


def _member_kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        raise ValueError(f"tar member {member.name!r}: refused: symlink (to {member.linkname!r})")
    if member.islnk():
        raise ValueError(f"tar member {member.name!r}: refused: hardlink (to {member.linkname!r})")
    if member.ischr() or member.isblk():
        raise ValueError(f"tar member {member.name!r}: refused: device file")
    if member.isfifo():
        raise ValueError(f"tar member {member.name!r}: refused: FIFO")
    if member.isdir():
        return "dir"
    if member.isfile():
        return "file"
    raise ValueError(f"tar member {member.name!r}: refused: unsupported member type {member.type!r}")


def _file_mode(mode: int) -> int:
    return 0o755 if mode & 0o111 else 0o644


def safe_extract_tar(
    archive: Path,
    dest: Path,
    *,
    max_total_bytes: int = 64 * 2**30,
    max_members: int = 1_000_000,
) -> list[Path]:
    """Extract ``archive`` (.tar, .tar.gz, .tgz, .tar.bz2, .tar.xz) into ``dest``; return the files written.

    Every member is checked first; any unsafe member raises ``ValueError`` naming the member and the
    reason, before anything is written. ``dest`` must not exist (or be an empty folder). Extraction
    goes to a temporary folder beside ``dest`` that is renamed to ``dest`` only when complete.
    """
    archive = Path(archive)
    dest = Path(dest)
    if max_total_bytes < 0:
        raise ValueError(f"max_total_bytes: expected a non-negative byte count, received {max_total_bytes}")
    if max_members < 1:
        raise ValueError(f"max_members: expected a positive count, received {max_members}")
    if archive.is_symlink() or not archive.is_file():
        raise ValueError(f"archive: expected a regular tar file, received {archive} (missing, symlink or not a file)")
    if dest.is_symlink() or (dest.exists() and (not dest.is_dir() or any(dest.iterdir()))):
        raise ValueError(f"dest: expected a path that does not exist or an empty folder, received {dest}")

    try:
        tf = tarfile.open(archive, mode="r:*")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ValueError(f"archive {archive}: not a readable tar file: {exc}") from exc
    with tf:
        plan: list[tuple[tarfile.TarInfo, PurePosixPath, str]] = []
        seen: dict[PurePosixPath, str] = {}
        implied_dirs: set[PurePosixPath] = set()
        total = 0
        count = 0
        try:
            for member in tf:
                count += 1
                if count > max_members:
                    raise ValueError(
                        f"tar member {member.name!r}: refused: more than max_members={max_members} members"
                    )
                rel = _member_path(member)
                kind = _member_kind(member)
                if rel is None:
                    continue
                if rel in seen:
                    raise ValueError(f"tar member {member.name!r}: refused: duplicate member name")
                if kind == "file" and rel in implied_dirs:
                    raise ValueError(f"tar member {member.name!r}: refused: a file where other members need a folder")
                for parent in rel.parents:
                    if seen.get(parent) == "file":
                        raise ValueError(f"tar member {member.name!r}: refused: its parent {parent} is a file member")
                    implied_dirs.add(parent)
                seen[rel] = kind
                if kind == "file":
                    total += member.size
                    if total > max_total_bytes:
                        raise ValueError(
                            f"tar member {member.name!r}: refused: total size {total} bytes exceeds "
                            f"max_total_bytes={max_total_bytes}"
                        )
                plan.append((member, rel, kind))
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise ValueError(f"archive {archive}: corrupt tar: {exc}") from exc

        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".extracting", dir=dest.parent))
        written: list[Path] = []
        try:
            dir_modes: list[tuple[Path, int]] = []
            for member, rel, kind in plan:
                target = staging.joinpath(*rel.parts)
                if kind == "dir":
                    target.mkdir(parents=True, exist_ok=True)
                    dir_modes.append((target, 0o755))  # member modes are not trusted
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tf.extractfile(member)
                if src is None:  # pragma: no cover - regular members always have a file object
                    raise ValueError(f"tar member {member.name!r}: could not be read")
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                fd = os.open(target, flags, 0o600)
                with src, os.fdopen(fd, "wb") as out:
                    remaining = member.size
                    while remaining > 0:
                        block = src.read(min(1 << 20, remaining))
                        if not block:
                            raise ValueError(f"tar member {member.name!r}: truncated archive")
                        out.write(block)
                        remaining -= len(block)
                os.chmod(target, _file_mode(member.mode))
                try:
                    os.utime(target, (member.mtime, member.mtime))
                except (OverflowError, OSError, ValueError):
                    pass
                written.append(rel)
            for path, mode in dir_modes:
                os.chmod(path, mode)
            os.chmod(staging, 0o755)
            if dest.exists():
                dest.rmdir()  # checked empty above
            os.rename(staging, dest)
        except BaseException as exc:
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(exc, (tarfile.TarError, EOFError)):
                raise ValueError(f"archive {archive}: corrupt tar: {exc}") from exc
            raise
    return sorted(dest.joinpath(*rel.parts) for rel in written)

