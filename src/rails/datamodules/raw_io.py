"""Strict, fast readers for raw delimited rating/item files, with errors that name file, line and value.

The fast path parses with ``pyarrow.csv`` (multi-threaded, typed columns, no NaN-filling of missing
fields). Anything pyarrow rejects, and any parsed value that breaks a rule (a NaN rating, a non-finite
number), sends the file through a slow line-by-line diagnosis that raises a ``ValueError`` of the form
``<file>, line <n>: ...`` quoting the offending value. Multi-character separators (MovieLens ``::``) are
mapped to a single control byte (``\\x1f``) that the files never contain before pyarrow sees them.

Before parsing, a file is checked to be text at all (:func:`check_text`): UTF-16/32 text, binary data and
compressed archives are named as such. Values in messages are quoted once and cut to their first 80
characters (:func:`quote`), so a 30 MB field does not flood the terminal.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

Kind = Literal["int", "float", "str", "any"]

_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_UNIT_SEP = "\x1f"
_ARROW_TYPES = {"int": pa.int64(), "float": pa.float64(), "str": pa.string()}
_OTHER_SEPARATORS = ("::", "\t", ",", ";", "|")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
QUOTE_LIMIT = 80
SNIFF_BYTES = 1 << 16
_BOMS = (  # longest first: the UTF-32 LE mark starts with the UTF-16 LE one
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)
_MAGIC = (
    (b"\x1f\x8b", "is gzip-compressed: decompress it first"),
    (b"PK\x03\x04", "is a zip archive: extract it first"),
    (b"BZh", "is bzip2-compressed: decompress it first"),
    (b"\xfd7zXZ\x00", "is xz-compressed: decompress it first"),
    (b"\x28\xb5\x2f\xfd", "is zstd-compressed: decompress it first"),
    (b"PAR1", "is a Parquet file, not delimited text"),
)
_CONTROL = bytes(sorted(set(range(32)) - {9, 10, 13} | {127}))


@dataclass(frozen=True)
class Column:
    """One field of a delimited file: its name (used in messages) and how it must parse.

    ``kind``: ``"int"`` (decimal integer), ``"float"`` (finite number), ``"str"`` (non-empty text) or
    ``"any"`` (any text, possibly empty; only for :func:`read_lines`).
    """

    name: str
    kind: Kind


def shorten(text: str, limit: int = QUOTE_LIMIT) -> str:
    """``text`` cut to its first ``limit`` characters, with the full length noted when it was cut."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """``repr`` of a value for an error message, cut to ``limit`` characters with the full length noted."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value):,} characters)"
    return shorten(repr(value), limit)


def describe_non_text(head: bytes) -> str | None:
    """What the first bytes of a file look like when it is not plain 8-bit / UTF-8 text, else None.

    Args:
        head: the file's first bytes (:data:`SNIFF_BYTES` of them is plenty).

    Returns:
        A phrase to follow the file name ("looks like UTF-16 text (byte-order mark FF FE) ...", "is a zip
        archive: extract it first", "looks like binary data (...)"), or None for text.
    """
    for bom, name in _BOMS:
        if head.startswith(bom):
            return f"looks like {name} text (byte-order mark {bom.hex(' ').upper()}); save it as UTF-8"
    if head.startswith(b"\xef\xbb\xbf"):
        return "starts with a UTF-8 byte-order mark (EF BB BF); save it as UTF-8 without one"
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    nul = head.find(b"\x00")
    if nul >= 0:
        even, odd = head[0::2].count(0), head[1::2].count(0)
        if max(even, odd) >= len(head) // 4 and min(even, odd) == 0:
            return "looks like UTF-16 text without a byte-order mark; save it as UTF-8"
        return f"looks like binary data (a NUL byte at offset {nul}), not text"
    control = len(head) - len(head.translate(None, _CONTROL))
    if head and control > 0.05 * len(head):
        return f"looks like binary data ({100 * control // len(head)}% control characters), not text"
    return None


def check_text(path: str | os.PathLike[str]) -> Path:
    """:func:`check_nonempty`, then raise ValueError naming ``path`` when it is not plain text."""
    path = check_nonempty(path)
    with open(path, "rb") as handle:
        head = handle.read(SNIFF_BYTES)
    what = describe_non_text(head)
    if what is not None:
        raise ValueError(f"{path} {what}")
    return path


