"""One generation shard: replay the plan's edits, run the generator in batches, write each sample once.

A shard owns the samples ``[start, stop)`` of the plan; each sample is its own zarr shard in ``image``
and ``label`` (one writer per shard). The label-map edits of the next batch are prepared in a background
thread while the generator runs the current one, and the previous batch is compressed and written by a
second thread, so generation stays bound by the model (design.md §8).
Every replayed label map is measured again and must land in its planned stratum. The shard's
completion record lists its rows (with the measured attributes) and the sha256 of its objects; a
finished shard is skipped by a rerun and writes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch

from synth_core.edit.ops import apply_pipeline
from synth_core.edit.strata import measure, stratum_of
from synth_core.gan.networks import one_hot
from synth_core.generate.run import DATA, GenerationRun
from synth_core.storage import Store, canonical_json, digest_objects, objects_payload, read_record


def edit_sample(row: Mapping[str, Any], maps: Mapping[str, tuple[np.ndarray, np.ndarray, bool]], run: GenerationRun) -> tuple[np.ndarray, dict[str, Any]]:
    """Replay one planned sample's edits; return the final label map and its measured attributes."""
    base_label, affine, _ = maps[row["base_subject"]]
    donor_label = maps[row["donor_subject"]][0]
    result = apply_pipeline(base_label, json.loads(row["edits"]), seed=int(row["seed"]),
                            donors={row["donor_subject"]: donor_label})
    attrs = measure(result.label, affine)
    measured = stratum_of(attrs, run.config.plan.strata)
    if measured != row["stratum"]:
        raise RuntimeError(
            f"sample {row['sample_id']}: replaying its edits gave stratum {measured!r}, the plan says {row['stratum']!r}"
        )
    return result.label, attrs.as_row()


def forward_batch(generator: torch.nn.Module, labels: np.ndarray, device: torch.device, amp: bool,
                  dtype: torch.dtype = torch.float32) -> np.ndarray:
    """(B, X, Y, Z) uint8 label maps → (B, 4, X, Y, Z) images of ``dtype`` (0 outside the brain).

    Cropping, masking and the cast to the stored dtype run in torch on ``device`` (numpy's float32 →
    float16 cast is ~6x slower than torch's vectorized one on the CPU; on a GPU it is free), so only
    the final array crosses to the host. Rounding is IEEE round-to-nearest-even either way.
    """
    if dtype not in (torch.float32, torch.float16):
        raise ValueError(f"forward_batch: dtype must be torch.float32 or torch.float16, got {dtype}")
    multiple = int(getattr(generator, "required_multiple", 1))
    pads = [(0, (-s) % multiple) for s in labels.shape[1:]]
    padded = np.pad(labels, [(0, 0), *pads]) if any(p[1] for p in pads) else labels
    x = one_hot(torch.from_numpy(np.ascontiguousarray(padded)).to(device))
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if (amp and device.type == "cuda") else nullcontext()
    with torch.inference_mode(), ctx:
        out = generator(x)
    with torch.inference_mode():
        out = out[(slice(None), slice(None), *(slice(0, s) for s in labels.shape[1:]))].float()
        brain = torch.from_numpy(np.ascontiguousarray(labels > 0)).to(device)[:, None]
        out = torch.where(brain, out, torch.zeros((), dtype=out.dtype, device=device)).to(dtype)
        return out.contiguous().cpu().numpy()


def _batches(rows: Sequence[Mapping[str, Any]], size: int) -> Iterator[Sequence[Mapping[str, Any]]]:
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


def sample_object_keys(index: int) -> list[str]:
    """The zarr objects that hold sample ``index`` (its shard in each array), relative to data.zarr."""
    return [f"image/c/{index}/0/0/0/0", f"label/c/{index}/0/0/0"]


