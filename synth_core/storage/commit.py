"""The one commit protocol shared by snapshots, model versions and dataset versions (design.md §4).

1. write the objects; 2. read every object back (size + sha256); 3. create the completion record
exclusively, listing every object it covers. A folder without its record does not exist for readers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from synth_core.storage.errors import IntegrityError, ObjectExistsError
from synth_core.storage.store import Store


@dataclass(frozen=True)
class ObjectRecord:
    """One object covered by a completion record; ``key`` is relative to the record's folder."""

    key: str
    sha256: str
    size: int


def canonical_json(payload: Mapping[str, Any]) -> bytes:
    """Deterministic JSON bytes (sorted keys, no NaN) for records that are compared byte for byte."""
    return (json.dumps(payload, sort_keys=True, indent=2, allow_nan=False, ensure_ascii=True) + "\n").encode()


def digest_objects(store: Store, prefix: str, keys: Iterable[str] | None = None) -> list[ObjectRecord]:
    """Read back every object (all under ``prefix`` when ``keys`` is None) and return its sha256 and size."""
    prefix = prefix.strip("/")
    if keys is None:
        keys = [k[len(prefix) + 1 :] for k in store.list(prefix)]
    out = []
    for rel in sorted(keys):
        digest, size = store.sha256(f"{prefix}/{rel}")
        out.append(ObjectRecord(key=rel, sha256=digest, size=size))
    return out


def objects_payload(objects: Iterable[ObjectRecord]) -> list[dict[str, Any]]:
    return [asdict(o) for o in sorted(objects, key=lambda o: o.key)]


def commit_record(store: Store, key: str, payload: Mapping[str, Any]) -> bool:
    """Create the completion record ``key`` exclusively.

    Returns True when this call created it, False when an identical record already existed (an
    idempotent rerun). A *different* existing record raises :class:`ObjectExistsError`: committed
    folders are immutable.
    """
    data = canonical_json(payload)
    try:
        store.put_exclusive(key, data)
        return True
    except ObjectExistsError:
        existing = store.get_bytes(key)
        if existing == data:
            return False
        raise ObjectExistsError(
            f"{store.url_for(key)} is already committed with different content; committed folders are immutable"
        ) from None


def read_record(store: Store, key: str) -> dict[str, Any] | None:
    """The completion record at ``key``, or None when the folder is not committed."""
    if not store.exists(key):
        return None
    return json.loads(store.get_bytes(key))


def verify_objects(store: Store, prefix: str, objects: Iterable[Mapping[str, Any]]) -> list[str]:
    """Re-read every listed object; return one message per mismatch (empty list: all good)."""
    problems = []
    prefix = prefix.strip("/")
    for obj in objects:
        key = f"{prefix}/{obj['key']}"
        if not store.exists(key):
            problems.append(f"{key}: missing")
            continue
        digest, size = store.sha256(key)
        if size != obj["size"]:
            problems.append(f"{key}: size {size} != recorded {obj['size']}")
        elif digest != obj["sha256"]:
            problems.append(f"{key}: sha256 {digest[:12]}… != recorded {obj['sha256'][:12]}…")
    return problems


def require_verified(store: Store, prefix: str, objects: Iterable[Mapping[str, Any]]) -> None:
    problems = verify_objects(store, prefix, objects)
    if problems:
        raise IntegrityError(f"{store.url_for(prefix)}: {len(problems)} object(s) failed verification: " + "; ".join(problems[:5]))


__all__ = [
    "ObjectRecord",
    "canonical_json",
    "commit_record",
    "digest_objects",
    "objects_payload",
    "read_record",
    "require_verified",
    "verify_objects",
]
