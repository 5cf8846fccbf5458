"""Target order and failure classes (workers/routing/router.py)."""
import pytest

from finops.shared.config import RouteConfig, TargetConfig
from finops.shared.errors import GatewayError
from finops.workers.routing import router

A, B, C = TargetConfig("a", "m-a", 3), TargetConfig("b", "m-b", 1), TargetConfig("c", "m-c", 0)
ROUTE = RouteConfig(models=["x"], targets=[A, B, C])


@pytest.mark.parametrize("r,first", [(0.0, A), (0.74, A), (0.75, B), (0.999, B)])
def test_first_target_by_weight_then_the_rest_in_order(r, first):
    order = router.plan(ROUTE, rng=lambda: r)
    assert order[0] is first and order == [first] + [t for t in (A, B, C) if t is not first]


def test_weight_zero_is_fallback_only():
    assert all(router.plan(ROUTE, rng=lambda: r)[0] is not C for r in (0.0, 0.5, 0.9999))


def test_a_single_target():
    assert router.plan(RouteConfig(models=["x"], targets=[A])) == [A]


@pytest.mark.parametrize("code,extra,same,nxt", [
    ("ThrottlingException", {}, True, True),
    ("ServiceUnavailableException", {}, True, True),
    ("ModelTimeoutException", {}, True, True),
    ("ModelErrorException", {"originalStatusCode": 500}, True, True),
    ("ModelErrorException", {"originalStatusCode": 200}, False, True),
    ("AccessDeniedException", {}, False, True),
    ("ServiceQuotaExceededException", {}, False, True),
    ("ValidationException", {}, False, False),
    ("ResourceNotFoundException", {}, False, False)])
def test_failure_classes(code, extra, same, nxt):
    e = GatewayError(code, "x", extra=extra)
    assert (router.retry_same(e), router.try_next(e)) == (same, nxt)
