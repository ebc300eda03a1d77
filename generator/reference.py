"""Reference data: one record per symbol on the reference topic, and an idempotent upsert into Postgres."""

from __future__ import annotations

import json

from .model import SymbolSpec

UPSERT_SQL = """
INSERT INTO symbols (symbol, company, sector, exchange, start_price, updated_at)
VALUES (%s, %s, %s, %s, %s, now())
ON CONFLICT (symbol) DO UPDATE SET
    company = EXCLUDED.company,
    sector = EXCLUDED.sector,
    exchange = EXCLUDED.exchange,
    start_price = EXCLUDED.start_price,
    updated_at = EXCLUDED.updated_at
"""


def reference_message(spec: SymbolSpec) -> tuple[bytes, bytes]:
    """(key, value) for the reference topic: key = symbol, value = JSON object."""
    return spec.symbol.encode(), json.dumps(spec.reference(), separators=(",", ":")).encode()


def write_symbols_to_postgres(conn, symbols: list[SymbolSpec]) -> int:
    """Upserts the symbols into the `symbols` table in one transaction; running it twice changes nothing
    but updated_at. Returns the number of rows written."""
    rows = [(s.symbol, s.company, s.sector, s.exchange, s.start_price) for s in symbols]
    with conn:  # commits on success, rolls back on error
        with conn.cursor() as cur:
            cur.executemany(UPSERT_SQL, rows)
    return len(rows)
