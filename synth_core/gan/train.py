"""Training the label→MRI conditional GAN (pix2pix in 3D, Shin et al. 2018), resumable, in the store.

One call of :func:`train` owns one model version ``models/<name>/<version>/``:

- ``run.json`` is created exclusively at the start with the hash of the config; a rerun with the same
  config finds the unfinished version and resumes from its newest committed checkpoint, so a killed
  run never leaves a duplicate version;
- every ``checkpoint_every`` steps a checkpoint is committed (safetensors + JSON, no pickle);
- every ``validate_every`` steps the generator synthesizes the held-out subjects from their real label
  maps: per-modality MAE / PSNR / SSIM inside the brain, each label's intensity signature and a PNG grid;
- at the end ``generator.safetensors`` (+ discriminator and optimizer state) and ``model.json`` (config,
  snapshot ids, metrics, code version, data checksums) are written; ``model.json`` is the commit.

Determinism: the weights are initialised from ``seed``; step ``s`` draws its patches from
``rng([seed, s·batch + b])`` and reseeds torch with ``(seed, s)`` (dropout), so N steps + resume + N steps
equals 2N steps on CPU. Nothing here imports Prefect.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch

from schemas.labels import MODALITIES
from schemas.train import TrainConfig
from synth_core.gan.checkpoint import (
    committed_steps,
    load_checkpoint,
    load_module_bytes,
    prune_checkpoints,
    read_verified,
    save_checkpoint,
    write_state,
)
from synth_core.gan.data import DevicePrefetcher, PatchDataset, list_training_subjects, load_subject, make_loader, split_subjects
from synth_core.gan.device_cache import DeviceVolumeCache, use_device_cache
from synth_core.gan.inference import synthesize_volume
from synth_core.gan.metrics import label_signature, masked_mae, masked_psnr, masked_ssim, signature_checks
from synth_core.gan.networks import GANLoss, PatchDiscriminator3D, UNet3DGenerator, init_weights, one_hot, weighted_l1
from synth_core.gan.render import validation_grid
from synth_core.provenance import producer
from synth_core.storage import Store, canonical_json, commit_record, digest_objects, objects_payload, read_record
from synth_core.storage.versions import claim_version, find_version

log = logging.getLogger(__name__)

MODEL_RECORD = "model.json"


def model_prefix(name: str, version: str) -> str:
    return f"models/{name}/{version}"


def config_hash(config: TrainConfig) -> str:
    """Identity of a training run: everything but where it is stored, which device runs it, and how
    patches reach the device (``data.device_cache``: the same batches either way)."""
    payload = config.model_dump(
        mode="json", exclude={"store": True, "model_version": True, "device": True, "threads": True,
                              "data": {"device_cache"}},
    )
    return hashlib.sha256(canonical_json(payload)).hexdigest()


def select_device(requested: str) -> torch.device:
    """``requested`` (auto, cpu or cuda) → CUDA when asked or present (``auto``), CPU otherwise.

    Checked when called (on the worker), never at import; asking for CUDA without one raises.
    """
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device: 'cuda' was requested but torch sees no CUDA device; valid choices: auto, cpu")
        return torch.device("cuda")
    if requested == "auto" and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def resolve_device(config: TrainConfig) -> torch.device:
    """CUDA when asked or present (``auto``), CPU otherwise; the same code path either way."""
    return select_device(config.device)


def resolve_version(store: Store, config: TrainConfig) -> tuple[str, bool]:
    """The model version this run writes, and whether it is already committed (see ``claim_version``)."""
    digest = config_hash(config)
    return claim_version(
        store,
        f"models/{config.model_name}",
        config_hash=digest,
        payload={"config_hash": digest, "config": config.model_dump(mode="json", exclude={"store"})},
        completion_record=MODEL_RECORD,
        explicit=config.model_version,
    )


def committed_version(store: Store, config: TrainConfig) -> str | None:
    """The committed model version trained with ``config`` (same config hash), or None. Read-only."""
    version = config.model_version or find_version(store, f"models/{config.model_name}", config_hash(config))
    if version is None or not store.exists(f"{model_prefix(config.model_name, version)}/{MODEL_RECORD}"):
        return None
    return version


def build_models(config: TrainConfig) -> tuple[UNet3DGenerator, PatchDiscriminator3D]:
    torch.manual_seed(config.seed)
    generator = UNet3DGenerator(config.generator)
    discriminator = PatchDiscriminator3D(config.discriminator)
    init_weights(generator)
    init_weights(discriminator)
    return generator, discriminator


def _step_seed(seed: int, step: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{step}".encode()).digest()[:8], "little") & ((1 << 63) - 1)


@dataclass
class Validation:
    step: int
    metrics: dict[str, Any]
    png: bytes
    key: str  # where the PNG lives in the store


@dataclass
class TrainResult:
    model_name: str
    version: str
    url: str
    steps: int
    resumed_from: int
    created: bool
    record: dict[str, Any]
    validations: list[Validation] = field(default_factory=list)
    seconds: float = 0.0


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def validate(
    generator: torch.nn.Module, subjects: list[Any], device: torch.device, amp_dtype: torch.dtype | None
) -> tuple[dict[str, Any], bytes]:
    """Synthesize each held-out subject from its real label map; metrics inside the brain and one PNG grid."""
    per: dict[str, dict[str, list[float | None]]] = {k: {m: [] for m in MODALITIES} for k in ("mae", "psnr", "ssim")}
    signatures = []
    png = b""
    for i, subject in enumerate(subjects):
        fake = synthesize_volume(generator, subject.label, device=device, amp_dtype=amp_dtype,
                                 multiple=generator.required_multiple)
        brain = subject.label > 0
        fake = np.where(brain[None], fake, 0.0).astype(np.float32)
        real = np.where(subject.channel_mask[:, None, None, None], subject.image, np.nan).astype(np.float32)
        for name, fn in (("mae", masked_mae), ("psnr", masked_psnr), ("ssim", masked_ssim)):
            for m, v in fn(fake, real, brain).items():
                per[name][m].append(v)
        signatures.append(signature_checks(label_signature(fake, subject.label)))
        if i == 0:
            png = validation_grid(subject.label, real, fake)
    metrics: dict[str, Any] = {
        name: {m: _mean(v) for m, v in by_mod.items()} for name, by_mod in per.items()
    }
    metrics["mae_mean"] = _mean([v for v in metrics["mae"].values()])
    checks: dict[str, bool] = {}
    for sig in signatures:
        for k, ok in sig.items():
            checks[k] = checks.get(k, True) and bool(ok)
    metrics["signature_checks"] = checks
    return metrics, png


class GanStep:
    """One optimisation step of pix2pix: discriminator on (real, fake), then generator on adv + λ·L1.

    Shared by :func:`train` and ``bench/train.py`` so the benchmark times exactly the training step.
    """

    def __init__(
        self,
        generator: torch.nn.Module,
        discriminator: torch.nn.Module,
        opt_g: torch.optim.Optimizer,
        opt_d: torch.optim.Optimizer,
        config: TrainConfig,
        device: torch.device,
    ) -> None:
        self.generator, self.discriminator = generator, discriminator
        self.opt_g, self.opt_d = opt_g, opt_d
        self.device = device
        self.gan_loss = GANLoss(config.loss.adversarial)
        self.adversarial = config.loss.adversarial != "none"
        self.lambda_l1 = config.loss.lambda_l1
        self.weights = dict(config.loss.label_weights)
        self.amp_dtype = torch.bfloat16 if (config.amp and device.type == "cuda") else None

    def _autocast(self) -> Any:
        return torch.autocast("cuda", dtype=self.amp_dtype) if self.amp_dtype is not None else nullcontext()

    def __call__(self, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
        device = self.device
        label = batch["label"].to(device, non_blocking=True).long()
        real = batch["image"].to(device, non_blocking=True).float()  # float16 on the wire at 1 mm (exact)
        cmask = batch["channel_mask"].to(device, non_blocking=True)
        onehot = one_hot(label)
        keep = cmask[:, :, None, None, None]
        with self._autocast():
            fake = self.generator(onehot)
        fake = fake.float()
        fake_seen = torch.where(keep, fake, torch.zeros_like(fake))  # missing modalities: nothing to judge
        if self.adversarial:
            with self._autocast():
                pred_real = self.discriminator(onehot, real)
                pred_fake = self.discriminator(onehot, fake_seen.detach())
            loss_d = 0.5 * (self.gan_loss(pred_real.float(), True) + self.gan_loss(pred_fake.float(), False))
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self.opt_d.step()
            with self._autocast():
                pred = self.discriminator(onehot, fake_seen)
            loss_adv = self.gan_loss(pred.float(), True)
        else:
            loss_d = torch.zeros((), device=device)
            loss_adv = torch.zeros((), device=device)
        loss_l1 = weighted_l1(fake, real, label, cmask, self.weights)
        loss_g = loss_adv + self.lambda_l1 * loss_l1
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        return {k: float(v.detach()) for k, v in (("loss_g", loss_g), ("loss_d", loss_d), ("l1", loss_l1), ("adv", loss_adv))}


@contextmanager
def flush_denormals() -> Iterator[None]:
    """Flush denormal floats to zero for the duration (design.md §8: they made CPU steps 10× slower).

    The flag is CPU state that outlives the call; it is reset to the default afterwards so that other code
    in the process (numerics, property-based tests) never inherits it.
    """
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def train(
    store: Store,
    config: TrainConfig,
    *,
    on_validation: Callable[[Validation], None] | None = None,
    on_progress: Callable[[int, int, Mapping[str, float]], None] | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Train (or resume, or find committed) the model version for ``config``. See the module docstring.

    ``stop_after`` ends the call after that many steps of this call without committing the model (tests
    of checkpoint/resume use it; a real interruption is a crash or a kill).
    """
    with flush_denormals():
        return _train(store, config, on_validation=on_validation, on_progress=on_progress, stop_after=stop_after)


