"""Checkpoints in the store: safetensors for every tensor (weights, optimizer moments), JSON for the rest.

Nothing here unpickles: optimizer state dicts are flattened into named tensors plus a JSON description of
the parameter groups, and loading reads only safetensors and JSON. A checkpoint folder is committed by
its ``checkpoint.json`` (exclusive, with the sha256 of each file); one without it is ignored.

Layout under a model version ``models/<name>/<version>/``::

    run.json                           the run's identity (config hash); created exclusively at start
    checkpoints/step-00000500/         generator / discriminator / optimizer_g / optimizer_d .safetensors
                            checkpoint.json
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from synth_core.storage import Store, commit_record, digest_objects, objects_payload, read_record

CHECKPOINTS = "checkpoints"
CHECKPOINT_RECORD = "checkpoint.json"
_STEP_RE = re.compile(r"^step-(\d{8})$")


def step_folder(step: int) -> str:
    return f"step-{step:08d}"


def module_bytes(module: torch.nn.Module) -> bytes:
    """A module's state dict as safetensors bytes (contiguous CPU copies)."""
    return st_save({k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()})


def load_module_bytes(module: torch.nn.Module, data: bytes, *, source: str) -> None:
    tensors = st_load(data)
    missing, unexpected = module.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{source}: checkpoint does not match the model: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )


def optimizer_bytes(optimizer: torch.optim.Optimizer) -> tuple[bytes, dict[str, Any]]:
    """Optimizer state as (safetensors bytes of every tensor, JSON-able description of the rest)."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in state["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{name}"] = value.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    groups = json.loads(json.dumps(state["param_groups"], default=float))
    return st_save(tensors) if tensors else st_save({"_empty": torch.zeros(1)}), {"param_groups": groups, "scalars": scalars}


def load_optimizer_bytes(optimizer: torch.optim.Optimizer, data: bytes, meta: Mapping[str, Any]) -> None:
    tensors = st_load(data)
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key == "_empty":
            continue
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    for idx, extra in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(extra)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def write_state(
    store: Store,
    folder: str,
    modules: Mapping[str, torch.nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
) -> dict[str, dict[str, Any]]:
    """Write ``<folder>/<name>.safetensors`` for every module and optimizer; returns the optimizers' JSON part."""
    for name, module in modules.items():
        store.put_bytes(f"{folder}/{name}.safetensors", module_bytes(module))
    optim_meta = {}
    for name, optimizer in optimizers.items():
        data, described = optimizer_bytes(optimizer)
        store.put_bytes(f"{folder}/{name}.safetensors", data)
        optim_meta[name] = described
    return optim_meta


def save_checkpoint(
    store: Store,
    prefix: str,
    step: int,
    modules: Mapping[str, torch.nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
    meta: Mapping[str, Any],
) -> str:
    """Write and commit ``<prefix>/checkpoints/step-N/``; returns its key. Idempotent for the same content."""
    folder = f"{prefix}/{CHECKPOINTS}/{step_folder(step)}"
    if read_record(store, f"{folder}/{CHECKPOINT_RECORD}") is not None:
        return folder
    optim_meta = write_state(store, folder, modules, optimizers)
    files = [f"{n}.safetensors" for n in (*modules, *optimizers)]
    objects = objects_payload(digest_objects(store, folder, files))
    commit_record(
        store,
        f"{folder}/{CHECKPOINT_RECORD}",
        {"step": int(step), "optimizers": optim_meta, "meta": dict(meta), "objects": objects},
    )
    return folder


def committed_steps(store: Store, prefix: str) -> list[int]:
    """Steps with a committed checkpoint, ascending."""
    steps = []
    for name in store.list_dirs(f"{prefix}/{CHECKPOINTS}"):
        match = _STEP_RE.match(name)
        if match and store.exists(f"{prefix}/{CHECKPOINTS}/{name}/{CHECKPOINT_RECORD}"):
            steps.append(int(match.group(1)))
    return sorted(steps)


def read_verified(store: Store, folder: str, name: str, objects: list[dict[str, Any]], record_name: str) -> bytes:
    """Read ``<folder>/<name>`` and check it against the sha256 its completion record lists."""
    data = store.get_bytes(f"{folder}/{name}")
    obj = next((o for o in objects if o["key"] == name), None)
    if obj is None or hashlib.sha256(data).hexdigest() != obj["sha256"]:
        raise ValueError(f"{store.url_for(folder)}/{name}: sha256 differs from (or missing in) {record_name}")
    return data


def load_checkpoint(
    store: Store,
    prefix: str,
    step: int,
    modules: Mapping[str, torch.nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
) -> dict[str, Any]:
    """Load a committed checkpoint into the given modules/optimizers (verifying sha256); returns its meta."""
    folder = f"{prefix}/{CHECKPOINTS}/{step_folder(step)}"
    record = read_record(store, f"{folder}/{CHECKPOINT_RECORD}")
    if record is None:
        raise FileNotFoundError(f"{store.url_for(folder)}: no committed checkpoint ({CHECKPOINT_RECORD} missing)")
    objects = record["objects"]
    for name, module in modules.items():
        data = read_verified(store, folder, f"{name}.safetensors", objects, CHECKPOINT_RECORD)
        load_module_bytes(module, data, source=f"{store.url_for(folder)}/{name}.safetensors")
    for name, optimizer in optimizers.items():
        data = read_verified(store, folder, f"{name}.safetensors", objects, CHECKPOINT_RECORD)
        load_optimizer_bytes(optimizer, data, record["optimizers"][name])
    return dict(record.get("meta", {}))


def prune_checkpoints(store: Store, prefix: str, keep: int = 2) -> None:
    """Delete all but the newest ``keep`` committed checkpoints (and any uncommitted leftovers older than them)."""
    steps = committed_steps(store, prefix)
    for step in steps[:-keep] if keep else steps:
        store.delete_prefix(f"{prefix}/{CHECKPOINTS}/{step_folder(step)}")


__all__ = [
    "CHECKPOINTS",
    "CHECKPOINT_RECORD",
    "committed_steps",
    "load_checkpoint",
    "load_module_bytes",
    "load_optimizer_bytes",
    "module_bytes",
    "optimizer_bytes",
    "prune_checkpoints",
    "read_verified",
    "save_checkpoint",
    "step_folder",
    "write_state",
]
