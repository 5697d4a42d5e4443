"""Which errors are transient, and the bounded retry of one operation."""

from __future__ import annotations

import pytest

from legx.pipeline.engine.storage_retry import StorageError, retried, storage_failure, transient

# Error texts as the clients word them.
TRANSIENT = [
    OSError("When reading information for key 'a' in bucket 'b': AWS Error SLOW_DOWN during HeadObject"
            " operation: Please reduce your request rate."),
    OSError("AWS Error NETWORK_CONNECTION during GetObject operation: curlCode: 52, Server returned nothing"),
    OSError("When getting information for key 'x': AWS Error UNKNOWN (HTTP status 503) during HeadObject"),
    OSError("[Errno 16] Please reduce your request rate."),
    ConnectionResetError(104, "Connection reset by peer"),
    TimeoutError("read timed out"),
]
PERMANENT = [
    FileNotFoundError("s3://bucket/missing.parquet"),
    PermissionError("AccessDenied"),
    OSError("When listing objects under key 'x' in bucket 'nope': AWS Error NO_SUCH_BUCKET during"
            " ListObjectsV2 operation: NoSuchBucket"),
    ValueError("Parquet magic bytes not found in footer"),
]


@pytest.mark.parametrize("error", TRANSIENT, ids=lambda error: str(error)[:40])
def test_transient_faults_are_retried(error):
    assert transient(error)


@pytest.mark.parametrize("error", PERMANENT, ids=lambda error: str(error)[:40])
def test_faults_a_retry_cannot_mend_are_not(error):
    assert not transient(error)


def test_an_operation_succeeds_once_its_faults_pass():
    faults = [OSError("AWS Error SLOW_DOWN during PutObject operation"), ConnectionResetError("reset")]

    def flaky() -> str:
        if faults:
            raise faults.pop(0)
        return "written"

    assert retried("write", "s3://bucket/a", flaky, attempts=3) == "written"


def test_a_fault_that_outlives_the_budget_is_one_line_naming_operation_object_and_cause():
    calls = []

    def throttled() -> None:
        calls.append(1)
        raise OSError("AWS Error SLOW_DOWN during PutObject operation: Please reduce\nyour request rate.")

    with pytest.raises(StorageError) as failed:
        retried("write", "s3://bucket/out/part-1.parquet", throttled, attempts=3)
    assert len(calls) == 3
    message = str(failed.value)
    assert "\n" not in message
    assert message.startswith("storage: write s3://bucket/out/part-1.parquet failed after 3 attempts in ")
    assert message.endswith("OSError: AWS Error SLOW_DOWN during PutObject operation: Please reduce")
    # A failure that reaches the driver as text inside another error is found again.
    wrapped = RuntimeError(f"task failed:\nTraceback ...\n{message}\n")
    assert str(storage_failure(wrapped)) == message
    listing = StorageError("read the keys of", "s3://bucket/out/saliency/r-part-*.parquet", "OSError: reset", 8, 20.0)
    found = storage_failure(RuntimeError(f"worker: {listing}"))
    assert (found.operation, found.target, found.attempts) == ("read the keys of", listing.target, 8)


def test_errors_that_are_not_storage_faults_propagate_at_once():
    calls = []

    def broken() -> None:
        calls.append(1)
        raise FileNotFoundError("s3://bucket/missing")

    with pytest.raises(FileNotFoundError):
        retried("read", "s3://bucket/missing", broken, attempts=5)
    assert len(calls) == 1
    assert storage_failure(ValueError("not a storage fault")) is None
