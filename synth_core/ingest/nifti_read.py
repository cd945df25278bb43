"""Safe, header-first NIfTI reading (design.md §6).

Every input file is untrusted. The reader therefore:

1. refuses paths that leave the source root or pass through a symlink (``unsafe_path``), and opens
   the file with ``O_NOFOLLOW`` after checking that it is a regular file;
2. reads only the first bytes, decompressing at most the header (348 bytes for NIfTI-1, 540 for
   NIfTI-2) when the file is gzip-compressed, and validates the header *before any voxel buffer
   is allocated*: format and datatype (``nifti_format``), dimensions and the declared decoded size
   ``vox_offset + prod(dims) * itemsize`` against :class:`~schemas.config.InputLimits`
   (``header_dims``), voxel spacing (``header_spacing``) and ``vox_offset`` (``header_offset``);
3. reads the bytes on disk once, hashing them (sha256) while reading, and decompresses at most the
   declared size with a streaming decompressor (``isal`` when available, ``zlib`` otherwise), so a
   decompression bomb never allocates past the header's own declaration; data beyond the declared
   size is ignored, data short of it is ``readable`` ("truncated");
4. never reads, parses or unpickles header extensions: the voxels start at ``vox_offset`` and
   everything between the header and ``vox_offset`` is skipped unseen;
5. decodes the voxels without intermediate copies (``np.frombuffer`` on the decompressed buffer,
   reshaped in Fortran order as NIfTI stores them), converting images to float32 with
   ``scl_slope``/``scl_inter`` applied in place, and labels to an explicit integer dtype
   (uint8 when the values fit, else int16) after checking that float-stored labels are integral.

The affine follows nibabel: the sform when ``sform_code > 0``, else the qform when
``qform_code > 0``, else the pixdim-based base affine. A non-finite or singular affine is
refused (``affine``).

Every failure raises :class:`~synth_core.ingest.types.InputRejected` with one of
:data:`schemas.tables.QUARANTINE_CHECKS`, the file relative to the source root, the offending value
and a message.
"""

from __future__ import annotations

import hashlib
import math
import os
import stat
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
from nibabel.nifti1 import Nifti1Header
from nibabel.nifti2 import Nifti2Header

from schemas.config import InputLimits
from synth_core.ingest.types import InputRejected, Volume

try:  # isal's igzip is ~2x faster than zlib on gzip streams; zlib is the portable fallback.
    from isal import isal_zlib as _isal_zlib

    _decompressobj: Callable[[], Any] = lambda: _isal_zlib.decompressobj(wbits=31)  # noqa: E731
    _GZIP_ERRORS: tuple[type[BaseException], ...] = (zlib.error, _isal_zlib.error)
    GZIP_BACKEND: Final[str] = "isal"
except ImportError:  # pragma: no cover - isal is a declared dependency
    _decompressobj = lambda: zlib.decompressobj(31)  # noqa: E731
    _GZIP_ERRORS = (zlib.error,)
    GZIP_BACKEND = "zlib"

_GZIP_MAGIC: Final[bytes] = b"\x1f\x8b"
_N1_SIZE: Final[int] = 348
_N2_SIZE: Final[int] = 540
_N2_MAGIC: Final[bytes] = b"n+2\x00\r\n\x1a\n"
_HEAD_CHUNK: Final[int] = 64 * 1024
_MAX_HEADER_INPUT: Final[int] = 1024 * 1024  # compressed bytes we read at most to find the header
_READ_CHUNK: Final[int] = 8 * 1024 * 1024
_MAX_DIM4: Final[int] = 16
# A gzip file larger than this (over the decoded-size cap) cannot be a legitimate input.
_GZIP_SLACK_FRACTION: Final[float] = 0.01
_GZIP_SLACK_BYTES: Final[int] = 1024 * 1024

# NIfTI datatype code -> numpy dtype (native order; the file's byte order is applied on decode).
# Complex, RGB and float128 types are not brain-MRI intensities or labels and are refused.
_DATATYPES: Final[dict[int, np.dtype]] = {
    2: np.dtype(np.uint8),
    4: np.dtype(np.int16),
    8: np.dtype(np.int32),
    16: np.dtype(np.float32),
    64: np.dtype(np.float64),
    256: np.dtype(np.int8),
    512: np.dtype(np.uint16),
    768: np.dtype(np.uint32),
    1024: np.dtype(np.int64),
    1280: np.dtype(np.uint64),
}