def _train(
    store: Store,
    config: TrainConfig,
    *,
    on_validation: Callable[[Validation], None] | None,
    on_progress: Callable[[int, int, Mapping[str, float]], None] | None,
    stop_after: int | None,
) -> TrainResult:
    t_start = time.perf_counter()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    version, committed = resolve_version(store, config)
    prefix = model_prefix(config.model_name, version)
    if committed:
        record = read_record(store, f"{prefix}/{MODEL_RECORD}") or {}
        return TrainResult(config.model_name, version, store.url_for(prefix), record.get("steps", 0), record.get("steps", 0), False, record)

    device = resolve_device(config)
    amp_dtype = torch.bfloat16 if (config.amp and device.type == "cuda") else None
    subjects = list_training_subjects(store, config.data.snapshots)
    train_subjects, val_subjects = split_subjects(subjects, config.data.val_subjects, config.seed)
    snapshots = sorted({(s[0].source_id, s[0].snapshot_id) for s in subjects})
    val_volumes = [load_subject(store, key, sid, config.data.resolution_mm) for _snap, sid, key in val_subjects]

    generator, discriminator = build_models(config)
    generator.to(device)
    discriminator.to(device)
    opt_g = torch.optim.Adam(generator.parameters(), lr=config.optim.lr_generator, betas=(config.optim.beta1, config.optim.beta2))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=config.optim.lr_discriminator, betas=(config.optim.beta1, config.optim.beta2))
    modules = {"generator": generator, "discriminator": discriminator}
    optimizers = {"optimizer_g": opt_g, "optimizer_d": opt_d}

    steps_done = committed_steps(store, prefix)
    start = steps_done[-1] if steps_done else 0
    meta: dict[str, Any] = {}
    if start:
        meta = load_checkpoint(store, prefix, start, modules, optimizers)
        log.info("%s: resumed from step %d", store.url_for(prefix), start)
    validations: list[Validation] = []
    history: list[dict[str, Any]] = list(meta.get("history", []))
    initial = meta.get("initial_metrics")
    if initial is None:
        initial, png = validate(generator, val_volumes, device, amp_dtype)
        key = f"{prefix}/validation/step-{0:08d}.png"
        store.put_bytes(key, png)
        v0 = Validation(0, initial, png, key)
        validations.append(v0)
        if on_validation is not None:
            on_validation(v0)

    dataset = PatchDataset(
        store.config, list(train_subjects), config.data, config.seed,
        length=config.steps * config.data.batch_size,
    )
    batches: Iterable[Mapping[str, Any]]
    if use_device_cache(config.data.device_cache, dataset, device):
        cache = DeviceVolumeCache(dataset, device)
        log.info("patches cut on %s from %d subjects held there (%.2f GiB)", device, len(dataset.keys), cache.nbytes / 2**30)
        batches = cache.batches(batch_size=config.data.batch_size, start_step=start, steps=config.steps)
    else:
        loader = make_loader(
            dataset, batch_size=config.data.batch_size, start_step=start, steps=config.steps,
            workers=config.data.loader_workers, pin_memory=device.type == "cuda",
        )
        batches = DevicePrefetcher(loader, device)  # host→GPU copies overlap the previous step
    step_fn = GanStep(generator, discriminator, opt_g, opt_d, config, device)
    generator.train()
    discriminator.train()
    step = start
    losses: dict[str, float] = {}
    for batch in batches:
        torch.manual_seed(_step_seed(config.seed, step))
        losses = step_fn(batch)
        step += 1
        if on_progress is not None:
            on_progress(step, config.steps, losses)
        if step % config.validate_every == 0 or step == config.steps:
            metrics, png = validate(generator, val_volumes, device, amp_dtype)
            generator.train()
            key = f"{prefix}/validation/step-{step:08d}.png"
            store.put_bytes(key, png)
            history.append({"step": step, **{k: metrics[k] for k in ("mae_mean", "mae")}, "losses": losses})
            v = Validation(step, metrics, png, key)
            validations.append(v)
            if on_validation is not None:
                on_validation(v)
        if step % config.checkpoint_every == 0 or step == config.steps:
            save_checkpoint(store, prefix, step, modules, optimizers,
                            {"initial_metrics": initial, "history": history, "losses": losses})
            prune_checkpoints(store, prefix, keep=2)
        if stop_after is not None and step - start >= stop_after:
            return TrainResult(config.model_name, version, store.url_for(prefix), step, start, False, {}, validations,
                               time.perf_counter() - t_start)

    final = validations[-1].metrics if validations and validations[-1].step == step else None
    if final is None:
        final, png = validate(generator, val_volumes, device, amp_dtype)
        store.put_bytes(f"{prefix}/validation/step-{step:08d}.png", png)
    optim_meta = write_state(store, prefix, modules, optimizers)
    objects = objects_payload(digest_objects(store, prefix))
    data_checksums = {}
    for source_id, snapshot_id in snapshots:
        rec = read_record(store, f"sources/{source_id}/{snapshot_id}/snapshot.json") or {}
        data_checksums[f"{source_id}/{snapshot_id}"] = hashlib.sha256(canonical_json({"objects": rec.get("objects", [])})).hexdigest()
    record = {
        "kind": "model",
        "model_name": config.model_name,
        "version": version,
        "created": datetime.now(UTC).isoformat(),
        "producer": producer(),
        "config": config.model_dump(mode="json", exclude={"store"}),
        "config_hash": config_hash(config),
        "snapshots": [{"source_id": s, "snapshot_id": i} for s, i in snapshots],
        "data_checksums": data_checksums,
        "subjects": {"train": [s[1] for s in train_subjects], "validation": [s[1] for s in val_subjects]},
        "steps": step,
        "device": device.type,
        "metrics": {"initial": initial, "final": final, "history": history},
        "optimizers": optim_meta,
        "objects": objects,
    }
    commit_record(store, f"{prefix}/{MODEL_RECORD}", record)
    return TrainResult(config.model_name, version, store.url_for(prefix), step, start, True, record, validations,
                       time.perf_counter() - t_start)


def load_generator(store: Store, name: str, version: str, map_location: str | torch.device = "cpu") -> tuple[UNet3DGenerator, dict[str, Any]]:
    """A committed model's generator (safetensors, sha256-verified against model.json) and its record."""
    prefix = model_prefix(name, version)
    record = read_record(store, f"{prefix}/{MODEL_RECORD}")
    if record is None:
        raise FileNotFoundError(f"{store.url_for(prefix)}: no committed model ({MODEL_RECORD} missing)")
    config = TrainConfig.model_validate({**record["config"]})
    generator = UNet3DGenerator(config.generator)
    data = read_verified(store, prefix, "generator.safetensors", record["objects"], MODEL_RECORD)
    load_module_bytes(generator, data, source=f"{store.url_for(prefix)}/generator.safetensors")
    generator.to(map_location)
    generator.eval()
    return generator, record


__all__ = [
    "MODEL_RECORD",
    "GanStep",
    "TrainResult",
    "Validation",
    "build_models",
    "committed_version",
    "config_hash",
    "flush_denormals",
    "load_generator",
    "model_prefix",
    "resolve_device",
    "resolve_version",
    "select_device",
    "train",
    "validate",
]
