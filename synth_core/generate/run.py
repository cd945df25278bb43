"""A generation run: resolve the model, build (or reload) the exact-count plan, lay out ``data.zarr``,
and, once every shard is done, assemble ``samples.parquet`` and commit ``generation.json``.

Layout under ``datasets/<name>/<version>/`` (the publish stage adds its manifest on top):

- ``run.json`` — the run's identity (config hash), created exclusively (see ``storage.versions``);
- ``plan.parquet`` — the balanced plan, written once and reused by every rerun;
- ``data.zarr`` — ``image`` (sample, c, x, y, z) float16 and ``label`` (sample, x, y, z) uint8, one shard
  per sample, with ``dimension_names``;
- ``_shards/shard-NNNNN.json`` — one completion record per shard (rows + sha256 of its objects);
- ``samples.parquet`` and ``generation.json`` (counts per stratum, source skew, model, seeds) — last.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from schemas.generate import GenerateConfig
from schemas.labels import MODALITIES
from schemas.tables import SamplesSchema
from schemas.train import SnapshotRef
from synth_core.edit.strata import distribution, measure_snapshot, read_label
from synth_core.gan.data import downsample_label2
from synth_core.gan.train import MODEL_RECORD, model_prefix
from synth_core.generate.plan import BaseBrain, Candidate, build_plan_from_config, pipeline_simulate, plan_counts
from synth_core.ingest.snapshot import read_subjects, snapshot_prefix
from synth_core.provenance import producer
from synth_core.storage import Store, canonical_json, commit_record, objects_payload, read_record
from synth_core.storage.versions import claim_version, find_version, list_versions

GENERATION_RECORD = "generation.json"
PLAN_TABLE = "plan.parquet"
SAMPLES_TABLE = "samples.parquet"
DATA = "data.zarr"
SHARDS = "_shards"


def dataset_prefix(name: str, version: str) -> str:
    return f"datasets/{name}/{version}"


def config_hash(config: GenerateConfig) -> str:
    payload = config.model_dump(mode="json", exclude={"store", "device", "threads", "shard_size", "batch_size", "amp"})
    return hashlib.sha256(canonical_json(payload)).hexdigest()


@dataclass(frozen=True)
class GenerationRun:
    """What every shard needs: where to write and what to replay."""

    config: GenerateConfig
    version: str
    model_name: str
    model_version: str
    resolution_mm: int
    grid: tuple[int, int, int]
    snapshots: tuple[SnapshotRef, ...]
    committed: bool

    @property
    def prefix(self) -> str:
        return dataset_prefix(self.config.dataset_name, self.version)

    def shard_key(self, index: int) -> str:
        return f"{self.prefix}/{SHARDS}/shard-{index:05d}.json"

    def shards(self) -> list[tuple[int, int, int]]:
        """(shard index, first sample, stop) for the plan's samples."""
        n, size = self.config.plan.n_samples, self.config.shard_size
        return [(i, start, min(start + size, n)) for i, start in enumerate(range(0, n, size))]


def generated_version(store: Store, config: GenerateConfig) -> str | None:
    """The dataset version generated (``generation.json`` committed) for ``config``, or None. Read-only."""
    version = find_version(store, f"datasets/{config.dataset_name}", config_hash(config))
    if version is None or not store.exists(f"{dataset_prefix(config.dataset_name, version)}/{GENERATION_RECORD}"):
        return None
    return version


def generation_summary(dataset_name: str, version: str, record: Mapping[str, Any], *, created: bool) -> dict[str, Any]:
    """What the generate flow reports for a version, from its ``generation.json``."""
    return {
        "dataset_name": dataset_name, "version": version, "created": created,
        "samples": record.get("n_samples"), "counts_per_stratum": record.get("counts_per_stratum", {}),
        "source_per_stratum": record.get("source_per_stratum", {}),
    }


def published_versions(store: Store, name: str) -> list[str]:
    """Versions of dataset ``name`` that carry a ``manifest.json`` (published), oldest first."""
    return [f"v{v}" for v in list_versions(store, f"datasets/{name}")
            if store.exists(f"{dataset_prefix(name, f'v{v}')}/manifest.json")]


def newest_model_version(store: Store, name: str) -> str:
    for v in reversed(list_versions(store, f"models/{name}")):
        if store.exists(f"{model_prefix(name, f'v{v}')}/{MODEL_RECORD}"):
            return f"v{v}"
    raise FileNotFoundError(f"{store.url_for(f'models/{name}')}: no committed model version; train one first")


