"""Bad raw files answered with the file, the line and a short quote of the value (issue #14).

Covers the readers shared by every raw source (:mod:`rails.datamodules.raw_io`) and the BEIR reader: files
that are not text at all (UTF-16, binary, compressed), integers outside int64, huge fields (quoted once,
cut to 80 characters), a last line cut inside its final number, and empty or all-zero qrels splits.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import numpy as np
import pytest

from rails.datamodules import raw_io
from rails.datamodules.beir import read_beir
from rails.datamodules.raw_io import Column
from tests.test_qa_data import make_datamodule, write_tiny_beir

COLUMNS = [Column("user_id", "int"), Column("item_id", "int"), Column("rating", "float"), Column("ts", "int")]
GOOD = b"1\t10\t5\t881250949\n2\t11\t3\t881250950\n"
HUGE = 30_000_000  # a 30 MB field


def read(path: Path, data: bytes, **kw) -> dict:
    path.write_bytes(data)
    return raw_io.read_table(path, COLUMNS, kw.pop("sep", "\t"), **kw)


def assert_short(message: str) -> None:
    """The offending value is quoted once and cut: the message stays readable."""
    assert len(message) < 600, message[:1000]


# ---- files that are not text ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        ("1\t10\t5\t100\n".encode("utf-16"), r"u\.data looks like UTF-16 text \(byte-order mark FF FE\)"),
        ("1\t10\t5\t100\n".encode("utf-16-be"), r"u\.data looks like UTF-16 text without a byte-order mark"),
        (
            "1\t10\t5\t100\n".encode("utf-32"),
            r"u\.data looks like UTF-32 text \(byte-order mark FF FE 00 00\)",
        ),
        (b"\xef\xbb\xbf" + GOOD, r"u\.data starts with a UTF-8 byte-order mark"),
        (bytes(range(256)) * 64, r"u\.data looks like binary data \(a NUL byte at offset 0\)"),
        (bytes(range(1, 256)) * 64, r"u\.data looks like binary data \(\d+% control characters"),
        (gzip.compress(GOOD), r"u\.data is gzip-compressed: decompress it first"),
        (b"PK\x03\x04" + GOOD, r"u\.data is a zip archive: extract it first"),
    ],
    ids=["utf16-bom", "utf16-no-bom", "utf32", "utf8-bom", "binary-nul", "binary-control", "gzip", "zip"],
)
def test_non_text_files_say_what_they_look_like(tmp_path: Path, data: bytes, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern) as err:
        read(tmp_path / "u.data", data)
    assert "truncated" not in str(err.value)


def test_non_text_check_also_guards_the_line_reader(tmp_path: Path) -> None:
    path = tmp_path / "u.item"
    path.write_bytes("10|A|x\n".encode("utf-16"))
    with pytest.raises(ValueError, match=r"u\.item looks like UTF-16 text"):
        raw_io.read_lines(path, [Column("id", "int"), Column("t", "str"), Column("g", "any")], "|", "latin-1")


def test_latin1_text_with_accents_is_text(tmp_path: Path) -> None:
    out = read(tmp_path / "u.data", GOOD)
    assert out["user_id"].tolist() == [1, 2]
    assert raw_io.describe_non_text("Amélie (2001)\tCrème brûlée\n".encode("latin-1") * 100) is None


# ---- values out of range, huge fields -------------------------------------------------------------------


@pytest.mark.parametrize("sep", ["\t", "::"])
def test_integer_outside_int64_names_line_and_value(tmp_path: Path, sep: str) -> None:
    data = GOOD + b"99999999999999999999\t11\t3\t100\n"
    with pytest.raises(
        ValueError,
        match=r"u\.data, line 3: field 'user_id' = '99999999999999999999' is outside the int64 range",
    ):
        read(tmp_path / "u.data", data.replace(b"\t", sep.encode()), sep=sep)
    with pytest.raises(ValueError, match=r"line 3: field 'ts' = '-9223372036854775809' is outside the int64"):
        read(tmp_path / "u.data", GOOD + b"1\t11\t3\t-9223372036854775809\n")
    out = read(tmp_path / "u.data", GOOD + b"1\t11\t3\t9223372036854775807\n")  # the largest int64 is fine
    assert out["ts"][-1] == np.iinfo(np.int64).max


def test_huge_numeric_field_is_quoted_once_and_cut(tmp_path: Path) -> None:
    data = GOOD + b"1" * HUGE + b"\t11\t3\t100\n"
    with pytest.raises(ValueError) as err:
        read(tmp_path / "u.data", data)
    message = str(err.value)
    assert re.search(
        r"u\.data, line 3: field 'user_id' = '1{80}'\.\.\. \(30,000,000 characters\) is outside", message
    )
    assert message.count("1" * 80) == 1
    assert_short(message)


def test_huge_text_field_in_a_bad_line_is_cut(tmp_path: Path) -> None:
    data = GOOD + b"1\t" + b"x" * HUGE + b"\t3\t100\n"
    with pytest.raises(
        ValueError, match=r"line 3: field 'item_id' = 'x{80}'\.\.\. \(30,000,000 characters\)"
    ) as err:
        read(tmp_path / "u.data", data)
    assert_short(str(err.value))


# ---- a last line cut inside its final number ------------------------------------------------------------


def test_unterminated_last_line_with_a_cut_number_is_reported(tmp_path: Path) -> None:
    data = b"1\t10\t5\t1389657600\n2\t10\t4\t1389657601\n1\t11\t4\t13896"
    with pytest.raises(
        ValueError,
        match=r"u\.data, line 3: the file does not end with a newline and its last field 'ts' = 13896",
    ):
        read(tmp_path / "u.data", data, require_trailing_newline=False)
    # complete last lines are fine with or without the final newline
    for ending in (b"1\t11\t4\t1389657599", b"1\t11\t4\t1389657599\n"):
        out = read(
            tmp_path / "u.data", data[: data.rindex(b"\n") + 1] + ending, require_trailing_newline=False
        )
        assert out["ts"].tolist() == [1389657600, 1389657601, 1389657599]


# ---- BEIR files ------------------------------------------------------------------------------------------


@pytest.fixture
def beir(tmp_path: Path) -> Path:
    return write_tiny_beir(tmp_path / "tiny")


def append(path: Path, data: bytes) -> None:
    path.write_bytes(path.read_bytes() + data)


def test_beir_random_bytes_name_file_and_line(beir: Path) -> None:
    append(beir / "corpus.jsonl", b'{"_id": "d12", "text": "\xff\xfe\x80 garbage"}\n')
    with pytest.raises(ValueError, match=r"corpus\.jsonl:13: not valid UTF-8 text"):
        read_beir(beir)
    write_tiny_beir(beir)  # restore, then break a qrels line
    append(beir / "qrels" / "test.tsv", b"q7\t\xffd3\t1\n")
    with pytest.raises(ValueError, match=r"test\.tsv:6: not valid UTF-8 text"):
        read_beir(beir)


@pytest.mark.parametrize("file", ["corpus.jsonl", "queries.jsonl", "qrels/test.tsv"])
@pytest.mark.parametrize(
    ("encode", "pattern"),
    [
        (lambda text: text.encode("utf-16"), r"looks like UTF-16 text \(byte-order mark FF FE\)"),
        (lambda text: bytes(range(256)) * 8, r"looks like binary data"),
    ],
    ids=["utf16", "binary"],
)
def test_beir_non_text_files_say_what_they_look_like(beir: Path, file: str, encode, pattern: str) -> None:
    path = beir / file
    path.write_bytes(encode(path.read_text()))
    with pytest.raises(ValueError, match=re.escape(file.split("/")[-1]) + " " + pattern):
        read_beir(beir)


def test_beir_huge_values_are_quoted_once_with_the_line(beir: Path) -> None:
    corpus = beir / "corpus.jsonl"
    base = corpus.read_bytes()
    corpus.write_bytes(base + b'{"_id": "d12", "title": 5' + b"0" * HUGE + b', "text": "c"}\n')
    with pytest.raises(ValueError, match=r"corpus\.jsonl:13: invalid JSON \(.*4300 digits") as err:
        read_beir(beir)
    assert_short(str(err.value))
    corpus.write_bytes(base + json.dumps({"_id": ["x" * HUGE], "text": "c"}).encode() + b"\n")
    with pytest.raises(
        ValueError, match=r"corpus\.jsonl:13: field '_id' must be a string, got \['x{77}"
    ) as err:
        read_beir(beir)
    assert str(err.value).count("x" * 77) == 1 and "30,000,0" in str(err.value)
    assert_short(str(err.value))
    corpus.write_bytes(base)
    append(beir / "qrels" / "test.tsv", b"q7\td3\t" + b"9" * HUGE + b"\n")
    with pytest.raises(
        ValueError, match=r"test\.tsv:6: score '9{80}'\.\.\. \(30,000,000 characters\)"
    ) as err:
        read_beir(beir)
    assert_short(str(err.value))


def test_beir_score_outside_int64_is_an_error(beir: Path) -> None:
    append(beir / "qrels" / "test.tsv", b"q7\td3\t99999999999999999999\n")
    with pytest.raises(
        ValueError, match=r"test\.tsv:6: score '99999999999999999999' is outside the int64 range"
    ):
        read_beir(beir)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("", r"no judgments"),
        ("query-id\tcorpus-id\tscore\n", r"no judgments"),
        ("query-id\tcorpus-id\tscore\nq7\td3\t0\nq8\td5\t-1\n", r"2 judgments, all with score <= 0"),
    ],
    ids=["0-bytes", "header-only", "all-zero"],
)
def test_empty_or_all_zero_test_split_is_an_error(beir: Path, content: str, why: str) -> None:
    (beir / "qrels" / "test.tsv").write_text(content)
    read_beir(beir)  # an unused split may be empty ...
    with pytest.raises(ValueError, match=r"data\.test_split='test': .*qrels/test\.tsv holds " + why):
        make_datamodule(beir).setup("fit")  # ... the one a run evaluates on may not
    (beir / "qrels" / "dev.tsv").write_text(content)
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq7\td3\t1\n")
    with pytest.raises(ValueError, match=r"data\.val_split='dev': .*qrels/dev\.tsv holds " + why):
        make_datamodule(beir).setup("fit")
