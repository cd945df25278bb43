"""The ``synthmri`` console script: starts flows; reads the store directly where no orchestration is needed."""

from __future__ import annotations

import logging
import os
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help="SynthMRI Factory: annotated synthetic brain-tumour MRI.")
sources_app = typer.Typer(no_args_is_help=True, help="Curated source snapshots in the store.")
app.add_typer(sources_app, name="sources")
datasets_app = typer.Typer(no_args_is_help=True, help="Published synthetic datasets: list, show, verify, export.")
app.add_typer(datasets_app, name="datasets")
console = Console()


EPHEMERAL_STARTUP_TIMEOUT_S = 120
"""Seconds a local run waits for Prefect's temporary server (Prefect's default, 20 s, is too short on a
fresh 2-core machine: its first start creates and migrates the database, and took 16 s to over 20 s)."""


def _prefect_env() -> None:
    """Prefect settings of a local run, before Prefect is imported; what the user set in the environment wins."""
    # no internet here and in most hospitals: never phone home from a local run
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", str(EPHEMERAL_STARTUP_TIMEOUT_S))


def _grid(value: str) -> tuple[int, int, int]:
    try:
        parts = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise typer.BadParameter(f"expected three integers like 160,192,160, received {value!r}") from None
    if len(parts) != 3:
        raise typer.BadParameter(f"expected three integers like 160,192,160, received {value!r}")
    return parts  # type: ignore[return-value]


RunnerOpt = Annotated[str, typer.Option("--runner", help="Task runner of per-subject/per-shard work: threads or dask")]
DaskAddressOpt = Annotated[str | None, typer.Option(help="dask: tcp://host:8786 of a running scheduler")]
DaskWorkersOpt = Annotated[int, typer.Option(help="dask: LocalCluster worker processes (no address/spec)")]
ClusterSpecOpt = Annotated[str | None, typer.Option(help="dask: cluster spec YAML (infra/dask/slurm.yaml, kubernetes.yaml)")]


def _execution(runner: str, dask_address: str | None, dask_workers: int, cluster_spec: str | None):  # noqa: ANN202
    """The ExecutionConfig of the --runner/--dask-* options (exit 2 with the reason when invalid)."""
    from pydantic import ValidationError

    from schemas.orchestration import ExecutionConfig, load_cluster_spec

    try:
        cluster = load_cluster_spec(cluster_spec) if cluster_spec else None
        return ExecutionConfig(task_runner=runner, dask_address=dask_address, n_workers=dask_workers,  # type: ignore[arg-type]
                               cluster=cluster)
    except (ValidationError, ValueError, FileNotFoundError) as exc:
        console.print(f"[red]invalid execution options:[/red]\n{exc}")
        raise typer.Exit(2) from None


class _ProgressHandler(logging.Handler):
    def __init__(self, progress: Progress) -> None:
        super().__init__(logging.INFO)
        self.progress = progress
        self.task_id: Any = None

    def emit(self, record: logging.LogRecord) -> None:
        total = getattr(record, "total", None)
        done = getattr(record, "done", None)
        if total is None or done is None:
            return
        if self.task_id is None:
            self.task_id = self.progress.add_task(getattr(record, "stage", "work"), total=total)
        self.progress.update(self.task_id, completed=done, total=total)


