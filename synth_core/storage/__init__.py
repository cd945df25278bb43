"""The store (``file://`` and ``s3://``) and the commit protocol every stage writes through."""

from synth_core.storage.commit import (
    ObjectRecord,
    canonical_json,
    commit_record,
    digest_objects,
    objects_payload,
    read_record,
    require_verified,
    verify_objects,
)
from synth_core.storage.errors import IntegrityError, ObjectExistsError, StoreAccessError, StoreError
from synth_core.storage.store import S3Credentials, Store, open_store

__all__ = [
    "IntegrityError",
    "ObjectExistsError",
    "ObjectRecord",
    "S3Credentials",
    "Store",
    "StoreAccessError",
    "StoreError",
    "canonical_json",
    "commit_record",
    "digest_objects",
    "objects_payload",
    "open_store",
    "read_record",
    "require_verified",
    "verify_objects",
]
