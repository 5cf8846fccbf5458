"""Fixtures for every test directory: a real Redis and a real PostgreSQL, each started once per
session when a test asks (tests/helpers/redis_server.py, tests/helpers/postgres_server.py), and
every test against real processes kept within one UTC day."""
from __future__ import annotations

import time

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


DAY = 86400.0
BEFORE_MIDNIGHT = 150.0     # longer than any one test against real processes takes
AFTER_MIDNIGHT = 10.0       # rows stamped a few seconds before the test began are today's


@pytest.fixture(autouse=True)
def within_one_utc_day(request):
    """A test against the real gateway that would run across midnight UTC waits until the new day
    is AFTER_MIDNIGHT old. Day budgets (and week, month and year ones, which also turn at a UTC
    midnight) put the spend before and after midnight in different periods, so a test comparing
    the period's spend with its request log failed once a day in CI if it ran then (CI saw
    $11.728 spent in the new day against $16.904 logged). At most one wait per run."""
    if request.path.parent.name not in ("system", "redis"):
        return
    into_day = time.time() % DAY
    if into_day > DAY - BEFORE_MIDNIGHT or into_day < AFTER_MIDNIGHT:
        time.sleep((AFTER_MIDNIGHT - into_day) % DAY)