@dataclass(frozen=True)
class LoadedNifti:
    """A decoded NIfTI file: 3D or 4D voxels, its affine, and the checksum of the bytes on disk.

    ``data`` is float32 for images and uint8/int16 for labels, in NIfTI (Fortran) memory order;
    ``affine`` is the float64 4x4 voxel-to-world (scanner RAS, mm) matrix; ``file`` is the path
    relative to the source root (posix); ``sha256`` and ``size`` describe the bytes on disk.
    """

    data: np.ndarray
    affine: np.ndarray
    file: str
    sha256: str
    size: int

    def volume(self, index: int | None = None) -> Volume:
        """One 3D volume: the whole file for a 3D file (``index`` None), ``data[..., index]`` for 4D.

        A 4D file holding a single volume may be read with ``index`` None. Any other mismatch between
        the index and the file is an input error (``header_dims``): the converter expected another
        layout than the file has.
        """
        if self.data.ndim == 3:
            if index is not None:
                raise InputRejected(
                    "header_dims",
                    self.file,
                    self.data.shape,
                    f"expected a 4D file to take volume {index} from, the file is 3D with shape {self.data.shape}",
                )
            return Volume(data=self.data, affine=self.affine, file=self.file)
        n_vol = int(self.data.shape[3])
        if index is None:
            if n_vol != 1:
                raise InputRejected(
                    "header_dims",
                    self.file,
                    self.data.shape,
                    f"4D file with {n_vol} volumes: a volume index in [0, {n_vol - 1}] is required",
                )
            index = 0
        if not 0 <= index < n_vol:
            raise InputRejected(
                "header_dims",
                self.file,
                self.data.shape,
                f"volume index {index} out of range: the file holds {n_vol} volumes (valid 0..{n_vol - 1})",
            )
        return Volume(data=self.data[..., index], affine=self.affine, file=self.file)


@dataclass(frozen=True)
class _Header:
    """The validated facts of a header that decoding needs."""

    version: int
    shape: tuple[int, ...]
    dtype: np.dtype  # with the file's byte order
    vox_offset: int
    declared: int  # vox_offset + prod(shape) * itemsize
    slope: float | None
    inter: float | None
    affine: np.ndarray


