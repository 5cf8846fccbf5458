"""[providers.NAME] tables: one typed table per provider kind, registered under its kind. Pure.

Every process reads the whole config (the frontend too, which never builds a provider), so the
tables live here, in `shared/`; the providers themselves are in `workers/providers/`, where each
module registers its class under the same kind. `tests/unit/test_provider_registry.py` checks that
the two registries name the same kinds.

    kind        table            keys beyond the common ones
    mock        MockConfig       latency_ms, chunks, chunk_delay_ms
    bedrock     BedrockConfig    region, base_url, keys [{access_key_id, secret_access_key, session_token}]
    openai      OpenAIConfig     base_url, keys [{api_key}] (optional), headers, passthrough_fields,
                                 max_tokens_field, stream_usage, azure_api_version, azure_deployment
    anthropic   AnthropicConfig  base_url, keys [{api_key}] (one at least), headers, passthrough_fields,
                                 anthropic_version, default_max_tokens
    mistral     MistralConfig    base_url, keys [{api_key}] (one at least), headers, passthrough_fields

Common to every kind: total_timeout_seconds and the circuit breaker's circuit_failures,
circuit_failure_rate, circuit_open_seconds. Every kind that speaks HTTP adds the connect,
first-byte and read timeouts. A key the table's kind does not have is an unknown key.
"""
from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import msgspec
from msgspec import Meta

from .config_schema import SECONDS, ConfigError, Table, table

PROVIDER_CONFIGS: dict[str, type[ProviderConfig]] = {}


def provider_kind(kind: str):
    """Class decorator: the table of provider kind `kind`."""
    def register(cls):
        cls.kind = kind
        PROVIDER_CONFIGS[kind] = cls
        return cls
    return register


def provider_table(name: str, raw) -> ProviderConfig:
    """The [providers.NAME] table -> the config of its kind.

    Raises:
        ConfigError: the kind is not one of PROVIDER_CONFIGS, or a key is wrong (named).
    """
    where = f"providers.{name}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table")
    kind = raw.get("kind")
    cls = PROVIDER_CONFIGS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ConfigError(f"{where}.kind: must be one of {', '.join(PROVIDER_CONFIGS)}, got {kind!r}")
    return table(cls, {k: v for k, v in raw.items() if k != "kind"}, where, fixed={"name": name},
                 also_known=("kind",))


# --- keys ----------------------------------------------------------------------------------------

class KeyConfig(Table):
    weight: Annotated[float, Meta(gt=0)] = 1.0
    models: list[str] = msgspec.field(default_factory=lambda: ["*"])   # globs: upstream models this key may serve


class ApiKeyConfig(KeyConfig):
    api_key: str = ""

    def check(self, where: str) -> None:
        if not self.api_key:
            raise ConfigError(f"{where}.api_key: missing or empty (write api_key = \"${{VAR}}\")")


class AwsKeyConfig(KeyConfig):
    access_key_id: str = ""
    secret_access_key: str = ""
    session_token: str = ""

    def check(self, where: str) -> None:
        if not (self.access_key_id and self.secret_access_key):
            raise ConfigError(f"{where}: a bedrock key needs access_key_id and secret_access_key")


# --- the tables ----------------------------------------------------------------------------------

class ProviderConfig(Table):
    """What every kind has: its name (the table's), the attempt deadline and the circuit breaker."""
    kind: ClassVar[str] = ""
    keys: ClassVar[tuple] = ()                 # kinds with credentials declare a `keys` field
    name: str
    total_timeout_seconds: float = 0.0            # one whole attempt, stream included; 0 = no limit
    circuit_failures: int = 5                     # a key or target opens its circuit after this many failures in a row
    circuit_failure_rate: float = 0.5             # ...or this share failing among >= 20 outcomes in 30 s
    circuit_open_seconds: float = 30 * SECONDS    # an open circuit sends no traffic this long, then probes


class HTTPProviderConfig(ProviderConfig):
    """A provider reached over HTTP: where, and how long to wait for it."""
    default_base_url: ClassVar[str] = ""
    base_url: str = ""
    connect_timeout_seconds: float = 10 * SECONDS
    read_timeout_seconds: float = 300 * SECONDS   # idle: between reads of the answer's body (stream chunks)
    first_byte_timeout_seconds: float = 0.0       # until the answer's head arrives; 0 = read_timeout_seconds

    def check(self, where: str) -> None:
        for i, k in enumerate(self.keys):
            k.check(f"{where}.keys[{i}]")
        self.base_url = (self.base_url or self.default_base_url).rstrip("/")
        if self.base_url and not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}.base_url: must start with http:// or https://, got {self.base_url!r}")


@provider_kind("mock")
class MockConfig(ProviderConfig):
    latency_ms: float = 0.0          # before the first byte
    chunks: int = 5                  # text deltas in a stream
    chunk_delay_ms: float = 0.0      # between stream deltas


@provider_kind("bedrock")
class BedrockConfig(HTTPProviderConfig):
    region: str = "us-east-1"        # SigV4 region, and the default endpoint bedrock-runtime.<region>.amazonaws.com
    keys: list[AwsKeyConfig] = []


class JSONAPIConfig(HTTPProviderConfig):
    """The JSON-over-HTTP APIs (openai, anthropic, mistral)."""
    keys_required: ClassVar[bool] = False
    keys: list[ApiKeyConfig] = []
    headers: dict[str, str] = {}     # extra request headers (e.g. OpenAI-Organization)
    passthrough_fields: list[str] = []   # additionalModelRequestFields keys sent as they are

    def check(self, where: str) -> None:
        if self.keys_required and not self.keys:
            raise ConfigError(f"{where}.keys: a {self.kind} provider needs at least one key, "
                              f"like keys = [{{api_key = \"${{{self.kind.upper()}_API_KEY}}\"}}]")
        super().check(where)


@provider_kind("openai")
class OpenAIConfig(JSONAPIConfig):
    default_base_url = "https://api.openai.com/v1"
    max_tokens_field: Literal["", "max_tokens", "max_completion_tokens"] = ""   # "" = by base_url (README)
    stream_usage: bool = True        # ask for usage in streams (stream_options.include_usage)
    azure_api_version: str = ""      # set: Azure OpenAI (deployment path, api-version, api-key header)
    azure_deployment: str = ""       # Azure deployment name; "" = the upstream model name

    def check(self, where: str) -> None:
        if self.azure_api_version and not self.base_url:
            raise ConfigError(f"{where}.base_url: required for Azure OpenAI (https://RESOURCE.openai.azure.com)")
        super().check(where)


@provider_kind("anthropic")
class AnthropicConfig(JSONAPIConfig):
    default_base_url = "https://api.anthropic.com"
    keys_required = True
    anthropic_version: str = "2023-06-01"
    default_max_tokens: Annotated[int, Meta(ge=1)] = 4096   # Anthropic requires max_tokens; sent when the request has none


@provider_kind("mistral")
class MistralConfig(JSONAPIConfig):
    default_base_url = "https://api.mistral.ai/v1"
    keys_required = True
