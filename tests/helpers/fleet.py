"""Several gateway nodes on one machine for system tests: N `finops serve` nodes sharing one
config file, one Redis and one PostgreSQL (the fixtures `redis_db` and `postgres_url`).

    with Fleet(tmp_path, config_text, redis=redis_db, nodes=3) as fleet:
        fleet[0].client()                  # each node is a tests.helpers.gateway.Gateway
        fleet.request_log()                # every node's request-log rows, in one list
        fleet.kill(1)                      # SIGKILL node 1 and everything it started (a crash)
        fleet.redis_stop(); fleet.redis_start()

Each node has its own directory `<tmp_path>/node<i>/` (data_dir, log), its own port and its node
name `node<i>` (FINOPS_NODE_NAME); all read `<tmp_path>/finops.toml`. The config text is the test's:
it names the shared backends itself (`ledger = "redis"`, `redis_url`, `store = "postgres"`,
`postgres_url`); `Fleet.backends(redis_url, postgres_url)` writes those lines.
"""
from __future__ import annotations

import os
import signal

from tests.helpers.gateway import Gateway, request_log


def backends(redis_url: str, postgres_url: str) -> str:
    """The [governance] lines that make nodes share Redis (counters) and PostgreSQL (keys, spend)."""
    return (f'ledger = "redis"\nredis_url = "{redis_url}"\n'
            f'store = "postgres"\npostgres_url = "{postgres_url}"\n')


class Fleet:
    def __init__(self, tmp_path, config_text: str, *, redis=None, nodes: int = 3, workers: int = 2,
                 extra_env: dict | None = None):
        self.redis = redis                      # a tests.helpers.redis_server.RedisServer, for stop/start
        self.config_path = str(tmp_path / "finops.toml")
        with open(self.config_path, "w") as f:
            f.write(config_text)
        self.nodes: list[Gateway] = []
        for i in range(nodes):
            d = tmp_path / f"node{i}"
            d.mkdir(exist_ok=True)
            g = Gateway(d, workers=workers, extra_env={"FINOPS_NODE_NAME": f"node{i}", **(extra_env or {})})
            g.config_path = self.config_path    # one shared file, not a copy per node
            self.nodes.append(g)

    # --- the nodes ---------------------------------------------------------------------------

    def __getitem__(self, i: int) -> Gateway:
        return self.nodes[i]

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self):
        return iter(self.nodes)

    def start(self) -> "Fleet":
        """Start every node, one after the other (schema migrations race safely, but a 2-core
        machine starts them faster in turn), and wait until each has a live worker."""
        try:
            for g in self.nodes:
                g.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for g in self.nodes:
            g.stop()

    def kill(self, i: int) -> None:
        """SIGKILL node `i`'s whole process group (supervisor, frontend, workers, actors): a crash,
        with no chance to settle, flush or snapshot anything."""
        g = self.nodes[i]
        if g.proc is not None and g.proc.poll() is None:
            try:
                os.killpg(g.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            g.proc.wait()

    def alive(self, i: int) -> bool:
        g = self.nodes[i]
        return g.proc is not None and g.proc.poll() is None

    def request_log(self) -> list[dict]:
        """Every node's request-log rows (each with its node index as `node`)."""
        rows = []
        for i, g in enumerate(self.nodes):
            rows += [dict(r, node=i) for r in request_log(g.data_dir)]
        return rows

    # --- the shared Redis ----------------------------------------------------------------------

    def redis_stop(self) -> None:
        """Stop Redis (SIGTERM: no persistence, so it comes back empty, like a failover to an
        empty replica)."""
        self.redis.stop()

    def redis_start(self) -> None:
        self.redis.start()

    def redis_flush(self) -> None:
        self.redis.flushall()

    def __enter__(self) -> "Fleet":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


__all__ = ["Fleet", "backends"]
