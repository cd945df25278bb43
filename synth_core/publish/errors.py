"""Publish failures. Messages name the dataset version's URL and what was expected; never a secret."""

from __future__ import annotations

from synth_core.storage.errors import ObjectExistsError


class PublishError(RuntimeError):
    """Base class of every publish failure."""


class AlreadyPublished(PublishError, ObjectExistsError):
    """The version already has its ``manifest.json``: a published version is immutable."""


class NothingToPublish(PublishError, LookupError):
    """No generated-but-unpublished version exists (``version=None``)."""


class QualityGateError(PublishError):
    """A quality gate failed; nothing was published."""


class PrivacyLeakError(QualityGateError):
    """An object of the version contains a forbidden string (source id, header text, credential)."""


__all__ = ["AlreadyPublished", "NothingToPublish", "PrivacyLeakError", "PublishError", "QualityGateError"]
