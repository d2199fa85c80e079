"""What a SQLite table looks like, read from SQLite itself, and which Avro type each column gets.

The tailer must work with any table (DESIGN section 4), so nothing here assumes the
`sensor_readings` layout: columns come from `PRAGMA table_xinfo`, and their Avro types follow
SQLite's own type-affinity rules (https://www.sqlite.org/datatype3.html section 3.1), because
affinity - not the declared type name - decides what SQLite actually stores in a column.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from sensorstream.errors import ConfigError

# Avro primitive type for each SQLite affinity. NUMERIC has no exact Avro counterpart: it stores
# integers and reals alike, and double holds both (integers exactly up to 2**53).
AFFINITY_TO_AVRO: dict[str, str] = {
    "INTEGER": "long",
    "TEXT": "string",
    "BLOB": "bytes",
    "REAL": "double",
    "NUMERIC": "double",
}

# Column names that usually hold event time, tried when no --timestamp-col is given.
TIMESTAMP_NAMES: frozenset[str] = frozenset(
    {"ts", "time", "datetime", "event_time", "event_ts", "created_at", "recorded_at"}
)
TIMESTAMP_SUFFIXES: tuple[str, ...] = ("_timestamp", "_time", "_ts", "_at")
# A BLOB-affinity column (declared BLOB, or no type at all) is never guessed to be event time.
TIMESTAMP_AFFINITIES: frozenset[str] = frozenset({"TEXT", "INTEGER", "REAL", "NUMERIC"})


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a SQLite table, as the value schema and the row converter need it.

    `not_null` is what SQLite guarantees, not only what was declared: a NOT NULL constraint,
    or the INTEGER PRIMARY KEY that aliases the rowid (which can never be NULL).
    `avro_type` is the Avro primitive for the column's affinity (see `avro_type_for`).
    """

    name: str
    declared_type: str
    not_null: bool
    primary_key: bool
    avro_type: str

    @property
    def affinity(self) -> str:
        """The column's SQLite affinity: INTEGER, TEXT, BLOB, REAL or NUMERIC."""
        return affinity(self.declared_type)


def affinity(declared_type: str) -> str:
    """SQLite's affinity for a declared column type, by the five ordered rules of section 3.1.

    The order matters: "CHARINT" is INTEGER (rule 1 wins), "FLOATING POINT" is INTEGER too
    ("POINT" contains "INT"), exactly as SQLite decides.
    """
    upper = declared_type.upper()
    if "INT" in upper:
        return "INTEGER"
    if "CHAR" in upper or "CLOB" in upper or "TEXT" in upper:
        return "TEXT"
    if "BLOB" in upper or not upper.strip():
        return "BLOB"
    if "REAL" in upper or "FLOA" in upper or "DOUB" in upper:
        return "REAL"
    return "NUMERIC"


_DATE_LIKE = ("DATE", "TIME")


def avro_type_for(declared_type: str) -> str:
    """The Avro primitive type for a declared SQLite column type (via its affinity).

    One exception to the affinity table: NUMERIC columns declared as dates or times (DATE,
    DATETIME, TIMESTAMP) are strings. SQLite keeps ISO-8601 text in them unchanged, and
    mapping them to double would send every row of such a table to the dead-letter topic;
    numbers found there become their decimal text.
    """
    kind = affinity(declared_type)
    if kind == "NUMERIC" and any(word in declared_type.upper() for word in _DATE_LIKE):
        return "string"
    return AFFINITY_TO_AVRO[kind]


def quote_identifier(name: str) -> str:
    """`name` as a SQLite identifier that cannot break out of its quotes, for building SQL.

    Table and column names come from the database or the command line, so they are quoted,
    never pasted: a name like `x"; DROP TABLE y; --` stays one identifier.
    """
    if "\x00" in name:
        raise ConfigError(f"identifier {name!r} contains a NUL character")
    return '"' + name.replace('"', '""') + '"'


