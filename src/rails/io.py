"""The one atomic write of rails: a file or a folder appears whole under its final name, or not at all.

- :func:`atomic_write`: the content goes to a temporary file in the destination's folder (named
  ``.<name>.tmp-<random><suffix>``), is flushed and fsynced, optionally checked, then renamed over the
  destination with ``os.replace``; the folder is fsynced so the rename itself survives a crash. A failure
  at any point removes the temporary file and leaves the previous destination untouched.
- :func:`atomic_directory`: a context manager yielding a temporary sibling folder
  (``.<name>.tmp-<random>``) that is renamed into place when the block ends without an exception and
  removed when it raises.

Every place that writes run output, checkpoints or prepared data goes through these two.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

TMP_MARKER = ".tmp-"

Content = bytes | str | Callable[[BinaryIO], None]


def temporary_prefix(final: str | os.PathLike[str]) -> str:
    """Name prefix of the temporary file or folder that becomes ``final``: ``.<name>.tmp-``."""
    return f".{Path(final).name}{TMP_MARKER}"


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Persist the entries of ``directory`` (a rename into it); a no-op where folders cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(
    path: str | os.PathLike[str],
    content: Content,
    *,
    suffix: str = "",
    check: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``content`` to ``path`` atomically (see the module docstring); the parent folder is created.

    Args:
        path: destination file.
        content: bytes, text (UTF-8) or a function that writes into the open binary temporary file.
        suffix: ending of the temporary file's name (e.g. ``.part`` for downloads).
        check: called with the complete, fsynced temporary file before the rename; an exception it raises
            removes the temporary file and propagates (the destination is not touched).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=temporary_prefix(path), suffix=suffix, dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            if callable(content):
                content(handle)
            else:
                handle.write(content.encode() if isinstance(content, str) else content)
            handle.flush()
            os.fsync(handle.fileno())
        if check is not None:
            check(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
    return path


@contextlib.contextmanager
def atomic_directory(
    final: str | os.PathLike[str],
    *,
    keep_existing: Callable[[Path], bool] | None = None,
    replace: bool = True,
) -> Iterator[Path]:
    """Yield a temporary sibling folder of ``final``; when the block succeeds it is renamed to ``final``.

    Args:
        final: the folder to create.
        keep_existing: called when the block has succeeded; if it says ``final`` already holds a complete
            result (another process finished the same work first), the temporary folder is discarded and
            theirs is kept.
        replace: remove an existing ``final`` before the rename; with False the rename fails (``OSError``)
            when ``final`` exists and is not empty.

    Raises:
        Whatever the block raises, after the temporary folder is removed.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=temporary_prefix(final), dir=final.parent))
    try:
        yield tmp
        if keep_existing is not None and keep_existing(final):
            shutil.rmtree(tmp)
            return
        if replace and final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_directory(final.parent)


def write_marked_section(
    path: str | os.PathLike[str], start: str, end: str, body: str, name: str = "generated block"
) -> None:
    """Replace the generated block between the ``start`` and ``end`` marker lines of a text file with ``body``.

    The block (markers included) is appended when the file has neither marker (or does not exist); the file is
    rewritten with :func:`atomic_write`, so a generated section of a document is never half-written.

    Args:
        path: the text file.
        start: the start marker line.
        end: the end marker line.
        body: the new block content (without markers).
        name: what the block is, for error messages.

    Raises:
        ValueError: naming the file when only one marker, or the end before the start, is present.
    """
    path = Path(path)
    old = path.read_text() if path.is_file() else ""
    block = f"{start}\n{body.rstrip()}\n{end}"
    has_start, has_end = start in old, end in old
    if has_start != has_end:
        raise ValueError(f"{path}: has the {'start' if has_start else 'end'} marker of the {name} only")
    if has_start:
        head, rest = old.split(start, 1)
        if end not in rest:
            raise ValueError(f"{path}: the {name}'s end marker comes before its start marker")
        new = head + block + rest.split(end, 1)[1]
    else:
        new = old.rstrip("\n") + ("\n\n" if old else "") + block + "\n"
    atomic_write(path, new)
