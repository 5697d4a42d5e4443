"""Transient storage faults (a throttled bucket's ``503 SlowDown``, a dropped connection, a
timeout), retried with backoff within a bounded budget.

Three layers retry, each bounded:

- the S3 clients themselves: pyarrow's ``S3FileSystem`` with an AWS standard retry strategy
  and s3fs (botocore's standard mode, inside s3fs's own loop of ``S3FS_ATTEMPTS``) retry a
  request ``CLIENT_ATTEMPTS`` times (``legx.pipeline.engine.storage``); botocore's adaptive
  mode is not used: its client-side rate limiter makes every call of a client wait longer the
  longer a bucket throttles, which the backoff of ``retried`` already does per operation;
- Ray Data retries its file reads (listing, opening, streaming) on the messages in
  ``RETRIED_IO_ERRORS`` (``retry_io_errors_in_ray_data``);
- ``retried`` retries one of legx's own operations as a whole (a listing, the read of the keys
  already written, a manifest, a Parquet file the writer puts) ``StorageOptions.max_attempts``
  times, with exponential backoff and jitter, when the error is ``transient``: this catches
  what the clients do not, such as a connection dropped in the middle of a response body.

A fault that outlives the budget raises ``StorageError``, whose message is one line naming the
operation, the object and the cause; the command line prints that line and the run manifest
records it (``legx.pipeline.engine.run``).
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable
from typing import TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Attempts of one request inside the S3 clients (pyarrow's retry strategy, botocore's), and
# of one call in s3fs's own loop around botocore.
CLIENT_ATTEMPTS = 3
S3FS_ATTEMPTS = 2
# ``retried``'s default attempts of one operation (``StorageOptions.max_attempts``).
OPERATION_ATTEMPTS = 8
# Backoff before retry k (k = 1, 2, ...): a uniform draw in [0.5, 1] x min(CAP, FIRST x 2^(k-1)).
BACKOFF_FIRST_S = 0.2
BACKOFF_CAP_S = 5.0

# Messages of transient faults as the clients word them: pyarrow's AWS SDK errors, the S3
# error codes of throttling and server faults, and the connection errors of botocore, aiohttp
# and the standard library. Ray Data matches them against "ClassName: message".
RETRIED_IO_ERRORS: tuple[str, ...] = (
    "AWS Error INTERNAL_FAILURE",
    "AWS Error NETWORK_CONNECTION",
    "AWS Error SLOW_DOWN",
    "AWS Error THROTTLING",
    "AWS Error SERVICE_UNAVAILABLE",
    "AWS Error REQUEST_TIMEOUT",
    "AWS Error UNKNOWN (HTTP status 500)",
    "AWS Error UNKNOWN (HTTP status 502)",
    "AWS Error UNKNOWN (HTTP status 503)",
    "AWS Error UNKNOWN (HTTP status 504)",
    "SlowDown",
    "reduce your request rate",
    "ServiceUnavailable",
    "InternalError",
    "RequestTimeout",
    "Throttling",
    "curlCode",
    "Connection reset",
    "Connection aborted",
    "Broken pipe",
    "Server disconnected",
    "ServerDisconnectedError",
    "ConnectionClosedError",
    "EndpointConnectionError",
    "ReadTimeoutError",
    "ConnectTimeoutError",
    "ClientPayloadError",
    "ClientOSError",
    "IncompleteRead",
    "Response payload is not completed",
    "timed out",
)

# Errors that retrying cannot mend: a missing object or bucket, refused credentials.
_PERMANENT_TYPES = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
_PERMANENT_WORDS = ("NoSuchBucket", "NoSuchKey", "AccessDenied", "InvalidAccessKeyId",
                    "SignatureDoesNotMatch", "HTTP status 403", "HTTP status 404")


class StorageError(Exception):
    """A storage operation that failed after its retries, or on a fault that retries cannot
    mend; ``str()`` is one line: the operation, the object, the cause."""

    def __init__(self, operation: str, target: str, cause: BaseException | str, attempts: int = 1,
                 seconds: float = 0.0) -> None:
        self.operation, self.target, self.attempts, self.seconds = operation, target, attempts, seconds
        self.cause = cause if isinstance(cause, str) else describe(cause)
        tries = f" after {attempts} attempts in {seconds:.1f} s" if attempts > 1 else ""
        super().__init__(f"storage: {operation} {target} failed{tries}: {self.cause}")

    def as_dict(self) -> dict:
        return {"operation": self.operation, "object": self.target, "cause": self.cause,
                "attempts": self.attempts, "seconds": round(self.seconds, 3)}


def describe(error: BaseException, limit: int = 400) -> str:
    """'ClassName: first line of the message', at most ``limit`` characters."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _chain(error: BaseException):
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__ or getattr(error, "cause", None)
        if not isinstance(error, BaseException):
            return


