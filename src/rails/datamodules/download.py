"""Official download locations, pinned checksums, atomic downloads and safe zip extraction.

Every remote file is a :class:`RemoteFile` with the checksums we could establish from public records:

- MovieLens archives (``files.grouplens.org``): the MD5 GroupLens publishes next to each archive
  (``<archive>.md5``) and the SHA-256 + byte size recorded by TensorFlow Datasets' checksum registry for
  the same URLs. Both are verified.
- Amazon Books ``ratings_Books.csv`` (SNAP): no published checksum could be established, so none is
  pinned; the loader verifies the file's published statistics instead (22,507,155 ratings before filtering,
  695,762 items after the paper's filter), see :mod:`rails.datamodules.amazon`.

Nothing here is called against the network in tests; downloads go through :func:`fetch`, which writes to a
temporary sibling file and renames it into place only after the checksums pass.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

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

ML_100K_ZIP = RemoteFile(
    url=f"{GROUPLENS}/ml-100k.zip",
    filename="ml-100k.zip",
    sha256="50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
    md5="0e33842e24a9c977be4e0107933c0723",
    size=4924029,
)
ML_1M_ZIP = RemoteFile(
    url=f"{GROUPLENS}/ml-1m.zip",
    filename="ml-1m.zip",
    sha256="a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
    md5="c4d9eecfca2ab87c1945afe126590906",
    size=5917549,
)
ML_20M_ZIP = RemoteFile(
    url=f"{GROUPLENS}/ml-20m.zip",
    filename="ml-20m.zip",
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
    streams into a temporary sibling file that is renamed into place only after verification.

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
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{remote.filename}.", suffix=".part", dir=directory)
    tmp = Path(tmp_name)
    try:
        log.info("downloading %s -> %s", remote.url, target)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(remote.url, timeout=60) as response:
                shutil.copyfileobj(response, out, CHUNK)
        except (urllib.error.URLError, OSError) as err:
            raise DownloadError(f"could not download {remote.url}: {err}. {manual}") from err
        verify_file(tmp, remote)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


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


def safe_extract_zip(archive: str | os.PathLike[str], destination: str | os.PathLike[str]) -> Path:
    """Extract ``archive`` into ``destination`` atomically, refusing unsafe members.

    Every member is checked before anything is written (absolute paths, drive letters, ``..`` components,
    symbolic links are rejected). Extraction goes to a temporary sibling directory whose top-level entries
    are then renamed into ``destination``; an entry that already exists there is left untouched.

    Returns:
        ``destination``.

    Raises:
        ValueError: the archive is not a valid zip file or holds an unsafe member (named in the message).
    """
    archive, destination = Path(archive), Path(destination)
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            for info in members:
                reason = _unsafe_member(info)
                if reason is not None:
                    raise ValueError(f"{archive}: refusing to extract member {info.filename!r}: it {reason}")
            destination.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{archive.name}.extract-", dir=destination))
            try:
                zf.extractall(tmp)
                for entry in sorted(tmp.iterdir()):
                    if not (destination / entry.name).exists():
                        os.replace(entry, destination / entry.name)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except zipfile.BadZipFile as err:
        raise ValueError(
            f"{archive} is not a valid zip archive ({err}); delete it and download it again"
        ) from err
    return destination
