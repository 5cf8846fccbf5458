"""Providers, one module each, behind the interface in `base.py`."""
from __future__ import annotations

from finops.shared.config import ProviderConfig

from .base import Provider


def build_provider(cfg: ProviderConfig) -> Provider:
    if cfg.kind == "mock":
        from .mock import MockProvider
        return MockProvider(cfg)
    if cfg.kind == "bedrock":
        from .bedrock import BedrockProvider
        return BedrockProvider(cfg)
    if cfg.kind == "openai":
        from .openai import OpenAIProvider
        return OpenAIProvider(cfg)
    if cfg.kind == "anthropic":
        from .anthropic import AnthropicProvider
        return AnthropicProvider(cfg)
    if cfg.kind == "mistral":
        from .mistral import MistralProvider
        return MistralProvider(cfg)
    raise ValueError(f"providers.{cfg.name}.kind: unknown provider kind {cfg.kind!r}")
