"""The prepared-data cache knows its raw files, rebuilds damaged folders and cleans up after killed writers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rails.datamodules.canonical import (
    OWNER_FILE,
    SEQUENCES_FILE,
    is_canonical,
    read_canonical,
    remove_stale_temporaries,
)
from rails.datamodules.sequence_files import SequenceFiles


def _source(tmp_path: Path, **kwargs) -> SequenceFiles:
    return SequenceFiles(cache_dir=str(tmp_path / "cache"), **kwargs)


def _forbid_build(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("prepared again although the cache is valid")

    monkeypatch.setattr(SequenceFiles, "build", fail)


def test_edited_raw_file_is_prepared_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    items = tmp_path / "items.txt"
    items.write_text("1 2 3\n2 3 4\n")
    first = _source(tmp_path, items_file=str(items)).prepare(tmp_path)
    stamp = items.stat().st_mtime_ns
    with monkeypatch.context() as patch:
        _forbid_build(patch)
        assert _source(tmp_path, items_file=str(items)).prepare(tmp_path) == first  # unchanged: reused
    items.write_text("1 2 3\n2 3 4 5\n")  # same path, new content (size and mtime change)
    os.utime(items, ns=(stamp + 10**9, stamp + 10**9))
    second = _source(tmp_path, items_file=str(items)).prepare(tmp_path)
    assert second != first and read_canonical(second).meta["num_interactions"] == 5
    items.write_text("1 2 3\n2 3 4 6\n")  # same size: the modification time alone tells
    os.utime(items, ns=(stamp + 2 * 10**9, stamp + 2 * 10**9))
    third = _source(tmp_path, items_file=str(items)).prepare(tmp_path)
    assert third not in (first, second) and 6 in read_canonical(third).item_ids


def test_truncated_parquet_is_rebuilt(tmp_path: Path) -> None:
    items = tmp_path / "items.txt"
    items.write_text("1 2 3\n2 3 4\n")
    directory = _source(tmp_path, items_file=str(items)).prepare(tmp_path)
    sequences = directory / SEQUENCES_FILE
    sequences.write_bytes(sequences.read_bytes()[:40])
    assert not is_canonical(directory)
    with pytest.raises(FileNotFoundError, match=r"sequences\.parquet is unreadable.*delete the directory"):
        read_canonical(directory)
    assert _source(tmp_path, items_file=str(items)).prepare(tmp_path) == directory
    assert read_canonical(directory).meta["num_users"] == 2


def test_counts_disagreeing_with_meta_are_rebuilt(tmp_path: Path) -> None:
    items = tmp_path / "items.txt"
    items.write_text("1 2 3\n2 3 4\n")
    directory = _source(tmp_path, items_file=str(items)).prepare(tmp_path)
    meta = json.loads((directory / "meta.json").read_text())
    (directory / "meta.json").write_text(json.dumps({**meta, "num_users": 3}))
    assert not is_canonical(directory)
    _source(tmp_path, items_file=str(items)).prepare(tmp_path)
    assert is_canonical(directory)


def test_downloaded_raw_file_is_keyed_as_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    remote = tmp_path / "remote.txt"
    remote.write_text("1 2 3\n2 3 4\n")
    kwargs = {"items_file": str(tmp_path / "dl" / "items.txt"), "url": remote.as_uri(), "download": True}
    first = _source(tmp_path, **kwargs).prepare(tmp_path)  # fetched through download.fetch (file:// URL)
    with monkeypatch.context() as patch:
        _forbid_build(patch)
        assert _source(tmp_path, **kwargs).prepare(tmp_path) == first


def _stale(parent: Path, name: str, owner: dict | None, age_s: float = 0.0) -> Path:
    path = parent / f".{name}.tmp-x{len(list(parent.iterdir()))}"
    path.mkdir(parents=True)
    if owner is not None:
        (path / OWNER_FILE).write_text(json.dumps(owner))
    when = time.time() - age_s
    os.utime(path, (when, when))
    return path


def test_stale_temporaries_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    gone = _stale(tmp_path, "a", {"pid": dead.pid, "host": host})
    live = _stale(tmp_path, "b", {"pid": os.getpid(), "host": host}, age_s=7200)
    old_unknown = _stale(tmp_path, "c", None, age_s=7200)
    fresh_unknown = _stale(tmp_path, "d", None)
    fresh_other_host = _stale(tmp_path, "e", {"pid": 1, "host": host + "-elsewhere"})
    old_other_host = _stale(tmp_path, "f", {"pid": 1, "host": host + "-elsewhere"}, age_s=7200)
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted([gone, old_unknown, old_other_host])
    assert all(p.exists() for p in (live, fresh_unknown, fresh_other_host))


KILLED_WRITER = """
import os, signal, sys
import pandas as pd
from rails.datamodules.sequence_files import SequenceFiles
pd.DataFrame.to_parquet = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
SequenceFiles(items_file=sys.argv[1], cache_dir=sys.argv[2]).prepare(sys.argv[2])
"""


def test_preparation_killed_mid_write_leaves_nothing_behind(tmp_path: Path) -> None:
    items = tmp_path / "items.txt"
    items.write_text("1 2 3\n2 3 4\n")
    cache = tmp_path / "cache"
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(items), str(cache)], check=False)
    assert proc.returncode != 0
    (leftover,) = list(cache.iterdir())
    assert ".tmp-" in leftover.name and (leftover / OWNER_FILE).is_file()
    directory = _source(tmp_path, items_file=str(items)).prepare(tmp_path)
    assert [p.name for p in cache.iterdir()] == [directory.name]
