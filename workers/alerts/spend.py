"""The request log's figures the anomaly rule needs: each key's and team's spend in the last hour
and in the same hour of each of the last 7 days. SQL on a sqlite3 connection, no other I/O.

    same_hour_spend(db, now, days=7) -> {(level, owner): (last_hour_usd, [day 1 .. day 7 usd])}

"The same hour" of day d is (now - d x 24 h - 1 h, now - d x 24 h]: one query per window, each an
index range on ts, so only the rows of those 8 hours are read. Money is summed as integer
micro-dollars.
Anonymous requests (no key) and requests without a team are not anyone's scope.
"""
from __future__ import annotations

import sqlite3

from ..governance.money import usd
from ..observe.report import micros_sql

HOUR, DAY = 3600.0, 86400.0


def same_hour_spend(db: sqlite3.Connection, now: float,
                    days: int = 7) -> dict[tuple[str, str], tuple[float, list[float]]]:
    sql = (f"SELECT IFNULL(vk, ''), IFNULL(team, ''), {micros_sql('cost_usd')} FROM requests "
           "WHERE ts > ? AND ts <= ? GROUP BY 1, 2")
    acc: dict[tuple[str, str], list[int]] = {}
    for d in range(days + 1):
        end = now - d * DAY
        for vk, team, m in db.execute(sql, (end - HOUR, end)):
            for scope in (("key", vk), ("team", team)):
                if scope[1]:
                    acc.setdefault(scope, [0] * (days + 1))[d] += m
    return {scope: (usd(m[0]), [usd(x) for x in m[1:]]) for scope, m in acc.items()}