def _lines(path: Path, encoding: str, skip: int) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, text without line ending) of non-blank lines after ``skip`` lines."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number <= skip:
                continue
            try:
                text = raw.decode(encoding)
            except UnicodeDecodeError as err:
                raise ValueError(f"{path}, line {number}: not valid {encoding} text ({err})") from err
            text = text.rstrip("\r\n")
            if text.strip():
                yield number, text


def fits_int64(text: str) -> bool:
    """Whether a decimal integer string (``_INT`` syntax) lies in the int64 range (cheap for huge strings)."""
    digits = text.lstrip("+-").lstrip("0")
    return len(digits) <= 19 and _INT64_MIN <= int(text) <= _INT64_MAX


def _check_field(path: Path, number: int, column: Column, value: str) -> None:
    where = f"{path}, line {number}: field {column.name!r} = {quote(value)}"
    if column.kind == "int" and not _INT.fullmatch(value):
        raise ValueError(f"{where} is not an integer")
    if column.kind == "int" and not fits_int64(value):
        raise ValueError(f"{where} is outside the int64 range")
    if column.kind == "float" and not (_FLOAT.fullmatch(value) and math.isfinite(float(value))):
        raise ValueError(f"{where} is not a finite number")
    if column.kind == "str" and not value:
        raise ValueError(f"{path}, line {number}: field {column.name!r} is empty")


def _split_check(
    path: Path, number: int, text: str, columns: list[Column], sep: str, quoted: bool = False
) -> list[str]:
    fields = next(csv.reader([text], delimiter=sep, strict=True)) if quoted else text.split(sep)
    if len(fields) != len(columns):
        names = sep.join(c.name for c in columns)
        hint = ""
        if len(fields) == 1:
            found = [s for s in _OTHER_SEPARATORS if s != sep and s in text]
            hint = f" (wrong separator? it contains {found[0]!r})" if found else " (wrong separator?)"
        raise ValueError(
            f"{path}, line {number}: expected {len(columns)} fields separated by {sep!r} ({names}), "
            f"found {len(fields)}{hint}: {quote(text, 200)}"
        )
    for column, value in zip(columns, fields):
        _check_field(path, number, column, value)
    return fields


def diagnose(path: Path, columns: list[Column], sep: str, encoding: str, skip: int) -> None:
    """Scan ``path`` line by line and raise a ValueError for the first malformed line (returns if none)."""
    for number, text in _lines(path, encoding, skip):
        _split_check(path, number, text, columns, sep)


def line_of_row(path: str | os.PathLike[str], row: int, encoding: str = "utf-8", skip: int = 0) -> int:
    """1-based line number of the ``row``-th (0-based) data row, counting blank lines and the header."""
    for index, (number, _) in enumerate(_lines(Path(path), encoding, skip)):
        if index == row:
            return number
    raise IndexError(f"{path} has fewer than {row + 1} data rows")


def check_nonempty(path: str | os.PathLike[str]) -> Path:
    """Return ``path`` as a Path; raise FileNotFoundError / ValueError when it is absent or empty."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes): truncated download or extraction?")
    return path


def ends_with_newline(path: Path) -> bool:
    """Whether a non-empty file's last byte is a newline (a missing one usually marks a truncated copy)."""
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


def count_lines(path: Path) -> int:
    """Number of lines of ``path``, an unterminated last line included."""
    newlines, last = 0, b"\n"
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 24):
            newlines += chunk.count(b"\n")
            last = chunk[-1:]
    return newlines + (last != b"\n")


def check_last_value(path: Path, column: Column, values: np.ndarray | pa.ChunkedArray) -> None:
    """Raise when an unterminated file's last line looks cut inside its final integer field.

    A file that may lack a final newline cannot show truncation by its last byte, but a number cut short
    loses at least one digit, i.e. shrinks at least tenfold. The timestamps (or ids) of one real file span
    far less than a factor of ten, so a final value at most a tenth of the file's largest one is reported,
    with the advice to end the file with a newline when the value is genuine.

    Args:
        path: the file (known not to end with a newline).
        column: its last field.
        values: (R,) the parsed values of that field, in file order.
    """
    if column.kind != "int" or len(values) < 2:
        return
    last, largest = int(values[-1]), int(values.max())
    if last >= 0 and largest > 0 and last * 10 <= largest:
        raise ValueError(
            f"{path}, line {count_lines(path)}: the file does not end with a newline and its last field "
            f"{column.name!r} = {last} is at most a tenth of the largest value ({largest}): the last line "
            "looks cut (a truncated copy). Restore the complete file, or end it with a newline if the value "
            "is right."
        )


