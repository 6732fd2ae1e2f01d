"""Loads SQL statements from the repository's ``sql/`` folder by name.

Keeping every statement in a .sql file lets analysts read and review them; values
are always bound as parameters, never formatted into the text.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"


@cache
def load_sql(name: str) -> str:
    """Return the text of ``sql/<name>.sql``."""
    path = SQL_DIR / f"{name}.sql"
    if not path.is_file():
        raise FileNotFoundError(f"SQL statement {name!r} not found at {path}")
    return path.read_text(encoding="utf-8")
