"""Error rows, classified: permanent (a fact about the input) or retryable (an accident of the
attempt), stored in the output's ``error_class`` column. A rerun of the run id retries the
retryable ones (``legx.pipeline.engine.sink``).

Permanent: the bytes are not an image or cannot be decoded (too large, truncated), the id is
a repeated one, the map has non-finite values, or the method raised an error that does not
look like an accident. Retryable: out of memory (CPU or GPU), a time limit or timeout, a lost
worker, actor or node, a transient storage fault (``legx.pipeline.engine.storage_retry``).
The class is read from the row's error text, so error rows written before the column existed
are classified the same way when a rerun reads them.
"""

from __future__ import annotations

from legx.pipeline.engine.sources.repeated import DUPLICATE_ID_ERROR
from legx.pipeline.engine.storage_retry import RETRIED_IO_ERRORS

PERMANENT = "permanent"
RETRYABLE = "retryable"

# Error texts (or their prefixes) that are facts about the input.
_PERMANENT_PREFIXES = ("decode:", DUPLICATE_ID_ERROR, "map has non-finite values")
# Words of the errors that another attempt may not meet: memory, time, lost processes.
_ACCIDENT_WORDS = (
    "out of memory", "OutOfMemoryError", "MemoryError", "Cannot allocate memory",
    "can't allocate memory", "CUDA error", "time limit", "TimeLimit", "timed out", "Timeout",
    "RayActorError", "ActorDiedError", "ActorUnavailableError", "WorkerCrashedError",
    "ObjectLostError", "NodeDiedError", "OwnerDiedError",
)


def error_class(error: str | None) -> str:
    """The class of an error row with error text ``error`` (module docstring)."""
    text = error or ""
    if text.startswith(_PERMANENT_PREFIXES):
        return PERMANENT
    if any(word in text for word in _ACCIDENT_WORDS) or any(word in text for word in RETRIED_IO_ERRORS):
        return RETRYABLE
    return PERMANENT
