"""The 3D pix2pix networks and losses on tiny seeded CPU inputs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from schemas.train import DiscriminatorConfig, GeneratorConfig
from synth_core.gan.networks import (
    GANLoss,
    PatchDiscriminator3D,
    UNet3DGenerator,
    count_parameters,
    init_weights,
    one_hot,
    weighted_l1,
)



@pytest.fixture(autouse=True, scope="module")
def _flush_denormals():
    """design.md §8 (denormals slow CPU steps 10×); reset afterwards so no other test inherits the CPU flag."""
    from synth_core.gan.train import flush_denormals

    with flush_denormals():
        yield


def _tiny(depth: int = 3, **kw: object) -> GeneratorConfig:
    return GeneratorConfig(base_width=4, depth=depth, max_width=16, **kw)  # type: ignore[arg-type]


def _labels(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 7, shape, generator=g, dtype=torch.uint8)


# --- one_hot -------------------------------------------------------------------------------------------


def test_one_hot_matches_reference() -> None:
    label = _labels((2, 4, 6, 8))
    out = one_hot(label)
    assert out.shape == (2, 7, 4, 6, 8)
    assert out.dtype == torch.float32
    assert out.is_contiguous()
    expected = F.one_hot(label.long(), 7).permute(0, 4, 1, 2, 3).float()
    assert torch.equal(out, expected)
    assert torch.equal(out.sum(1), torch.ones(2, 4, 6, 8))
    assert torch.equal(out.argmax(1), label.long())


@pytest.mark.parametrize("bad", [7, 9, -1])
def test_one_hot_rejects_out_of_range(bad: int) -> None:
    label = torch.zeros((1, 2, 2, 2), dtype=torch.int64)
    label[0, 1, 1, 1] = bad
    with pytest.raises(ValueError, match=rf"\[{bad}\]"):
        one_hot(label)


def test_one_hot_rejects_float_and_bad_shape() -> None:
    with pytest.raises(ValueError, match="integer dtype"):
        one_hot(torch.zeros((1, 2, 2, 2)))
    with pytest.raises(ValueError, match=r"\(B, X, Y, Z\)"):
        one_hot(torch.zeros((2, 2, 2), dtype=torch.int64))


# --- generator -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_generator_shapes(depth: int) -> None:
    torch.manual_seed(0)
    gen = UNet3DGenerator(_tiny(depth))
    assert gen.required_multiple == 2**depth
    x = one_hot(_labels((2, 16, 16, 16)))
    y = gen(x)
    assert y.shape == (2, 4, 16, 16, 16)
    assert y.dtype == torch.float32


def test_generator_non_cubic_input() -> None:
    torch.manual_seed(0)
    gen = UNet3DGenerator(GeneratorConfig(base_width=4, depth=3))
    y = gen(one_hot(_labels((1, 32, 48, 32))))
    assert y.shape == (1, 4, 32, 48, 32)


def test_generator_bottleneck_of_one_voxel_trains() -> None:
    """depth 4 on 16³: the innermost level is 1³ and has no norm (instance norm would raise)."""
    torch.manual_seed(0)
    gen = UNet3DGenerator(_tiny(4, norm="batch")).train()
    gen(one_hot(_labels((1, 16, 16, 16)))).mean().backward()


def test_generator_divisibility_error() -> None:
    gen = UNet3DGenerator(_tiny(3))
    with pytest.raises(ValueError) as info:
        gen(torch.zeros((1, 7, 16, 20, 16)))
    message = str(info.value)
    assert "(16, 20, 16)" in message
    assert "8" in message


def test_generator_channel_error() -> None:
    gen = UNet3DGenerator(_tiny(2))
    with pytest.raises(ValueError, match="7 channels"):
        gen(torch.zeros((1, 4, 8, 8, 8)))


def test_generator_output_within_scale() -> None:
    torch.manual_seed(0)
    gen = UNet3DGenerator(_tiny(2), out_scale=2.0)
    init_weights(gen, gain=1.0)  # large weights: saturate tanh
    with torch.no_grad():
        y = gen(one_hot(_labels((1, 8, 8, 8))) * 50)
    assert float(y.abs().max()) <= 2.0
    assert float(y.abs().max()) > 1.5


def test_generator_dropout_layers() -> None:
    gen = UNet3DGenerator(GeneratorConfig(base_width=4, depth=5, dropout=0.5))
    drops = [any(isinstance(m, torch.nn.Dropout) for m in level) for level in gen.up]
    assert drops == [True, True, True, False]
    gen2 = UNet3DGenerator(GeneratorConfig(base_width=4, depth=2, dropout=0.5))
    assert [any(isinstance(m, torch.nn.Dropout) for m in level) for level in gen2.up] == [True]
    gen0 = UNet3DGenerator(GeneratorConfig(base_width=4, depth=3, dropout=0.0))
    assert not any(isinstance(m, torch.nn.Dropout) for m in gen0.modules())


@pytest.mark.parametrize("norm", ["instance", "batch", "none"])
def test_generator_norms(norm: str) -> None:
    torch.manual_seed(0)
    gen = UNet3DGenerator(_tiny(2, norm=norm))
    kinds = {type(m) for m in gen.modules()}
    if norm == "instance":
        assert torch.nn.InstanceNorm3d in kinds
    elif norm == "batch":
        assert torch.nn.BatchNorm3d in kinds
    else:
        assert not kinds & {torch.nn.InstanceNorm3d, torch.nn.BatchNorm3d}
    assert gen(one_hot(_labels((2, 8, 8, 8)))).shape == (2, 4, 8, 8, 8)


def test_generator_widths_capped() -> None:
    gen = UNet3DGenerator(GeneratorConfig(base_width=8, depth=5, max_width=32))
    assert gen.widths == (8, 16, 32, 32, 32)


def test_init_deterministic() -> None:
    def build() -> dict[str, torch.Tensor]:
        torch.manual_seed(123)
        gen = UNet3DGenerator(_tiny(3))
        init_weights(gen)
        return gen.state_dict()

    a, b = build(), build()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    torch.manual_seed(124)
    other = UNet3DGenerator(_tiny(3))
    init_weights(other)
    assert not torch.equal(other.state_dict()["down.0.0.weight"], a["down.0.0.weight"])


def test_init_weights_statistics() -> None:
    torch.manual_seed(0)
    gen = UNet3DGenerator(GeneratorConfig(base_width=16, depth=3))
    init_weights(gen, gain=0.02)
    conv = gen.down[1][0].weight.detach()
    assert abs(float(conv.std()) - 0.02) < 0.002
    assert abs(float(conv.mean())) < 0.002
    norm = gen.down[1][1]
    assert isinstance(norm, torch.nn.InstanceNorm3d)
    assert abs(float(norm.weight.detach().mean()) - 1.0) < 0.02
    assert float(norm.bias.detach().abs().max()) == 0.0
    assert float(gen.final.bias.detach().abs().max()) == 0.0


def test_channels_last_3d_matches_contiguous() -> None:
    torch.manual_seed(0)
    gen = UNet3DGenerator(_tiny(3)).eval()
    init_weights(gen)
    x = one_hot(_labels((1, 16, 16, 16)))
    ref = gen(x)
    gen_cl = gen.to(memory_format=torch.channels_last_3d)
    x_cl = x.contiguous(memory_format=torch.channels_last_3d)
    out = gen_cl(x_cl)
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-5)
    out.sum().backward()
    disc = PatchDiscriminator3D(DiscriminatorConfig(base_width=4, n_layers=2)).to(memory_format=torch.channels_last_3d)
    assert disc(x_cl, out.detach()).shape == (1, 1, 2, 2, 2)


def test_bf16_autocast() -> None:
    torch.manual_seed(0)
    gen = UNet3DGenerator(_tiny(2))
    disc = PatchDiscriminator3D(DiscriminatorConfig(base_width=4, n_layers=1))
    x = one_hot(_labels((1, 8, 8, 8)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fake = gen(x)
        logits = disc(x, fake)
    loss = GANLoss("vanilla")(logits, True) + weighted_l1(
        fake, torch.zeros(1, 4, 8, 8, 8), _labels((1, 8, 8, 8)), torch.ones(1, 4, dtype=torch.bool), {4: 3.0}
    )
    assert loss.dtype == torch.float32
    loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in gen.parameters())


# --- discriminator -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n_layers", "size", "expected"), [(1, 8, 2), (2, 16, 2), (3, 32, 2), (3, 64, 6)])
def test_discriminator_shape(n_layers: int, size: int, expected: int) -> None:
    torch.manual_seed(0)
    disc = PatchDiscriminator3D(DiscriminatorConfig(base_width=4, n_layers=n_layers))
    x = one_hot(_labels((2, size, size, size)))
    out = disc(x, torch.randn(2, 4, size, size, size))
    assert out.shape == (2, 1, expected, expected, expected)
    assert disc.output_shape((size, size, size)) == (expected,) * 3


def test_discriminator_non_cubic_and_errors() -> None:
    disc = PatchDiscriminator3D(DiscriminatorConfig(base_width=4, n_layers=2))
    x = one_hot(_labels((1, 16, 24, 12)))
    assert disc(x, torch.zeros(1, 4, 16, 24, 12)).shape == (1, 1, *disc.output_shape((16, 24, 12)))
    with pytest.raises(ValueError, match="≥ 12"):
        disc(one_hot(_labels((1, 8, 16, 16))), torch.zeros(1, 4, 8, 16, 16))
    with pytest.raises(ValueError, match="11 channels"):
        disc(x, torch.zeros(1, 3, 16, 24, 12))
    with pytest.raises(ValueError, match="spatial"):
        disc(x, torch.zeros(1, 4, 16, 24, 16))


def test_discriminator_width_cap() -> None:
    disc = PatchDiscriminator3D(DiscriminatorConfig(base_width=2, n_layers=5))
    widths = [m.out_channels for m in disc.modules() if isinstance(m, torch.nn.Conv3d)]
    assert widths == [2, 4, 8, 16, 16, 16, 1]


def test_count_parameters() -> None:
    disc = PatchDiscriminator3D(DiscriminatorConfig(base_width=2, n_layers=1, norm="none"))
    # conv 11→2 (k4) + bias, conv 2→4 + bias, conv 4→1 + bias
    assert count_parameters(disc) == (11 * 2 * 64 + 2) + (2 * 4 * 64 + 4) + (4 * 1 * 64 + 1)
    gen = UNet3DGenerator(GeneratorConfig(base_width=8, depth=3))
    assert count_parameters(gen) == sum(p.numel() for p in gen.parameters()) > 0


# --- losses --------------------------------------------------------------------------------------------


def test_gan_loss_known_values() -> None:
    logits = torch.tensor([0.0, 2.0, -1.0])
    vanilla = GANLoss("vanilla")
    real = sum(math.log1p(math.exp(-v)) for v in (0.0, 2.0, -1.0)) / 3
    fake = sum(math.log1p(math.exp(v)) for v in (0.0, 2.0, -1.0)) / 3
    assert float(vanilla(logits, True)) == pytest.approx(real, rel=1e-6)
    assert float(vanilla(logits, False)) == pytest.approx(fake, rel=1e-6)
    assert float(vanilla(torch.zeros(4), True)) == pytest.approx(math.log(2), rel=1e-6)
    lsgan = GANLoss("lsgan")
    assert float(lsgan(logits, True)) == pytest.approx((1 + 1 + 4) / 3)
    assert float(lsgan(logits, False)) == pytest.approx((0 + 4 + 1) / 3)
    none = GANLoss("none")(logits, True)
    assert none.shape == () and float(none) == 0.0
    with pytest.raises(ValueError, match="mode"):
        GANLoss("wgan")  # type: ignore[arg-type]


def _l1_inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    fake = torch.randn(2, 4, 6, 6, 6, generator=g)
    real = torch.randn(2, 4, 6, 6, 6, generator=g)
    label = torch.randint(0, 7, (2, 6, 6, 6), generator=g, dtype=torch.uint8)
    return fake, real, label


def test_weighted_l1_is_plain_l1_without_weights_or_mask() -> None:
    fake, real, label = _l1_inputs()
    keep = torch.ones(2, 4, dtype=torch.bool)
    value = weighted_l1(fake, real, label, keep, {})
    assert float(value) == pytest.approx(float(F.l1_loss(fake, real)), rel=1e-6)
    ones = weighted_l1(fake, real, label, keep, {k: 1.0 for k in range(7)})
    assert float(ones) == pytest.approx(float(value), rel=1e-6)


def test_weighted_l1_excludes_masked_nan_channels() -> None:
    fake, real, label = _l1_inputs()
    keep = torch.tensor([[True, False, True, True], [False, True, True, False]])
    real = real.clone()
    real[~keep] = float("nan")
    fake = fake.clone().requires_grad_(True)
    value = weighted_l1(fake, real, label, keep, {5: 2.0})
    assert torch.isfinite(value)
    value.backward()
    assert fake.grad is not None and torch.isfinite(fake.grad).all()
    assert float(fake.grad[~keep].abs().max()) == 0.0
    # same as the L1 over kept channels only
    w = torch.where(label == 5, 2.0, 1.0).unsqueeze(1).expand_as(fake)
    sel = keep[:, :, None, None, None].expand_as(fake)
    expected = ((fake - torch.nan_to_num(real)).abs() * w)[sel].sum() / w[sel].sum()
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)


def test_weighted_l1_all_channels_missing_is_zero() -> None:
    fake, real, label = _l1_inputs()
    fake = fake.requires_grad_(True)
    value = weighted_l1(fake, torch.full_like(real, float("nan")), label, torch.zeros(2, 4, dtype=torch.bool), {})
    assert value.item() == 0.0
    value.backward()
    assert torch.isfinite(fake.grad).all()  # type: ignore[arg-type]


def test_weighted_l1_weighting() -> None:
    label = torch.zeros(1, 2, 2, 2, dtype=torch.uint8)
    label[0, 0] = 4  # half the voxels tumour
    fake = torch.zeros(1, 4, 2, 2, 2)
    real = torch.zeros(1, 4, 2, 2, 2)
    real[:, :, 0] = 1.0  # error 1 on tumour voxels, 0 elsewhere
    keep = torch.ones(1, 4, dtype=torch.bool)
    assert float(weighted_l1(fake, real, label, keep, {})) == pytest.approx(0.5)
    assert float(weighted_l1(fake, real, label, keep, {4: 3.0})) == pytest.approx(3 / 4)
    assert float(weighted_l1(fake, real, label, keep, {0: 0.0})) == pytest.approx(1.0)
    assert float(weighted_l1(fake, real, label, keep, {4: 0.0})) == pytest.approx(0.0)


def test_weighted_l1_validation() -> None:
    fake, real, label = _l1_inputs()
    with pytest.raises(ValueError, match="channel_mask"):
        weighted_l1(fake, real, label, torch.ones(2, 3, dtype=torch.bool), {})
    with pytest.raises(ValueError, match="torch.bool"):
        weighted_l1(fake, real, label, torch.ones(2, 4), {})
    with pytest.raises(ValueError, match="label"):
        weighted_l1(fake, real, label[:, :5], torch.ones(2, 4, dtype=torch.bool), {})
    with pytest.raises(ValueError, match="label_weights"):
        weighted_l1(fake, real, label, torch.ones(2, 4, dtype=torch.bool), {4: -1.0})


# --- overfit smoke test --------------------------------------------------------------------------------


def test_generator_overfits_fixed_map() -> None:
    torch.manual_seed(0)
    label = _labels((1, 16, 16, 16), seed=1)
    lut = torch.tensor(
        [[0.0, -1.5, 0.0, 1.0, 0.5, -0.5, 1.5], [0.0, -1.0, 0.2, 0.8, 0.6, -0.2, 2.5],
         [0.0, 2.0, 0.5, -0.5, 1.5, 1.0, 0.8], [0.0, -1.0, 0.4, -0.2, 2.0, 1.2, 1.0]]
    )
    target = lut[:, label.long()].permute(1, 0, 2, 3, 4)  # (1, 4, 16, 16, 16)
    gen = UNet3DGenerator(GeneratorConfig(base_width=8, depth=3, dropout=0.0))
    init_weights(gen)
    opt = torch.optim.Adam(gen.parameters(), lr=2e-3, betas=(0.5, 0.999))
    x = one_hot(label)
    keep = torch.ones(1, 4, dtype=torch.bool)
    losses = []
    for _ in range(100):
        loss = weighted_l1(gen(x), target, label, keep, {4: 3.0, 5: 3.0, 6: 3.0})
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] <= 0.5 * losses[0], (losses[0], losses[-1])  # measured: 1.01 → 0.32
