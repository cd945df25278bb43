"""Open a generated dataset version from any store (``file://``, ``s3://``) and look at it lazily.

A dataset version lives under ``datasets/<name>/<version>/`` (design.md §1): ``data.zarr`` (``image``
(sample, channel, x, y, z) and ``label`` (sample, x, y, z), one zarr shard per sample),
``samples.parquet`` (one row per sample, :data:`schemas.tables.SamplesSchema`), ``generation.json``
(the generation run's completion record) and, once published, ``manifest.json`` (the publication's
completion record; ``datasets/<name>/LATEST`` names the newest published version).

Readers never see a folder without its completion record: :func:`open_dataset` refuses a version
without ``manifest.json`` (or, with ``require_published=False``, without at least ``generation.json``).

**The affine.** Generated samples are drawn on the model's canonical grid (RAS+, isotropic voxels of
``resolution_mm``) but from many different base subjects, so no single scanner frame applies. Every
sample therefore gets the same *canonical* affine: ``diag(res, res, res, 1)`` with the translation
chosen so that the centre of the volume is the world origin,
``translation = -res * (shape - 1) / 2`` (voxel ``(i, j, k)`` → ``res * ((i, j, k) - (shape - 1) / 2)`` mm).
The ``centroid_*_mm`` columns of ``samples.parquet`` were measured in the base subject's own frame
and differ from this one by a per-subject translation (never by a rotation or a scale).
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from schemas.config import StoreConfig
from schemas.labels import LABELS, MODALITIES
from schemas.tables import SamplesSchema
from synth_core.storage import S3Credentials, Store, verify_objects
from synth_core.storage.versions import list_versions

MANIFEST = "manifest.json"
"""The publication's completion record (written by ``synth_core.publish``)."""
GENERATION = "generation.json"
"""The generation run's completion record (written by ``synth_core.generate.run.finalize``)."""
LATEST = "LATEST"
"""``datasets/<name>/LATEST``: the newest published version of ``<name>``."""
SAMPLES = "samples.parquet"
DATA = "data.zarr"
IMAGE = "image"
LABEL = "label"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

_INHERITED: list[Any] = []
"""Clients a forked process inherited from its parent. They are kept alive, never used and never closed:
finalizing them in the child (s3fs/aiohttp close their sessions on garbage collection) would shut the
sockets the parent still shares with it, and the parent's next request then stalls until its timeout."""


def canonical_affine(shape: Sequence[int], resolution_mm: float) -> np.ndarray:
    """The 4×4 RAS+ affine of a generated sample: voxel size ``resolution_mm``, volume centred on 0 mm.

    ``shape`` is the spatial shape (x, y, z); see the module docstring for the convention.
    """
    dims = tuple(int(s) for s in shape)
    if len(dims) != 3 or any(s <= 0 for s in dims):
        raise ValueError(f"canonical_affine: expected 3 positive spatial sizes, received {tuple(shape)!r}")
    res = float(resolution_mm)
    if not np.isfinite(res) or res <= 0:
        raise ValueError(f"canonical_affine: expected a positive finite resolution_mm, received {resolution_mm!r}")
    affine = np.diag([res, res, res, 1.0])
    affine[:3, 3] = -res * (np.asarray(dims, dtype=np.float64) - 1.0) / 2.0
    return affine


def record_objects(record: Mapping[str, Any], prefix: str = "") -> list[dict[str, Any]]:
    """The objects a completion record covers, as ``[{"key", "sha256", "size"}]`` relative to its folder.

    Accepts a list of ``{"key"|"path", "sha256", "size"}`` or a mapping ``key → {"sha256", "size"}``;
    keys that repeat the version's ``prefix`` are made relative to it.
    """
    raw = record.get("objects")
    if raw is None:
        return []
    if isinstance(raw, Mapping):
        items: Iterable[Mapping[str, Any]] = ({"key": k, **v} for k, v in raw.items())
    elif isinstance(raw, list):
        items = raw
    else:
        raise ValueError(f"completion record 'objects': expected a list or a mapping, received {type(raw).__name__}")
    out = []
    strip = prefix.strip("/") + "/" if prefix else ""
    for item in items:
        key = item.get("key", item.get("path"))
        if not isinstance(key, str) or "sha256" not in item or "size" not in item:
            raise ValueError(
                f"completion record 'objects': expected entries with key, sha256 and size, received {dict(item)!r}"
            )
        if strip and key.startswith(strip):
            key = key[len(strip):]
        out.append({"key": key, "sha256": str(item["sha256"]), "size": int(item["size"])})
    return out


