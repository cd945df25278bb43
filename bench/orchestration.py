"""Orchestration benchmark: what Prefect and Dask cost and give on ingest, measured side by side in one run.

On the same BraTS-size subjects (4 × 240×240×155 int16 + seg, .nii.gz, the 1 mm MNI152 phantom):

1. **Prefect overhead per subject**: the ``ingest`` flow (tasks, retries, the source-checksum cache key,
   persisted results, progress and table artifacts, against a real ``prefect server start``) with one
   subject in flight, vs the same core functions in a plain loop (``discover_source`` + ``run_ingest``).
   Target: ≤ 10 % more time per subject.
2. **Dask scaling**: the ``ingest`` flow on prefect-dask's ``DaskTaskRunner`` joined to a warm
   ``LocalCluster`` of 1, then 2 worker processes (one thread each): subjects/s ratio. Target ≥ 1.6×.
3. **Task arguments vs dataset size**: what submitting one subject task costs the flow process for its
   ``plan`` argument, with the whole plan vs the subject's slice, at 8, 1251 and 5000 subjects.

Each variant writes to its own fresh store (so no cache hit and no skipped subject flatters it), and
variants alternate over ``--rounds`` rounds; medians are reported.

Usage: ``python bench/orchestration.py [--subjects 8] [--rounds 2] [--workdir DIR]``
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _config(source: Path, store: Path, in_flight: int):
    from schemas.config import IngestConfig, SourceConfig, StoreConfig

    return IngestConfig(source=SourceConfig(kind="brats", path=str(source)), store=StoreConfig(url=str(store)),
                        max_workers=in_flight)


def plain_loop(source: Path, store: Path) -> tuple[float, list[float]]:
    """The same core functions as the flow, in a plain loop: (total seconds, seconds per subject)."""
    from schemas.config import StoreConfig
    from synth_core.ingest.snapshot import finalize_snapshot, ingest_subject, plan_snapshot
    from synth_core.ingest.sources import discover_source
    from synth_core.storage import open_store

    t0 = time.perf_counter()
    config = _config(source, store, 1)
    st = open_store(StoreConfig(url=str(store)))
    discovery = discover_source(config.source, source)
    plan = plan_snapshot(config, discovery)
    per_subject = []
    for subject in discovery.subjects:
        s0 = time.perf_counter()
        outcome = ingest_subject(st, plan, subject)
        per_subject.append(time.perf_counter() - s0)
        if outcome.status != "accepted":
            raise RuntimeError(f"plain loop: {outcome}")
    result = finalize_snapshot(st, plan, discovery)
    if not result.created:
        raise RuntimeError(f"plain loop: unexpected result {result}")
    return time.perf_counter() - t0, per_subject


def prefect_flow(source: Path, store: Path, execution, in_flight: int) -> tuple[float, dict]:  # noqa: ANN001
    """The ingest flow: (total seconds, {subject phase seconds, core seconds per subject})."""
    from flows.ingest import ingest

    t0 = time.perf_counter()
    state = ingest(_config(source, store, in_flight), execution, return_state=True)
    elapsed = time.perf_counter() - t0
    summary = state.result()
    if not summary["created"] or summary["quarantined"]:
        raise RuntimeError(f"flow: unexpected summary {summary}")
    return elapsed, {"phase": _subject_phase(state.state_details.flow_run_id),
                     "core": [o["seconds"] for o in summary["outcomes"]]}


def _subject_phase(flow_run_id) -> float:  # noqa: ANN001
    """First subject task's start to the last one's end, from the Prefect server's own task-run records."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    subjects = [r for r in runs if r.name.startswith("ingest-")]
    return (max(r.end_time for r in subjects) - min(r.start_time for r in subjects)).total_seconds()


def _core_subject(source: str, store: str, index: int) -> float:
    """One subject through the core function alone (no Prefect): the reference for Dask's own scaling."""
    from synth_core.ingest.snapshot import ingest_subject, plan_snapshot
    from synth_core.ingest.sources import discover_source
    from synth_core.storage import open_store

    config = _config(Path(source), Path(store), 1)
    discovery = discover_source(config.source, Path(source))
    plan = plan_snapshot(config, discovery)
    t0 = time.perf_counter()
    ingest_subject(open_store(config.store), plan, discovery.subjects[index])
    return time.perf_counter() - t0


def _server_process(api_url: str):  # noqa: ANN202
    """The ``prefect server start`` process behind ``api_url`` (for its CPU time)."""
    import psutil

    port = api_url.rsplit(":", 1)[1].split("/")[0]
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if "server" in cmd and "start" in cmd and f"--port {port}" in cmd:
            return proc
    raise RuntimeError(f"no prefect server process listens on port {port}")


