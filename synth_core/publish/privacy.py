"""The privacy gate: no published object may carry a source subject id, NIfTI header free text, or a
credential (design.md §3: ``source_ref`` is never published; §4: exports rebuild every header).

The scan reads every object's bytes as stored (it decompresses nothing: zarr chunks stay compressed)
and looks for each forbidden string in the printable runs of those bytes, case-insensitively; parquet
tables are also read, so their compressed text columns are searched too. Findings name the object and
the *kind* of string found, never the string itself (a finding must not leak again through a report).
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from synth_core.storage import Store

log = logging.getLogger(__name__)

MIN_FORBIDDEN_LENGTH: Final[int] = 6
"""Shorter strings are not searched: they would match by chance in binary data."""

CREDENTIAL_ENV: Final[tuple[str, ...]] = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "PREFECT_API_KEY",
)
"""Environment variables whose values must never appear in a published object."""

HEADER_TEXT_FIELDS: Final[tuple[str, ...]] = ("descrip", "aux_file", "intent_name", "db_name")
"""NIfTI header fields that hold free text (site, scanner, patient details in the wild)."""

KIND_SOURCE_ID: Final[str] = "source subject id"
KIND_HEADER_TEXT: Final[str] = "NIfTI header text"
KIND_CREDENTIAL: Final[str] = "credential"

_N1_SIZE, _N2_SIZE = 348, 540
_RUNS = re.compile(rb"[\x20-\x7e]{%d,}" % MIN_FORBIDDEN_LENGTH)


# ------------------------------------------------------------------------------------ what is forbidden


def nifti_header_text(path: Path) -> list[str]:
    """The non-empty free-text header fields of a NIfTI-1/2 file (``.nii`` or ``.nii.gz``).

    Only the header is read (at most 540 decompressed bytes); anything that is not a NIfTI header gives
    an empty list.
    """
    from nibabel.nifti1 import Nifti1Header
    from nibabel.nifti2 import Nifti2Header

    with open(path, "rb") as fh:
        head = fh.read(64 * 1024)
    if head[:2] == b"\x1f\x8b":
        try:
            block = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, _N2_SIZE)
        except zlib.error:
            return []
    else:
        block = head[:_N2_SIZE]
    if len(block) < _N1_SIZE:
        return []
    out = []
    for endian in ("<", ">"):
        size = int.from_bytes(block[:4], "little" if endian == "<" else "big")
        if size == _N1_SIZE:
            hdr: Any = Nifti1Header(binaryblock=block[:_N1_SIZE], endianness=endian, check=False)
        elif size == _N2_SIZE and len(block) >= _N2_SIZE:
            hdr = Nifti2Header(binaryblock=block[:_N2_SIZE], endianness=endian, check=False)
        else:
            continue
        for field in HEADER_TEXT_FIELDS:
            if field not in hdr.keys():
                continue
            raw = bytes(hdr[field].tobytes()).split(b"\x00", 1)[0]
            text = raw.decode("latin-1").strip()
            if text:
                out.append(text)
        break
    return out


def _safe_join(root: Path, rel: str) -> Path | None:
    """``root/rel`` when it is a regular file inside ``root`` reached through no symlink; otherwise None."""
    parts = Path(rel).parts
    if not parts or Path(rel).is_absolute() or any(p in ("", ".", "..") for p in parts):
        return None
    path = root
    for part in parts:
        path = path / part
        if path.is_symlink():
            return None
    return path if path.is_file() else None


def credential_strings(store: Store | None = None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Credential values (from the environment and the store's explicit credentials) → their kind."""
    env = os.environ if environ is None else environ
    out: dict[str, str] = {}
    for name in CREDENTIAL_ENV:
        value = env.get(name)
        if value:
            out[value] = f"{KIND_CREDENTIAL} ({name})"
    creds = getattr(store, "_credentials", None) if store is not None else None
    if creds is not None:
        for attr in ("access_key_id", "secret_access_key", "session_token"):
            value = getattr(creds, attr, None)
            if value:
                out.setdefault(value, f"{KIND_CREDENTIAL} (store {attr})")
    return out


