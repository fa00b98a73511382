"""The embedded SQLite database behind `search_database`: created and seeded on first start.

Every row belongs to a tenant and every query is scoped by tenant, so no read
crosses tenants whatever the search text is.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

TENANTS = ("acme", "globex", "initech")
_PRODUCTS = (
    "anvil", "rocket skates", "portable hole", "giant magnet", "tornado seeds", "earthquake pills",
    "jet-propelled pogo stick", "bird seed", "invisible paint", "spring-loaded boxing glove",
)


class Database:
    """A small SQLite store used from worker threads (one connection per thread)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(path) as conn:
            _seed(conn)

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection to the file now at `path`.

        A connection keeps reading a file that was deleted or replaced under it, so each use
        checks the path still names the same file: missing is an error, replaced reconnects.
        """
        try:
            identity = _file_identity(self.path)
        except FileNotFoundError:
            raise sqlite3.OperationalError(f"database file {self.path.name} is missing") from None
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "identity", None) != identity:
            conn.close()
            conn = None
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=1.0, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            self._local.conn = conn
            self._local.identity = identity
        return conn

    def search(self, tenant: str, text: str, limit: int) -> list[dict[str, Any]]:
        rows = self._conn().execute(
            "SELECT id, tenant, name, category, price FROM items "
            "WHERE tenant = ? AND (name LIKE ? ESCAPE '\\' OR category LIKE ? ESCAPE '\\') "
            "ORDER BY id LIMIT ?",
            (tenant, _like(text), _like(text), limit),
        ).fetchall()
        return [dict(row) for row in rows]

    def aggregate(self, tenant: str, category: str | None) -> dict[str, Any]:
        row = self._conn().execute(
            "SELECT count(*) AS n, coalesce(sum(price), 0) AS total FROM items "
            "WHERE tenant = ? AND (? IS NULL OR category = ?)",
            (tenant, category, category),
        ).fetchone()
        return {"items": row["n"], "total": round(row["total"], 2)}

    def check(self) -> None:
        """A real query, for /health."""
        self._conn().execute("SELECT count(*) FROM items").fetchone()


def _file_identity(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _seed(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, tenant TEXT NOT NULL, name TEXT NOT NULL,"
        " category TEXT NOT NULL, price REAL NOT NULL)"
    )
    conn.execute("CREATE INDEX IF NOT EXISTS items_tenant ON items (tenant)")
    if conn.execute("SELECT count(*) FROM items").fetchone()[0]:
        return
    rows = []
    for t, tenant in enumerate(TENANTS):
        for i in range(60):
            product = _PRODUCTS[(i + t) % len(_PRODUCTS)]
            rows.append((tenant, f"{tenant} {product} #{i}", ("hardware", "explosives", "garden")[i % 3],
                         round(5 + (i * 7 + t * 13) % 200 + 0.99, 2)))
    conn.executemany("INSERT INTO items (tenant, name, category, price) VALUES (?, ?, ?, ?)", rows)