def _at_resolution(label: np.ndarray, affine: np.ndarray, resolution_mm: int) -> tuple[np.ndarray, np.ndarray]:
    """Label map and affine on the model's grid (2 mm: the training pipeline's tumour-preserving down-sampling)."""
    if resolution_mm == 1:
        return label, affine
    small = downsample_label2(label)
    scaled = affine.copy()
    scaled[:3, :3] = affine[:3, :3] * 2.0
    scaled[:3, 3] = affine[:3, 3] + affine[:3, :3] @ np.full(3, 0.5)  # centre of each 2×2×2 block
    return small, scaled


def load_label_maps(
    store: Store, snapshots: Sequence[SnapshotRef], resolution_mm: int
) -> dict[str, tuple[np.ndarray, np.ndarray, bool]]:
    """subject_id → (label map, affine, has_tumour) at the model's resolution, for every subject."""
    out: dict[str, tuple[np.ndarray, np.ndarray, bool]] = {}
    for snap in snapshots:
        subjects = read_subjects(store, snap.source_id, snap.snapshot_id)
        prefix = snapshot_prefix(snap.source_id, snap.snapshot_id)
        for row in subjects.itertuples():
            label, affine = read_label(store, f"{prefix}/{row.zarr_path}")
            small, aff = _at_resolution(label, affine, resolution_mm)
            out[row.subject_id] = (small, aff, bool((small >= 4).any()))
    return out


