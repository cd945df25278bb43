"""What publishing a version needs to know about where it came from: its generation record, the model
and the source snapshots, each read back with the sha256 of its completion record.

Everything here is a pure function of committed records, so two publishers of one version build the same
datasheet, Croissant and quality documents byte for byte (the only time-dependent field is the day).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from synth_core.storage import IntegrityError, Store, read_record


@dataclass(frozen=True)
class ObjectRef:
    """An object elsewhere in the store (a model's or snapshot's file), read back."""

    key: str
    sha256: str
    size: int

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "sha256": self.sha256, "size": self.size}


@dataclass(frozen=True)
class SourceFacts:
    source_id: str
    snapshot_id: str
    source_kind: str
    subjects: int
    with_tumor: int
    quarantined: int
    record: ObjectRef
    ingest_config: Mapping[str, Any]


@dataclass(frozen=True)
class ModelFacts:
    name: str
    version: str
    record: ObjectRef
    generator: ObjectRef
    config: Mapping[str, Any]
    metrics: Mapping[str, Any]
    code: Mapping[str, Any]


@dataclass(frozen=True)
class VersionFacts:
    """A generated version and its provenance, ready for the datasheet, Croissant and the manifest."""

    name: str
    version: str
    prefix: str
    url: str
    generation: Mapping[str, Any]
    model: ModelFacts
    sources: tuple[SourceFacts, ...]
    license: str
    intended_use: str
    date_published: str

    @property
    def config(self) -> Mapping[str, Any]:
        return self.generation["config"]

    @property
    def plan_seed(self) -> int:
        return int(self.config["plan"]["seed"])

    def seeds(self) -> dict[str, Any]:
        """Every seed that fixes the content: plan, model training, and where the per-sample seeds are."""
        return {
            "plan": self.plan_seed,
            "model_training": self.model.config.get("seed"),
            "per_sample": "samples.parquet column 'seed' (the edit replay and generator noise of each sample)",
        }


def _read_back(store: Store, key: str) -> ObjectRef:
    digest, size = store.sha256(key)
    return ObjectRef(key, digest, size)


def model_facts(store: Store, name: str, version: str) -> ModelFacts:
    """The committed model's record and generator, read back and checked against ``model.json``."""
    prefix = f"models/{name}/{version}"
    record = read_record(store, f"{prefix}/model.json")
    if record is None:
        raise FileNotFoundError(f"{store.url_for(prefix)}: model not committed (model.json missing)")
    listed = {o["key"]: o for o in record.get("objects", [])}
    generator = _read_back(store, f"{prefix}/generator.safetensors")
    want = listed.get("generator.safetensors")
    if want is None or want["sha256"] != generator.sha256 or want["size"] != generator.size:
        raise IntegrityError(
            f"{store.url_for(prefix)}/generator.safetensors: read back sha256 {generator.sha256[:12]}… "
            f"({generator.size} bytes) does not match model.json ({(want or {}).get('sha256', 'not listed')[:12]}…)"
        )
    metrics = record.get("metrics", {}).get("final", {})
    return ModelFacts(
        name=name,
        version=version,
        record=_read_back(store, f"{prefix}/model.json"),
        generator=generator,
        config=record.get("config", {}),
        metrics={k: metrics[k] for k in ("mae_mean", "mae", "psnr", "signature_checks") if k in metrics},
        code=record.get("producer", {}),
    )


def source_facts(store: Store, snapshots: Sequence[Mapping[str, str]]) -> tuple[SourceFacts, ...]:
    out = []
    for snap in snapshots:
        prefix = f"sources/{snap['source_id']}/{snap['snapshot_id']}"
        record = read_record(store, f"{prefix}/snapshot.json")
        if record is None:
            raise FileNotFoundError(f"{store.url_for(prefix)}: snapshot not committed (snapshot.json missing)")
        counts = record.get("counts", {})
        out.append(SourceFacts(
            source_id=snap["source_id"],
            snapshot_id=snap["snapshot_id"],
            source_kind=str(record.get("source_kind", "unknown")),
            subjects=int(counts.get("subjects", 0)),
            with_tumor=int(counts.get("with_tumor", 0)),
            quarantined=int(counts.get("quarantined", 0)),
            record=_read_back(store, f"{prefix}/snapshot.json"),
            ingest_config=record.get("config", {}),
        ))
    return tuple(out)


def collect_facts(
    store: Store,
    name: str,
    version: str,
    prefix: str,
    generation: Mapping[str, Any],
    *,
    license: str,
    intended_use: str,
    date_published: str,
) -> VersionFacts:
    model = generation["model"]
    return VersionFacts(
        name=name,
        version=version,
        prefix=prefix,
        url=store.url_for(prefix),
        generation=generation,
        model=model_facts(store, model["name"], model["version"]),
        sources=source_facts(store, generation["snapshots"]),
        license=license,
        intended_use=intended_use,
        date_published=date_published,
    )


__all__ = ["ModelFacts", "ObjectRef", "SourceFacts", "VersionFacts", "collect_facts", "model_facts", "source_facts"]
