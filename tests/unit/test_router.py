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


def err(code, origin="upstream", **extra):
    e = GatewayError(code, "x", extra=extra)
    e.origin = origin
    return e


@pytest.mark.parametrize("code", ["AccessDeniedException", "ServiceQuotaExceededException"])
def test_a_refused_key_tries_another_key_of_the_target_then_the_next_target(code):
    # another key left: the same target at once, whatever retries are left
    assert router.after_failure(err(code), retries_left=0, untried_key=True) == router.OTHER_KEY
    assert router.after_failure(err(code), retries_left=2, untried_key=True) == router.OTHER_KEY
    # no key left (a one-key target, or every key tried): the next target, retries or not
    assert router.after_failure(err(code), retries_left=2, untried_key=False) == router.NEXT
    assert router.after_failure(err(code), retries_left=0, untried_key=False) == router.NEXT


@pytest.mark.parametrize("e", [err("ThrottlingException"), err("ServiceUnavailableException"),
                               err("ModelTimeoutException"), err("ModelErrorException", originalStatusCode=503)])
def test_a_retryable_failure_retries_the_target_while_retries_are_left(e):
    for untried in (True, False):       # another key does not make a retry free
        assert router.after_failure(e, retries_left=1, untried_key=untried) == router.RETRY
        assert router.after_failure(e, retries_left=0, untried_key=untried) == router.NEXT


@pytest.mark.parametrize("e", [err("ModelErrorException", originalStatusCode=200),
                               err("ModelStreamErrorException", originalStatusCode=200)])
def test_an_unreadable_answer_goes_to_the_next_target(e):
    assert router.after_failure(e, retries_left=3, untried_key=True) == router.NEXT


@pytest.mark.parametrize("e", [err("ValidationException", "client"), err("ResourceNotFoundException"),
                               err("ValidationException"),
                               # the gateway's own refusals: budget, rate limit, a key not allowed
                               err("AccessDeniedException", "governance"),
                               err("ServiceQuotaExceededException", "governance"),
                               err("ThrottlingException", "governance")])
def test_the_requests_own_fault_and_governance_refusals_are_never_retried(e):
    assert router.after_failure(e, retries_left=3, untried_key=True) == router.STOP


def test_only_an_upstream_refusal_is_a_refused_key():
    assert router.key_refused(err("AccessDeniedException"))
    assert router.key_refused(err("ServiceQuotaExceededException"))
    assert not router.key_refused(err("AccessDeniedException", "governance"))
    assert not router.key_refused(err("ThrottlingException"))


# --- guardrails: only targets that can apply one (router.guardrail_targets) -------------------------

BEDROCK = {"b"}          # provider "b" is the bedrock kind; "a" and "c" are not


def guarded(targets, guardrail, **route):
    return router.guardrail_targets(targets, lambda p: p in BEDROCK, guardrail,
                                    RouteConfig(models=["x"], targets=targets, **route))


def test_a_request_without_a_guardrail_keeps_every_target():
    assert guarded([A, B, C], "") == [A, B, C]


def test_a_guardrail_request_skips_targets_that_cannot_apply_it_keeping_the_order():
    b2 = TargetConfig("b", "other", 0)
    assert guarded([A, B, C, b2], "gr-1") == [B, b2]


def test_a_guardrail_request_with_no_capable_target_is_refused_with_the_fix():
    with pytest.raises(GatewayError) as e:
        guarded([A, C], "gr-1")
    assert e.value.code == "ValidationException" and e.value.status == 400
    assert "gr-1" in e.value.message and "allow_unguarded = true" in e.value.message
    assert "a/m-a" in e.value.message and "bedrock" in e.value.message


def test_allow_unguarded_keeps_every_target():
    assert guarded([A, C], "gr-1", allow_unguarded=True) == [A, C]


def test_no_target_left_by_the_key_is_not_a_guardrail_refusal():
    assert guarded([], "gr-1") == []
