"""Question-answering datasets in the BEIR layout: reading, validation and (optional) download.

A BEIR dataset is a directory holding

- ``corpus.jsonl``: one passage per line, ``{"_id": str, "title": str, "text": str, ...}``;
- ``queries.jsonl``: one question per line, ``{"_id": str, "text": str, ...}``;
- ``qrels/<split>.tsv``: a header line, then ``query-id <TAB> corpus-id <TAB> score`` (integer graded
  relevance; scores <= 0 mean "judged not relevant"). Splits are ``train``, ``dev`` and ``test``; any may
  be absent (SciFact has no ``dev``, most BEIR sets only ``test``), but a split a run trains or evaluates
  on must hold at least one positive judgment (:func:`select_split`).

Every file must be UTF-8 text: a malformed line raises a ValueError naming ``<file>:<line>`` and quoting
the offending value once, cut to 80 characters; a file that is not text (UTF-16, binary, compressed) is
named as such.

Passages are addressed by their row in ``corpus.jsonl`` (0..X-1), which is what the models call item ids.

:class:`BEIRDataset` is a *dataset source* (``prepare(root) -> Path``): it uses an existing directory, or
downloads ``<name>.zip`` from the public BEIR mirror next to it (:func:`rails.datamodules.download.fetch`:
SHA-256 verified before the file appears), extracts it without letting any member escape
(:func:`~rails.datamodules.download.safe_extract_zip`), and renames the result into place
(:func:`rails.io.atomic_directory`). Tests download from ``file://`` URLs only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rails.datamodules.download import RemoteFile, fetch, file_digests, safe_extract_zip
from rails.datamodules.raw_io import check_text, fits_int64, quote, shorten
from rails.io import atomic_directory
from rails.log import get_logger

log = get_logger(__name__)

BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"
SPLITS = ("train", "dev", "test")
_INTEGER = re.compile(r"[+-]?[0-9]+")


@dataclass
class Qrels:
    """Graded relevance judgments of one split, positive judgments only.

    Attributes:
        query_rows: (Q,) int64 row of each judged query in :attr:`BEIRData.query_ids`.
        offsets: (Q + 1,) int64; query q's passages are ``passages[offsets[q]:offsets[q + 1]]``.
        passages: (J,) int64 passage rows (corpus positions).
        grades: (J,) float32 relevance grade (> 0).
        num_judgments: judgment lines read, those with a score <= 0 included.
    """

    query_rows: np.ndarray
    offsets: np.ndarray
    passages: np.ndarray
    grades: np.ndarray
    num_judgments: int = 0

    def __len__(self) -> int:
        return len(self.query_rows)

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(J,) query rows and (J,) passage rows of every positive judgment (the training pairs)."""
        return np.repeat(self.query_rows, np.diff(self.offsets)), self.passages

    def subset(self, keep: np.ndarray) -> Qrels:
        """Judgments of the queries selected by the (Q,) boolean mask ``keep``."""
        counts = np.diff(self.offsets)
        per_judgment = np.repeat(keep, counts)
        return Qrels(
            query_rows=self.query_rows[keep],
            offsets=np.concatenate([[0], np.cumsum(counts[keep])]).astype(np.int64),
            passages=self.passages[per_judgment],
            grades=self.grades[per_judgment],
            num_judgments=int(per_judgment.sum()),
        )


