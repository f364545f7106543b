"""Read selected columns of an interaction table (CSV / TSV, gzip allowed, or parquet) with located errors.

A column is chosen by its header name or by its 0-based position (the only way for a headerless file).
CSV parsing goes through ``pyarrow.csv`` with typed columns; anything it rejects is re-scanned line by
line so that the ``ValueError`` names the file, the line, the field and the value. Separators longer than
one character (MovieLens ``::``) are mapped to a control byte (``\\x1f``) the files never contain.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

Kind = Literal["id", "int", "float"]
_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_ARROW = {"id": pa.string(), "int": pa.int64(), "float": pa.float64()}
_UNIT_SEP = "\x1f"


def table_format(path: Path, fmt: str) -> str:
    """``csv``, ``tsv`` or ``parquet``: ``fmt`` unless ``auto``, else from the suffix (``.gz`` ignored)."""
    if fmt != "auto":
        return fmt
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    last = suffixes[-1] if suffixes else ""
    known = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet"}
    if last not in known:
        raise ValueError(
            f"{path}: cannot tell the table format from the name; set data.source.format to csv, tsv or parquet"
        )
    return known[last]


def _open_text(path: Path, encoding: str) -> IO[str]:
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    return io.TextIOWrapper(opener(path, "rb"), encoding=encoding, newline="")  # type: ignore[arg-type]


def _rows(path: Path, sep: str, encoding: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of every non-blank row, CSV quoting honoured for one-character separators."""
    with _open_text(path, encoding) as handle:
        try:
            if len(sep) == 1:
                reader = csv.reader(handle, delimiter=sep, strict=True)
                for fields in reader:
                    if any(f.strip() for f in fields):
                        yield reader.line_num, fields
            else:
                for number, text in enumerate(handle, start=1):
                    text = text.rstrip("\r\n")
                    if text.strip():
                        yield number, text.split(sep)
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}: not valid {encoding} text ({err})") from err
        except csv.Error as err:
            raise ValueError(f"{path}: malformed CSV ({err})") from err


def header_names(path: Path, sep: str, encoding: str) -> list[str]:
    """The column names of the first non-blank line."""
    for _, fields in _rows(path, sep, encoding):
        return [f.strip().removeprefix("\ufeff") for f in fields]
    raise ValueError(f"{path} holds no rows")


def resolve_columns(
    path: Path, wanted: dict[str, str | int], names: list[str] | None, where: str
) -> dict[str, int]:
    """Role -> 0-based column position; ``names`` is the header (None for a headerless file).

    Raises:
        ValueError: an unknown column name (the available names listed) or a position out of range.
    """
    positions: dict[str, int] = {}
    for role, column in wanted.items():
        if isinstance(column, bool) or not isinstance(column, (int, str)):
            raise ValueError(
                f"data.source.columns.{role}: expected a column name or position, got {column!r}"
            )
        if isinstance(column, int):
            if names is not None and not 0 <= column < len(names):
                raise ValueError(
                    f"{path}, {where}: column position {column} ({role}) out of range 0..{len(names) - 1}"
                )
            positions[role] = column
        elif names is None:
            raise ValueError(
                f"data.source.columns.{role}={column!r}: {path} has no header (header=false), so columns are "
                "chosen by 0-based position"
            )
        elif column not in names:
            raise ValueError(
                f"{path}, {where}: unknown column {column!r} (data.source.columns.{role}); the file's columns "
                f"are {names}"
            )
        else:
            positions[role] = names.index(column)
    return positions


def _check_value(path: Path, number: int, position: int, role: str, kind: Kind, value: str) -> None:
    where = f"{path}, line {number}, field {position + 1} ({role})"
    if kind == "id" and not value.strip():
        raise ValueError(f"{where} is empty")
    if kind == "int" and not _INT.fullmatch(value.strip()):
        raise ValueError(f"{where} = {value!r} is not an integer (unix seconds)")
    if kind == "float" and not (_FLOAT.fullmatch(value.strip()) and math.isfinite(float(value))):
        raise ValueError(f"{where} = {value!r} is not a finite number")


