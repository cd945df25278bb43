"""Prefect events the factory emits, and what automations (``infra/prefect.yaml`` triggers) match on.

``synthmri.model.registered`` is emitted once, when a model version's ``model.json`` is committed. Its
resource carries the model's name, version and origin (``standalone``: the ``train_gan`` flow on its own;
``build_dataset``: a build, which generates by itself), and its payload the store config (never
credentials: a ``StoreConfig`` holds none), so the ``generate`` deployment's trigger can run generation on
the same store with the new version.
"""

from __future__ import annotations

from typing import Any

from schemas.config import StoreConfig
from schemas.orchestration import ModelOrigin

MODEL_REGISTERED = "synthmri.model.registered"


def model_resource(model_name: str, version: str, origin: ModelOrigin) -> dict[str, str]:
    return {
        "prefect.resource.id": f"synthmri.model.{model_name}.{version}",
        "prefect.resource.name": f"{model_name}/{version}",
        "synthmri.model.name": model_name,
        "synthmri.model.version": version,
        "synthmri.model.origin": origin,
    }


def announce_model(store: StoreConfig, model_name: str, version: str, url: str, origin: ModelOrigin) -> Any:
    """Emit ``synthmri.model.registered`` for a freshly committed model version."""
    from prefect.events import emit_event

    return emit_event(
        event=MODEL_REGISTERED,
        resource=model_resource(model_name, version, origin),
        payload={"store": store.model_dump(mode="json"), "model_name": model_name, "model_version": version, "url": url},
    )


__all__ = ["MODEL_REGISTERED", "announce_model", "model_resource"]
