"""Ingest benchmark: our full per-subject ingest vs the I/O floor and a naive nibabel→zarr loop.

Everything is measured side by side in one run on the same BraTS-size subjects (4 × 240×240×155 int16 +
seg as .nii.gz, realistic smooth content: the 1 mm MNI152 phantom), pinned to one core:

- **I/O floor**: read + decompress the five files and write the same arrays, zstd-compressed and
  sharded, to Zarr — nothing else;
- **naive loop**: ``nibabel.load(f).get_fdata()`` → ``zarr.save`` per file, no preprocessing;
- **ours**: the full ingest of one subject (validation, canonicalization, normalization, tissue
  segmentation, OME-Zarr write, read-back checksums, completion record).

Then ours with 1 and 2 worker processes over the same subjects (throughput ratio).

Usage: ``python bench/ingest.py [--subjects 4] [--workdir DIR]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _pin(core: int | None) -> None:
    if core is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})
    import zarr

    zarr.config.set({"threading.max_workers": 1, "async.concurrency": 4})


def _subject_files(root: Path) -> list[list[Path]]:
    return [sorted(d.glob("*.nii.gz")) for d in sorted(root.iterdir()) if d.is_dir()]


def io_floor(files: list[Path], out: Path) -> float:
    """Decode the files and write the raw arrays compressed to zarr: the cost no ingest can avoid."""
    import nibabel as nib
    import zarr
    from isal import igzip
    from zarr.codecs import ZstdCodec

    t0 = time.perf_counter()
    group = zarr.open_group(str(out), mode="w", zarr_format=3)
    for f in files:
        raw = igzip.decompress(f.read_bytes())
        header = nib.Nifti1Header.from_fileobj(__import__("io").BytesIO(raw[:352]))
        shape = header.get_data_shape()
        offset = int(header["vox_offset"])
        data = np.frombuffer(raw, dtype=header.get_data_dtype(), count=int(np.prod(shape)), offset=offset)
        data = data.reshape(shape, order="F")
        arr = group.create_array(
            f.name.split(".")[0], shape=shape, dtype=data.dtype, chunks=(80, 80, 155), shards=shape,
            compressors=ZstdCodec(level=3),
        )
        arr[...] = data
    return time.perf_counter() - t0


def naive(files: list[Path], out: Path) -> float:
    import nibabel as nib
    import zarr

    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    for f in files:
        zarr.save(str(out / f.name.split(".")[0]), nib.load(str(f)).get_fdata())
    return time.perf_counter() - t0


def _ours_setup(source_root: Path, store_root: Path):
    from schemas.config import IngestConfig, SourceConfig, StoreConfig
    from synth_core.ingest.snapshot import plan_snapshot
    from synth_core.ingest.sources import discover_source
    from synth_core.storage import open_store

    config = IngestConfig(
        source=SourceConfig(kind="brats", path=str(source_root)),
        store=StoreConfig(url=str(store_root)),
    )
    discovery = discover_source(config.source, source_root)
    plan = plan_snapshot(config, discovery)
    return open_store(config.store), plan, discovery


def ours_one(args: tuple[str, str, int, int | None]) -> tuple[float, dict[str, float]]:
    source_root, store_root, index, core = args
    _pin(core)
    from synth_core.ingest.snapshot import ingest_subject

    store, plan, discovery = _ours_setup(Path(source_root), Path(store_root))
    t0 = time.perf_counter()
    outcome = ingest_subject(store, plan, discovery.subjects[index])
    elapsed = time.perf_counter() - t0
    if outcome.status != "accepted":
        raise RuntimeError(f"benchmark subject not accepted: {outcome}")
    return elapsed, outcome.timings


def _warm(_: int) -> int:
    """Start a pool worker and load what the ingest imports, outside the timed region."""
    import synth_core.ingest.snapshot  # noqa: F401

    time.sleep(0.3)
    return os.getpid()


def _throughput(source: Path, store: Path, n: int, workers: int) -> float:
    jobs = [(str(source), str(store), i, None) for i in range(n)]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_warm, range(workers)))
        t0 = time.perf_counter()
        list(pool.map(ours_one, jobs))
        return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=8)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    work.mkdir(parents=True, exist_ok=True)
    for old in work.iterdir():  # outputs of an earlier run in the same --workdir; the source is kept
        if old.name != "source":
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    all_cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    _pin(0)

    from schemas.config import PhantomConfig
    from synth_core.ingest.converters.phantom import write_phantom_source

    source = work / "source"
    t0 = time.perf_counter()
    write_phantom_source(source, PhantomConfig(n_subjects=args.subjects, seed=123, healthy_fraction=0.0))
    print(f"source: {args.subjects} BraTS-size phantom subjects in {source} ({time.perf_counter() - t0:.1f} s to build)")
    subjects = _subject_files(source)
    shape = __import__("nibabel").load(str(subjects[0][0])).shape
    mb = sum(f.stat().st_size for f in subjects[0]) / 1e6
    print(f"subject: 5 files, shape {shape}, {mb:.1f} MB compressed on disk")

    # warm the page cache, imports and allocator once per variant, so none pays for them; then each
    # variant runs all subjects back to back, as a worker does
    for files in subjects:
        for f in files:
            f.read_bytes()
    io_floor(subjects[0], work / "warm.zarr")
    naive(subjects[0], work / "warm-naive")
    ours_one((str(source), str(work / "store-warm"), 0, 0))

    floor_t = [io_floor(files, work / f"floor-{i}.zarr") for i, files in enumerate(subjects)]
    naive_t = [naive(files, work / f"naive-{i}") for i, files in enumerate(subjects)]
    ours_t, splits = [], []
    for i in range(len(subjects)):
        t, split = ours_one((str(source), str(work / "store-serial"), i, 0))
        ours_t.append(t)
        splits.append(split)

    f, n, o = statistics.median(floor_t), statistics.median(naive_t), statistics.median(ours_t)
    print("\nper subject, one core (median of %d)" % len(subjects))
    print(f"  I/O floor   {f:6.3f} s")
    print(f"  naive loop  {n:6.3f} s")
    print(f"  ours        {o:6.3f} s")
    keys = ("decode", "checks", "preprocess", "segment", "write")
    print("  ours split  " + "  ".join(f"{k} {statistics.median(s.get(k, 0.0) for s in splits):.3f}" for k in keys))
    print(f"\nratio ours / I/O floor   = {o / f:5.2f}   (target ≤ 3.0)")
    print(f"ratio ours / naive loop  = {o / n:5.2f}   (target ≤ 1.0)")

    if all_cores is not None:
        os.sched_setaffinity(0, all_cores)  # worker processes must not inherit the pin to core 0
    if len(all_cores or ()) >= 2:
        n = len(subjects)
        one = _throughput(source, work / "store-par1", n, 1)
        two = _throughput(source, work / "store-par2", n, 2)
        print(f"\nthroughput 1 worker: {one:.2f} subjects/s, 2 workers: {two:.2f} subjects/s ({n} subjects, warm pools)")
        print(f"ratio 2 workers / 1 worker = {two / one:5.2f}   (target ≥ 1.8)")


if __name__ == "__main__":
    main()