def _split_url(url: str) -> tuple[str, str | None, str | None]:
    """``<root>/datasets/<name>[/<version>]`` → (root, name, version); any other URL → (url, None, None)."""
    parsed = urlparse(url)
    path = parsed.path.rstrip("/")
    parts = path.split("/")
    for tail in (3, 2):
        if len(parts) > tail and parts[-tail] == "datasets":
            name = parts[-tail + 1]
            version = parts[-1] if tail == 3 else None
            root_path = "/".join(parts[:-tail]) or "/"
            root = parsed._replace(path=root_path).geturl()
            return root, name, version
    return url, None, None


def _read_json(store: Store, key: str) -> dict[str, Any] | None:
    if not store.exists(key):
        return None
    payload = json.loads(store.get_bytes(key))
    if not isinstance(payload, dict):
        raise ValueError(f"{store.url_for(key)}: expected a JSON object, received {type(payload).__name__}")
    return payload


def _latest_pointer(store: Store, name: str) -> str | None:
    """The version named by ``datasets/<name>/LATEST`` (plain text, or JSON with a ``version`` field)."""
    key = f"datasets/{name}/{LATEST}"
    if not store.exists(key):
        return None
    text = store.get_bytes(key).decode("utf-8", errors="strict").strip()
    if text.startswith("{"):
        value = json.loads(text).get("version")
        text = value.strip() if isinstance(value, str) else ""
    return text or None


def resolve_version(store: Store, name: str, version: str = "latest", *, require_published: bool = True) -> str:
    """The concrete version ``version`` names for dataset ``name``.

    ``"latest"`` reads ``datasets/<name>/LATEST`` and falls back to the highest ``v<N>`` with a manifest
    (with ``require_published=False``: then to the highest with ``generation.json``).
    """
    if version != "latest":
        return version
    records = (MANIFEST,) if require_published else (MANIFEST, GENERATION)
    pointed = _latest_pointer(store, name)
    if pointed is not None and _NAME.match(pointed):
        if any(store.exists(f"datasets/{name}/{pointed}/{r}") for r in records):
            return pointed
    numbers = list_versions(store, f"datasets/{name}")
    for record in records:
        for n in reversed(numbers):
            if store.exists(f"datasets/{name}/v{n}/{record}"):
                return f"v{n}"
    what = "published" if require_published else "published or generated"
    raise FileNotFoundError(
        f"{store.url_for(f'datasets/{name}')}: no {what} version of dataset {name!r} "
        f"(expected {LATEST} or a version folder with {' or '.join(records)})"
    )


