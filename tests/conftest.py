"""Fixtures shared by every test folder: a real PostgreSQL (started only by the tests that ask)."""
from __future__ import annotations

import pytest

from tests.helpers.postgres_server import PostgresServer


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
