"""Checksummed atomic downloads (through file:// URLs, never the network) and safe zip extraction."""

from __future__ import annotations

import hashlib
import os
import stat
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from rails.datamodules.canonical import read_canonical
from rails.datamodules.download import (
    ML_1M_ZIP,
    ML_20M_ZIP,
    ML_100K_ZIP,
    DownloadError,
    RemoteFile,
    fetch,
    safe_extract_zip,
    verify_file,
)
from rails.datamodules.movielens import MovieLens100K


def remote_for(path: Path, corrupt: bool = False) -> RemoteFile:
    data = path.read_bytes()
    return RemoteFile(
        url=path.as_uri(),
        filename="archive.zip",
        sha256=hashlib.sha256(data + (b"x" if corrupt else b"")).hexdigest(),
        md5=hashlib.md5(data).hexdigest(),
        size=len(data),
    )


def test_pinned_checksums_are_well_formed() -> None:
    for remote in (ML_100K_ZIP, ML_1M_ZIP, ML_20M_ZIP):
        assert remote.url.startswith("https://files.grouplens.org/datasets/movielens/")
        assert len(remote.sha256) == 64 and len(remote.md5) == 32 and remote.size > 0


def test_fetch_verifies_and_renames_atomically(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"payload" * 100)
    out = fetch(remote_for(src), tmp_path / "dl")
    assert out.read_bytes() == src.read_bytes()
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["archive.zip"]
    assert fetch(remote_for(src), tmp_path / "dl") == out  # present and valid: reused


def test_fetch_checksum_mismatch_leaves_nothing(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"payload")
    with pytest.raises(ValueError, match=r"checksum mismatch for .*\.part.*sha256 [0-9a-f]{64}, expected"):
        fetch(remote_for(src, corrupt=True), tmp_path / "dl")
    assert list((tmp_path / "dl").iterdir()) == []
    bad = tmp_path / "dl" / "archive.zip"
    bad.write_bytes(b"truncated")
    with pytest.raises(ValueError, match=r"archive\.zip .*size 9 bytes, expected 7"):
        verify_file(bad, remote_for(src))


def test_no_network_message_says_where_to_put_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(
        DownloadError, match=r"could not download https://files.grouplens.org/.*place it at .*ml-1m\.zip"
    ):
        fetch(ML_1M_ZIP, tmp_path)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DownloadError, match=r"downloads are disabled \(download=false\)"):
        fetch(ML_1M_ZIP, tmp_path, allow_download=False)