def check_header(path: Path, expected: str, encoding: str) -> None:
    """Raise when the first line of ``path`` is not exactly ``expected``."""
    with open(path, "rb") as handle:
        first = handle.readline().decode(encoding, errors="replace").rstrip("\r\n")
    if first != expected:
        raise ValueError(f"{path}, line 1: expected the header {expected!r}, found {quote(first, 200)}")


def read_table(
    path: str | os.PathLike[str],
    columns: list[Column],
    sep: str,
    encoding: str = "utf-8",
    header: str | None = None,
    require_trailing_newline: bool = True,
) -> dict[str, np.ndarray | pa.ChunkedArray]:
    """Parse a headerless (or fixed-header) delimited file with no quoting into typed columns.

    Args:
        path: the file.
        columns: its fields in order.
        sep: field separator (any length; ``"::"`` for MovieLens-1M).
        encoding: text encoding (``"latin-1"`` for MovieLens-1M/100K).
        header: the exact first line when the file has one (checked, then skipped).
        require_trailing_newline: treat a missing final newline as truncation.

    Returns:
        name -> (R,) int64 / float64 numpy array, or a pyarrow string ChunkedArray for ``"str"`` columns.

    Raises:
        FileNotFoundError: absent file.
        ValueError: empty file, wrong header, or a malformed line (file, line and value in the message).
    """
    path = check_text(path)
    terminated = ends_with_newline(path)
    if require_trailing_newline and not terminated:
        raise ValueError(
            f"{path} does not end with a newline: the file looks truncated (its last line is cut)"
        )
    skip = 0
    if header is not None:
        check_header(path, header, encoding)
        skip = 1
    if len(sep) == 1:
        source: str | pa.BufferReader = str(path)
        delimiter = sep
    else:
        data = path.read_bytes()
        if _UNIT_SEP.encode() in data:
            diagnose(path, columns, sep, encoding, skip)
            raise ValueError(f"{path} contains the control byte 0x1f, which is not allowed in this format")
        source = pa.BufferReader(data.replace(sep.encode(encoding), _UNIT_SEP.encode()))
        del data
        delimiter = _UNIT_SEP
    try:
        table = pacsv.read_csv(
            source,
            read_options=pacsv.ReadOptions(
                column_names=[c.name for c in columns],
                skip_rows=skip,
                encoding=encoding,
                block_size=1 << 24,
            ),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, quote_char=False, ignore_empty_lines=True),
            convert_options=pacsv.ConvertOptions(
                column_types={c.name: _ARROW_TYPES[c.kind] for c in columns},
                null_values=[],
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as err:
        diagnose(path, columns, sep, encoding, skip)
        raise ValueError(f"{path}: could not parse ({shorten(str(err), 300)})") from err
    if table.num_rows == 0:
        raise ValueError(f"{path} holds no data rows")
    out: dict[str, np.ndarray | pa.ChunkedArray] = {}
    for column in columns:
        values = table.column(column.name)
        if column.kind == "str":
            if pc.any(pc.equal(pc.utf8_length(values), 0)).as_py():
                diagnose(path, columns, sep, encoding, skip)
            out[column.name] = values
            continue
        array = values.to_numpy()
        if column.kind == "float" and not np.isfinite(array).all():
            diagnose(path, columns, sep, encoding, skip)
            raise ValueError(f"{path}: field {column.name!r} holds a non-finite value")
        out[column.name] = array
    if not terminated:
        check_last_value(path, columns[-1], out[columns[-1].name])
    return out


def read_lines(
    path: str | os.PathLike[str],
    columns: list[Column],
    sep: str,
    encoding: str,
    header: str | None = None,
    quoted: bool = False,
) -> list[tuple[int, list[str]]]:
    """Strictly split a small file (item metadata) into (line number, fields) with the same checks.

    Args:
        quoted: fields may be double-quoted (CSV quoting, e.g. ML-20M titles holding commas); otherwise
            the separator never occurs inside a field and a line with the wrong field count is an error.
    """
    path = check_text(path)
    skip = 0
    if header is not None:
        check_header(path, header, encoding)
        skip = 1
    rows = []
    for number, text in _lines(path, encoding, skip):
        try:
            rows.append((number, _split_check(path, number, text, columns, sep, quoted)))
        except csv.Error as err:
            raise ValueError(
                f"{path}, line {number}: malformed CSV quoting ({err}): {quote(text, 200)}"
            ) from err
    if not rows:
        raise ValueError(f"{path} holds no data rows")
    return rows
