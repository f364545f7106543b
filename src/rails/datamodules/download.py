"""Official download locations, pinned checksums, atomic downloads and safe zip extraction.

Every remote file is a :class:`RemoteFile` with the checksums we could establish from public records:

- MovieLens archives (``files.grouplens.org``): the MD5 GroupLens publishes next to each archive
  (``<archive>.md5``) and the SHA-256 + byte size recorded by TensorFlow Datasets' checksum registry for
  the same URLs. Both are verified.
- Amazon Books ``ratings_Books.csv`` (SNAP): no published checksum could be established, so none is
  pinned; the loader verifies the file's published statistics instead (22,507,155 ratings before filtering,
  695,762 items after the paper's filter), see :mod:`rails.datamodules.amazon`.

Nothing here is called against the network in tests; downloads go through :func:`fetch`, which writes to a
temporary sibling file and renames it into place only after the checksums pass. Archives are extracted by
:func:`safe_extract_zip` into a temporary folder whose entries are renamed into place, so a killed extraction
never leaves a half-written release folder behind; one left by other tools is completed from the archive
(missing files are added, :func:`is_truncated_copy` finds a file whose write was interrupted).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import stat
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from rails.io import atomic_write

log = logging.getLogger(__name__)

CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """A downloadable file and what it must hash to.

    Attributes:
        url: official download URL.
        filename: name to store it under.
        sha256: pinned SHA-256 hex digest, or None when none could be established.
        md5: pinned MD5 hex digest (as published by the provider), or None.
        size: expected size in bytes, or None.
    """

    url: str
    filename: str
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None


GROUPLENS = "https://files.grouplens.org/datasets/movielens"


def _grouplens_zip(name: str, sha256: str, md5: str, size: int) -> RemoteFile:
    """The GroupLens archive ``{name}.zip`` with its pinned digests and size."""
    return RemoteFile(
        url=f"{GROUPLENS}/{name}.zip", filename=f"{name}.zip", sha256=sha256, md5=md5, size=size
    )


ML_100K_ZIP = _grouplens_zip(
    "ml-100k",
    sha256="50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
    md5="0e33842e24a9c977be4e0107933c0723",
    size=4924029,
)
ML_1M_ZIP = _grouplens_zip(
    "ml-1m",
    sha256="a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
    md5="c4d9eecfca2ab87c1945afe126590906",
    size=5917549,
)
ML_20M_ZIP = _grouplens_zip(
    "ml-20m",
    sha256="96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3",
    md5="cd245b17a1ae2cc31bb14903e1204af3",
    size=198702078,
)
AMAZON_BOOKS_CSV = RemoteFile(
    url="http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/ratings_Books.csv",
    filename="ratings_Books.csv",
    # No published checksum could be established for this file: its statistics are verified instead.
)

# SHA-256 of individual extracted files that we can pin independently of the archive.
ML_100K_U_DATA_SHA256 = "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490"


class DownloadError(RuntimeError):
    """A file could not be downloaded; the message says where to place it by hand."""


def file_digests(path: str | os.PathLike[str]) -> tuple[str, str, int]:
    """Return (sha256, md5, size in bytes) of a file, read in 1 MiB chunks."""
    sha, md5, size = hashlib.sha256(), hashlib.md5(), 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            sha.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    return sha.hexdigest(), md5.hexdigest(), size


def verify_file(path: str | os.PathLike[str], remote: RemoteFile) -> None:
    """Raise ValueError naming the file and both digests when ``path`` does not match ``remote``."""
    sha, md5, size = file_digests(path)
    problems = []
    if remote.size is not None and size != remote.size:
        problems.append(f"size {size} bytes, expected {remote.size}")
    if remote.sha256 is not None and sha != remote.sha256:
        problems.append(f"sha256 {sha}, expected {remote.sha256}")
    if remote.md5 is not None and md5 != remote.md5:
        problems.append(f"md5 {md5}, expected {remote.md5}")
    if problems:
        raise ValueError(
            f"checksum mismatch for {path} (from {remote.url}): {'; '.join(problems)}. The file is corrupt, "
            "truncated or not the official release: delete it and download it again."
        )


def fetch(remote: RemoteFile, directory: str | os.PathLike[str], allow_download: bool = True) -> Path:
    """Return ``directory/remote.filename``, downloading and verifying it first when absent.

    An existing file is verified too (a mismatch raises rather than silently re-downloading). The download
    streams into a temporary sibling ``.part`` file that is renamed into place only after verification
    (:func:`rails.io.atomic_write`); a failed or mismatching download leaves nothing behind.

    Raises:
        DownloadError: the file is absent and could not be downloaded (or downloads are disabled); the
            message names the URL and the exact path to place the file at.
        ValueError: checksum mismatch.
    """
    directory = Path(directory)
    target = directory / remote.filename
    if target.is_file():
        verify_file(target, remote)
        return target
    manual = (
        f"Download {remote.url} on a machine with internet access and place it at {target}"
        + (f" (sha256 {remote.sha256})" if remote.sha256 else "")
        + ", or point the dataset source's raw_dir at an already-extracted copy."
    )
    if not allow_download:
        raise DownloadError(f"{target} is missing and downloads are disabled (download=false). {manual}")
    log.info("downloading %s -> %s", remote.url, target)

    def download(out: BinaryIO) -> None:
        try:
            with urllib.request.urlopen(remote.url, timeout=60) as response:
                shutil.copyfileobj(response, out, CHUNK)
        except (urllib.error.URLError, OSError) as err:
            raise DownloadError(f"could not download {remote.url}: {err}. {manual}") from err

    return atomic_write(target, download, suffix=".part", check=lambda partial: verify_file(partial, remote))


def _unsafe_member(info: zipfile.ZipInfo) -> str | None:
    """Why a zip member must not be extracted, or None when it is safe."""
    name = info.filename
    if "\x00" in name:
        return "contains a NUL byte"
    normalized = name.replace("\\", "/")
    if normalized.startswith("/") or (len(normalized) > 1 and normalized[1] == ":"):
        return "is an absolute path"
    if ".." in PurePosixPath(normalized).parts:
        return "contains a '..' component"
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "is a symbolic link"
    return None


def is_truncated_copy(archive: str | os.PathLike[str], member: str, path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` holds a strict prefix of ``member`` of ``archive``: an interrupted extraction.

    A file of the archive's size or larger, or one that differs from the member within its length (an
    edited copy), is not truncated. An unreadable archive or an absent member gives False (cannot tell).
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(archive) as zf:
            info = zf.getinfo(member)
            remaining = path.stat().st_size
            if remaining >= info.file_size:
                return False
            with zf.open(info) as packed, open(path, "rb") as copy:
                while remaining:
                    chunk = copy.read(min(CHUNK, remaining))
                    if not chunk or packed.read(len(chunk)) != chunk:
                        return False
                    remaining -= len(chunk)
    except (KeyError, OSError, EOFError, zipfile.BadZipFile, zlib.error):
        return False
    return True


def _extraction_prefix(archive: Path) -> str:
    return f".{archive.name}.extract-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # another user's process, or not a pid: leave its folder alone
        return True
    return True


def remove_stale_extractions(archive: Path, destination: Path) -> list[Path]:
    """Delete temporary extraction folders of ``archive`` left in ``destination`` by killed processes.

    The folders are named ``.<archive>.extract-<host>-<pid>-<random>``; only those of this host whose
    process no longer runs are removed (a live extraction, or one on another host, is left alone).
    """
    prefix, host, removed = _extraction_prefix(archive), socket.gethostname(), []
    if not destination.is_dir():
        return removed
    for entry in destination.iterdir():
        if not entry.name.startswith(prefix):
            continue
        parts = entry.name[len(prefix) :].rsplit("-", 2)  # host, pid, random part (no "-" in it)
        if len(parts) == 3 and parts[0] == host and parts[1].isdigit() and not _pid_alive(int(parts[1])):
            log.info("removing %s, left by an interrupted extraction", entry)
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _merge(source: Path, target: Path, overwrite: Collection[str], prefix: str = "") -> list[str]:
    """Rename the entries of ``source`` into ``target``: absent ones, and files listed in ``overwrite``.

    Returns:
        The archive paths (``prefix`` + name, ``/``-separated) of the entries placed, in sorted order.
    """
    placed = []
    for entry in sorted(source.iterdir()):
        name, dest = prefix + entry.name, target / entry.name
        if not dest.exists() and not dest.is_symlink():
            try:
                os.replace(entry, dest)
            except OSError:
                if not dest.exists():  # not a concurrent extraction that got there first
                    raise
                continue
            placed.append(name)
        elif entry.is_dir() and dest.is_dir() and not dest.is_symlink():
            placed += _merge(entry, dest, overwrite, name + "/")
        elif name in overwrite and entry.is_file() and dest.is_file():
            os.replace(entry, dest)
            placed.append(name)
    return placed


def safe_extract_zip(
    archive: str | os.PathLike[str], destination: str | os.PathLike[str], overwrite: Collection[str] = ()
) -> list[str]:
    """Extract ``archive`` into ``destination`` through a temporary folder, refusing unsafe members.

    Every member is checked before anything is written (absolute paths, drive letters, ``..`` components,
    symbolic links are rejected). Extraction goes to a temporary sibling folder whose entries are then
    renamed into ``destination``: an absent entry is moved in whole (one atomic rename for a release
    folder), an existing folder is completed file by file, an existing file is kept unless its archive path
    is listed in ``overwrite`` (then atomically replaced). Temporary folders left by killed extractions of
    the same archive are removed first (:func:`remove_stale_extractions`).

    Args:
        archive: the zip file.
        destination: folder to extract into (created if needed).
        overwrite: archive paths (``"ml-1m/ratings.dat"``) of files to replace when they exist.

    Returns:
        The archive paths of the entries placed (a moved folder is one entry), sorted.

    Raises:
        ValueError: the archive is not a valid zip file or holds an unsafe member (named in the message).
    """
    archive, destination = Path(archive), Path(destination)
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                reason = _unsafe_member(info)
                if reason is not None:
                    raise ValueError(f"{archive}: refusing to extract member {info.filename!r}: it {reason}")
            destination.mkdir(parents=True, exist_ok=True)
            remove_stale_extractions(archive, destination)
            owner = f"{_extraction_prefix(archive)}{socket.gethostname()}-{os.getpid()}-"
            tmp = Path(tempfile.mkdtemp(prefix=owner, dir=destination))
            try:
                zf.extractall(tmp)
                return _merge(tmp, destination, set(overwrite))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except zipfile.BadZipFile as err:
        raise ValueError(
            f"{archive} is not a valid zip archive ({err}); delete it and download it again"
        ) from err
