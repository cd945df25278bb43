"""From a :class:`SourceConfig` to files on disk and a :class:`Discovery` (one converter per dataset)."""

from __future__ import annotations

from pathlib import Path

from schemas.config import SourceConfig
from synth_core.ingest.types import Discovery


def prepare_source(source: SourceConfig) -> Path:
    """Make the source's files exist locally: build the phantom, or download MSD Task01 when asked."""
    root = Path(source.path).expanduser().resolve()
    if source.kind == "phantom":
        from synth_core.ingest.converters.phantom import write_phantom_source

        write_phantom_source(root, source.phantom)
        return root
    if source.kind == "msd_task01" and source.download:
        from synth_core.ingest.converters import msd_task01

        kwargs = {}
        if source.download_url:
            kwargs["url"] = source.download_url
        if source.download_md5:
            kwargs["md5"] = source.download_md5
        return msd_task01.fetch(root, **kwargs)
    if not root.is_dir():
        raise ValueError(f"source.path: expected an existing folder for kind={source.kind!r}, received {str(root)!r}")
    return root


def discover_source(source: SourceConfig, root: Path) -> Discovery:
    """Run the converter of ``source.kind`` over ``root``."""
    if source.kind in ("brats", "phantom"):
        from synth_core.ingest.converters import brats

        return brats.discover(root, layout="2021" if source.kind == "phantom" else "auto")
    if source.kind == "msd_task01":
        from synth_core.ingest.converters import msd_task01

        return msd_task01.discover(root)
    if source.kind == "nifti_folder":
        from synth_core.ingest.converters import nifti_folder

        return nifti_folder.discover(root, mapping_file=Path(source.mapping_file).expanduser())  # type: ignore[arg-type]
    raise ValueError(f"source.kind: valid choices are brats, msd_task01, nifti_folder, phantom; received {source.kind!r}")


__all__ = ["discover_source", "prepare_source"]
