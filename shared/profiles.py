"""Bedrock inference profiles: the base model a modelId stands for. Pure.

A client may name a model through an inference profile; pricing, virtual keys' model allow-lists
and route globs then apply to the base model, while the upstream still receives the id the
client sent (a Bedrock relay passes the modelId on unchanged).

    base_model(cfg, "us.anthropic.claude-3-5-haiku-20241022-v1:0")  -> "anthropic.claude-3-5-haiku-20241022-v1:0"
    base_model(cfg, "global.anthropic.claude-sonnet-4-5-20250929-v1:0") -> "anthropic.claude-sonnet-4-5-20250929-v1:0"
    base_model(cfg, "arn:aws:bedrock:us-east-1:123456789012:inference-profile/eu.meta.llama3-2-1b-instruct-v1:0")
                                                                    -> "meta.llama3-2-1b-instruct-v1:0"
    base_model(cfg, "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-v2:1") -> "anthropic.claude-v2:1"
    base_model(cfg, "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3")
                                                                    -> the `model` of the config's
                                                                       [[inference_profiles]] entry with that arn
    base_model(cfg, "anthropic.claude-3-haiku-20240307-v1:0")      -> "" (already a base model id)

Cross-region (system-defined) profile ids are the model id with a geography prefix: us., eu.,
apac., global. (AWS user guide "Supported Regions and models for inference profiles"), and us-gov.,
jp., au., ca. for the GovCloud, Japan, Australia and Canada geographies. An application inference
profile id is opaque (AWS generates it), so its model comes from the config:

    [[inference_profiles]]
    arn = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3"
    model = "anthropic.claude-3-5-haiku-20241022-v1:0"
    tags = {team = "search", cost_center = "cc-42"}

An application profile ARN without an entry has no base model here ("" : it is priced, allowed
and routed by its own text only).
"""
from __future__ import annotations

import re
from urllib.parse import unquote

GEO_PREFIXES = ("us", "eu", "apac", "global", "us-gov", "jp", "au", "ca")
_GEO = re.compile(r"^(?:us-gov|us|eu|apac|global|jp|au|ca)\.(?=[a-z0-9])")
APPLICATION = "application-inference-profile"


def strip_geo(model_id: str) -> str:
    """`model_id` without a cross-region profile's geography prefix (unchanged when it has none)."""
    return _GEO.sub("", model_id, count=1)


def application_profile(cfg, model_id: str):
    """The config's InferenceProfile for an application inference profile ARN, else None."""
    profiles = getattr(cfg, "inference_profiles", None)
    if not profiles or "application-inference-profile" not in model_id:
        return None
    arn = unquote(model_id) if "%" in model_id else model_id
    for p in profiles:
        if p.arn == arn:
            return p
    return None


def base_model(cfg, model_id: str) -> str:
    """The base model id `model_id` stands for, "" when it is one already or is not known."""
    s = unquote(model_id) if "%" in model_id else model_id
    if s.startswith("arn:"):
        resource = s.split(":", 5)[5] if s.count(":") >= 5 else ""
        kind, _, rest = resource.partition("/")
        if kind == APPLICATION:
            p = application_profile(cfg, s)
            return p.model if p is not None else ""
        if kind in ("inference-profile", "foundation-model") and rest:
            return strip_geo(rest)
        return ""
    bare = strip_geo(s)
    return bare if bare != s else ""