def diagnose(
    path: Path, sep: str, encoding: str, header: bool, positions: dict[str, int], kinds: dict[str, Kind]
) -> None:
    """Scan the file row by row and raise a ValueError for the first bad row (returns if none)."""
    width = None
    for index, (number, fields) in enumerate(_rows(path, sep, encoding)):
        if index == 0:
            width = len(fields)
            if header:
                continue
        if len(fields) != width:
            raise ValueError(
                f"{path}, line {number}: {len(fields)} fields separated by {sep!r}, expected {width} "
                "(as on the first line)"
            )
        for role, position in positions.items():
            _check_value(path, number, position, role, kinds[role], fields[position])


def read_csv_columns(
    path: Path, sep: str, encoding: str, header: bool, positions: dict[str, int], kinds: dict[str, Kind]
) -> dict[str, pa.ChunkedArray]:
    """Role -> typed column of a CSV/TSV file (rows in file order)."""
    source: str | io.BytesIO = str(path)
    delimiter = sep
    if len(sep) > 1:
        with (gzip.open if path.suffix.lower() == ".gz" else open)(path, "rb") as handle:
            source = io.BytesIO(handle.read().replace(sep.encode(encoding), _UNIT_SEP.encode()))
        delimiter = _UNIT_SEP
    width = len(header_names(path, sep, encoding))
    names = [f"c{i}" for i in range(width)]
    wanted = {f"c{p}": _ARROW[kinds[role]] for role, p in positions.items()}
    try:
        table = pacsv.read_csv(
            source,
            read_options=pacsv.ReadOptions(
                column_names=names, skip_rows=1 if header else 0, encoding=encoding
            ),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, ignore_empty_lines=True),
            convert_options=pacsv.ConvertOptions(
                include_columns=list(wanted),
                column_types=wanted,
                null_values=[],
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as err:
        diagnose(path, sep, encoding, header, positions, kinds)
        raise ValueError(f"{path}: could not parse ({err})") from err
    columns = {role: table.column(f"c{p}") for role, p in positions.items()}
    for role, column in columns.items():
        if (
            kinds[role] == "id"
            and pc.any(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(column)), 0)).as_py()
        ):
            diagnose(path, sep, encoding, header, positions, kinds)
        if kinds[role] == "float" and not np.isfinite(column.to_numpy()).all():
            diagnose(path, sep, encoding, header, positions, kinds)
    return columns


def read_parquet_columns(
    path: Path, wanted: dict[str, str | int], kinds: dict[str, Kind]
) -> dict[str, pa.ChunkedArray]:
    """Role -> column of a parquet file; nulls and wrong types are errors naming the column and row."""
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise ValueError(f"{path}: not a readable parquet file ({err})") from err
    positions = resolve_columns(path, wanted, list(schema.names), "schema")
    table = pq.read_table(path, columns=[schema.names[p] for p in set(positions.values())])
    out: dict[str, pa.ChunkedArray] = {}
    for role, position in positions.items():
        name = schema.names[position]
        column = table.column(name)
        if column.null_count:
            row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            raise ValueError(f"{path}, row {row + 1}, column {name!r} ({role}): missing value (null)")
        kind, dtype = kinds[role], column.type
        if kind == "int" and pa.types.is_timestamp(dtype):
            column = column.cast(pa.timestamp("s")).cast(pa.int64())
        elif kind == "int" and not pa.types.is_integer(dtype):
            raise ValueError(f"{path}, column {name!r} ({role}): type {dtype}, expected integer unix seconds")
        elif kind == "float" and not (pa.types.is_integer(dtype) or pa.types.is_floating(dtype)):
            raise ValueError(f"{path}, column {name!r} ({role}): type {dtype}, expected a number")
        if kind == "float":
            values = column.to_numpy().astype(np.float64)
            if not np.isfinite(values).all():
                row = int(np.flatnonzero(~np.isfinite(values))[0])
                raise ValueError(
                    f"{path}, row {row + 1}, column {name!r} ({role}): {values[row]} is not finite"
                )
        out[role] = column
    return out
