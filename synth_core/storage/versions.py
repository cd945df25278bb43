"""Numbered versions (``v1, v2, …``) under a parent prefix, claimed exclusively by a run record.

Used by model versions (``models/<name>/``) and dataset versions (``datasets/<name>/``): a run creates
``<parent>/v<N>/run.json`` exclusively with the hash of its config. Rerunning the same config finds that
version again: committed (its completion record exists: nothing to do) or unfinished (resume it), so a
killed run never leaves a duplicate version.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from synth_core.storage.commit import canonical_json, commit_record, read_record
from synth_core.storage.errors import ObjectExistsError
from synth_core.storage.store import Store

RUN_RECORD = "run.json"


def list_versions(store: Store, parent: str) -> list[int]:
    """Version numbers present under ``parent`` (folders named ``v<N>``), ascending."""
    return sorted(int(f[1:]) for f in store.list_dirs(parent) if f.startswith("v") and f[1:].isdigit())


def find_version(store: Store, parent: str, config_hash: str) -> str | None:
    """The newest version under ``parent`` whose run record carries ``config_hash`` (None: none started).

    Read-only: this is how a parent flow finds what a child run (another process, another machine)
    wrote for the same config, from the store rather than from the child's return value.
    """
    for v in reversed(list_versions(store, parent)):
        run = read_record(store, f"{parent}/v{v}/{RUN_RECORD}")
        if run is not None and run.get("config_hash") == config_hash:
            return f"v{v}"
    return None


def claim_version(
    store: Store,
    parent: str,
    *,
    config_hash: str,
    payload: Mapping[str, Any],
    completion_record: str,
    explicit: str | None = None,
) -> tuple[str, bool]:
    """The version this run writes under ``parent`` and whether it is already committed.

    ``explicit`` (``v<N>``) is used as is; its run record must carry the same ``config_hash``.
    Otherwise the newest version started with the same config is reused; failing that, the next free
    number is claimed by creating its run record exclusively. ``payload`` must contain ``config_hash``.
    """
    if payload.get("config_hash") != config_hash:
        raise ValueError("claim_version: payload['config_hash'] must equal config_hash")
    if explicit is not None:
        prefix = f"{parent}/{explicit}"
        existing = read_record(store, f"{prefix}/{RUN_RECORD}")
        if existing is not None and existing.get("config_hash") != config_hash:
            raise ObjectExistsError(
                f"{store.url_for(prefix)} was started with another config (hash {existing.get('config_hash', '')[:12]}…); "
                f"choose another version or leave it empty"
            )
        if existing is None:
            commit_record(store, f"{prefix}/{RUN_RECORD}", payload)
        return explicit, store.exists(f"{prefix}/{completion_record}")
    versions = list_versions(store, parent)
    found = find_version(store, parent, config_hash)
    if found is not None:
        return found, store.exists(f"{parent}/{found}/{completion_record}")
    nxt = (versions[-1] if versions else 0) + 1
    while True:
        try:
            store.put_exclusive(f"{parent}/v{nxt}/{RUN_RECORD}", canonical_json(payload))
            return f"v{nxt}", False
        except ObjectExistsError:
            nxt += 1


__all__ = ["RUN_RECORD", "claim_version", "find_version", "list_versions"]
