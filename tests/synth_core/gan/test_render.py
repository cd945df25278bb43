"""PNG encoding and the validation grid, decoded back with a minimal PNG reader (zlib + struct)."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from synth_core.gan.render import NAN_RGB, PALETTE, validation_grid, write_png

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_png(data: bytes) -> np.ndarray:
    """Decode an 8-bit RGB, non-interlaced, filter-0 PNG (what write_png produces), checking every CRC."""
    assert data[:8] == SIGNATURE
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, kind
        chunks.append((kind, body))
        pos += 12 + length
    assert pos == len(data)
    kinds = [k for k, _ in chunks]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND"
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, colour, compression, filtering, interlace) == (8, 2, 0, 0, 0)
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    assert len(raw) == height * (1 + 3 * width)
    rows = np.frombuffer(raw, np.uint8).reshape(height, 1 + 3 * width)
    assert (rows[:, 0] == 0).all()
    return rows[:, 1:].reshape(height, width, 3)


def test_write_png_roundtrip() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(7, 11, 3), dtype=np.uint8)
    data = write_png(rgb)
    assert data[:8] == SIGNATURE
    assert data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (11, 7)
    assert np.array_equal(read_png(data), rgb)


def test_write_png_validation() -> None:
    with pytest.raises(ValueError, match="uint8"):
        write_png(np.zeros((2, 2, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        write_png(np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        write_png(np.zeros((0, 2, 3), np.uint8))


def _subject(shape: tuple[int, int, int] = (12, 16, 10)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    label = np.zeros(shape, np.uint8)
    label[2:-2, 2:-2, 2:-2] = 3
    label[3:5, 4:7, 3:5] = 6
    label[5:7, 4:7, 3:5] = 4
    real = rng.normal(size=(4, *shape)).astype(np.float32)
    fake = rng.normal(size=(4, *shape)).astype(np.float32)
    return label, real, fake


def _grid_shape(shape: tuple[int, int, int], gap: int = 2) -> tuple[int, int]:
    x, y, z = shape
    heights = [y, z, z]  # axial (Y, X), coronal (Z, X), sagittal (Z, Y) after rot90
    width = max(x, y)
    return sum(heights) + 4 * gap, 9 * width + 10 * gap


def test_validation_grid_dimensions_and_colours() -> None:
    label, real, fake = _subject()
    png = validation_grid(label, real, fake)
    image = read_png(png)
    assert image.shape[:2] == _grid_shape(label.shape)
    colours = {tuple(c) for c in image.reshape(-1, 3)}
    for value in (0, 3, 4, 6):
        assert tuple(PALETTE[value]) in colours
    assert tuple(NAN_RGB) not in colours


def test_validation_grid_nan_is_dark_red() -> None:
    label, real, fake = _subject()
    real[1] = np.nan  # missing T1c
    fake[2, 0, 0, 0] = np.nan
    image = read_png(validation_grid(label, real, fake, center=(0, 0, 0)))
    nan = np.all(image == np.asarray(NAN_RGB, np.uint8), axis=-1)
    # the whole real T1c column (3 panels) is NaN, plus the fake T2 voxel seen in every panel through (0, 0, 0)
    n_real_t1c = 12 * 16 + 12 * 10 + 16 * 10
    assert nan.sum() == n_real_t1c + 3


def test_validation_grid_orientation_and_grey_scale() -> None:
    shape = (8, 10, 6)
    label = np.zeros(shape, np.uint8)
    real = np.zeros((4, *shape), np.float32)
    real[0, :, -1, :] = 3.0  # most anterior row (y = Y-1) white, elsewhere 0 → mid-grey
    real[0, 0, 0, 0] = -10.0  # clipped to black
    fake = np.zeros_like(real)
    image = read_png(validation_grid(label, real, fake, center=(0, 0, 0)))
    gap, width = 2, max(shape[0], shape[1])
    left = gap + (width + gap) * 1 + (width - shape[0]) // 2  # real t1 column, axial panel is X wide
    axial = image[gap : gap + shape[1], left : left + shape[0]]
    assert (axial[0] == 255).all()  # anterior up
    assert (axial[1:-1] == 128).all()
    assert tuple(axial[-1, 0]) == (0, 0, 0)  # posterior row, x = 0 (left): the clipped voxel


def test_validation_grid_default_center_is_tumour_centroid() -> None:
    label, real, fake = _subject()
    centroid = tuple(int(round(v)) for v in np.argwhere(label >= 4).mean(axis=0))
    assert validation_grid(label, real, fake) == validation_grid(label, real, fake, center=centroid)
    healthy = np.where(label >= 4, 3, label).astype(np.uint8)
    middle = tuple(s // 2 for s in label.shape)
    assert validation_grid(healthy, real, fake) == validation_grid(healthy, real, fake, center=middle)


def test_validation_grid_zoom_and_validation() -> None:
    label, real, fake = _subject()
    h, w = _grid_shape(label.shape)
    zoomed = read_png(validation_grid(label, real, fake, zoom=2))
    assert zoomed.shape[:2] == (h + sum((16, 10, 10)), w + 9 * 16)
    with pytest.raises(ValueError, match="center"):
        validation_grid(label, real, fake, center=(12, 0, 0))
    with pytest.raises(ValueError, match=r"\[9\]"):
        validation_grid(np.full_like(label, 9), real, fake)
    with pytest.raises(ValueError, match="real"):
        validation_grid(label, real[:3], fake)
    with pytest.raises(ValueError, match="integer"):
        validation_grid(label.astype(np.float32), real, fake)
