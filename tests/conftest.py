"""Shared fixtures: a real S3 API (moto's server on 127.0.0.1) and a local Ray."""

from __future__ import annotations

import os
import socket

import pytest

# Local Ray needs no token; Ray >= 2.60 enables token auth by default and writes under $HOME.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """URL of a moto S3 server on 127.0.0.1 with dummy credentials in the environment.

    The dummy keys are moto's convention, not secrets; they are set only for this process so
    that s3fs, pyarrow and boto3 find them through the standard AWS chain.
    """
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {key: os.environ.get(key) for key in _S3_ENV}
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=endpoint,
    )
    yield endpoint
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


_S3_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")


@pytest.fixture
def s3_bucket(s3_endpoint):
    """A fresh, empty bucket on the moto server; yields its name."""
    import uuid

    import boto3

    name = f"legx-test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray with 2 CPUs, shared by the session's pipeline tests."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def fault_proxy(s3_endpoint):
    """``fault_proxy(slowdown=..., drop=..., seed=..., only=...)`` starts a fault-injecting
    reverse proxy in front of the moto server (``tests/fault_proxy.py``) and returns it (its
    ``url`` is the endpoint to give the job); each is stopped at the end of the test."""
    import sys

    sys.path.insert(0, os.path.dirname(__file__))
    from fault_proxy import FaultProxy

    proxies = []

    def start(**options):
        proxy = FaultProxy(s3_endpoint, **options)
        proxy.start()
        proxies.append(proxy)
        return proxy

    yield start
    for proxy in proxies:
        proxy.stop()
