"""One request-log row: its columns, its calendar day, and its byte form. Pure.

Every request the gateway answers, or fails, becomes exactly one row. Who builds it:

* the worker that ran the request (workers/observe/requestlog.py), when the request reached one;
* the frontend (frontend/app.py), when no worker could take the request, when the worker died
  with the request in flight, or when the frontend refused the body before dispatching it.

How it travels (README: Request log): the worker packs its row into the request's **final
envelope** to the frontend (`body`, `end` or `error`; `log` for a request whose client had gone),
and the frontend forwards it to the observer actor, which writes it. A row therefore reaches the
frontend together with the answer: a worker that dies right after answering cannot take the row of
an answered request with it. `pack` / `unpack` are the only functions that know the byte form.

Column order is the order of `COLUMNS`; the SQLite schema (workers/observe/logdb.py) is built from
it.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import msgpack

# (column, SQL type), in the order rows are built and sent
COLUMNS = (
    ("id", "TEXT"),                 # request id (= x-amzn-requestid)
    ("ts", "REAL"),                 # when the request arrived, epoch seconds
    ("day", "TEXT"),                # YYYY-MM-DD in governance.timezone
    ("vk", "TEXT"),                 # virtual key id; in open mode an unknown x-bf-vk as sent (64 chars); "" = none
    ("vk_name", "TEXT"),
    ("team", "TEXT"),               # team id, "" = none
    ("customer", "TEXT"),           # customer id, "" = none
    ("env", "TEXT"),                # x-bf-env, "" = none
    ("op", "TEXT"),                 # converse | converse-stream | invoke | invoke-with-response-stream | count-tokens
    ("stream", "INTEGER"),          # 1 when the answer was an event stream
    ("model", "TEXT"),              # the modelId the client asked for
    ("provider", "TEXT"),           # the provider that served (or last tried) it, "" = none
    ("upstream_model", "TEXT"),
    ("target", "TEXT"),             # provider/model of the route target used
    ("attempts", "INTEGER"),        # upstream attempts (0 on a cache hit or a refusal)
    ("fallback", "INTEGER"),        # 1 when a target other than the route's first served it
    ("status", "INTEGER"),          # HTTP status the client got (200 for a stream that later failed)
    ("error", "TEXT"),              # AWS error code ("" = ok; "cancelled", "client_gone" for clients that left)
    ("error_origin", "TEXT"),       # "" | "upstream" | "governance" | "client" | "gateway"
    ("latency_ms", "REAL"),
    ("ttft_ms", "REAL"),            # time to first token (first stream event), NULL when not streamed
    ("input_tokens", "INTEGER"),
    ("output_tokens", "INTEGER"),
    ("cache_read_tokens", "INTEGER"),
    ("cache_write_tokens", "INTEGER"),
    ("cost_usd", "REAL"),           # what the request was charged: the ledger's figure, to the micro-dollar
    ("cache", "TEXT"),              # "" (cache off for the route) | miss | hit-exact | hit-semantic
    ("cache_similarity", "REAL"),   # on a semantic hit
    ("saved_usd", "REAL"),          # what a cache hit saved
    ("user_agent", "TEXT"),
    ("request_body", "BLOB"),       # only when the route sets log_bodies = true
    ("response_body", "BLOB"),
    ("messages", "INTEGER"),        # messages the worker sent the frontend for this answer (stream backpressure)
    # added after the first release: older logs get them from logdb.open_db's migration (NULL in old rows)
    ("prompt_saved_usd", "REAL"),   # what the provider's prompt cache saved: cache-read tokens at the input
                                    # price minus at the cache-read price
    ("tags", "TEXT"),               # cost-allocation tags, a JSON object {name: value} ("" / NULL = none):
                                    # the virtual key's tags, overridden by the request's requestMetadata
    ("service_tier", "TEXT"),       # the service tier the upstream reported serving it in ("" = none reported)
)
NAMES = tuple(c for c, _ in COLUMNS)
INDEX = {name: i for i, name in enumerate(NAMES)}
ENV_MAX = 64            # characters of x-bf-env kept
USER_AGENT_MAX = 200    # characters of the user agent kept

_pack = msgpack.Packer(use_bin_type=True).pack


def pack(row: tuple) -> bytes:
    """A row (values in `NAMES` order) as the bytes that travel in envelopes."""
    if len(row) != len(NAMES):
        raise ValueError(f"a request-log row has {len(NAMES)} values, got {len(row)}")
    return _pack(row)


def unpack(data: bytes) -> list:
    """The row `pack` made; raises ValueError for anything else."""
    try:
        row = msgpack.unpackb(data, raw=False)
    except Exception as e:      # msgpack raises several unrelated exception types
        raise ValueError(f"undecodable request-log row ({len(data)} bytes): {e}") from None
    if not isinstance(row, list) or len(row) != len(NAMES):
        raise ValueError(f"a request-log row has {len(NAMES)} values, got {type(row).__name__}"
                         f"{'' if not isinstance(row, list) else f' of {len(row)}'}")
    return row


class Days:
    """The calendar day (YYYY-MM-DD in the governance timezone) of a timestamp, cached per day."""

    def __init__(self, tz: str):
        self.tz = ZoneInfo(tz)
        self.start = self.end = 0.0
        self.day = ""

    def __call__(self, ts: float) -> str:
        if not self.start <= ts < self.end:
            d = datetime.fromtimestamp(ts, self.tz)
            midnight = d.replace(hour=0, minute=0, second=0, microsecond=0)
            nxt = (midnight + timedelta(days=1, hours=3)).replace(hour=0)      # DST-safe next midnight
            self.start, self.end = midnight.timestamp(), nxt.timestamp()
            self.day = midnight.strftime("%Y-%m-%d")
        return self.day


def gateway_row(rid: str, ts: float, day: str, op: str, model_id: str, env: str, user_agent: str,
                status: int, error: str, latency_ms: float, stream: bool = False, messages: int = 0) -> tuple:
    """The row of a request the gateway itself failed or refused before a worker could log it
    (no worker live, the worker died with it in flight, a body over the limit): who it was for is
    what the client sent; no upstream, no tokens; cost 0 until the ledger charges a reservation it
    held (workers/observe/actor.py applies the ledger's charges to rows)."""
    return (rid, round(ts, 3), day, "", "", "", "", env[:ENV_MAX], op, int(stream), model_id, "", "", "",
            0, 0, status, error, "gateway", round(latency_ms, 2), None, 0, 0, 0, 0, 0.0, "", None, 0.0,
            user_agent[:USER_AGENT_MAX], None, None, messages, 0.0, "", "")
