"""Objects the driver broadcasts once (``ray.put``) and every worker fetches once per process."""

from __future__ import annotations

from typing import Any


_SHARED_CACHE: dict[str, Any] = {}


def shared(ref):
    """A broadcast object, fetched once per worker process."""
    import ray

    key = ref.hex()
    if key not in _SHARED_CACHE:
        _SHARED_CACHE[key] = ray.get(ref)
    return _SHARED_CACHE[key]


def annotation_index(ref) -> dict[str, dict[str, Any]]:
    key = ref.hex() + ":index"
    if key not in _SHARED_CACHE:
        table = shared(ref)
        _SHARED_CACHE[key] = {row["image_id"]: row for row in table.to_pylist()}
    return _SHARED_CACHE[key]
