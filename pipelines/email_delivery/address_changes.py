"""Optional outbound copy of address_status_changes: each unpublished change is sent as a
JSON message, then marked published (at least once; consumers key on change_id)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable

import duckdb

from pipelines.store.write import STR, arrow, with_rows


def publish_address_changes(conn: duckdb.DuckDBPyConnection, send: Callable[[Iterable[str]], int],
                            limit: int = 10_000) -> int:
    rows = conn.execute(
        "SELECT change_id, address, verified, reason, changed_at FROM address_status_changes "
        "WHERE published_at IS NULL ORDER BY changed_at, change_id LIMIT ?", [limit]).fetchall()
    if not rows:
        return 0
    send(json.dumps({"change_id": cid, "address": addr, "verified": verified, "reason": reason,
                     "changed_at": at.isoformat()}) for cid, addr, verified, reason, at in rows)
    with_rows(conn, "UPDATE address_status_changes SET published_at = now() WHERE change_id IN "
                    "(SELECT change_id FROM rows)", arrow(change_id=(STR, [r[0] for r in rows])))
    return len(rows)
