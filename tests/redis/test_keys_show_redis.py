"""`finops keys show` with `ledger = "redis"`: the key's spend is read from Redis (read only, no
gateway running), and a Redis that cannot be reached still shows the key, with the reason."""
from __future__ import annotations

from finops.shared.config import build
from finops.workers.governance.cli import main
from finops.workers.governance.directory import load_directory
from finops.workers.governance.store import Store
from finops.workers.ledger.redis_state import RedisLedger
from tests.helpers.gateway import free_port


def test_keys_show_reads_the_spend_from_redis(tmp_path, redis_db, capsys):
    gov = {"ledger": "redis", "redis_url": redis_db.url, "postgres_url": "postgresql://u:p@127.0.0.1:1/unused"}
    cfg = build({"server": {"data_dir": str(tmp_path)}, "governance": gov}, "t", environ={})
    cfg.server.data_dir = str(tmp_path)
    assert main(["keys", "create", "--id", "key-r", "--budget", "10/month"], cfg) == 0
    with Store.open(str(tmp_path)) as s:                 # a node charged $2 to the key in Redis
        led = RedisLedger.from_url(redis_db.url, load_directory(s, cfg))
        led.rebuild([])
        assert led.reserve("r1", "key-r", "", 5.0, 10)["ok"]
        led.settle("r1", 2.0, 10, key_id="key-r")
        led.close()
    capsys.readouterr()
    assert main(["keys", "show", "key-r"], cfg) == 0
    out = capsys.readouterr().out
    assert "spend:       $2.0000 of the key 'key-r' monthly budget of $10 (resets" in out

    cfg.governance.redis_url = f"redis://127.0.0.1:{free_port()}/0"       # nothing listens there
    assert main(["keys", "show", "key-r"], cfg) == 0
    out = capsys.readouterr().out
    assert "id:          key-r" in out and "spend:       unknown: The governance ledger (Redis at 127.0.0.1" in out
