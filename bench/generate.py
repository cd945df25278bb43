"""Generation benchmark: end-to-end samples/s (edit + generate + write) vs the bare generator forward pass.

Both on the same device and batch size, one after the other in one run:

- **bare**: ``forward_batch`` on label maps edited beforehand (the model alone);
- **end-to-end**: ``generate_shard`` over the same plan rows: replaying the edits (in a background thread,
  ahead of the model), measuring every map again, the forward pass, and writing image + label shards to
  ``data.zarr`` with read-back checksums.

Target: end-to-end / bare ≥ 0.85. Also prints the per-sample edit time. The generator is the product's
default (``GeneratorConfig()``: width 32, depth 4) unless ``--width``/``--depth`` say otherwise; the grid
is 2 mm on the CPU machine, ``--resolution 1 --batch 4`` on a GPU. A smaller model makes the fixed
per-sample CPU work (edits, compression) a larger share: ``--width 16`` shows it.

Usage: ``python bench/generate.py [--samples 24] [--batch 2] [--width 32] [--depth 4] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    from schemas.train import GeneratorConfig

    default = GeneratorConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=24)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--width", type=int, default=default.base_width)
    parser.add_argument("--depth", type=int, default=default.depth)
    parser.add_argument("--resolution", type=int, choices=(1, 2), default=2)
    parser.add_argument("--subjects", type=int, default=12)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    import numpy as np
    import torch

    from schemas.config import IngestConfig, PhantomConfig, SourceConfig, StoreConfig
    from schemas.generate import GenerateConfig, PlanConfig
    from schemas.train import DataConfig, DiscriminatorConfig, GeneratorConfig, TrainConfig
    from synth_core.gan.train import train
    from synth_core.generate.run import load_label_maps, plan_rows_json, prepare
    from synth_core.generate.shard import edit_sample, forward_batch, generate_shard, load_model
    from synth_core.ingest.converters.phantom import write_phantom_source
    from synth_core.ingest.snapshot import run_ingest
    from synth_core.ingest.sources import discover_source
    from synth_core.storage import open_store

    torch.set_flush_denormal(True)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-generate-"))
    t0 = time.perf_counter()
    write_phantom_source(work / "src", PhantomConfig(n_subjects=args.subjects, seed=7, healthy_fraction=0.2,
                                                     voxel_size_mm=float(args.resolution)))
    store = open_store(StoreConfig(url=str(work / "store")))
    ingest = IngestConfig(source=SourceConfig(kind="brats", path=str(work / "src")), store=StoreConfig(url=store.url))
    run_ingest(store, ingest, discover_source(ingest.source, work / "src"))
    patch = (32, 32, 32) if args.resolution == 2 else (64, 64, 64)
    train(store, TrainConfig(
        store=StoreConfig(url=store.url), generator=GeneratorConfig(base_width=args.width, depth=args.depth),
        discriminator=DiscriminatorConfig(base_width=8, n_layers=2),
        data=DataConfig(resolution_mm=args.resolution, patch_size=patch, batch_size=1, val_subjects=1, loader_workers=0),
        steps=2, checkpoint_every=2, validate_every=100, device=args.device,  # type: ignore[arg-type]
    ))
    print(f"setup (phantoms, ingest, a {args.width}-wide model) in {time.perf_counter() - t0:.1f} s")

    config = GenerateConfig(store=StoreConfig(url=store.url), dataset_name="bench", plan=PlanConfig(n_samples=args.samples, seed=0),
                            shard_size=args.samples, batch_size=args.batch, device=args.device)  # type: ignore[arg-type]
    run, plan = prepare(store, config)
    maps = load_label_maps(store, run.snapshots, run.resolution_mm)
    generator, device = load_model(store, run)
    rows = plan_rows_json(plan, 0, args.samples)

    edit_times, labels = [], []
    for row in rows:
        t = time.perf_counter()
        lab, _attrs = edit_sample(row, maps, run)
        edit_times.append(time.perf_counter() - t)
        labels.append(lab)
    forward_batch(generator, np.stack(labels[: args.batch]), device, config.amp, dtype=torch.float16)  # warm-up
    bare_rates, e2e_rates = [], []
    for _round in range(args.rounds):  # alternate, so drift on a shared machine hits both alike
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for i in range(0, len(labels), args.batch):
            forward_batch(generator, np.stack(labels[i : i + args.batch]), device, config.amp, dtype=torch.float16)
        if device.type == "cuda":
            torch.cuda.synchronize()
        bare_rates.append(len(labels) / (time.perf_counter() - t))

        store.delete(run.shard_key(0))  # a finished shard is skipped: remove its record so it runs again
        t = time.perf_counter()
        record = generate_shard(store, run, 0, rows, maps, generator, device)
        e2e_rates.append(len(rows) / (time.perf_counter() - t))
        if record["skipped"]:
            raise RuntimeError("the shard was skipped; the benchmark must regenerate it")
    bare, end_to_end = statistics.median(bare_rates), statistics.median(e2e_rates)

    grid = "×".join(str(s) for s in run.grid)
    print(f"\ndevice {device}, {args.resolution} mm grid {grid}, batch {args.batch}, generator width {args.width} depth {args.depth}, "
          f"{len(rows)} samples")
    print(f"  per-sample edit (replay + measure): median {statistics.median(edit_times) * 1000:.0f} ms, "
          f"max {max(edit_times) * 1000:.0f} ms")
    print(f"  bare forward  {bare:7.3f} samples/s  (median of {args.rounds}: {', '.join(f'{r:.3f}' for r in bare_rates)})")
    print(f"  end-to-end    {end_to_end:7.3f} samples/s  (median of {args.rounds}: {', '.join(f'{r:.3f}' for r in e2e_rates)}; "
          "edit ahead in a thread + generate + write + checksums)")
    print(f"\nratio end-to-end / bare = {end_to_end / bare:5.2f}   (target ≥ 0.85)")


if __name__ == "__main__":
    main()
