"""Where data lives: URIs (local paths, file://, s3://, gs://) resolved to filesystems.

Ray Data readers and the Parquet sink take a ``pyarrow.fs`` filesystem plus a path without
scheme; DuckDB takes an fsspec filesystem. Both are built here from the job's storage
options. Credentials are never part of the options: pyarrow, s3fs and boto3 find them through
the standard AWS chain (environment, ~/.aws files, instance metadata). Both S3 clients retry a
request that meets a transient fault (``legx.pipeline.engine.storage_retry``).
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import pyarrow.fs as pafs

from legx.pipeline.engine.storage_retry import CLIENT_ATTEMPTS, OPERATION_ATTEMPTS, S3FS_ATTEMPTS

SCHEMES = ("file", "s3", "gs")


@dataclass(frozen=True)
class StorageOptions:
    """Object storage settings. ``endpoint_url`` falls back to AWS_ENDPOINT_URL_S3 and then
    AWS_ENDPOINT_URL, as boto3 does; ``region`` to the bucket's own region. ``max_attempts``:
    attempts of one of legx's storage operations before a transient fault ends the job
    (``legx.pipeline.engine.storage_retry.retried``)."""

    endpoint_url: str | None = None
    region: str | None = None
    anonymous: bool = False
    max_attempts: int = OPERATION_ATTEMPTS

    def resolved_endpoint(self) -> str | None:
        return (
            self.endpoint_url
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
            or None
        )


def scheme_of(uri: str) -> str:
    """'file' for local paths, else the URI scheme; raises ValueError for unsupported ones."""
    parts = urlsplit(uri)
    # A one-letter scheme is a Windows drive, not a URI scheme.
    scheme = parts.scheme.lower() if len(parts.scheme) > 1 else "file"
    if scheme not in SCHEMES:
        raise ValueError(f"unsupported URI scheme {scheme!r} in {uri!r}; use one of {SCHEMES}")
    if scheme in ("s3", "gs") and not parts.netloc:
        raise ValueError(f"{uri!r} names no bucket; expected {scheme}://BUCKET/PREFIX")
    return scheme


def strip_userinfo(url: str) -> str:
    """The URL without any user:password@ part, for logs and manifests."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a URI or local path."""
    if scheme_of(uri) == "file":
        return os.path.join(local_path(uri), *parts)
    return posixpath.join(uri.rstrip("/"), *parts)


def local_path(uri: str) -> str:
    """Absolute local path of a plain path or file:// URI."""
    path = urlsplit(uri).path if uri.startswith("file://") else uri
    return os.path.abspath(os.path.expanduser(path))


def resolve(uri: str, storage: StorageOptions) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem for ``uri`` and the path inside it (no scheme, no trailing /)."""
    scheme = scheme_of(uri)
    if scheme == "file":
        return pafs.LocalFileSystem(), local_path(uri)
    parts = urlsplit(uri)
    path = (parts.netloc + parts.path).rstrip("/")
    if scheme == "gs":
        return pafs.GcsFileSystem(anonymous=storage.anonymous), path
    return _s3_filesystem(parts.netloc, storage), path


def _s3_filesystem(bucket: str, storage: StorageOptions) -> pafs.S3FileSystem:
    options: dict = {"anonymous": storage.anonymous,
                     "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=CLIENT_ATTEMPTS)}
    endpoint = storage.resolved_endpoint()
    if endpoint:
        endpoint_parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        options["endpoint_override"] = endpoint_parts.netloc
        options["scheme"] = endpoint_parts.scheme
    region = storage.region
    if region is None and not endpoint:
        # AWS refuses requests signed for the wrong region; ask the bucket where it lives.
        try:
            region = pafs.resolve_s3_region(bucket)
        except OSError:
            region = None
    if region:
        options["region"] = region
    return pafs.S3FileSystem(**options)


def fsspec_filesystem(uri: str, storage: StorageOptions):
    """An fsspec filesystem for ``uri`` (for DuckDB, which cannot fetch its httpfs extension
    on offline machines). A new instance each call: fsspec otherwise hands out one instance per
    set of arguments, with the directory listings it cached, and a query made after more files
    were written would list them and then fail to find them."""
    scheme = scheme_of(uri)
    if scheme == "file":
        import fsspec

        return fsspec.filesystem("file")
    if scheme == "gs":
        import fsspec

        return fsspec.filesystem("gs", token="anon" if storage.anonymous else None, skip_instance_cache=True)
    import s3fs

    client_kwargs = {"region_name": storage.region} if storage.region else {}
    filesystem = s3fs.S3FileSystem(
        skip_instance_cache=True,
        anon=storage.anonymous,
        endpoint_url=storage.resolved_endpoint(),
        client_kwargs=client_kwargs,
        # botocore backs off throttled requests (503 SlowDown) and retries dropped connections.
        config_kwargs={"retries": {"max_attempts": CLIENT_ATTEMPTS, "mode": "standard"}},
    )
    # s3fs's own loop around botocore (a class attribute, 5 by default): kept short, since
    # legx's operations retry as a whole (storage_retry.retried).
    filesystem.retries = S3FS_ATTEMPTS
    return filesystem


def read_bytes(uri: str, storage: StorageOptions) -> bytes:
    filesystem, path = resolve(uri, storage)
    with filesystem.open_input_stream(path) as stream:
        return stream.read()


def write_bytes_atomic(uri: str, storage: StorageOptions, path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` (as ``resolve`` returns it) on the storage of ``uri`` so that
    readers see all of it or nothing.

    Object stores publish an object only when its upload completes (one PUT through fsspec;
    pyarrow's multipart uploads are not accepted by every S3 implementation); on a local disk
    the data goes to a hidden temporary name first and is then renamed.
    """
    if scheme_of(uri) == "file":
        directory, name = os.path.split(path)
        os.makedirs(directory, exist_ok=True)
        temporary = os.path.join(directory, f".{name}.{os.getpid()}.partial")
        with open(temporary, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
        return
    fsspec_filesystem(uri, storage).pipe_file(path, data)


def exists(filesystem: pafs.FileSystem, path: str) -> bool:
    return filesystem.get_file_info(path).type != pafs.FileType.NotFound
