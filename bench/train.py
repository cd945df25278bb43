"""Training benchmark: steps/s with the real Zarr data pipeline vs the same model fed in-memory tensors.

Both variants run the same :class:`synth_core.gan.train.GanStep` (discriminator + generator update) with
the same model, batch and patch size, one after the other in one run:

- **pipeline**: ``PatchDataset`` reading patches from the store (ranged zarr reads, or the per-worker
  cache at 2 mm) through a ``DataLoader`` with worker processes, pinned memory and prefetch;
- **device cache**: every subject held on the device, batches cut there with the same random choices
  (:class:`synth_core.gan.device_cache.DeviceVolumeCache`; the same batches, bit for bit);
- **in-memory**: the same batches materialized beforehand (on the device), so the loader costs nothing.

Target: pipeline / in-memory ≥ 0.9 (the loader must not starve the model), for the path ``train()``
takes on this device (``DataConfig.device_cache="auto"``: the device cache when the subjects fit in
half the device's free memory, the worker pipeline otherwise); both paths are printed. On CUDA it also prints peak GPU memory. Defaults fit the CPU machine (2 mm, 32³ patches, tiny model); on a GPU use
``--resolution 1 --patch 128 --width 32 --depth 4 --steps 50``.

Usage: ``python bench/train.py [--resolution 2] [--patch 32] [--width 8] [--depth 3] [--steps 60] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _snapshot(work: Path, subjects: int, voxel: float):
    from schemas.config import IngestConfig, PhantomConfig, SourceConfig, StoreConfig
    from synth_core.ingest.converters.phantom import write_phantom_source
    from synth_core.ingest.snapshot import run_ingest
    from synth_core.ingest.sources import discover_source
    from synth_core.storage import open_store

    source = work / "source"
    write_phantom_source(source, PhantomConfig(n_subjects=subjects, seed=11, healthy_fraction=0.0, voxel_size_mm=voxel))
    store = open_store(StoreConfig(url=str(work / "store")))
    config = IngestConfig(source=SourceConfig(kind="brats", path=str(source)), store=StoreConfig(url=store.url))
    run_ingest(store, config, discover_source(config.source, source))
    return store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, choices=(1, 2), default=2)
    parser.add_argument("--patch", type=int, default=32)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--pin-memory", type=int, choices=(0, 1), default=None, help="default: 1 on CUDA")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    import torch

    from schemas.config import StoreConfig
    from schemas.train import DataConfig, DiscriminatorConfig, GeneratorConfig, TrainConfig
    from synth_core.gan.data import DevicePrefetcher, InMemoryPatches, PatchDataset, list_training_subjects, make_loader
    from synth_core.gan.device_cache import DeviceVolumeCache, use_device_cache
    from synth_core.gan.train import GanStep, build_models, resolve_device

    torch.set_flush_denormal(True)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-train-"))
    t0 = time.perf_counter()
    store = _snapshot(work, args.subjects, voxel=2.0 if args.resolution == 2 else 1.0)
    print(f"snapshot of {args.subjects} phantom subjects in {time.perf_counter() - t0:.1f} s ({store.url})")
    total = args.warmup + args.steps
    config = TrainConfig(
        store=StoreConfig(url=store.url),
        generator=GeneratorConfig(base_width=args.width, depth=args.depth),
        discriminator=DiscriminatorConfig(base_width=args.width, n_layers=min(3, args.depth)),
        data=DataConfig(resolution_mm=args.resolution, patch_size=(args.patch,) * 3, batch_size=args.batch,
                        loader_workers=args.workers, val_subjects=1),
        steps=total, device=args.device,  # type: ignore[arg-type]
    )
    device = resolve_device(config)
    subjects = [(sid, key) for _snap, sid, key in list_training_subjects(store, ())]
    dataset = PatchDataset(store.config, subjects, config.data, config.seed, length=total * args.batch)

    def run(batches) -> float:
        generator, discriminator = build_models(config)
        generator.to(device).train()
        discriminator.to(device).train()
        opt_g = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
        step = GanStep(generator, discriminator, opt_g, opt_d, config, device)
        start = None
        for i, batch in enumerate(batches):
            if i == args.warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
            step(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return args.steps / (time.perf_counter() - start)

    pin = bool(args.pin_memory) if args.pin_memory is not None else device.type == "cuda"
    cache_dataset = PatchDataset(store.config, subjects, config.data, config.seed, length=total * args.batch)
    auto = use_device_cache("auto", cache_dataset, device)
    cache = DeviceVolumeCache(cache_dataset, device)
    memory = InMemoryPatches.from_dataset(dataset, batch_size=args.batch, n_batches=total).to(device)
    rates: dict[str, list[float]] = {"pipeline": [], "cache": [], "memory": []}
    peaks: dict[str, float] = {}

    def timed(name: str, batches) -> None:  # noqa: ANN001
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        rates[name].append(run(batches))
        if device.type == "cuda":
            peaks[name] = max(peaks.get(name, 0.0), torch.cuda.max_memory_allocated() / 2**30)

    for _round in range(args.rounds):  # alternate, so drift on a shared machine hits every variant alike
        loader = make_loader(dataset, batch_size=args.batch, start_step=0, steps=total, workers=args.workers,
                             pin_memory=pin)
        timed("pipeline", DevicePrefetcher(loader, device))  # exactly what train() iterates without the cache
        del loader
        timed("cache", cache.batches(batch_size=args.batch, start_step=0, steps=total))
        timed("memory", memory)
    pipeline, cached, in_memory = (statistics.median(rates[k]) for k in ("pipeline", "cache", "memory"))
    peak, cache_peak = peaks.get("pipeline"), peaks.get("cache")
    print(f"\ndevice {device}, patch {args.patch}³ at {args.resolution} mm, batch {args.batch}, "
          f"generator width {args.width} depth {args.depth}, {args.steps} timed steps")
    print(f"  pipeline   {pipeline:7.3f} steps/s  (zarr store → DataLoader, {args.workers} workers, pin_memory={pin})")
    print(f"  device cache {cached:5.3f} steps/s  ({len(subjects)} subjects on {device}, patches cut there)")
    print(f"  in-memory  {in_memory:7.3f} steps/s")
    for name, label in (("pipeline", "pipeline"), ("cache", "device cache"), ("memory", "in-memory")):
        print(f"    {label} rounds: {', '.join(f'{r:.2f}' for r in rates[name])} steps/s")
    if peak is not None:
        print(f"  peak GPU memory: pipeline {peak:.2f} GiB, device cache {cache_peak:.2f} GiB")
    print(f"\nratio pipeline / in-memory     = {pipeline / in_memory:5.2f}")
    print(f"ratio device cache / in-memory = {cached / in_memory:5.2f}")
    chosen = cached if auto else pipeline
    print(f"ratio of train()'s path here ({'device cache' if auto else 'pipeline'}) / in-memory = "
          f"{chosen / in_memory:5.2f}   (target ≥ 0.9)")


if __name__ == "__main__":
    main()