def generate_shard(
    store: Store,
    run: GenerationRun,
    shard_index: int,
    rows: Sequence[Mapping[str, Any]],
    maps: Mapping[str, tuple[np.ndarray, np.ndarray, bool]],
    generator: torch.nn.Module,
    device: torch.device,
) -> dict[str, Any]:
    """Generate the shard's samples (skipped when its record exists). Returns its completion record."""
    import zarr

    done = read_record(store, run.shard_key(shard_index))
    if done is not None:
        return {**done, "skipped": True}
    root = zarr.open_group(store.zarr_store(f"{run.prefix}/{DATA}"), mode="r+", zarr_format=3)
    # each write covers whole shards of real samples: skip zarr's per-chunk "all fill value?" scan
    # (a full pass over every chunk, ~20 % of a write's CPU); an empty chunk would only be stored, not lost
    image_arr = root["image"].with_config({"write_empty_chunks": True})
    label_arr = root["label"].with_config({"write_empty_chunks": True})
    out_rows: list[dict[str, Any]] = []
    generator.eval()

    def prepare(batch: Sequence[Mapping[str, Any]]) -> list[tuple[Mapping[str, Any], np.ndarray, dict[str, Any]]]:
        return [(row, *edit_sample(row, maps, run)) for row in batch]

    def write(i: int, img: np.ndarray, lab: np.ndarray) -> None:
        image_arr[i] = img
        label_arr[i] = lab

    batches = list(_batches(list(rows), run.config.batch_size))
    # three stages overlap: edits of batch k+1 (one thread), the model on batch k (this thread), and the
    # compression + writes of batch k-1 (another thread); each sample is still written by exactly one call
    with ThreadPoolExecutor(max_workers=1) as editor, ThreadPoolExecutor(max_workers=1) as writer:
        pending = editor.submit(prepare, batches[0]) if batches else None
        writes = []
        for k in range(len(batches)):
            edited = pending.result()
            pending = editor.submit(prepare, batches[k + 1]) if k + 1 < len(batches) else None
            labels = np.stack([lab for _r, lab, _a in edited])
            images = forward_batch(generator, labels, device, run.config.amp, dtype=torch.float16)
            for (row, lab, attrs), img in zip(edited, images, strict=True):
                i = int(row["index"])
                writes.append(writer.submit(write, i, img, lab))
                out_rows.append({
                    "sample_id": row["sample_id"], "index": i, "stratum": row["stratum"], "edits": row["edits"],
                    "seed": int(row["seed"]), "model_name": run.model_name, "model_version": run.model_version,
                    "base_subject": row["base_subject"], "donor_subject": row["donor_subject"], **attrs,
                })
        for w in writes:
            w.result()  # surface any write error before the record claims the shard
    keys = [k for row in out_rows for k in sample_object_keys(int(row["index"]))]
    objects = [{**o, "key": f"{DATA}/{o['key']}"} for o in objects_payload(digest_objects(store, f"{run.prefix}/{DATA}", keys))]
    record = {"shard": shard_index, "rows": out_rows, "objects": objects}
    store.put_bytes(run.shard_key(shard_index), canonical_json(json.loads(json.dumps(record, default=float))))
    return {**record, "skipped": False}


def load_model(store: Store, run: GenerationRun) -> tuple[torch.nn.Module, torch.device]:
    """The run's committed generator, once, on the configured device."""
    from synth_core.gan.train import load_generator, select_device

    device = select_device(run.config.device)
    generator, _record = load_generator(store, run.model_name, run.model_version, map_location=device)
    return generator, device


def generate_all(store: Store, config: Any) -> dict[str, Any]:
    """Plain sequential generation (no orchestrator): prepare, every shard, finalize. Idempotent."""
    from synth_core.generate.run import finalize, load_label_maps, plan_rows_json, prepare

    from synth_core.gan.train import flush_denormals

    if config.threads is not None:
        torch.set_num_threads(config.threads)
    run, plan = prepare(store, config)
    if run.committed or plan is None:
        return read_record(store, f"{run.prefix}/generation.json") or {}
    maps = load_label_maps(store, run.snapshots, run.resolution_mm)
    generator, device = load_model(store, run)
    with flush_denormals():
        for index, start, stop in run.shards():
            generate_shard(store, run, index, plan_rows_json(plan, start, stop), maps, generator, device)
    return finalize(store, run, plan)


__all__ = ["edit_sample", "forward_batch", "generate_all", "generate_shard", "load_model", "sample_object_keys"]
