"""The gallery: identities, their embeddings and the hashes of their enrolment images, in
one SQLite file (WAL journal, synchronous=FULL: an enrolment acknowledged to a client has
reached the disk and survives the process being killed).

Each identity's template is the centroid of its embeddings, as in the run's FR system.  The
templates are cached in memory as one matrix and rebuilt after every change.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError

__all__ = ["Gallery", "EnrolOutcome"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS identities (
    name TEXT PRIMARY KEY,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS embeddings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL REFERENCES identities(name) ON DELETE CASCADE,
    image_sha256 TEXT,          -- NULL for templates imported from a run (no image)
    source TEXT NOT NULL,       -- 'enrol' or 'run'
    embedding BLOB NOT NULL,    -- float32, little-endian
    created REAL NOT NULL,
    UNIQUE (name, image_sha256)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass
class EnrolOutcome:
    name: str
    added: int
    duplicates: int
    embeddings: int  # the identity's total after this enrolment
    created: bool


class Gallery:
    """A thread-safe SQLite gallery of identities (one connection guarded by a lock)."""

    def __init__(self, path: str | os.PathLike[str], dim: int) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.dim = int(dim)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE key='dim'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise DataError(f"{self.path}: not a usable gallery database ({exc})") from None
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('dim', ?)", (str(self.dim),))
        elif int(row[0]) != self.dim:
            raise DataError(f"{self.path}: the gallery holds {row[0]}-d embeddings, this face model makes {self.dim}-d")
        self._cache: tuple[list[str], np.ndarray, np.ndarray] | None = None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ reads
    def integrity_check(self) -> str:
        with self._lock:
            return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])

    def templates(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """``(names, (K, D) centroid templates, (K,) embeddings per identity)``, names sorted."""
        with self._lock:
            if self._cache is None:
                rows = self._db.execute("SELECT name, embedding FROM embeddings ORDER BY name, id").fetchall()
                sums: dict[str, np.ndarray] = {}
                counts: dict[str, int] = {}
                for name, blob in rows:
                    v = np.frombuffer(blob, dtype="<f4").astype(np.float64)
                    sums[name] = sums.get(name, 0) + v
                    counts[name] = counts.get(name, 0) + 1
                names = sorted(sums)
                t = np.stack([sums[n] / counts[n] for n in names]).astype(np.float32) if names else np.zeros((0, self.dim), np.float32)
                self._cache = (names, t, np.array([counts[n] for n in names], np.int64))
            return self._cache

    def identities(self) -> list[dict[str, object]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT i.name, i.created, COUNT(e.id), SUM(e.source='run') FROM identities i "
                "LEFT JOIN embeddings e ON e.name = i.name GROUP BY i.name ORDER BY i.name"
            ).fetchall()
        return [{"name": n, "created": c, "embeddings": int(k), "from_run": bool(r)} for n, c, k, r in rows]

    def has(self, name: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM identities WHERE name=?", (name,)).fetchone() is not None

    def image_hashes(self, name: str) -> set[str]:
        with self._lock:
            rows = self._db.execute("SELECT image_sha256 FROM embeddings WHERE name=? AND image_sha256 IS NOT NULL",
                                    (name,)).fetchall()
        return {r[0] for r in rows}

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM identities").fetchone()[0])

    # ------------------------------------------------------------------ writes
    def enrol(self, name: str, embeddings: np.ndarray, hashes: list[str | None], source: str = "enrol") -> EnrolOutcome:
        """Add embeddings to ``name`` (created if new) in one transaction; an image hash the
        identity already has is skipped as a duplicate."""
        emb = np.asarray(embeddings, dtype="<f4").reshape(len(hashes), self.dim)
        now = time.time()
        with self._lock:
            cur = self._db.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE")
                created = cur.execute("INSERT OR IGNORE INTO identities VALUES (?, ?)", (name, now)).rowcount == 1
                added = 0
                for v, h in zip(emb, hashes):
                    cur.execute("INSERT OR IGNORE INTO embeddings (name, image_sha256, source, embedding, created) "
                                "VALUES (?, ?, ?, ?, ?)", (name, h, source, v.tobytes(), now))
                    added += cur.rowcount
                total = cur.execute("SELECT COUNT(*) FROM embeddings WHERE name=?", (name,)).fetchone()[0]
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            self._cache = None
        return EnrolOutcome(name, added, len(hashes) - added, int(total), created)

    def delete(self, name: str) -> bool:
        """Remove an identity and its embeddings; False if it was not there."""
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                cur.execute("DELETE FROM embeddings WHERE name=?", (name,))
                gone = cur.execute("DELETE FROM identities WHERE name=?", (name,)).rowcount == 1
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            self._cache = None
        return gone

    def import_templates(self, names: list[str], templates: np.ndarray) -> int:
        """Load a run's gallery (one centroid per identity, no image hashes); returns how many
        identities were new."""
        n = 0
        for name, t in zip(names, np.asarray(templates, np.float32)):
            if not self.has(name):
                self.enrol(name, t[None], [None], source="run")
                n += 1
        return n