def prepare(store: Store, config: GenerateConfig) -> tuple[GenerationRun, pd.DataFrame | None]:
    """Claim (or find) the dataset version; build or reload the plan; create ``data.zarr``'s arrays."""
    model_version = config.model_version or newest_model_version(store, config.model_name)
    model = read_record(store, f"{model_prefix(config.model_name, model_version)}/{MODEL_RECORD}")
    if model is None:
        raise FileNotFoundError(
            f"{store.url_for(model_prefix(config.model_name, model_version))}: model not committed ({MODEL_RECORD} missing)"
        )
    resolution = int(model["config"]["data"]["resolution_mm"])
    snapshots = config.snapshots or tuple(SnapshotRef(**s) for s in model["snapshots"])
    digest = config_hash(config)
    version, committed = claim_version(
        store,
        f"datasets/{config.dataset_name}",
        config_hash=digest,
        payload={"config_hash": digest, "config": config.model_dump(mode="json", exclude={"store"}),
                 "model": {"name": config.model_name, "version": model_version}},
        completion_record=GENERATION_RECORD,
    )
    first = snapshots[0]
    subjects = read_subjects(store, first.source_id, first.snapshot_id)
    grid = tuple(int(subjects.iloc[0][f"grid_{a}"]) // resolution for a in "xyz")
    run = GenerationRun(config, version, config.model_name, model_version, resolution, grid, tuple(snapshots), committed)  # type: ignore[arg-type]
    if committed:
        return run, None
    plan_key = f"{run.prefix}/{PLAN_TABLE}"
    if store.exists(plan_key):
        plan = pd.read_parquet(io.BytesIO(store.get_bytes(plan_key)))
    else:
        maps = load_label_maps(store, snapshots, resolution)
        donors = [Candidate.from_label(sid, lab, aff) for sid, (lab, aff, tumour) in maps.items() if tumour]
        bases = [BaseBrain.from_label(sid, lab, aff) for sid, (lab, aff, _t) in maps.items()]
        if not donors:
            raise ValueError(f"snapshots {[f'{s.source_id}/{s.snapshot_id}' for s in snapshots]}: no subject has a tumour to donate")
        plan = build_plan_from_config(donors, bases, config.plan, simulate=pipeline_simulate)
        buf = io.BytesIO()
        plan.to_parquet(buf, index=False, compression="zstd")
        store.put_bytes(plan_key, buf.getvalue())
    create_arrays(store, run)
    return run, plan


def create_arrays(store: Store, run: GenerationRun) -> None:
    """``data.zarr`` with ``image`` and ``label`` sized for the whole plan (one shard per sample). Idempotent."""
    import zarr
    from zarr.codecs import ZstdCodec

    from synth_core.ingest.omezarr import chunk_shape
    from schemas.config import GridConfig

    root = zarr.open_group(store.zarr_store(f"{run.prefix}/{DATA}"), mode="a", zarr_format=3)
    if "image" in root and "label" in root:
        return
    n = run.config.plan.n_samples
    chunks = chunk_shape(GridConfig(shape=run.grid))
    root.attrs.update({"synthmri": {"channels": list(MODALITIES), "resolution_mm": run.resolution_mm,
                                    "model": f"{run.model_name}/{run.model_version}"}})
    root.create_array(
        "image", shape=(n, len(MODALITIES), *run.grid), dtype="float16", chunks=(1, 1, *chunks),
        shards=(1, len(MODALITIES), *run.grid), compressors=ZstdCodec(level=1), fill_value=0,
        dimension_names=("sample", "channel", "x", "y", "z"), overwrite=True,
    )
    root.create_array(
        "label", shape=(n, *run.grid), dtype="uint8", chunks=(1, *chunks), shards=(1, *run.grid),
        compressors=ZstdCodec(level=1), fill_value=0, dimension_names=("sample", "x", "y", "z"), overwrite=True,
    )


def finalize(store: Store, run: GenerationRun, plan: pd.DataFrame) -> dict[str, Any]:
    """Assemble ``samples.parquet`` from the shard records and commit ``generation.json``."""
    rows: list[dict[str, Any]] = []
    objects: list[dict[str, Any]] = []
    missing = []
    for index, _start, _stop in run.shards():
        record = read_record(store, run.shard_key(index))
        if record is None:
            missing.append(index)
            continue
        rows.extend(record["rows"])
        objects.extend(record["objects"])
    if missing:
        raise RuntimeError(f"{store.url_for(run.prefix)}: shard(s) {missing[:5]} have no completion record; run them first")
    samples = pd.DataFrame(rows, columns=list(SamplesSchema.columns)).sort_values("index").reset_index(drop=True)
    samples = samples.astype({"index": "int64", "seed": "int64", "n_components": "int64"})
    samples = SamplesSchema.validate(samples)
    buf = io.BytesIO()
    samples.to_parquet(buf, index=False, compression="zstd")
    store.put_bytes(f"{run.prefix}/{SAMPLES_TABLE}", buf.getvalue())
    from synth_core.storage import digest_objects

    tables = digest_objects(store, run.prefix, [SAMPLES_TABLE, PLAN_TABLE, f"{DATA}/zarr.json", f"{DATA}/image/zarr.json",
                                                 f"{DATA}/label/zarr.json"])
    source = []
    for snap in run.snapshots:
        measured = measure_snapshot(store, snap.source_id, snap.snapshot_id, run.config.plan.strata)
        source.extend(measured["stratum"].tolist())
    skew = distribution(source, run.config.plan.strata)
    record = {
        "kind": "generation",
        "dataset_name": run.config.dataset_name,
        "version": run.version,
        "created": datetime.now(UTC).isoformat(),
        "producer": producer(),
        "model": {"name": run.model_name, "version": run.model_version},
        "snapshots": [s.model_dump() for s in run.snapshots],
        "config": run.config.model_dump(mode="json", exclude={"store"}),
        "resolution_mm": run.resolution_mm,
        "n_samples": int(len(samples)),
        "counts_per_stratum": plan_counts(samples, run.config.plan.strata),
        "planned_per_stratum": plan_counts(plan, run.config.plan.strata),
        "source_per_stratum": {r.stratum: int(r.count) for r in skew.itertuples()},
        "objects": sorted(objects_payload(tables) + objects, key=lambda o: o["key"]),
    }
    commit_record(store, f"{run.prefix}/{GENERATION_RECORD}", record)
    return record


def read_samples(store: Store, name: str, version: str) -> pd.DataFrame:
    prefix = dataset_prefix(name, version)
    if not store.exists(f"{prefix}/{GENERATION_RECORD}"):
        raise FileNotFoundError(f"{store.url_for(prefix)}: generation not committed ({GENERATION_RECORD} missing)")
    return SamplesSchema.validate(pd.read_parquet(io.BytesIO(store.get_bytes(f"{prefix}/{SAMPLES_TABLE}"))))


def plan_rows_json(plan: pd.DataFrame, start: int, stop: int) -> list[dict[str, Any]]:
    """Plan rows [start, stop) as plain dicts (JSON-able), in sample order."""
    part = plan[(plan["index"] >= start) & (plan["index"] < stop)].sort_values("index")
    return json.loads(part.to_json(orient="records"))


__all__ = [
    "DATA",
    "GENERATION_RECORD",
    "GenerationRun",
    "config_hash",
    "create_arrays",
    "dataset_prefix",
    "finalize",
    "generated_version",
    "generation_summary",
    "load_label_maps",
    "newest_model_version",
    "plan_rows_json",
    "prepare",
    "published_versions",
    "read_samples",
]