def user_tables(conn: sqlite3.Connection) -> list[str]:
    """The database's own tables, sorted by name, without SQLite's internal `sqlite_*` tables.

    Reads `sqlite_master` (not its 3.33+ alias `sqlite_schema`) so older edge SQLite builds work.
    """
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' "
        "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name"
    ).fetchall()
    return [_text(row[0]) for row in rows]


def introspect(conn: sqlite3.Connection, table: str) -> list[Column]:
    """The columns of `table` in the order `SELECT *` returns them.

    Uses `table_xinfo` rather than `table_info` because generated columns appear in `SELECT *`
    but only `table_xinfo` lists them; hidden columns of virtual tables are left out as
    `SELECT *` leaves them out. A missing table is a ConfigError naming the tables there are.
    """
    rows = conn.execute(
        'SELECT name, type, "notnull", pk, hidden FROM pragma_table_xinfo(?) ORDER BY cid',
        (table,),
    ).fetchall()
    if not rows:
        tables = user_tables(conn)
        listed = ", ".join(tables) if tables else "none"
        raise ConfigError(f"table {table!r} not found in the SQLite database (tables: {listed})")
    rows = [row for row in rows if row[4] != 1]
    pk_columns = [row for row in rows if row[3] > 0]
    rowid_alias = None
    if len(pk_columns) == 1 and _text(pk_columns[0][1]).upper() == "INTEGER":
        rowid_alias = _text(pk_columns[0][0])
    columns = []
    for name, declared, notnull, pk, _hidden in rows:
        name, declared = _text(name), _text(declared or "")
        columns.append(
            Column(
                name=name,
                declared_type=declared,
                not_null=bool(notnull) or name == rowid_alias,
                primary_key=pk > 0,
                avro_type=avro_type_for(declared),
            )
        )
    return columns


def detect_timestamp_column(
    columns: Sequence[Column], preferred: str | None = None, *, table: str | None = None
) -> str:
    """The name of the column that holds event time.

    In order: `preferred` (from --timestamp-col) if given, which must exist; else the column
    named `timestamp`; else the single column whose name looks like a time (`ts`, `time`,
    `created_at`, `*_timestamp`, `*_time`, `*_ts`, `*_at`, ...) and whose affinity can hold one.
    Guessing between several candidates would silently pick the wrong event time, so none or
    several is a ConfigError that names the table, lists what was found and says to pass
    --timestamp-col. Names match case-insensitively, as SQLite matches them.
    """
    where = f"table {table!r}" if table else "the table"
    by_name = {fold_name(c.name): c for c in columns}
    if preferred is not None:
        column = by_name.get(fold_name(preferred))
        if column is None:
            raise ConfigError(
                f"--timestamp-col {preferred!r} is not a column of {where} "
                f"(columns: {', '.join(c.name for c in columns)})"
            )
        return column.name
    if "timestamp" in by_name:
        return by_name["timestamp"].name
    candidates = [c.name for c in columns if _looks_like_timestamp(c)]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ConfigError(
            f"{where} has no column that looks like an event timestamp "
            f"(columns: {', '.join(c.name for c in columns)}); "
            "pass --timestamp-col NAME to choose one"
        )
    raise ConfigError(
        f"{where} has several candidate timestamp columns ({', '.join(candidates)}); "
        "pass --timestamp-col NAME to choose one"
    )


def _looks_like_timestamp(column: Column) -> bool:
    name = fold_name(column.name)
    named = name in TIMESTAMP_NAMES or name.endswith(TIMESTAMP_SUFFIXES)
    return named and column.affinity in TIMESTAMP_AFFINITIES


def fold_name(name: str) -> str:
    """Case-fold the way SQLite compares identifiers: ASCII letters only."""
    return name.translate(_ASCII_LOWER)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _text(value: str | bytes) -> str:
    """Names and types as str even when the connection uses `text_factory = bytes`."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