class SyntheticDataset:
    """One committed dataset version: its samples table, lazy zarr arrays and views.

    Picklable: the store is reopened (and the arrays re-opened) lazily in each process, so the object
    can be handed to DataLoader or Dask workers, also for ``s3://`` stores.
    """

    def __init__(
        self,
        store: Store,
        name: str,
        version: str,
        *,
        manifest: dict[str, Any] | None,
        generation: dict[str, Any] | None,
        samples: pd.DataFrame,
        credentials: S3Credentials | None = None,
    ) -> None:
        if manifest is None and generation is None:
            raise ValueError("SyntheticDataset: expected a manifest or a generation record, received neither")
        self.name = name
        self.version = version
        self.manifest = manifest
        self.generation = generation
        self.samples = samples
        self._config: StoreConfig = store.config
        self._credentials = credentials
        self._store: Store | None = store
        self._pid = os.getpid()
        self._arrays: tuple[Any, Any] | None = None
        self._attrs: dict[str, Any] | None = None
        self._index_row = {int(ix): pos for pos, ix in enumerate(samples["index"].tolist())}

    # ------------------------------------------------------------ identity
    @property
    def prefix(self) -> str:
        """The version's key under the store root: ``datasets/<name>/<version>``."""
        return f"datasets/{self.name}/{self.version}"

    @property
    def store(self) -> Store:
        """This process's store (reopened after a fork or an unpickle: s3fs clients are not fork-safe)."""
        if self._store is None or self._pid != os.getpid():
            if self._store is not None:  # inherited through fork: park it, see _INHERITED
                _INHERITED.append((self._store, self._arrays))
            self._store = Store(self._config, self._credentials)
            self._arrays = None
            self._pid = os.getpid()
        return self._store

    @property
    def url(self) -> str:
        return self.store.url_for(self.prefix)

    @property
    def published(self) -> bool:
        return self.manifest is not None

    @property
    def record(self) -> dict[str, Any]:
        """The completion record this version was opened by (manifest preferred)."""
        return self.manifest if self.manifest is not None else self.generation  # type: ignore[return-value]

    def __repr__(self) -> str:
        state = "published" if self.published else "generated, unpublished"
        return f"SyntheticDataset({self.url!r}, {len(self)} samples, {state})"

    def __len__(self) -> int:
        return len(self.samples)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_store"] = None
        state["_arrays"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    # ------------------------------------------------------------ arrays
    def _open_arrays(self) -> tuple[Any, Any]:
        store = self.store  # may reset self._arrays after a fork
        if self._arrays is None:
            import zarr

            root = zarr.open_group(store.zarr_store(f"{self.prefix}/{DATA}", read_only=True), mode="r")
            self._arrays = (root[IMAGE], root[LABEL])
            if self._attrs is None:
                value = dict(root.attrs).get("synthmri")
                self._attrs = dict(value) if isinstance(value, Mapping) else {}
        return self._arrays

    def _synthmri_attrs(self) -> dict[str, Any]:
        """``data.zarr``'s ``synthmri`` group attributes (channels, resolution_mm, model), read once."""
        if self._attrs is None:
            self._open_arrays()
        return self._attrs or {}

    @property
    def image_array(self) -> Any:
        """``data.zarr/image`` (sample, channel, x, y, z), lazy: nothing is read until indexed."""
        return self._open_arrays()[0]

    @property
    def label_array(self) -> Any:
        """``data.zarr/label`` (sample, x, y, z) uint8, lazy."""
        return self._open_arrays()[1]

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape (x, y, z) of every sample."""
        return tuple(int(s) for s in self.label_array.shape[1:])  # type: ignore[return-value]

    @property
    def resolution_mm(self) -> float:
        """Voxel size (isotropic), from ``generation.json``, else the arrays' attributes, else the manifest."""
        for record in (self.generation, self.manifest):
            if record is not None:
                for holder in (record, record.get("generation") or {}):
                    if isinstance(holder, Mapping) and holder.get("resolution_mm") is not None:
                        return float(holder["resolution_mm"])
        value = self._synthmri_attrs().get("resolution_mm")
        if value is None:
            raise ValueError(f"{self.url}: expected resolution_mm in {GENERATION} or data.zarr's attributes, found none")
        return float(value)

    @property
    def affine(self) -> np.ndarray:
        """The canonical 4×4 RAS+ affine shared by every sample (see the module docstring)."""
        return canonical_affine(self.shape, self.resolution_mm)

    @property
    def channel_names(self) -> tuple[str, ...]:
        """Image channel order: ``("t1", "t1c", "t2", "flair")``."""
        channels = self._synthmri_attrs().get("channels") or list(MODALITIES)
        return tuple(str(c) for c in channels)

    @property
    def label_names(self) -> dict[int, str]:
        """The unified label map: value → class name (design.md §2)."""
        return dict(LABELS)

    @property
    def indices(self) -> list[int]:
        """Every sample's index into ``data.zarr``, in table order."""
        return [int(i) for i in self.samples["index"].tolist()]

    def row(self, index: int) -> pd.Series:
        """The ``samples.parquet`` row of sample ``index`` (its index in ``data.zarr``)."""
        pos = self._index_row.get(int(index))
        if pos is None:
            raise IndexError(f"sample index: expected one of the {len(self)} indices in samples.parquet, received {index!r}")
        return self.samples.iloc[pos]

    def read_sample(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """One sample as (image float32 (C, X, Y, Z), label uint8 (X, Y, Z)); reads only its shards."""
        self.row(index)  # raises for an unknown index
        image = np.asarray(self.image_array[int(index)], dtype=np.float32)
        label = np.asarray(self.label_array[int(index)], dtype=np.uint8)
        return image, label

    # ------------------------------------------------------------ views
    def to_dask(self) -> tuple[Any, Any]:
        """(image, label) as dask arrays, one chunk per sample (= one zarr shard per chunk)."""
        import dask.array as da

        image, label = self._open_arrays()
        return (
            da.from_zarr(image, chunks=(1, *image.shape[1:])),
            da.from_zarr(label, chunks=(1, *label.shape[1:])),
        )

    # ------------------------------------------------------------ selection
    def filter(self, **criteria: Any) -> list[int]:
        """Sample indices matching every criterion, ascending.

        ``column=value`` (equality; a list/tuple/set means "one of"), ``min_<column>=x`` (≥ x) and
        ``max_<column>=x`` (≤ x) for numeric columns, e.g. ``filter(hemisphere="left", min_whole_ml=10)``.
        """
        df = self.samples
        mask = pd.Series(True, index=df.index)
        for key, value in criteria.items():
            if key in df.columns:
                column = df[key]
                if isinstance(value, list | tuple | set | frozenset):
                    mask &= column.isin(list(value))
                else:
                    mask &= column == value
                continue
            bound, _, col = key.partition("_")
            if bound not in ("min", "max") or col not in df.columns:
                raise ValueError(
                    f"filter: criterion {key!r} is not a samples.parquet column nor min_/max_ of one; "
                    f"expected one of {sorted(df.columns)} (or min_<col>/max_<col>)"
                )
            if not pd.api.types.is_numeric_dtype(df[col]) or pd.api.types.is_bool_dtype(df[col]):
                raise ValueError(f"filter: {key!r} expected a numeric column, received {col!r} of dtype {df[col].dtype}")
            if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
                raise ValueError(f"filter: {key!r} expected a number, received {value!r}")
            mask &= (df[col] >= value) if bound == "min" else (df[col] <= value)
        return sorted(int(i) for i in df.loc[mask, "index"])

    def select(self, query: str) -> list[int]:
        """Sample indices of the rows matching a pandas ``DataFrame.query`` expression, ascending."""
        if not isinstance(query, str) or not query.strip():
            raise ValueError(f"select: expected a non-empty pandas query string, received {query!r}")
        try:
            hits = self.samples.query(query)
        except Exception as exc:  # noqa: BLE001 - pandas raises many kinds; re-raised with the query named
            raise ValueError(f"select: query {query!r} failed on samples.parquet: {exc}") from exc
        if not isinstance(hits, pd.DataFrame):
            raise ValueError(f"select: query {query!r} expected to select rows, received {type(hits).__name__}")
        return sorted(int(i) for i in hits["index"])

    # ------------------------------------------------------------ integrity
    def objects(self) -> list[dict[str, Any]]:
        """The objects the completion record covers (``key`` relative to the version folder)."""
        return record_objects(self.record, self.prefix)

    def verify(self) -> list[str]:
        """Re-read every object of the completion record (sha256 + size); one message per problem.

        An empty list means the version is intact. Also checks that the table and the arrays agree.
        """
        problems: list[str] = []
        try:
            objects = self.objects()
        except ValueError as exc:
            return [f"{self.url}: {exc}"]
        if not objects:
            problems.append(f"{self.url}: the completion record lists no objects")
        problems.extend(verify_objects(self.store, self.prefix, objects))
        try:
            n = int(self.label_array.shape[0])
            image_n = int(self.image_array.shape[0])
        except Exception as exc:  # noqa: BLE001 - any failure to open the arrays is a problem to report
            problems.append(f"{self.url}/{DATA}: cannot open the arrays: {exc}")
            return problems
        if image_n != n:
            problems.append(f"{self.url}/{DATA}: image has {image_n} samples, label has {n}")
        outside = [i for i in self.indices if i >= n]
        if outside:
            problems.append(f"{self.url}/{SAMPLES}: indices {outside[:5]} outside data.zarr's {n} samples")
        return problems


def open_dataset(
    url_or_store: str | Store,
    name: str | None = None,
    version: str = "latest",
    *,
    endpoint_url: str | None = None,
    credentials: S3Credentials | None = None,
    require_published: bool = True,
) -> SyntheticDataset:
    """Open dataset ``name`` at ``version`` from a store root URL (or an open :class:`Store`).

    ``url_or_store`` may also be ``<root>/datasets/<name>[/<version>]`` with ``name`` left None.
    ``version="latest"`` follows ``datasets/<name>/LATEST``. A version without ``manifest.json`` is
    refused (:class:`FileNotFoundError` naming its URL) unless ``require_published=False``, which also
    accepts a generated-but-unpublished version (``generation.json``); the manifest is preferred.
    ``endpoint_url`` / ``credentials`` configure an S3-compatible store (otherwise the AWS
    environment / profile chain applies).
    """
    if isinstance(url_or_store, Store):
        store = url_or_store
        if credentials is None:
            credentials = getattr(store, "_credentials", None)
    elif isinstance(url_or_store, str):
        url = url_or_store
        if name is None:
            url, name, url_version = _split_url(url)
            if url_version is not None:
                if version not in ("latest", url_version):
                    raise ValueError(
                        f"open_dataset: version {version!r} disagrees with the URL's version {url_version!r}"
                    )
                version = url_version
        store = Store(StoreConfig(url=url, endpoint_url=endpoint_url), credentials)
        if store.is_local:
            if not store.local_path("").is_dir():
                raise FileNotFoundError(f"open_dataset: store {store.url} does not exist")
        else:
            store.check_access()
    else:
        raise TypeError(f"open_dataset: url_or_store expected a str or a Store, received {type(url_or_store).__name__}")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"open_dataset: name expected a dataset name (letters, digits, '.', '_', '-'), received {name!r}"
        )
    if not isinstance(version, str) or not _NAME.match(version):
        raise ValueError(f"open_dataset: version expected 'latest' or a version name such as 'v1', received {version!r}")

    version = resolve_version(store, name, version, require_published=require_published)
    prefix = f"datasets/{name}/{version}"
    manifest = _read_json(store, f"{prefix}/{MANIFEST}")
    generation = _read_json(store, f"{prefix}/{GENERATION}")
    if manifest is None and (require_published or generation is None):
        needed = MANIFEST if require_published else f"{MANIFEST} or {GENERATION}"
        raise FileNotFoundError(
            f"{store.url_for(prefix)}: dataset version not committed ({needed} missing)"
            + ("; pass require_published=False to open a generated, unpublished version" if
               require_published and generation is not None else "")
        )
    samples = SamplesSchema.validate(pd.read_parquet(io.BytesIO(store.get_bytes(f"{prefix}/{SAMPLES}"))))
    return SyntheticDataset(
        store, name, version, manifest=manifest, generation=generation, samples=samples, credentials=credentials
    )


__all__ = [
    "GENERATION",
    "LATEST",
    "MANIFEST",
    "SyntheticDataset",
    "canonical_affine",
    "open_dataset",
    "record_objects",
    "resolve_version",
]