def _zip(path: Path, members: dict[str, bytes], symlink: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if symlink is not None:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return path


@pytest.mark.parametrize(
    ("members", "symlink", "pattern"),
    [
        ({"ml/ok.txt": b"1", "../evil.txt": b"x"}, None, r"'\.\./evil\.txt': it contains a '\.\.' component"),
        ({"ml/ok.txt": b"1", "ml/../../evil.txt": b"x"}, None, r"contains a '\.\.' component"),
        ({"/tmp/evil.txt": b"x"}, None, r"'/tmp/evil\.txt': it is an absolute path"),
        ({"C:/evil.txt": b"x"}, None, r"it is an absolute path"),
        ({"ml/ok.txt": b"1"}, "ml/link", r"'ml/link': it is a symbolic link"),
    ],
)
def test_unsafe_zip_is_rejected_before_writing(tmp_path: Path, members, symlink, pattern) -> None:
    archive = _zip(tmp_path / "a.zip", members, symlink)
    dest = tmp_path / "out" / "inner"
    with pytest.raises(ValueError, match=pattern):
        safe_extract_zip(archive, dest)
    assert not dest.exists()
    assert not (tmp_path / "out" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()


def test_safe_zip_extracts_and_bad_zip_errors(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "a.zip", {"ml/u.data": b"1\t2\t3\t4\n", "ml/sub/x": b"y"})
    safe_extract_zip(archive, tmp_path / "out")
    assert (tmp_path / "out" / "ml" / "u.data").read_bytes() == b"1\t2\t3\t4\n"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ml"]  # no temp dir left
    (tmp_path / "b.zip").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match=r"b\.zip is not a valid zip archive"):
        safe_extract_zip(tmp_path / "b.zip", tmp_path / "out2")


def test_movielens_downloads_extracts_and_prepares(tmp_path: Path) -> None:
    flags = "|".join(["0"] * 19)
    zip_path = _zip(
        tmp_path / "ml-100k.zip",
        {
            "ml-100k/u.data": b"1\t10\t5\t100\n1\t11\t3\t90\n2\t10\t4\t50\n",
            "ml-100k/u.item": f"10|A (1990)|||u|{flags}\n11|B (1991)|||u|{flags}\n".encode("latin-1"),
        },
    )

    @dataclass
    class LocalML100K(MovieLens100K):
        archive: ClassVar[RemoteFile] = remote_for(zip_path)
        pinned_files: ClassVar[dict[str, str]] = {}

    root = tmp_path / "root"
    data = read_canonical(LocalML100K(verify_statistics=False).prepare(root))
    assert data.item_ids.tolist() == [11, 10, 10]
    assert (root / "downloads" / "archive.zip").is_file() and (root / "ml-100k" / "u.data").is_file()


# ---- half-extracted release folders ----------------------------------------------------------------------

U_DATA = b"1\t10\t5\t100\n1\t11\t3\t90\n2\t10\t4\t50\n"
U_ITEM = (
    "10|A (1990)|||u|" + "|".join(["0"] * 19) + "\n11|B (1991)|||u|" + "|".join(["0"] * 19) + "\n"
).encode()


def local_ml100k(tmp_path: Path) -> type[MovieLens100K]:
    """MovieLens100K whose official archive is a tiny zip served from a file:// URL."""
    zip_path = _zip(
        tmp_path / "ml-100k.zip", {"ml-100k/u.data": U_DATA, "ml-100k/u.item": U_ITEM, "ml-100k/README": b"r"}
    )

    @dataclass
    class LocalML100K(MovieLens100K):
        archive: ClassVar[RemoteFile] = remote_for(zip_path)
        pinned_files: ClassVar[dict[str, str]] = {}

    return LocalML100K


def hidden(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith("."))


def test_half_extracted_folder_is_completed_from_the_archive(tmp_path: Path) -> None:
    source = local_ml100k(tmp_path)
    root = tmp_path / "root"
    (root / "ml-100k").mkdir(parents=True)
    (root / "ml-100k" / "u.item").write_bytes(U_ITEM)  # an extraction killed before u.data
    (root / "ml-100k" / "notes.txt").write_text("mine")  # a file of the user's: left alone
    data = read_canonical(source(verify_statistics=False).prepare(root))
    assert data.item_ids.tolist() == [11, 10, 10]
    assert (root / "ml-100k" / "u.data").read_bytes() == U_DATA
    assert (root / "ml-100k" / "README").read_bytes() == b"r"
    assert (root / "ml-100k" / "notes.txt").read_text() == "mine"
    assert hidden(root) == []  # no temporary extraction folder left behind


def test_truncated_copy_is_re_extracted_and_modified_copy_is_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = local_ml100k(tmp_path)
    root = tmp_path / "root"
    source(verify_statistics=False).prepare(root)  # downloads and extracts
    ratings = root / "ml-100k" / "u.data"
    ratings.write_bytes(U_DATA[:15])  # interrupted write: a strict prefix of the archive's member
    cache = tmp_path / "c1"
    with caplog.at_level("WARNING"):
        data = read_canonical(source(verify_statistics=False, cache_dir=str(cache)).prepare(root))
    assert ratings.read_bytes() == U_DATA and data.item_ids.tolist() == [11, 10, 10]
    assert "u.data is a truncated copy" in caplog.text and "archive.zip" in caplog.text
    ratings.write_bytes(b"2\t11\t4\t70\n")  # not a prefix of the member: someone's own edit, used as is
    data = read_canonical(source(verify_statistics=False, cache_dir=str(tmp_path / "c2")).prepare(root))
    assert ratings.read_bytes() == b"2\t11\t4\t70\n" and data.item_ids.tolist() == [11]


def test_repair_refuses_a_corrupt_archive(tmp_path: Path) -> None:
    source = local_ml100k(tmp_path)
    root = tmp_path / "root"
    (root / "ml-100k").mkdir(parents=True)
    (root / "ml-100k" / "u.item").write_bytes(U_ITEM)
    (root / "downloads").mkdir()
    (root / "downloads" / "archive.zip").write_bytes(b"PK\x03\x04 not the archive")
    with pytest.raises(ValueError, match=r"checksum mismatch for .*archive\.zip"):
        source(verify_statistics=False).prepare(root)
    assert not (root / "ml-100k" / "u.data").exists()


def test_extraction_merges_into_an_existing_folder(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "a.zip", {"ml/u.data": b"new", "ml/u.item": b"item", "ml/sub/x": b"y"})
    out = tmp_path / "out"
    (out / "ml").mkdir(parents=True)
    (out / "ml" / "u.data").write_bytes(b"old")
    assert safe_extract_zip(archive, out) == ["ml/sub", "ml/u.item"]
    assert (out / "ml" / "u.data").read_bytes() == b"old"  # existing files are kept by default ...
    assert (out / "ml" / "sub" / "x").read_bytes() == b"y"
    assert safe_extract_zip(archive, out, overwrite=["ml/u.data"]) == ["ml/u.data"]
    assert (out / "ml" / "u.data").read_bytes() == b"new"  # ... unless named in overwrite
    assert hidden(out) == []


def test_stale_extraction_folders_of_dead_processes_are_removed(tmp_path: Path) -> None:
    import socket

    archive = _zip(tmp_path / "a.zip", {"ml/u.data": b"1"})
    out = tmp_path / "out"
    host = socket.gethostname()
    dead = out / f".a.zip.extract-{host}-999999999-abc123"
    alive = out / f".a.zip.extract-{host}-{os.getpid()}-abc123"
    other_host = out / ".a.zip.extract-elsewhere-1-abc123"
    for folder in (dead, alive, other_host):
        (folder / "ml").mkdir(parents=True)
    safe_extract_zip(archive, out)
    assert not dead.exists() and alive.exists() and other_host.exists()
