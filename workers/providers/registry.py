"""Provider kinds: each provider module registers its class under its kind (`@register`).

The kinds are the ones `finops.shared.provider_config` has tables for (the config of each kind is
read there, by every process; the provider itself only runs in workers). `build_provider` looks
the class up by the config's kind: there is no list of kinds anywhere else.
"""
from __future__ import annotations

from finops.shared.provider_config import ProviderConfig

PROVIDERS: dict[str, type] = {}


def register(cls):
    """Class decorator: `cls` serves the providers whose config has `kind == cls.kind`."""
    PROVIDERS[cls.kind] = cls
    return cls


def build_provider(cfg: ProviderConfig):
    try:
        cls = PROVIDERS[cfg.kind]
    except KeyError:
        raise ValueError(f"providers.{cfg.name}.kind: no provider registered for kind {cfg.kind!r}") from None
    return cls(cfg)
