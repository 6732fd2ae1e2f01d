"""Loads SQL statements shipped with the package (``pipeline/sql/*.sql``) by name.

Keeping every statement in a .sql file lets analysts read and review them; values
are always bound as parameters, never formatted into the text. The files are package
data, so a plain (non-editable) install finds them too.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def load_sql(name: str) -> str:
    """Return the text of ``pipeline/sql/<name>.sql``."""
    resource = files("pipeline").joinpath("sql", f"{name}.sql")
    if not resource.is_file():
        raise FileNotFoundError(f"SQL statement {name!r} not found at {resource}")
    return resource.read_text(encoding="utf-8")
