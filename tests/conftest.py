"""Fixtures for every test directory: a real Redis, started once per session when a test asks."""
from __future__ import annotations

import pytest

from tests.helpers.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """Debian's redis-server on a free loopback port (no persistence), for the whole session."""
    with RedisServer(tmp_path_factory.mktemp("redis")) as srv:
        yield srv


@pytest.fixture
def redis_db(redis_server):
    """The session's Redis, emptied before the test (and started again if a test stopped it)."""
    if not redis_server.running:
        redis_server.start()
    redis_server.flushall()
    return redis_server
