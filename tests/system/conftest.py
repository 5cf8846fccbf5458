"""System tests: the real gateway processes on loopback, driven by real clients."""
from __future__ import annotations

import pytest

from tests.helpers.gateway import Gateway


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    """`finops serve` on its embedded defaults (mock provider for every modelId)."""
    with Gateway(tmp_path_factory.mktemp("gw")) as gw:
        yield gw


@pytest.fixture(scope="module")
def client(gateway):
    return gateway.client()