def source_strings(
    store: Store,
    snapshots: Sequence[Mapping[str, str]],
    source_paths: Mapping[str, str | Path] | None = None,
) -> dict[str, str]:
    """Source subject ids of the snapshots (accepted and quarantined) and, where the original files are
    reachable through ``source_paths`` (source_id → folder), their NIfTI header free text → kind."""
    from synth_core.ingest.snapshot import read_quarantine, read_subjects

    out: dict[str, str] = {}
    for snap in snapshots:
        source_id, snapshot_id = snap["source_id"], snap["snapshot_id"]
        subjects = read_subjects(store, source_id, snapshot_id)
        quarantine = read_quarantine(store, source_id, snapshot_id)
        for ref in [*subjects["source_ref"].tolist(), *quarantine["source_ref"].tolist()]:
            out[str(ref)] = KIND_SOURCE_ID
        root = (source_paths or {}).get(source_id)
        if root is None:
            continue
        root_path = Path(root)
        if not root_path.is_dir():
            raise FileNotFoundError(
                f"source_paths[{source_id!r}]: expected the folder of the original files, received {str(root)!r} "
                f"(not a folder)"
            )
        for files in subjects["source_files"]:
            for rel in json.loads(files):
                path = _safe_join(root_path, rel)
                if path is None:
                    log.warning("privacy scan: %s/%s is missing or unsafe; its header was not read", source_id, rel)
                    continue
                for text in nifti_header_text(path):
                    out.setdefault(text, KIND_HEADER_TEXT)
    return out


def forbidden_strings(
    store: Store,
    snapshots: Sequence[Mapping[str, str]],
    *,
    source_paths: Mapping[str, str | Path] | None = None,
    extra: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Everything the privacy gate looks for → its kind: source ids, header text, credentials, ``extra``."""
    out = source_strings(store, snapshots, source_paths)
    for value, kind in credential_strings(store, environ).items():
        out.setdefault(value, kind)
    for value in extra:
        out.setdefault(value, "forbidden string")
    return out


# ------------------------------------------------------------------------------------ scanning


def _normalize(forbidden: Iterable[str] | Mapping[str, str], *, warn: bool) -> dict[str, str]:
    """lower-cased forbidden string → kind; strings under MIN_FORBIDDEN_LENGTH are dropped (logged)."""
    items = forbidden.items() if isinstance(forbidden, Mapping) else ((f, "forbidden string") for f in forbidden)
    out: dict[str, str] = {}
    short = 0
    for value, kind in items:
        if not isinstance(value, str):
            raise TypeError(f"forbidden: expected strings, received {type(value).__name__}")
        text = value.strip()
        if len(text) < MIN_FORBIDDEN_LENGTH:
            short += bool(text)
            continue
        out.setdefault(text.lower(), kind)
    if short and warn:
        log.warning(
            "privacy scan: %d forbidden string(s) shorter than %d characters were not searched (chance matches "
            "in binary data)", short, MIN_FORBIDDEN_LENGTH,
        )
    return out


def _parquet_text(data: bytes) -> str:
    """Column names, schema metadata and every text value of a parquet table (decompressed)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(data))
    parts = list(table.column_names)
    for k, v in (table.schema.metadata or {}).items():
        parts.append(k.decode("utf-8", "replace"))
        parts.append(v.decode("utf-8", "replace"))
    for column in table.columns:
        kind = column.type
        if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
            continue
        values = column.unique().to_pylist() if not pa.types.is_nested(kind) else column.to_pylist()
        for value in values:
            if value is None:
                continue
            parts.append(value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value))
    return "\n".join(parts)


def _is_gzip_text(key: str) -> bool:
    return key.endswith((".json.gz", ".txt.gz", ".csv.gz", ".tsv.gz"))