def transient(error: BaseException) -> bool:
    """Whether ``error`` (or an error it was raised from) is a fault that a retry may mend."""
    for link in _chain(error):
        if isinstance(link, _PERMANENT_TYPES):
            return False
        text = f"{type(link).__name__}: {link}"
        if any(word in text for word in _PERMANENT_WORDS):
            return False
        if isinstance(link, (TimeoutError, ConnectionError)):
            return True
        if any(pattern in text for pattern in RETRIED_IO_ERRORS):
            return True
    return False


class RetryCounter:
    """Retries made by ``retried`` in this process (a count for the summary and benchmarks)."""

    retries = 0
    seconds = 0.0


def retried(operation: str, target: str, function: Callable[[], T],
            attempts: int = OPERATION_ATTEMPTS) -> T:
    """``function()``, retried while it raises a ``transient`` error, at most ``attempts`` times
    in all; then ``StorageError``. Errors that are not transient propagate unchanged, and a
    ``StorageError`` from an inner operation is not retried again."""
    started = time.monotonic()
    for attempt in range(1, attempts + 1):
        try:
            return function()
        except StorageError:
            raise
        except Exception as error:  # noqa: BLE001 - classified here; the rest propagate
            if not transient(error):
                raise
            if attempt == attempts:
                raise StorageError(operation, target, error, attempt, time.monotonic() - started) from error
            delay = min(BACKOFF_CAP_S, BACKOFF_FIRST_S * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
            logger.debug("retrying %s %s in %.2f s (attempt %d of %d): %s", operation, target, delay,
                         attempt, attempts, describe(error))
            RetryCounter.retries += 1
            RetryCounter.seconds += delay
            time.sleep(delay)
    raise AssertionError("unreachable: attempts >= 1")


def storage_failure(error: BaseException) -> StorageError | None:
    """The ``StorageError`` that ended a job: one in ``error``'s chain, or one named in its text
    (a worker's error reaches the driver inside Ray's), or a transient fault that Ray's own
    retries gave up on; None when the error is not a storage fault."""
    for link in _chain(error):
        if isinstance(link, StorageError):
            return link
    match = re.search(r"storage: (.+?) (\S+) failed( after (\d+) attempts in ([\d.]+) s)?: ([^\n]+)", str(error))
    if match:
        return StorageError(match.group(1), match.group(2), match.group(6), int(match.group(4) or 1),
                            float(match.group(5) or 0.0))
    if transient(error):
        return StorageError("run", "the job's storage", describe(error))
    return None


def retry_io_errors_in_ray_data() -> None:
    """Have Ray Data retry its file reads on every message of ``RETRIED_IO_ERRORS`` (its own
    defaults stay). Set on the driver before the job's datasets are built: the context travels
    with them to the workers."""
    from ray.data import DataContext

    context = DataContext.get_current()
    missing = [pattern for pattern in map(re.escape, RETRIED_IO_ERRORS)
               if pattern not in context.retried_io_errors]
    if missing:
        context.retried_io_errors = list(context.retried_io_errors) + missing
