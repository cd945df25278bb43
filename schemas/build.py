"""Parameters of ``build_dataset``: the whole chain, with defaults sized for the CPU demo (the main job)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from schemas.config import IngestConfig, SourceConfig, StoreConfig
from schemas.generate import GenerateConfig, PlanConfig
from schemas.train import (
    DataConfig,
    DiscriminatorConfig,
    GeneratorConfig,
    OptimConfig,
    TrainConfig,
)

_FROZEN = ConfigDict(frozen=True, extra="forbid", validate_default=True)


def demo_train() -> TrainConfig:
    """A few minutes on 2 CPU cores: 2 mm, 32³ patches, a small U-Net (design.md §8: 1 mm is for GPUs)."""
    return TrainConfig(
        generator=GeneratorConfig(base_width=8, depth=3, dropout=0.0),
        discriminator=DiscriminatorConfig(base_width=8, n_layers=2),
        optim=OptimConfig(lr_generator=1e-3, lr_discriminator=2e-4),
        data=DataConfig(resolution_mm=2, patch_size=(32, 32, 32), batch_size=2, val_subjects=1, loader_workers=1),
        steps=1500, checkpoint_every=250, validate_every=500, device="auto",
    )


def demo_generate() -> GenerateConfig:
    return GenerateConfig(plan=PlanConfig(n_samples=36, seed=0), shard_size=12, batch_size=2)


class BuildConfig(BaseModel):
    """ingest → train (or reuse ``model_version``) → generate → publish. ``store`` overrides the stages' stores."""

    model_config = _FROZEN

    store: StoreConfig = Field(default_factory=StoreConfig)
    ingest: IngestConfig = Field(default_factory=lambda: IngestConfig(source=SourceConfig()))
    train: TrainConfig = Field(default_factory=demo_train)
    reuse_model_version: str | None = Field(default=None, description="Skip training: use this committed v<N>")
    generate: GenerateConfig = Field(default_factory=demo_generate)
    license: str = Field(default="CC-BY-4.0")

    def stage_configs(self) -> tuple[IngestConfig, TrainConfig, GenerateConfig]:
        """The stages' configs with this build's store."""
        return (
            self.ingest.model_copy(update={"store": self.store}),
            self.train.model_copy(update={"store": self.store}),
            self.generate.model_copy(update={"store": self.store, "model_name": self.train.model_name}),
        )


__all__ = ["BuildConfig", "demo_generate", "demo_train"]