@dataclass(frozen=True)
class ForbiddenStrings:
    """A prepared lookup table (lower-cased string → kind) for :func:`scan_bytes`; build it once."""

    table: Mapping[str, str]

    def __len__(self) -> int:
        return len(self.table)

    def kinds(self) -> dict[str, int]:
        """How many strings of each kind are searched (the report's wording; never the strings)."""
        out: dict[str, int] = {}
        for kind in self.table.values():
            out[kind] = out.get(kind, 0) + 1
        return dict(sorted(out.items()))


def normalize_forbidden(forbidden: Iterable[str] | Mapping[str, str]) -> ForbiddenStrings:
    """Prepare ``forbidden`` (strings, or string → kind) for scanning; strings shorter than
    :data:`MIN_FORBIDDEN_LENGTH` are dropped with a warning."""
    if isinstance(forbidden, ForbiddenStrings):
        return forbidden
    return ForbiddenStrings(_normalize(forbidden, warn=True))


def scan_bytes(key: str, data: bytes, forbidden: ForbiddenStrings | Iterable[str] | Mapping[str, str]) -> list[str]:
    """Findings (``'<key>: contains a <kind> (<n> distinct values)'``) for one object's bytes; empty when clean.

    ``forbidden`` is a :class:`ForbiddenStrings`, an iterable of strings, or a mapping string → kind (as
    returned by :func:`forbidden_strings`).
    """
    table = forbidden.table if isinstance(forbidden, ForbiddenStrings) else _normalize(forbidden, warn=False)
    return _scan(key, data, table)


def _scan(key: str, data: bytes, table: Mapping[str, str]) -> list[str]:
    if not table:
        return []
    texts = ["\n".join(m.decode("ascii") for m in _RUNS.findall(data)).lower()]
    if key.endswith(".parquet"):
        try:
            texts.append(_parquet_text(data).lower())
        except Exception as exc:  # noqa: BLE001 - an unreadable table is a finding, not a crash
            return [f"{key}: not a readable parquet table ({type(exc).__name__}); it cannot be checked"]
    elif _is_gzip_text(key):
        texts.append(gzip.decompress(data).decode("utf-8", "replace").lower())
    lowered_raw: bytes | None = None
    hits: dict[str, int] = {}
    for value, kind in table.items():
        found = any(value in text for text in texts)
        if not found and not value.isascii():
            lowered_raw = data.lower() if lowered_raw is None else lowered_raw
            found = value.encode("utf-8") in lowered_raw or value.encode("latin-1", "ignore") in lowered_raw
        if found:
            hits[kind] = hits.get(kind, 0) + 1
    return [f"{key}: contains a {kind} ({n} distinct value{'' if n == 1 else 's'})" for kind, n in sorted(hits.items())]


def scan_for_leaks(
    store: Store, prefix: str, forbidden: ForbiddenStrings | Iterable[str] | Mapping[str, str]
) -> list[str]:
    """Read every object under ``prefix`` and report each one holding a forbidden string (empty: clean).

    Keys in the findings are relative to ``prefix``; the forbidden values themselves are never reported.
    """
    prefix = prefix.strip("/")
    table = normalize_forbidden(forbidden).table
    findings: list[str] = []
    for key in store.list(prefix):
        findings.extend(_scan(key[len(prefix) + 1 :], store.get_bytes(key), table))
    return findings


__all__ = [
    "CREDENTIAL_ENV",
    "ForbiddenStrings",
    "HEADER_TEXT_FIELDS",
    "KIND_CREDENTIAL",
    "KIND_HEADER_TEXT",
    "KIND_SOURCE_ID",
    "MIN_FORBIDDEN_LENGTH",
    "credential_strings",
    "forbidden_strings",
    "nifti_header_text",
    "normalize_forbidden",
    "scan_bytes",
    "scan_for_leaks",
    "source_strings",
]