def load_nifti(path: Path, *, root: Path, limits: InputLimits, kind: Literal["image", "label"]) -> LoadedNifti:
    """Read one NIfTI-1/NIfTI-2 file (``.nii`` or ``.nii.gz``) safely; see the module docstring.

    ``path`` is absolute or relative to ``root``; it must stay inside ``root`` and no component below
    ``root`` may be a symlink. Raises :class:`InputRejected` on any failed check.
    """
    if kind not in ("image", "label"):
        raise ValueError(f"kind: valid choices are 'image' or 'label', received {kind!r}")
    abs_path, rel = _safe_path(Path(path), Path(root))
    try:
        fd = os.open(abs_path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        check = "unsafe_path" if os.path.islink(abs_path) else "readable"
        raise InputRejected(check, rel, abs_path.name, f"cannot open the file: {exc.strerror or exc}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputRejected("unsafe_path", rel, stat.filemode(st.st_mode), "not a regular file")
        return _load_open(fd, st.st_size, rel, limits, kind)
    except OSError as exc:
        raise InputRejected("readable", rel, type(exc).__name__, f"I/O error while reading: {exc}") from exc
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------- paths


def _safe_path(path: Path, root: Path) -> tuple[Path, str]:
    """Absolute path and posix path relative to ``root``; refuses escapes and symlinks."""
    root_abs = Path(os.path.abspath(root))
    candidate = path if path.is_absolute() else root_abs / path
    abs_path = Path(os.path.abspath(candidate))  # resolves '..' lexically, follows nothing
    try:
        rel_path = abs_path.relative_to(root_abs)
    except ValueError:
        raise InputRejected(
            "unsafe_path", path.as_posix(), path.as_posix(), f"path is outside the source root {root_abs.as_posix()}"
        ) from None
    rel = rel_path.as_posix()
    if not rel_path.parts:
        raise InputRejected("unsafe_path", rel, rel, "path is the source root itself, not a file")
    current = root_abs
    for part in rel_path.parts:
        current = current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            raise InputRejected("readable", rel, current.name, "file does not exist") from None
        except OSError as exc:
            raise InputRejected("readable", rel, current.name, f"cannot stat: {exc}") from exc
        if stat.S_ISLNK(st.st_mode):
            raise InputRejected(
                "unsafe_path",
                rel,
                (current.relative_to(root_abs)).as_posix(),
                "path component is a symlink; symlinks are never followed",
            )
    if not stat.S_ISREG(st.st_mode):
        raise InputRejected("unsafe_path", rel, stat.filemode(st.st_mode), "not a regular file")
    return abs_path, rel


# -------------------------------------------------------------------------------------------- header


def _read_prefix(fd: int, size: int, rel: str) -> tuple[bytes, bool]:
    """The first (decompressed) bytes of the file, enough for a NIfTI-2 header, and whether it is gzip."""
    head = os.pread(fd, min(size, _HEAD_CHUNK), 0)
    if head[:2] != _GZIP_MAGIC:
        return head[:_N2_SIZE], False
    dec = _decompressobj()
    out = bytearray()
    pos = 0
    chunk = head
    try:
        while True:
            out += dec.decompress(chunk, _N2_SIZE - len(out))
            pos += len(chunk)
            if len(out) >= _N2_SIZE or dec.eof or pos >= min(size, _MAX_HEADER_INPUT):
                break
            chunk = os.pread(fd, _HEAD_CHUNK, pos)
            if not chunk:
                break
    except _GZIP_ERRORS as exc:
        raise InputRejected("readable", rel, "gzip", f"corrupt gzip stream in the header: {exc}") from exc
    return bytes(out), True


def _parse_header(prefix: bytes, file_size: int, gz: bool, rel: str, limits: InputLimits) -> _Header:
    """Validate the header bytes; nothing the size of the volume is allocated here."""
    container = "the decompressed stream" if gz else "the file"
    if len(prefix) < _N1_SIZE:
        if gz:
            raise InputRejected(
                "readable",
                rel,
                f"{len(prefix)} bytes",
                f"truncated: a NIfTI header needs {_N1_SIZE} bytes, {container} holds {len(prefix)}",
            )
        raise InputRejected(
            "nifti_format",
            rel,
            f"{len(prefix)} bytes",
            f"not a NIfTI file: {file_size} bytes, shorter than a NIfTI-1 header ({_N1_SIZE} bytes)",
        )
    size_le = int.from_bytes(prefix[:4], "little")
    size_be = int.from_bytes(prefix[:4], "big")
    if _N1_SIZE in (size_le, size_be):
        version, hsize, endian = 1, _N1_SIZE, "<" if size_le == _N1_SIZE else ">"
    elif _N2_SIZE in (size_le, size_be):
        version, hsize, endian = 2, _N2_SIZE, "<" if size_le == _N2_SIZE else ">"
    else:
        hint = "" if gz else " (and it is not gzip-compressed)"
        raise InputRejected(
            "nifti_format",
            rel,
            f"sizeof_hdr={size_le}",
            f"not a NIfTI-1/NIfTI-2 file{hint}: sizeof_hdr is {size_le}, expected {_N1_SIZE} or {_N2_SIZE}",
        )
    if len(prefix) < hsize:
        raise InputRejected(
            "readable",
            rel,
            f"{len(prefix)} bytes",
            f"truncated: a NIfTI-2 header needs {hsize} bytes, {container} holds {len(prefix)}",
        )
    block = prefix[:hsize]
    if version == 1:
        magic = block[344:348]
        if magic == b"ni1\x00":
            raise InputRejected(
                "nifti_format", rel, "ni1", "two-file NIfTI pair (.hdr/.img) is not supported; use single-file .nii"
            )
        if magic != b"n+1\x00":
            raise InputRejected("nifti_format", rel, repr(magic), "bad NIfTI-1 magic: expected 'n+1'")
        hdr: Nifti1Header = Nifti1Header(binaryblock=block, endianness=endian, check=False)
    else:
        magic = block[4:12]
        if magic != _N2_MAGIC:
            raise InputRejected("nifti_format", rel, repr(magic), "bad NIfTI-2 magic: expected 'n+2\\0\\r\\n\\x1a\\n'")
        hdr = Nifti2Header(binaryblock=block, endianness=endian, check=False)

    code = int(hdr["datatype"])
    if code not in _DATATYPES:
        raise InputRejected(
            "nifti_format",
            rel,
            f"datatype={code}",
            f"unsupported NIfTI datatype code {code}; valid codes: {sorted(_DATATYPES)}",
        )
    dtype = _DATATYPES[code].newbyteorder(endian)

    dim = [int(d) for d in hdr["dim"]]
    ndim = dim[0]
    if ndim not in (3, 4):
        raise InputRejected("header_dims", rel, dim[: max(1, min(ndim, 7)) + 1], f"dim[0] is {ndim}: expected 3 or 4")
    shape = tuple(dim[1 : ndim + 1])
    bad = [s for s in shape[:3] if s < 1 or s > limits.max_dim]
    if bad:
        raise InputRejected(
            "header_dims", rel, shape, f"spatial dimensions must be in [1, {limits.max_dim}] (limits.max_dim)"
        )
    if ndim == 4 and not 1 <= shape[3] <= _MAX_DIM4:
        raise InputRejected(
            "header_dims", rel, shape, f"4D files may hold 1 to {_MAX_DIM4} volumes, dim[4] is {shape[3]}"
        )

    pixdim = [float(p) for p in hdr["pixdim"][1:4]]
    if not all(math.isfinite(p) and p > 0 for p in pixdim):
        raise InputRejected("header_spacing", rel, pixdim, "pixdim[1:4] must be finite and positive")
    if not all(limits.min_spacing_mm <= p <= limits.max_spacing_mm for p in pixdim):
        raise InputRejected(
            "header_spacing",
            rel,
            pixdim,
            f"voxel spacing outside [{limits.min_spacing_mm}, {limits.max_spacing_mm}] mm (limits)",
        )

    raw_offset = float(hdr["vox_offset"])
    if not math.isfinite(raw_offset) or raw_offset < 0 or raw_offset != int(raw_offset):
        raise InputRejected("header_offset", rel, raw_offset, "vox_offset must be a non-negative integer")
    # nibabel's rule: a single-file NIfTI's voxels start after the header and its 4 extension flag bytes.
    vox_offset = max(int(raw_offset), hsize + 4)
    n_voxels = math.prod(shape)
    declared = vox_offset + n_voxels * dtype.itemsize  # Python ints: no overflow
    if declared > limits.max_bytes:
        raise InputRejected(
            "header_dims",
            rel,
            f"{declared} bytes",
            f"declared size {declared} bytes (shape {shape}, {dtype.name}, vox_offset {vox_offset}) is over the "
            f"cap of {limits.max_bytes} bytes (limits.max_bytes)",
        )
    if not gz and vox_offset > file_size:
        raise InputRejected(
            "header_offset", rel, vox_offset, f"vox_offset {vox_offset} is past the end of the file ({file_size} bytes)"
        )

    try:
        slope, inter = hdr.get_slope_inter()
    except Exception as exc:  # nibabel raises HeaderDataError for a valid slope with a non-finite intercept
        raise InputRejected(
            "nifti_format", rel, (float(hdr["scl_slope"]), float(hdr["scl_inter"])), f"invalid scaling: {exc}"
        ) from exc

    affine = _affine(hdr, rel, limits)
    return _Header(
        version=version,
        shape=shape,
        dtype=dtype,
        vox_offset=vox_offset,
        declared=declared,
        slope=slope,
        inter=inter,
        affine=affine,
    )


def _affine(hdr: Nifti1Header, rel: str, limits: InputLimits) -> np.ndarray:
    """sform if sform_code > 0, else qform if qform_code > 0, else the base affine (as nibabel)."""
    if float(hdr["pixdim"][0]) not in (-1.0, 1.0):
        hdr["pixdim"][0] = 1.0  # qfac 0 is common and means 1 (nibabel's check_fix does the same)
    try:
        with np.errstate(all="ignore"):
            affine = np.asarray(hdr.get_best_affine(), dtype=np.float64)
    except Exception as exc:  # malformed quaternion etc.
        raise InputRejected("affine", rel, "qform/sform", f"cannot compute the affine: {exc}") from exc
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise InputRejected("affine", rel, np.array2string(affine, precision=4), "affine has non-finite entries")
    rot = affine[:3, :3]
    zooms = np.sqrt((rot**2).sum(axis=0))
    det = float(np.linalg.det(rot))
    if not np.all(zooms > 0) or abs(det) <= 1e-6 * float(np.prod(zooms)):
        raise InputRejected("affine", rel, f"det={det:.3g}", "affine is singular (degenerate voxel axes)")
    if not np.all((zooms >= limits.min_spacing_mm * (1 - 1e-6)) & (zooms <= limits.max_spacing_mm * (1 + 1e-6))):
        raise InputRejected(
            "header_spacing",
            rel,
            [round(float(z), 6) for z in zooms],
            f"affine voxel spacing outside [{limits.min_spacing_mm}, {limits.max_spacing_mm}] mm (limits)",
        )
    return affine


# ------------------------------------------------------------------------------------------ decoding


def _read_all(fd: int, size: int, keep: int, rel: str) -> tuple[bytearray, str]:
    """Read the whole file once, hashing it; keep only its first ``keep`` bytes in memory."""
    digest = hashlib.sha256()
    buf = bytearray(min(size, keep))
    view = memoryview(buf)
    pos = 0
    while pos < len(buf):
        n = os.preadv(fd, [view[pos : pos + _READ_CHUNK]], pos) if hasattr(os, "preadv") else _pread_into(fd, view, pos)
        if n == 0:
            break
        digest.update(view[pos : pos + n])
        pos += n
    kept = pos
    while pos < size:  # data beyond what we keep: hashed, not stored
        chunk = os.pread(fd, _READ_CHUNK, pos)
        if not chunk:
            break
        digest.update(chunk)
        pos += len(chunk)
    if kept < len(buf):
        del view
        del buf[kept:]
    return buf, digest.hexdigest()


def _pread_into(fd: int, view: memoryview, pos: int) -> int:  # pragma: no cover - platforms without preadv
    chunk = os.pread(fd, min(_READ_CHUNK, len(view) - pos), pos)
    view[pos : pos + len(chunk)] = chunk
    return len(chunk)


def _gunzip_capped(data: bytearray, cap: int, rel: str) -> tuple[bytes, bool]:
    """Decompress at most ``cap`` bytes (all members); returns the bytes and whether the stream ended early."""
    parts: list[bytes] = []
    total = 0
    src: bytes | memoryview = memoryview(data)
    try:
        while True:
            dec = _decompressobj()
            out = dec.decompress(src, cap - total)
            parts.append(out)
            total += len(out)
            if total >= cap:
                break
            if not dec.eof:
                return b"".join(parts), True  # input ended inside a member: truncated
            rest = dec.unused_data
            if rest[:2] != _GZIP_MAGIC:  # end of the last member (trailing bytes, if any, are ignored)
                break
            src = rest
    except _GZIP_ERRORS as exc:
        raise InputRejected("readable", rel, "gzip", f"corrupt gzip stream after {total} bytes: {exc}") from exc
    return (parts[0] if len(parts) == 1 else b"".join(parts)), False


def _load_open(fd: int, size: int, rel: str, limits: InputLimits, kind: str) -> LoadedNifti:
    prefix, gz = _read_prefix(fd, size, rel)
    hdr = _parse_header(prefix, size, gz, rel, limits)

    if gz:
        max_gz = hdr.declared + int(hdr.declared * _GZIP_SLACK_FRACTION) + _GZIP_SLACK_BYTES
        if size > max_gz:
            raise InputRejected(
                "header_dims",
                rel,
                f"{size} bytes",
                f"gzip file of {size} bytes is larger than its declared decoded size ({hdr.declared} bytes) allows",
            )
        raw, sha = _read_all(fd, size, size, rel)
        if len(raw) < size:
            raise InputRejected("readable", rel, f"{len(raw)} bytes", f"file shrank while reading: expected {size}")
        buffer, early_end = _gunzip_capped(raw, hdr.declared, rel)
        del raw
        got = len(buffer)
        if got < hdr.vox_offset and not early_end:
            raise InputRejected(
                "header_offset",
                rel,
                hdr.vox_offset,
                f"vox_offset {hdr.vox_offset} is past the end of the decompressed data ({got} bytes)",
            )
        if got < hdr.declared:
            why = "gzip stream ends early" if early_end else "decompressed data is short"
            raise InputRejected(
                "readable",
                rel,
                f"{got} of {hdr.declared} bytes",
                f"truncated ({why}): expected {hdr.declared} bytes (header + voxels), received {got}",
            )
        data_buf: bytes | bytearray = buffer
    else:
        raw, sha = _read_all(fd, size, hdr.declared, rel)
        if len(raw) < hdr.declared:
            raise InputRejected(
                "readable",
                rel,
                f"{len(raw)} of {hdr.declared} bytes",
                f"truncated: expected {hdr.declared} bytes (header + voxels), received {len(raw)}",
            )
        data_buf = raw

    n_voxels = math.prod(hdr.shape)
    flat = np.frombuffer(data_buf, dtype=hdr.dtype, count=n_voxels, offset=hdr.vox_offset)
    stored = flat.reshape(hdr.shape, order="F")
    data = _decode_image(stored, hdr) if kind == "image" else _decode_label(stored, hdr, rel)
    return LoadedNifti(data=data, affine=hdr.affine, file=rel, sha256=sha, size=size)


def _scaling(hdr: _Header) -> tuple[float, float] | None:
    if hdr.slope is None or (hdr.slope == 1.0 and (hdr.inter or 0.0) == 0.0):
        return None
    return float(hdr.slope), float(hdr.inter or 0.0)


def _decode_image(stored: np.ndarray, hdr: _Header) -> np.ndarray:
    """float32 voxels with scl_slope/scl_inter applied in place (one copy at most)."""
    native_f32 = stored.dtype == np.dtype(np.float32) and stored.dtype.isnative
    if native_f32 and stored.flags.writeable:
        data = stored  # a view on our own buffer: no copy
    else:
        data = stored.astype(np.float32, order="K", copy=True)
    scale = _scaling(hdr)
    if scale is not None:
        with np.errstate(over="ignore", invalid="ignore"):
            data *= np.float32(scale[0])
            data += np.float32(scale[1])
    return data


def _decode_label(stored: np.ndarray, hdr: _Header, rel: str) -> np.ndarray:
    """Integer label voxels (uint8 when the values fit, else int16); float storage must be integral."""
    scale = _scaling(hdr)
    if stored.dtype.kind in "iu" and scale is None:
        if stored.dtype.itemsize == 1 and stored.dtype.kind == "u":
            return stored if stored.flags.writeable else stored.copy(order="K")
        lo, hi = int(stored.min()), int(stored.max())
        return _to_label_int(stored, lo, hi, rel)
    values = stored.astype(np.float64, order="K") if scale is not None else stored
    if scale is not None:
        values *= scale[0]
        values += scale[1]
    total = float(np.add.reduce(values, axis=None, dtype=np.float64))
    if not math.isfinite(total):
        n_bad = int(np.count_nonzero(~np.isfinite(values)))
        if n_bad:
            raise InputRejected("label_values", rel, f"{n_bad} non-finite voxels", "label map has NaN/inf voxels")
    lo_f, hi_f = float(values.min()), float(values.max())
    if lo_f < -32768 or hi_f > 32767:
        raise InputRejected(
            "label_values", rel, [lo_f, hi_f], "label values outside the int16 range [-32768, 32767]"
        )
    out = _to_label_int(values, int(math.floor(lo_f)), int(math.ceil(hi_f)), rel)
    if not np.array_equal(out, values):
        flat = values.ravel(order="K")
        sample = np.unique(flat[flat != np.rint(flat)])[:5].tolist()
        raise InputRejected(
            "label_values",
            rel,
            sample,
            f"label map stored as {stored.dtype.name} holds non-integral values (e.g. {sample})",
        )
    return out


def _to_label_int(values: np.ndarray, lo: int, hi: int, rel: str) -> np.ndarray:
    if lo >= 0 and hi <= 255:
        return values.astype(np.uint8, order="K")
    if lo >= -32768 and hi <= 32767:
        return values.astype(np.int16, order="K")
    raise InputRejected("label_values", rel, [lo, hi], "label values outside the int16 range [-32768, 32767]")


__all__ = ["GZIP_BACKEND", "LoadedNifti", "load_nifti"]