def _cpu(server_proc, cluster) -> dict[str, float]:  # noqa: ANN001
    """CPU seconds so far: the Prefect server, this process (flow, Dask client and scheduler), the workers."""
    from distributed import Client

    with Client(cluster) as client:
        workers = sum(client.run(time.process_time).values())
    times = server_proc.cpu_times()
    return {"server": times.user + times.system, "flow": time.process_time(), "workers": workers}


def argument_cost(n_subjects: int, repeats: int = 20) -> dict[str, tuple[int, float]]:
    """What one subject task's ``plan`` argument costs the submitting side, for a dataset of
    ``n_subjects``: the whole plan vs the subject's slice (``SnapshotPlan.for_subject``), as
    (pickled bytes, ms to pickle + dask-tokenize + Prefect's argument walk). Prefect-dask does all three
    per submitted task, so with the whole plan a run's cost grows with the square of its subjects."""
    import pickle

    from dask.base import tokenize
    from prefect.utilities.collections import visit_collection

    from schemas.config import IngestConfig
    from synth_core.ingest.snapshot import SnapshotPlan, pseudonym

    refs = [f"BraTS2021_{i:05d}" for i in range(n_subjects)]
    plan = SnapshotPlan(config=IngestConfig(), source_id="brats", snapshot_id="snap-0123456789ab",
                        subject_ids={ref: pseudonym("snap-0123456789ab", ref) for ref in refs})
    out = {}
    for name, arg in (("whole plan", plan), ("subject slice", plan.for_subject(refs[n_subjects // 2]))):
        t0 = time.perf_counter()
        for _ in range(repeats):
            size = len(pickle.dumps(arg))
            tokenize(arg)
            visit_collection({"plan": arg}, visit_fn=lambda x: x, return_data=True)
        out[name] = (size, (time.perf_counter() - t0) / repeats * 1000)
    return out


def _warm_worker() -> int:
    import synth_core.ingest.snapshot  # noqa: F401  (torch, scipy, zarr: imported once per worker process)
    import tasks.ingest  # noqa: F401

    return os.getpid()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-orchestration-"))
    work.mkdir(parents=True, exist_ok=True)
    for old in work.iterdir():  # stores and server of an earlier run in the same --workdir; the source is kept
        if old.name != "source":
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    logging.getLogger("prefect").setLevel(logging.WARNING)

    from distributed import Client, LocalCluster

    from schemas.config import PhantomConfig
    from schemas.orchestration import ExecutionConfig
    from synth_core.ingest.converters.phantom import write_phantom_source
    from tasks.runners import cluster_config
    from tests.servers import prefect_server, using_prefect

    source = work / "source"
    if not source.exists():
        t0 = time.perf_counter()
        write_phantom_source(source, PhantomConfig(n_subjects=args.subjects, seed=321, healthy_fraction=0.0))
        print(f"source: {args.subjects} BraTS-size phantom subjects ({time.perf_counter() - t0:.1f} s to build)")
    n = len([d for d in source.iterdir() if d.is_dir()])
    for f in source.rglob("*.nii.gz"):
        f.read_bytes()  # page cache warm for every variant alike

    with prefect_server(work / "prefect") as server, using_prefect(server):
        print(f"prefect server: {server.api_url}")
        serial = ExecutionConfig(task_runner="threads", max_workers=1)
        # warm imports, the client and the server's tables once; not timed
        prefect_flow(source, work / "store-warm-flow", serial, 1)
        plain_loop(source, work / "store-warm-plain")

        plain_t, plain_s, flow_t, overheads, flow_s = [], [], [], [], []
        for r in range(args.rounds):
            total, per_subject = plain_loop(source, work / f"store-plain-{r}")
            plain_t.append(total)
            plain_s.append(statistics.mean(per_subject))
            total, detail = prefect_flow(source, work / f"store-flow-{r}", serial, 1)
            flow_t.append(total)
            flow_s.append(detail["phase"] / n)
            # per subject, paired: the subject phase's wall time beyond the core function's own time
            overheads.append((detail["phase"] - sum(detail["core"])) / n)
        p, f = statistics.median(plain_t), statistics.median(flow_t)
        ps, fs, o = statistics.median(plain_s), statistics.median(flow_s), statistics.median(overheads)
        print(f"\ningest of {n} subjects, one in flight (median of {args.rounds} rounds)")
        print(f"  plain loop: {ps:6.3f} s/subject   whole run {p:6.2f} s")
        print(f"  flow:       {fs:6.3f} s/subject   whole run {f:6.2f} s (subject tasks: server timestamps)")
        print(f"  Prefect per subject (task run, states, cache key, persisted result, logs, progress "
              f"artifact): {o * 1000:5.0f} ms")
        print(f"  fixed per flow run (flow run, discover/plan/finalize tasks, table artifact): "
              f"{(f - p) - (fs - ps) * n:5.2f} s")
        print(f"ratio Prefect per-subject overhead / plain s per subject = {o / ps * 100:5.1f} %   (target ≤ 10 %)")
        print(f"ratio whole flow run / plain loop = {f / p:5.2f}  ({n} subjects; the fixed part amortizes)")

        server_proc = _server_process(server.api_url)
        cpu: dict[int, list[dict[str, float]]] = {1: [], 2: []}
        rates: dict[int, list[float]] = {1: [], 2: []}
        phase_rates: dict[int, list[float]] = {1: [], 2: []}
        raw: dict[int, list[float]] = {1: [], 2: []}
        with cluster_config(ExecutionConfig()):  # what the flows' own LocalCluster gets
            clusters = {k: LocalCluster(n_workers=k, threads_per_worker=1, processes=True, dashboard_address=None)
                        for k in (1, 2)}
        try:
            for k, cluster in clusters.items():
                with Client(cluster) as client:
                    client.run(_warm_worker)
            for r in range(args.rounds):
                for k, cluster in clusters.items():
                    execution = ExecutionConfig(task_runner="dask", dask_address=cluster.scheduler_address)
                    before = _cpu(server_proc, cluster)
                    t, detail = prefect_flow(source, work / f"store-dask{k}-{r}", execution, 2 * k)
                    after = _cpu(server_proc, cluster)
                    cpu[k].append({part: (after[part] - before[part]) / n for part in after} | {"core": sum(detail["core"]) / n})
                    rates[k].append(n / t)
                    phase_rates[k].append(n / detail["phase"])
                    with Client(cluster) as client:  # the same cluster, the core function alone
                        t0 = time.perf_counter()
                        client.gather(client.map(_core_subject, [str(source)] * n, [str(work / f"store-raw{k}-{r}")] * n,
                                                 range(n), pure=False))
                        raw[k].append(n / (time.perf_counter() - t0))
        finally:
            for cluster in clusters.values():
                cluster.close()
        one, two = statistics.median(phase_rates[1]), statistics.median(phase_rates[2])
        w1, w2 = statistics.median(rates[1]), statistics.median(rates[2])
        print(f"\ningest flow on Dask (DaskTaskRunner → warm LocalCluster, 1 thread per worker), {n} subjects")
        print(f"  subject phase (server timestamps): 1 worker {one:5.2f} subjects/s, 2 workers {two:5.2f} subjects/s")
        print(f"  whole flow run (incl. its fixed part): 1 worker {w1:5.2f} subjects/s, 2 workers {w2:5.2f} subjects/s "
              f"(ratio {w2 / w1:.2f})")
        for k in (1, 2):
            print(f"  rounds, {k} worker(s): subject phase {', '.join(f'{r:.2f}' for r in phase_rates[k])}; "
                  f"whole run {', '.join(f'{r:.2f}' for r in rates[k])}; "
                  f"no Prefect {', '.join(f'{r:.2f}' for r in raw[k])} subjects/s")
        print(f"ratio 2 workers / 1 worker (subject phase) = {two / one:5.2f}   (target ≥ 1.6)")
        # where the CPU of one subject goes on 2 workers: what the two cores must carry per subject
        split = {part: statistics.median(c[part] for c in cpu[2]) for part in cpu[2][0]}
        print(f"  CPU per subject on 2 workers (median of rounds): Prefect server {split['server'] * 1000:.0f} ms, flow "
              f"process (incl. the Dask scheduler) {split['flow'] * 1000:.0f} ms, workers {split['workers'] * 1000:.0f} ms "
              f"(core function {split['core'] * 1000:.0f} ms wall); server + flow = "
              f"{(split['server'] + split['flow']) / split['workers'] * 100:.0f} % of the workers' CPU, on the same cores")
        r1, r2 = statistics.median(raw[1]), statistics.median(raw[2])
        print(f"reference, the same clusters without Prefect (client.map of the core function): "
              f"{r1:.2f} → {r2:.2f} subjects/s, ratio {r2 / r1:.2f}")

    print("\nplan argument of one subject task (pickle + dask tokenize + Prefect's argument walk, per submit):")
    for size in (8, 1251, 5000):  # the bench's subjects, BraTS 2021's 1251, a large multi-site pool
        cost = argument_cost(size)
        (wb, wms), (sb, sms) = cost["whole plan"], cost["subject slice"]
        print(f"  {size:5d} subjects: whole plan {wb / 1024:6.1f} KiB {wms:6.2f} ms; subject slice {sb / 1024:4.1f} KiB "
              f"{sms:5.2f} ms; ratio {wms / sms:5.1f}×")


if __name__ == "__main__":
    main()
