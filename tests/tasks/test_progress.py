"""The throttled progress artifact, against the session's real Prefect server."""

from __future__ import annotations

import asyncio

import pytest
from prefect import flow

from tasks.progress import ProgressArtifact
from tests.servers import PrefectServer


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def _progress_of(artifact_id) -> float:  # noqa: ANN001
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        artifacts = await client.read_artifacts()
    return next(float(a.data) for a in artifacts if a.id == artifact_id)


def test_updates_are_throttled_and_the_last_one_is_always_sent(prefect_api: PrefectServer) -> None:
    clock = FakeClock()

    @flow
    def loop() -> tuple[list[bool], object]:
        progress = ProgressArtifact(10, "ten items", min_interval_s=2.0, clock=clock)
        sent = []
        for done in range(1, 11):
            clock.now += 0.75  # an item every 0.75 s: an update every third item at most
            sent.append(progress.report(done))
        return sent, progress.artifact_id

    sent, artifact_id = loop()
    # elapsed since the last update: 0.75, 1.5, 2.25 → sent; ... ; item 10 is the last: sent regardless
    assert sent == [False, False, True, False, False, True, False, False, True, True]
    assert asyncio.run(_progress_of(artifact_id)) == pytest.approx(100.0)


def test_no_artifact_for_nothing_and_bad_values_are_refused(prefect_api: PrefectServer) -> None:
    @flow
    def empty() -> tuple[object, bool]:
        progress = ProgressArtifact(0, "nothing")
        return progress.artifact_id, progress.report(0)

    assert empty() == (None, False)
    with pytest.raises(ValueError, match="total must be >= 0, received -1"):
        ProgressArtifact(-1, "negative")

    @flow
    def overshoot() -> None:
        ProgressArtifact(3, "three").report(4)

    with pytest.raises(ValueError, match=r"done must be in \[0, 3\], received 4"):
        overshoot()