@app.command()
def ingest(
    source: Annotated[str, typer.Option(help="Converter: phantom, brats, msd_task01, nifti_folder")] = "phantom",
    path: Annotated[str, typer.Option(help="Folder holding the dataset (phantom: where to build it)")] = "data/sources/phantom",
    store: Annotated[str, typer.Option(help="Store root: a folder, file:///abs/path or s3://bucket/prefix")] = "data/store",
    endpoint_url: Annotated[str | None, typer.Option(help="S3-compatible endpoint URL")] = None,
    source_id: Annotated[str | None, typer.Option(help="Id under sources/ (default: the converter name)")] = None,
    mapping_file: Annotated[str | None, typer.Option(help="nifti_folder: mapping file (JSON/YAML)")] = None,
    download: Annotated[bool, typer.Option(help="msd_task01: download the public archive into --path")] = False,
    n_subjects: Annotated[int, typer.Option(help="phantom: number of subjects")] = 12,
    seed: Annotated[int, typer.Option(help="phantom: seed")] = 0,
    grid: Annotated[str, typer.Option(help="Canonical grid x,y,z (1 mm voxels)")] = "160,192,160",
    workers: Annotated[int, typer.Option(help="Subjects processed concurrently")] = 2,
    snapshot_id: Annotated[str | None, typer.Option(help="Snapshot id (default: derived from inputs and config)")] = None,
    runner: RunnerOpt = "threads",
    dask_address: DaskAddressOpt = None,
    dask_workers: DaskWorkersOpt = 2,
    cluster_spec: ClusterSpecOpt = None,
) -> None:
    """Ingest a public dataset into a validated, canonical snapshot (quarantining bad subjects)."""
    _prefect_env()
    from pydantic import ValidationError

    from schemas.config import GridConfig, IngestConfig, PhantomConfig, SourceConfig, StoreConfig

    try:
        config = IngestConfig(
            source=SourceConfig(
                kind=source,  # type: ignore[arg-type]
                path=path,
                source_id=source_id,
                mapping_file=mapping_file,
                download=download,
                phantom=PhantomConfig(n_subjects=n_subjects, seed=seed),
            ),
            store=StoreConfig(url=store, endpoint_url=endpoint_url),
            grid=GridConfig(shape=_grid(grid)),
            max_workers=workers,
            snapshot_id=snapshot_id,
        )
    except ValidationError as exc:
        console.print(f"[red]invalid parameters:[/red]\n{exc}")
        raise typer.Exit(2) from None
    from flows.ingest import ingest as ingest_flow
    from synth_core.storage import StoreAccessError

    plog = logging.getLogger("synthmri.progress")
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        handler = _ProgressHandler(progress)
        plog.addHandler(handler)
        plog.setLevel(logging.INFO)
        plog.propagate = False  # drawn as the bar, not printed as log lines
        try:
            summary = ingest_flow(config, _execution(runner, dask_address, dask_workers, cluster_spec))
        except StoreAccessError as exc:
            console.print(f"[red]store error:[/red] {exc}")
            raise typer.Exit(2) from None
        except ValueError as exc:  # an unusable source root, a bad mapping file: say which and why
            console.print(f"[red]source error:[/red] {exc}")
            raise typer.Exit(2) from None
        finally:
            plog.removeHandler(handler)
            plog.propagate = True
    _print_ingest_summary(summary)


def _print_ingest_summary(summary: dict[str, Any]) -> None:
    state = "committed" if summary["created"] else "already committed (nothing to do)"
    console.print(
        f"snapshot [bold]{summary['snapshot_id']}[/bold] {state}: {summary['subjects']} subject(s), "
        f"{summary['quarantined']} quarantined\n  {summary['url']}"
    )
    bad = [o for o in summary["outcomes"] if o["status"] == "quarantined"]
    if bad:
        table = Table("subject", "check", "file", "value", "message", title="quarantined this run")
        for o in bad:
            table.add_row(o["source_ref"], o["check"], o["file"], o["value"], o["message"])
        console.print(table)


