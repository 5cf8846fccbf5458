"""Typed config tables (shared/config_schema.py): msgspec checks, every error names the key and
says what to write."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import pytest
from msgspec import Meta

from finops.shared.config import build
from finops.shared.config_schema import ConfigError, Table, table


class Inner(Table):
    weight: Annotated[float, Meta(gt=0)] = 1.0


class Sample(Table):
    port: Annotated[int, Meta(ge=0, le=65535)] = 8080
    mode: Literal["ipc", "tcp"] = "ipc"
    flag: bool = True
    headers: dict[str, str] = {}
    items: list[Inner] = []
    name: str = ""

    def check(self, where: str) -> None:
        if self.name == "bad":
            raise ConfigError(f"{where}.name: not that one")


@dataclass(frozen=True)
class Record:
    amount: float
    period: str = "day"


@pytest.mark.parametrize("raw,message", [
    ({"port": "eighty"}, "t.port: expected int, got 'eighty'"),
    ({"port": 1.5}, "t.port: expected int, got float 1.5"),
    ({"port": 70000}, "t.port: must be <= 65535, got 70000"),
    ({"mode": "udp"}, "t.mode: must be one of \"ipc\", \"tcp\", got 'udp'"),
    ({"flag": "maybe"}, "t.flag: expected bool, got 'maybe'"),
    ({"headers": {"a": 1}}, "t.headers: expected a table of strings, got int 1"),
    ({"headers": [1]}, "t.headers: expected dict, got list [1]"),
    ({"items": [{"weight": 0}]}, "t.items[0].weight: must be > 0, got 0"),
    ({"items": [{"wait": 1}]}, "t.items[0].wait: unknown key (known keys: weight)"),
    ({"prot": 1}, "t.prot: unknown key (known keys: flag, headers, items, mode, name, port)"),
    ({"name": "bad"}, "t.name: not that one"),
])
def test_errors_name_the_key_and_the_problem(raw, message):
    with pytest.raises(ConfigError) as ei:
        table(Sample, raw, "t")
    assert str(ei.value) == message


def test_strings_from_env_expansion_read_as_numbers_and_booleans():
    s = table(Sample, {"port": "9000", "flag": "false", "items": [{"weight": "2.5"}]}, "t")
    assert (s.port, s.flag, s.items[0].weight) == (9000, False, 2.5)
    cfg = build({"server": {"port": "${P}", "workers": "${W:-3}"}, "providers": {"m": {"kind": "mock"}},
                 "default_route": {"provider": "m"}}, "test", environ={"P": "9001"})
    assert (cfg.server.port, cfg.server.workers) == (9001, 3)


def test_a_table_that_is_not_one():
    with pytest.raises(ConfigError, match=r"^t: expected a table, got list$"):
        table(Sample, [], "t")


def test_fixed_fields_are_not_keys_of_the_table():
    with pytest.raises(ConfigError, match=r"^t.port: unknown key \(known keys: flag, headers, items, mode, name\)"):
        table(Sample, {"port": 1}, "t", fixed={"port": 2})
    assert table(Sample, {}, "t", fixed={"port": 2}).port == 2


def test_dataclasses_refuse_unknown_keys_too():
    assert table(Record, {"amount": "3"}, "r") == Record(3.0)
    with pytest.raises(ConfigError, match=r"^r.cap: unknown key \(known keys: amount, period\)$"):
        table(Record, {"amount": 1, "cap": 2}, "r")
    with pytest.raises(ConfigError, match=r"^r.amount: missing$"):
        table(Record, {}, "r")


# --- [guardrails], allow_unguarded, pricing tiers (issue 18) -------------------------------------------

BEDROCK = {"aws": {"kind": "bedrock", "region": "us-east-1"}, "oa": {"kind": "openai"}}


def test_guardrails_table_names_a_bedrock_provider():
    cfg = build({"providers": BEDROCK, "default_route": {"provider": "oa"},
                 "guardrails": {"provider": "aws", "prices": {"contentPolicyUnits": 0.2}}}, "t")
    assert cfg.guardrails.provider == "aws" and cfg.guardrails.prices == {"contentPolicyUnits": 0.2}
    with pytest.raises(ConfigError, match="guardrails.provider: 'oa' is a openai provider"):
        build({"providers": BEDROCK, "guardrails": {"provider": "oa"}}, "t")
    with pytest.raises(ConfigError, match="guardrails.provider: no provider named 'nope'"):
        build({"providers": BEDROCK, "guardrails": {"provider": "nope"}}, "t")


def test_allow_unguarded_and_pricing_tiers():
    cfg = build({"providers": BEDROCK,
                 "routes": [{"models": ["x*"], "provider": "oa", "allow_unguarded": True}],
                 "pricing": {"gpt-5*": {"input": 1.25, "output": 10,
                                        "tiers": {"priority": {"input": 2.5, "output": 20}}}}}, "t")
    assert cfg.routes[0].allow_unguarded is True
    assert cfg.pricing["gpt-5*"] == {"input": 1.25, "output": 10.0,
                                     "tiers": {"priority": {"input": 2.5, "output": 20.0}}}
    with pytest.raises(ConfigError, match="tiers.turbo: unknown service tier"):
        build({"providers": BEDROCK, "pricing": {"m": {"input": 1, "output": 1, "tiers": {"turbo": {}}}}}, "t")
    with pytest.raises(ConfigError, match="tiers.flex.output"):
        build({"providers": BEDROCK, "pricing": {"m": {"input": 1, "output": 1,
                                                       "tiers": {"flex": {"input": 1, "output": -1}}}}}, "t")


def test_pricing_cache_write_1h():
    cfg = build({"providers": BEDROCK,
                 "pricing": {"claude*": {"input": 3, "output": 15, "cache_write": 3.75, "cache_write_1h": 6,
                                         "tiers": {"flex": {"input": 1.5, "output": 7.5, "cache_write_1h": 3}}}}}, "t")
    assert cfg.pricing["claude*"]["cache_write_1h"] == 6.0
    assert cfg.pricing["claude*"]["tiers"]["flex"]["cache_write_1h"] == 3.0
    with pytest.raises(ConfigError, match="cache_write_1h"):
        build({"providers": BEDROCK, "pricing": {"m": {"input": 1, "output": 1, "cache_write_1h": -1}}}, "t")
    with pytest.raises(ConfigError, match="cache_write_2h"):
        build({"providers": BEDROCK, "pricing": {"m": {"input": 1, "output": 1, "cache_write_2h": 1}}}, "t")
