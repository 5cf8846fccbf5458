"""Fixtures for every test directory: a real Redis and a real PostgreSQL, each started once per
session when a test asks (tests/helpers/redis_server.py, tests/helpers/postgres_server.py)."""
from __future__ import annotations

import pytest

from tests.helpers.postgres_server import PostgresServer
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


@pytest.fixture(scope="session")
def postgres():
    """One PostgreSQL server for the session (tests/helpers/postgres_server.py), started on first use."""
    with PostgresServer() as pg:
        yield pg


@pytest.fixture
def postgres_url(postgres):
    """A fresh database (and its owner role) on the session's server, dropped after the test."""
    url = postgres.create_database()
    yield url
    if postgres.running:
        postgres.drop_database(url.rsplit("/", 1)[1])