@app.command()
def train(
    store: Annotated[str, typer.Option(help="Store root: a folder, file:///abs/path or s3://bucket/prefix")] = "data/store",
    endpoint_url: Annotated[str | None, typer.Option(help="S3-compatible endpoint URL")] = None,
    snapshot: Annotated[list[str] | None, typer.Option(help="source_id/snapshot_id to train on (repeatable; default: newest)")] = None,
    model_name: Annotated[str, typer.Option(help="Model name under models/")] = "label2mri",
    model_version: Annotated[str | None, typer.Option(help="v<N>; default: resume an unfinished run or the next free")] = None,
    steps: Annotated[int, typer.Option(help="Training steps")] = 20000,
    resolution: Annotated[int, typer.Option(help="1 (GPU) or 2 mm (CPU demo)")] = 1,
    patch: Annotated[str, typer.Option(help="Patch size x,y,z (voxels at the training resolution)")] = "128,128,128",
    batch: Annotated[int, typer.Option(help="Patches per step")] = 1,
    width: Annotated[int, typer.Option(help="Generator base width")] = 32,
    depth: Annotated[int, typer.Option(help="Generator depth (down-samplings)")] = 4,
    disc_width: Annotated[int, typer.Option(help="Discriminator base width")] = 32,
    checkpoint_every: Annotated[int, typer.Option(help="Steps between checkpoints")] = 500,
    validate_every: Annotated[int, typer.Option(help="Steps between validations")] = 1000,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    loader_workers: Annotated[int, typer.Option(help="DataLoader worker processes")] = 2,
    device_cache: Annotated[str, typer.Option(help="Subjects held on the device, patches cut there: auto, on, off")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed")] = 0,
) -> None:
    """Train (or resume) the label→MRI conditional GAN on curated snapshots."""
    _prefect_env()
    from pydantic import ValidationError

    from schemas.config import StoreConfig
    from schemas.train import DataConfig, DiscriminatorConfig, GeneratorConfig, SnapshotRef, TrainConfig

    refs = []
    for item in snapshot or []:
        if item.count("/") != 1:
            raise typer.BadParameter(f"--snapshot: expected source_id/snapshot_id, received {item!r}")
        source_id, snapshot_id = item.split("/")
        refs.append(SnapshotRef(source_id=source_id, snapshot_id=snapshot_id))
    try:
        config = TrainConfig(
            store=StoreConfig(url=store, endpoint_url=endpoint_url),
            model_name=model_name,
            model_version=model_version,
            generator=GeneratorConfig(base_width=width, depth=depth),
            discriminator=DiscriminatorConfig(base_width=disc_width),
            data=DataConfig(snapshots=tuple(refs), resolution_mm=resolution, patch_size=_grid(patch),  # type: ignore[arg-type]
                            batch_size=batch, loader_workers=loader_workers, device_cache=device_cache),  # type: ignore[arg-type]
            steps=steps, checkpoint_every=checkpoint_every, validate_every=validate_every,
            device=device, seed=seed,  # type: ignore[arg-type]
        )
    except ValidationError as exc:
        console.print(f"[red]invalid parameters:[/red]\n{exc}")
        raise typer.Exit(2) from None
    from flows.train import train_gan
    from synth_core.storage import StoreAccessError

    try:
        summary = train_gan(config)
    except (StoreAccessError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    state = "committed" if summary["created"] else "already committed (nothing to do)"
    resumed = f", resumed from step {summary['resumed_from']}" if summary["resumed_from"] else ""
    final = (summary["metrics"] or {}).get("final") or {}
    console.print(f"model [bold]{summary['model_name']}/{summary['version']}[/bold] {state}{resumed}: {summary['steps']} steps\n  {summary['url']}")
    if final:
        console.print(f"  validation mean MAE {final.get('mae_mean')}")


@app.command()
def generate(
    store: Annotated[str, typer.Option(help="Store root: a folder, file:///abs/path or s3://bucket/prefix")] = "data/store",
    endpoint_url: Annotated[str | None, typer.Option(help="S3-compatible endpoint URL")] = None,
    dataset_name: Annotated[str, typer.Option(help="Dataset name under datasets/")] = "synthmri-demo",
    n_samples: Annotated[int, typer.Option(help="Samples, balanced over the strata")] = 120,
    seed: Annotated[int, typer.Option(help="Seed of the whole plan")] = 0,
    model_name: Annotated[str, typer.Option(help="Model name under models/")] = "label2mri",
    model_version: Annotated[str | None, typer.Option(help="v<N>; default: the newest committed")] = None,
    shard_size: Annotated[int, typer.Option(help="Samples per shard (one task each)")] = 16,
    batch_size: Annotated[int, typer.Option(help="Samples per generator forward pass")] = 2,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    runner: RunnerOpt = "threads",
    dask_address: DaskAddressOpt = None,
    dask_workers: DaskWorkersOpt = 2,
    cluster_spec: ClusterSpecOpt = None,
) -> None:
    """Generate a balanced set of edited tumour cases with a committed model."""
    _prefect_env()
    from pydantic import ValidationError

    from schemas.config import StoreConfig
    from schemas.generate import GenerateConfig, PlanConfig

    try:
        config = GenerateConfig(
            store=StoreConfig(url=store, endpoint_url=endpoint_url), dataset_name=dataset_name,
            plan=PlanConfig(n_samples=n_samples, seed=seed), model_name=model_name, model_version=model_version,
            shard_size=shard_size, batch_size=batch_size, device=device,  # type: ignore[arg-type]
        )
    except ValidationError as exc:
        console.print(f"[red]invalid parameters:[/red]\n{exc}")
        raise typer.Exit(2) from None
    from flows.generate import generate as generate_flow
    from synth_core.storage import StoreAccessError

    try:
        summary = generate_flow(config, _execution(runner, dask_address, dask_workers, cluster_spec))
    except (StoreAccessError, FileNotFoundError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    if not summary["created"]:
        console.print(f"dataset {summary['dataset_name']}/{summary['version']} already generated (nothing to do)")
        return
    table = Table("stratum", "source subjects", "generated", title=f"{summary['dataset_name']}/{summary['version']}")
    for k, v in summary["counts_per_stratum"].items():
        table.add_row(k, str(summary["source_per_stratum"].get(k, 0)), str(v))
    console.print(table)


@app.command()
def build(
    store: Annotated[str, typer.Option(help="Store root: a folder, file:///abs/path or s3://bucket/prefix")] = "data/store",
    endpoint_url: Annotated[str | None, typer.Option(help="S3-compatible endpoint URL")] = None,
    source: Annotated[str, typer.Option(help="Converter of the source: phantom, brats, msd_task01, nifti_folder")] = "phantom",
    path: Annotated[str, typer.Option(help="Source folder (phantom: where to build it)")] = "data/sources/phantom",
    dataset_name: Annotated[str, typer.Option(help="Dataset name under datasets/")] = "synthmri-demo",
    n_samples: Annotated[int, typer.Option(help="Samples, balanced over the strata")] = 36,
    steps: Annotated[int, typer.Option(help="Training steps (CPU demo: 2 mm, small model)")] = 1500,
    reuse_model: Annotated[str | None, typer.Option(help="Skip training: committed model version v<N>")] = None,
    seed: Annotated[int, typer.Option(help="Base seed of the generation plan")] = 0,
    runner: RunnerOpt = "threads",
    dask_address: DaskAddressOpt = None,
    dask_workers: DaskWorkersOpt = 2,
    cluster_spec: ClusterSpecOpt = None,
) -> None:
    """The whole chain: ingest → train → generate → publish the next dataset version."""
    _prefect_env()
    from schemas.build import BuildConfig, demo_generate, demo_train
    from schemas.config import IngestConfig, SourceConfig, StoreConfig

    base = BuildConfig()
    try:
        config = BuildConfig(
            store=StoreConfig(url=store, endpoint_url=endpoint_url),
            ingest=IngestConfig(source=SourceConfig(kind=source, path=path)),  # type: ignore[arg-type]
            train=demo_train().model_copy(update={"steps": steps}),
            reuse_model_version=reuse_model,
            generate=demo_generate().model_copy(update={
                "dataset_name": dataset_name,
                "plan": base.generate.plan.model_copy(update={"n_samples": n_samples, "seed": seed}),
            }),
        )
    except ValueError as exc:
        console.print(f"[red]invalid parameters:[/red]\n{exc}")
        raise typer.Exit(2) from None
    from flows.build import build_dataset
    from synth_core.storage import StoreAccessError

    try:
        summary = build_dataset(config, _execution(runner, dask_address, dask_workers, cluster_spec))
    except (StoreAccessError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    table = Table("stratum", "in the source", "generated", title=f"{summary['dataset_name']}/{summary['version']}")
    for k, v in summary["counts_per_stratum"].items():
        table.add_row(k, str(summary["source_per_stratum"].get(k, 0)), str(v))
    console.print(table)
    verdict = "verified: every object matches the manifest" if not summary["verify_problems"] else f"VERIFY FAILED: {summary['verify_problems'][:3]}"
    console.print(
        f"published [bold]{summary['dataset_name']}/{summary['version']}[/bold] ({summary['samples']} samples, "
        f"model {summary['model']}, source {summary['snapshot']}); {verdict}\n"
        f"  dataset: {summary['url']}\n  montage: {summary['montage']}\n"
        f"  open it: python -c \"from synth_core.consume import open_dataset; "
        f"ds = open_dataset('{store}', '{summary['dataset_name']}'); print(ds.samples.head())\""
    )


def _open_store(store: str, endpoint_url: str | None):  # noqa: ANN202
    from schemas.config import StoreConfig
    from synth_core.storage import open_store

    return open_store(StoreConfig(url=store, endpoint_url=endpoint_url))


@datasets_app.command("list")
def datasets_list(
    store: Annotated[str, typer.Option(help="Store root")] = "data/store",
    endpoint_url: Annotated[str | None, typer.Option(help="S3-compatible endpoint URL")] = None,
) -> None:
    """Datasets in the store with their LATEST and versions."""
    from synth_core.publish import list_datasets

    table = Table("dataset", "latest", "versions by state")
    for entry in list_datasets(_open_store(store, endpoint_url)):
        states = {k: v for k, v in entry.items() if k not in ("name", "latest") and v}
        table.add_row(entry["name"], str(entry.get("latest")), "; ".join(f"{k}: {', '.join(v)}" for k, v in states.items()))
    console.print(table)


@datasets_app.command("show")
def datasets_show(
    name: Annotated[str, typer.Argument(help="Dataset name")],
    version: Annotated[str, typer.Option(help="v<N> or latest")] = "latest",
    store: Annotated[str, typer.Option(help="Store root")] = "data/store",
    endpoint_url: Annotated[str | None, typer.Option(help="S3-compatible endpoint URL")] = None,
) -> None:
    """A published version's manifest summary."""
    import json

    from synth_core.publish import show

    console.print_json(json.dumps(show(_open_store(store, endpoint_url), name, version), default=str))


@datasets_app.command("verify")
def datasets_verify(
    name: Annotated[str, typer.Argument(help="Dataset name")],
    version: Annotated[str, typer.Option(help="v<N> or latest")] = "latest",
    store: Annotated[str, typer.Option(help="Store root")] = "data/store",
    endpoint_url: Annotated[str | None, typer.Option(help="S3-compatible endpoint URL")] = None,
) -> None:
    """Re-read every object of a published version against its manifest (exit 1 on any problem)."""
    from synth_core.publish import verify

    problems = verify(_open_store(store, endpoint_url), name, version)
    if problems:
        for p in problems:
            console.print(f"[red]{p}[/red]")
        raise typer.Exit(1)
    console.print(f"{name} {version}: every object matches its manifest")


@datasets_app.command("export")
def datasets_export(
    name: Annotated[str, typer.Argument(help="Dataset name")],
    out: Annotated[str, typer.Option(help="Output folder")],
    fmt: Annotated[str, typer.Option("--format", help="nifti or nnunet")] = "nnunet",
    version: Annotated[str, typer.Option(help="v<N> or latest")] = "latest",
    store: Annotated[str, typer.Option(help="Store root")] = "data/store",
    endpoint_url: Annotated[str | None, typer.Option(help="S3-compatible endpoint URL")] = None,
) -> None:
    """Export a published version as NIfTI files or an nnU-Net v2 raw dataset."""
    from pathlib import Path

    from synth_core.consume import export_nifti, export_nnunet, open_dataset

    if fmt not in ("nifti", "nnunet"):
        raise typer.BadParameter(f"--format: valid choices are nifti, nnunet; received {fmt!r}")
    ds = open_dataset(_open_store(store, endpoint_url), name, version)
    result = export_nnunet(ds, Path(out)) if fmt == "nnunet" else export_nifti(ds, Path(out))
    console.print(f"exported {name} {ds.version if hasattr(ds, 'version') else version} → {result if fmt == 'nnunet' else out}")


@sources_app.command("list")
def sources_list(
    store: Annotated[str, typer.Option(help="Store root")] = "data/store",
    endpoint_url: Annotated[str | None, typer.Option(help="S3-compatible endpoint URL")] = None,
) -> None:
    """List committed source snapshots with their counts."""
    from schemas.config import StoreConfig
    from synth_core.ingest.snapshot import load_snapshot_record
    from synth_core.storage import open_store

    st = open_store(StoreConfig(url=store, endpoint_url=endpoint_url))
    table = Table("source", "snapshot", "subjects", "quarantined", "with tumour", "created")
    for source_id in st.list_dirs("sources"):
        for snap in st.list_dirs(f"sources/{source_id}"):
            rec = load_snapshot_record(st, source_id, snap)
            if rec is None:
                continue  # uncommitted leftovers do not exist for readers
            c = rec["counts"]
            table.add_row(source_id, snap, str(c["subjects"]), str(c["quarantined"]), str(c["with_tumor"]), rec["created"])
    console.print(table)


def main() -> None:  # pragma: no cover
    app()


__all__ = ["app", "main"]
