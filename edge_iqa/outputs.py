"""Writing outputs so that nothing is lost: writability checks up front, atomic replacement.

- ``ensure_writable_file`` / ``ensure_writable_dir``: called at the top of a command, before
  any work, so a bad ``--out`` costs one line and no wasted hours. The check really creates
  (and removes) a probe file in the nearest existing folder, since permission bits say nothing
  for root, a read-only mount or an immutable folder.
- ``atomic_path`` / ``atomic_write``: a file (or folder, e.g. a CoreML ``.mlpackage``) is
  written under a temporary name in its own folder, flushed to disk and moved over the target
  with ``os.replace``, so a kill or a failed write leaves the old artifact or the new one,
  never half of one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Callable, Iterator, Sequence

from edge_iqa.errors import EdgeIQAError


def ensure_writable_file(path: str | Path, option: str = "--out") -> Path:
    """Raise ``EdgeIQAError`` unless a file can be written at ``path`` (its folder may not exist yet)."""
    path = Path(path)
    if path.is_dir():
        _refuse(path, "it is a folder", option)
    _probe(path, path.parent, option)
    return path


def ensure_writable_dir(path: str | Path, option: str = "--out") -> Path:
    """Raise ``EdgeIQAError`` unless files can be written in the folder ``path`` (created later if missing)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        _refuse(path, "it is a file, not a folder", option)
    _probe(path, path, option)
    return path


def _probe(path: Path, folder: Path, option: str) -> None:
    """Create and remove a file in ``folder``, or in its nearest existing ancestor when missing."""
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        _refuse(path, f"{existing} is a file, not a folder", option)
    try:
        handle, probe = tempfile.mkstemp(prefix=".edge-iqa-probe-", dir=existing)
    except OSError as err:
        _refuse(path, f"{existing}: {err.strerror or err}", option)
    os.close(handle)
    os.unlink(probe)


def _refuse(path: Path, reason: str, option: str) -> None:
    raise EdgeIQAError(f"{path}: cannot write here ({reason}); choose another {option}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; when the block succeeds, move it over ``path``.

    The caller writes a file or a folder at the yielded path. A file is fsynced and replaces
    ``path`` in one ``os.replace``. A folder cannot replace a non-empty folder in one step: the
    old one is first moved aside, so at every moment one complete version exists on disk. If
    the block raises, the temporary is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "tmp")
    _remove(tmp)
    try:
        yield tmp
        if tmp.is_dir():
            _replace_dir(tmp, path)
        else:
            _fsync_file(tmp)
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        _remove(tmp)


def atomic_write(path: str | Path, write: Callable[[IO], object], *, binary: bool = False) -> Path:
    """Call ``write(handle)`` on a temporary file and atomically replace ``path`` with it."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") if binary else open(tmp, "w", newline="", encoding="utf-8") as handle:
            write(handle)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda handle: handle.write(text))


def _replace_dir(tmp: Path, path: Path) -> None:
    if not path.exists():
        os.replace(tmp, path)
        return
    old = _sibling(path, "old")
    _remove(old)
    os.replace(path, old)
    os.replace(tmp, path)
    _remove(old)


def _sibling(path: Path, tag: str) -> Path:
    """A hidden name in the same folder that keeps the suffix last (coremltools insists on it)."""
    return path.with_name(f".{path.stem}.{tag}-{os.getpid()}{path.suffix}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable; some filesystems cannot open a folder for fsync."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# Row files that survive a kill


def partial_path(path: str | Path) -> Path:
    """Where rows go while a run is in progress: ``OUT.partial`` next to ``OUT``."""
    path = Path(path)
    return path.with_name(path.name + ".partial")


def refuse_to_clobber(path: str | Path, *, resume: bool, overwrite: bool) -> None:
    """Without ``--resume`` or ``--overwrite``, an existing ``OUT`` or an unfinished ``OUT.partial`` stays."""
    if resume and overwrite:
        raise EdgeIQAError("--resume and --overwrite contradict each other; pass one of them")
    if resume or overwrite:
        return
    path = Path(path)
    if path.is_file() and path.stat().st_size:
        raise EdgeIQAError(f"{path}: already exists; pass --resume to continue it or --overwrite to replace it")
    partial = partial_path(path)
    if partial.is_file() and partial.stat().st_size:
        raise EdgeIQAError(f"{partial}: rows of an unfinished run; pass --resume to continue it or --overwrite "
                           "to start over")


def read_rows(path: str | Path, columns: tuple[str, ...]) -> list[list[str]]:
    """The complete rows of a CSV with header ``columns``; a last line cut off by a kill is dropped."""
    import csv

    path = Path(path)
    if not path.is_file():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise EdgeIQAError(f"{path}: cannot read it to resume ({err}); pass --overwrite to start over") from None
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # the row being written when the run was killed
    rows = list(csv.reader(text.splitlines(keepends=True)))
    if not rows:
        return []
    if tuple(rows[0]) != columns:
        raise EdgeIQAError(f"{path}: its header is not {','.join(columns)}, so it was not written by this "
                           "command; pass --overwrite to replace it or choose another --out")
    return [row for row in rows[1:] if len(row) == len(columns)]


class RowWriter:
    """Append rows to ``OUT.partial``, flushed one by one; ``finish`` then writes ``OUT`` atomically.

    The partial file starts with the header and ``kept`` rows (those of an earlier run), so it
    alone always holds every row done so far.
    """

    def __init__(self, path: str | Path, columns: tuple[str, ...], kept: Sequence[list[str]] = ()):
        import csv

        self.path = Path(path)
        self.partial = partial_path(self.path)
        self.columns = columns
        atomic_write(self.partial, lambda handle: _write_csv(handle, columns, kept))
        self._handle = open(self.partial, "a", newline="", encoding="utf-8")
        self._csv = csv.writer(self._handle, lineterminator="\n")

    def write(self, row: list[str]) -> None:
        self._csv.writerow(row)
        self._handle.flush()

    def finish(self, rows: list[list[str]]) -> Path:
        """Write the finished file (``rows``, in their final order) and drop the partial one."""
        self.close()
        atomic_write(self.path, lambda handle: _write_csv(handle, self.columns, rows))
        self.partial.unlink()
        return self.path

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.close()


def _write_csv(handle: IO, columns: tuple[str, ...], rows) -> None:
    import csv

    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
