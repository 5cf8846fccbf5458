"""Providers, one module each, behind the interface in `base.py`. Each module registers its class
under its kind (registry.py); importing this package imports them all, so every kind is there."""
from __future__ import annotations

from . import anthropic, bedrock, mistral, mock, openai  # noqa: F401  (each registers its kind)
from .registry import PROVIDERS, build_provider

__all__ = ["PROVIDERS", "build_provider"]
