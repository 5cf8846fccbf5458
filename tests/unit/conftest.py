"""Fixtures shared by the unit tests."""
import pytest

from finops.workers.governance.store import Store


@pytest.fixture
def store(tmp_path):
    """A governance store in a fresh data dir."""
    s = Store.open(str(tmp_path))
    yield s
    s.close()