@dataclass
class BEIRData:
    """A loaded BEIR dataset: passages, queries and the qrels of every split present."""

    passage_ids: list[str]
    passage_texts: list[str]
    query_ids: list[str]
    query_texts: list[str]
    qrels: dict[str, Qrels] = field(default_factory=dict)
    directory: Path | None = None

    @property
    def num_passages(self) -> int:
        return len(self.passage_ids)


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, UTF-8 text) of each line of a text file; bad bytes raise with the line."""
    if path.stat().st_size == 0:
        return  # no lines; the caller decides whether that is an error
    check_text(path)
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise ValueError(
                    f"{path}:{number}: not valid UTF-8 text ({err.reason} at byte {err.start} of the line)"
                ) from err


def _read_jsonl(path: Path, optional: tuple[str, ...] = ()) -> tuple[list[dict], dict[str, int]]:
    """Records of a BEIR JSON-lines file and the position of each ``_id`` among them.

    Every record needs string ``_id`` and ``text`` fields; the ``optional`` fields must be strings when
    present. Malformed lines, wrong types and duplicate ids raise ValueError naming ``<file>:<line>``.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (BEIR layout needs corpus.jsonl, queries.jsonl, qrels/)")
    rows: list[dict] = []
    index: dict[str, int] = {}
    lines: dict[str, int] = {}
    for number, line in _text_lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: invalid JSON ({err.msg})") from err
        except (ValueError, RecursionError) as err:  # an integer of > 4300 digits, absurd nesting
            raise ValueError(f"{path}:{number}: invalid JSON ({shorten(str(err), 200)})") from err
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
        for key in ("_id", "text"):
            if key not in row:
                raise ValueError(f"{path}:{number}: missing field {key!r}")
        for key in ("_id", "text", *optional):
            if key in row and not isinstance(row[key], str):
                raise ValueError(f"{path}:{number}: field {key!r} must be a string, got {quote(row[key])}")
        key = row["_id"]
        if key in index:
            raise ValueError(f"{path}:{number}: duplicate _id {quote(key)} (first on line {lines[key]})")
        index[key], lines[key] = len(rows), number
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no records")
    return rows, index


def _grade(path: Path, number: int, score: str) -> float:
    """The relevance grade of a qrels score field (a decimal int64)."""
    text = score.strip()
    if not _INTEGER.fullmatch(text):
        raise ValueError(f"{path}:{number}: score {quote(score)} is not an integer")
    if not fits_int64(text):
        raise ValueError(f"{path}:{number}: score {quote(score)} is outside the int64 range")
    return float(int(text))


def read_qrels(path: Path, query_index: dict[str, int], passage_index: dict[str, int]) -> Qrels:
    """Read one ``qrels/<split>.tsv`` file; unknown ids and malformed lines raise with file:line."""
    judged: dict[int, dict[int, float]] = {}
    num_judgments = 0
    for number, line in _text_lines(path):
        parts = line.rstrip("\r\n").split("\t")
        if number == 1 and parts and parts[0] == "query-id":
            continue  # header
        if not line.strip():
            continue
        if len(parts) != 3:
            raise ValueError(f"{path}:{number}: expected 3 tab-separated fields, got {len(parts)}")
        query, passage, score = parts
        if query not in query_index:
            raise ValueError(f"{path}:{number}: query-id {quote(query)} is not in queries.jsonl")
        if passage not in passage_index:
            raise ValueError(f"{path}:{number}: corpus-id {quote(passage)} is not in corpus.jsonl")
        grade = _grade(path, number, score)
        num_judgments += 1
        if grade > 0:
            judged.setdefault(query_index[query], {})[passage_index[passage]] = grade
    rows = sorted(judged)
    counts = [len(judged[q]) for q in rows]
    return Qrels(
        query_rows=np.asarray(rows, dtype=np.int64),
        offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        passages=np.asarray([p for q in rows for p in judged[q]], dtype=np.int64),
        grades=np.asarray([g for q in rows for g in judged[q].values()], dtype=np.float32),
        num_judgments=num_judgments,
    )


def select_split(data: BEIRData, name: str, key: str) -> Qrels:
    """The qrels of split ``name``, chosen by the config key ``data.<key>``.

    Raises:
        ValueError: the split's file is absent, or holds no positive judgment (empty, or every score
            <= 0), which would silently train on nothing or report no metrics; the file is named.
    """
    path = Path(data.directory or ".") / "qrels" / f"{name}.tsv"
    if name not in data.qrels:
        raise ValueError(f"data.{key}={name!r}: {path} is absent (available: {sorted(data.qrels)})")
    qrels = data.qrels[name]
    if len(qrels) == 0:
        found = (
            f"{qrels.num_judgments} judgments, all with score <= 0 (judged not relevant)"
            if qrels.num_judgments
            else "no judgments"
        )
        raise ValueError(
            f"data.{key}={name!r}: {path} holds {found}; a split needs at least one relevant passage to "
            "train or evaluate on"
        )
    return qrels


