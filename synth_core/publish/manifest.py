"""``manifest.json``: the completion record of a published dataset version (design.md §4), and the
readers built on it: :func:`verify`, :func:`list_datasets`, :func:`show`.

Layout of the manifest (canonical JSON, sorted keys)::

    kind: "manifest", manifest_version: 1
    name, version, created (UTC ISO 8601), producer {package, version, git_revision}
    license, intended_use
    sources:   [{source_id, snapshot_id, source_kind, record: {key, sha256, size}}]   # snapshot.json
    model:     {name, version, record: {key, sha256, size}, generator: {key, sha256, size}}
    generation: {config, seeds {plan, model_training, per_sample}, resolution_mm, n_samples, created,
                 producer}
    counts_per_stratum, planned_per_stratum, source_per_stratum
    quality:   {passed, gates: {complete|balanced|finite|labels_valid|privacy: {passed, detail}}}
    documents: {datasheet, croissant, montage, quality}
    totals:    {objects, bytes}
    objects:   [{key, sha256, size}]   # every object of the version but the manifest, keys relative to it

A version without this record does not exist for readers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from synth_core.publish.facts import VersionFacts
from synth_core.publish.layout import (
    CROISSANT,
    DATASETS,
    DATASHEET,
    GENERATION_RECORD,
    MANIFEST,
    MONTAGE,
    QUALITY,
    dataset_prefix,
    latest_key,
    version_number,
)
from synth_core.publish.quality import Gate
from synth_core.storage import Store, read_record, verify_objects
from synth_core.storage.versions import list_versions

MANIFEST_VERSION: Final[int] = 1


def build_manifest(
    facts: VersionFacts,
    objects: Sequence[Mapping[str, Any]],
    gates: Sequence[Gate],
    *,
    created: str,
    producer: Mapping[str, Any],
) -> dict[str, Any]:
    """The manifest payload; ``objects`` are every object of the version (keys relative to it), read back."""
    keys = [o["key"] for o in objects]
    if MANIFEST in keys:
        raise ValueError(f"objects: the manifest cannot list itself, received {MANIFEST!r} among the objects")
    if len(set(keys)) != len(keys):
        raise ValueError("objects: expected unique keys, received duplicates")
    g = facts.generation
    m = facts.model
    return {
        "kind": "manifest",
        "manifest_version": MANIFEST_VERSION,
        "name": facts.name,
        "version": facts.version,
        "created": created,
        "producer": dict(producer),
        "license": facts.license,
        "intended_use": facts.intended_use,
        "sources": [
            {"source_id": s.source_id, "snapshot_id": s.snapshot_id, "source_kind": s.source_kind,
             "record": s.record.as_dict()}
            for s in facts.sources
        ],
        "model": {"name": m.name, "version": m.version, "record": m.record.as_dict(),
                  "generator": m.generator.as_dict()},
        "generation": {
            "config": g["config"],
            "seeds": facts.seeds(),
            "resolution_mm": g["resolution_mm"],
            "n_samples": g["n_samples"],
            "created": g.get("created"),
            "producer": g.get("producer"),
        },
        "counts_per_stratum": g["counts_per_stratum"],
        "planned_per_stratum": g["planned_per_stratum"],
        "source_per_stratum": g["source_per_stratum"],
        "quality": {
            "passed": all(x.passed for x in gates),
            "gates": {x.name: {"passed": x.passed, "detail": x.detail} for x in gates},
        },
        "documents": {"datasheet": DATASHEET, "croissant": CROISSANT, "montage": MONTAGE, "quality": QUALITY},
        "totals": {"objects": len(objects), "bytes": int(sum(int(o["size"]) for o in objects))},
        "objects": sorted(({"key": o["key"], "sha256": o["sha256"], "size": int(o["size"])} for o in objects),
                          key=lambda o: o["key"]),
    }


# ------------------------------------------------------------------------------------ readers


def read_latest(store: Store, name: str) -> str | None:
    """The version ``datasets/<name>/LATEST`` names, or None when nothing is published."""
    key = latest_key(name)
    if not store.exists(key):
        return None
    text = store.get_bytes(key).decode("utf-8").strip()
    version_number(text)  # a malformed LATEST is an error, not a silent None
    return text


def resolve(store: Store, name: str, version: str = "latest") -> str:
    """``version`` itself, or what LATEST names for ``'latest'``."""
    if version != "latest":
        version_number(version)
        return version
    latest = read_latest(store, name)
    if latest is None:
        raise FileNotFoundError(f"{store.url_for(latest_key(name))}: no published version of dataset {name!r}")
    return latest


def read_manifest(store: Store, name: str, version: str = "latest") -> dict[str, Any]:
    """The manifest of a published version (``'latest'``: the one LATEST names)."""
    version = resolve(store, name, version)
    key = f"{dataset_prefix(name, version)}/{MANIFEST}"
    record = read_record(store, key)
    if record is None:
        raise FileNotFoundError(f"{store.url_for(key)}: version {version} of dataset {name!r} is not published")
    return record


def verify(store: Store, name: str, version: str = "latest") -> list[str]:
    """Re-read every object the manifest lists (size and sha256); also report objects it does not list.

    Returns the problems, one line each; an empty list means the published version is intact.
    """
    version = resolve(store, name, version)
    manifest = read_manifest(store, name, version)
    prefix = dataset_prefix(name, version)
    problems = []
    if manifest.get("name") != name or manifest.get("version") != version:
        problems.append(
            f"{prefix}/{MANIFEST}: names {manifest.get('name')}/{manifest.get('version')}, expected {name}/{version}"
        )
    objects = manifest.get("objects", [])
    problems.extend(verify_objects(store, prefix, objects))
    listed = {o["key"] for o in objects} | {MANIFEST}
    extra = [k[len(prefix) + 1 :] for k in store.list(prefix) if k[len(prefix) + 1 :] not in listed]
    problems.extend(f"{prefix}/{k}: present but not listed in the manifest" for k in extra)
    return problems


def version_state(store: Store, name: str, version: str) -> str:
    """``'published'`` (manifest), ``'generated'`` (generation.json only) or ``'incomplete'``."""
    prefix = dataset_prefix(name, version)
    if store.exists(f"{prefix}/{MANIFEST}"):
        return "published"
    if store.exists(f"{prefix}/{GENERATION_RECORD}"):
        return "generated"
    return "incomplete"


def list_datasets(store: Store) -> list[dict[str, Any]]:
    """Every dataset under ``datasets/``: its LATEST and its versions by state (published first)."""
    out = []
    for name in store.list_dirs(DATASETS):
        states: dict[str, list[str]] = {"published": [], "generated": [], "incomplete": []}
        for n in list_versions(store, f"{DATASETS}/{name}"):
            states[version_state(store, name, f"v{n}")].append(f"v{n}")
        try:
            latest = read_latest(store, name)
        except ValueError:
            latest = None
        out.append({"name": name, "latest": latest, **states})
    return out


def show(store: Store, name: str, version: str = "latest") -> dict[str, Any]:
    """A published version's summary: the manifest without its object list, plus where it lives."""
    version = resolve(store, name, version)
    manifest = read_manifest(store, name, version)
    summary = {k: v for k, v in manifest.items() if k != "objects"}
    summary["url"] = store.url_for(dataset_prefix(name, version))
    summary["latest"] = read_latest(store, name) == version
    return summary


def is_published(store: Store, name: str, version: str) -> bool:
    return store.exists(f"{dataset_prefix(name, version)}/{MANIFEST}")


def manifest_bytes_summary(manifest: Mapping[str, Any]) -> str:
    """One line for logs: name/version, objects, bytes, gates."""
    gates = ", ".join(f"{k}={'pass' if v['passed'] else 'FAIL'}" for k, v in manifest["quality"]["gates"].items())
    return (f"{manifest['name']}/{manifest['version']}: {manifest['totals']['objects']} objects, "
            f"{manifest['totals']['bytes']} bytes; {gates}")


__all__ = [
    "MANIFEST_VERSION",
    "build_manifest",
    "is_published",
    "list_datasets",
    "manifest_bytes_summary",
    "read_latest",
    "read_manifest",
    "resolve",
    "show",
    "verify",
    "version_state",
]
