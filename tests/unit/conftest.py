"""Fixtures shared by the unit tests."""
import pytest

from finops.workers.governance.pg_store import PgStore
from finops.workers.governance.store import Store


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    """A governance store in a fresh data dir (SQLite) or a fresh database (PostgreSQL, a real
    server: tests/helpers/postgres_server.py): tests taking it run against both backends."""
    if request.param == "sqlite":
        s = Store.open(str(tmp_path))
    else:
        s = PgStore.open(request.getfixturevalue("postgres_url"))
    yield s
    s.close()