def read_beir(directory: str | os.PathLike[str], with_titles: bool = True) -> BEIRData:
    """Load and validate a BEIR-layout directory.

    Args:
        directory: holds ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/{train,dev,test}.tsv`` (any subset).
        with_titles: passage text is ``title + " " + text`` (the BEIR convention for dense retrievers).

    Returns:
        The dataset; ``qrels`` has an entry for each split file present.
    """
    directory = Path(directory)
    corpus_path, queries_path = directory / "corpus.jsonl", directory / "queries.jsonl"
    corpus, passage_index = _read_jsonl(corpus_path, optional=("title",))
    queries, query_index = _read_jsonl(queries_path)
    passage_ids = [row["_id"] for row in corpus]
    query_ids = [row["_id"] for row in queries]
    texts = [
        f"{row.get('title', '')} {row['text']}".strip() if with_titles else row["text"] for row in corpus
    ]
    data = BEIRData(passage_ids, texts, query_ids, [row["text"] for row in queries], directory=directory)
    for split in SPLITS:
        path = directory / "qrels" / f"{split}.tsv"
        if path.is_file():
            data.qrels[split] = read_qrels(path, query_index, passage_index)
    if not data.qrels:
        raise FileNotFoundError(f"{directory / 'qrels'}: no {'/'.join(SPLITS)}.tsv file")
    return data


def _is_beir_dir(path: Path) -> bool:
    return (
        (path / "corpus.jsonl").is_file() and (path / "queries.jsonl").is_file() and (path / "qrels").is_dir()
    )


class BEIRDataset:
    """Dataset source for a BEIR-layout directory, downloaded on first use when not found locally.

    Args:
        name: BEIR dataset name (``scifact``, ``nq``, ``fiqa``, ...); the cache folder is ``<root>/beir/<name>``.
        path: an existing BEIR directory to use as is (e.g. ``../shared/data/scifact``); wins over the cache.
        url: archive location; defaults to the public BEIR mirror ``.../BEIR/datasets/<name>.zip``.
        sha256: expected SHA-256 of the archive. Downloads without it are refused unless
            ``allow_unverified`` (then the computed digest is logged so it can be pinned).
        allow_unverified: permit a download whose checksum is not known in advance.
    """

    def __init__(
        self,
        name: str,
        path: str | None = None,
        url: str | None = None,
        sha256: str | None = None,
        allow_unverified: bool = False,
    ) -> None:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"data.source.name must be a plain dataset name, got {name!r}")
        self.name = name
        self.path = path
        self.url = url or BEIR_URL.format(name=name)
        self.sha256 = sha256.lower() if sha256 else None
        self.allow_unverified = allow_unverified

    def prepare(self, root: str | os.PathLike[str]) -> Path:
        """Return the dataset directory, downloading and extracting it under ``root`` if needed."""
        if self.path is not None:
            path = Path(self.path).expanduser()
            if not _is_beir_dir(path):
                raise FileNotFoundError(
                    f"data.source.path={path}: not a BEIR directory (needs corpus.jsonl, queries.jsonl, qrels/)"
                )
            return path
        final = Path(root).expanduser() / "beir" / self.name
        if _is_beir_dir(final):
            return final
        return self._download(final)

    def _download(self, final: Path) -> Path:
        """Fetch ``<name>.zip`` beside ``final`` (kept, verified when present), extract it into ``final``."""
        if self.sha256 is None and not self.allow_unverified:
            raise ValueError(
                f"{final} is absent and data.source.sha256 is not set: refusing an unverified download of "
                f"{self.url} (set data.source.sha256, or data.source.allow_unverified=true)"
            )
        archive = fetch(RemoteFile(self.url, f"{self.name}.zip", sha256=self.sha256), final.parent)
        if self.sha256 is None:
            digest = file_digests(archive)[0]
            log.warning(f"{self.url}: unverified download, sha256={digest} (pin it in data.source.sha256)")
        # another process that extracted the same dataset first wins: its folder is kept
        with atomic_directory(final, keep_existing=_is_beir_dir, replace=False) as staging:
            extracted = staging / ".extracted"
            safe_extract_zip(archive, extracted)
            candidates = [extracted, *sorted(p for p in extracted.iterdir() if p.is_dir())]
            found = next((p for p in candidates if _is_beir_dir(p)), None)
            if found is None:
                raise ValueError(
                    f"{self.url}: archive has no BEIR directory (corpus.jsonl, queries.jsonl, qrels/)"
                )
            for entry in list(found.iterdir()):
                os.replace(entry, staging / entry.name)
            shutil.rmtree(extracted)
        return final
