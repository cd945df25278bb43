"""Storage errors. Messages name the store URL and never a secret."""

from __future__ import annotations


class StoreError(RuntimeError):
    """Base class of every storage failure."""


class StoreAccessError(StoreError):
    """The store refused us: bad credentials, missing bucket, unreachable endpoint."""


class ObjectExistsError(StoreError):
    """An exclusive create found the object already there (the commit was taken)."""


class IntegrityError(StoreError):
    """An object read back does not match the size/sha256 it was written with or recorded under."""


__all__ = ["IntegrityError", "ObjectExistsError", "StoreAccessError", "StoreError"]
