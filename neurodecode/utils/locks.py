"""One writer per output: folders and files claimed with the ``filelock`` package.

Every command that writes a folder (a run folder, an ablation / adaptation /
reconstruction folder, a simulated dataset, an embedding-cache entry) holds an
exclusive :class:`filelock.FileLock` on a lock file for as long as it writes.
The operating system releases such a lock when its process dies, even by
``SIGKILL``, so a lock that *can* be taken proves that nobody is writing any
more: temporary files found under it are stale and are removed.

Lock files are removed again by their holder (unlink, then release). A process
that was waiting on the removed file notices it (the path no longer names the
file it locked) and retries on a fresh one, so removal never lets two holders in.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import Any

from ._logging import logger

#: Name of the lock file a command holds in the folder it writes.
LOCK_NAME = ".neurodecode.lock"
#: Temporary files of :func:`~neurodecode.utils.atomic_path` (``.<name>.<random>.tmp``).
_TMP_FILE = re.compile(r"^\..+\.tmp$")
#: Temporary folders of a checkpoint write / prune (:mod:`neurodecode.training.checkpoint`).
_TMP_DIRS = (".tmp-step-", ".old-step-")


class FolderInUseError(FileExistsError):
    """Another live process is writing the folder (it holds the folder's lock file)."""


def _same_file(lock: Any, path: Path) -> bool:
    """Whether ``path`` still names the file ``lock`` holds (its holder may have removed it)."""
    fd = getattr(getattr(lock, "_context", None), "lock_file_fd", None)
    try:
        here = os.stat(path)
        if fd is None:
            return True
        held = os.fstat(fd)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (held.st_dev, held.st_ino)


def acquire_lock(path: str | Path, *, wait: bool = True, what: str = "") -> Any:
    """Take the exclusive lock ``path`` (created if needed); ``None`` if busy and ``wait`` is False.

    Parameters
    ----------
    path : str | Path
        The lock file; its folder must exist.
    wait : bool
        Block until the lock is free (an INFO line says what is awaited), or
        return None at once when another process holds it.
    what : str
        What the holder does, for the waiting message (e.g. ``"simulating into data/nsd"``).

    Returns
    -------
    lock : filelock.FileLock | None
        The held lock; give it back with :func:`release_lock`.
    """
    from filelock import FileLock, Timeout

    path = Path(path)
    while True:
        lock = FileLock(str(path))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if not wait:
                return None
            logger.info("Waiting for another process %s (it holds %s)", what or "to finish", path)
            lock.acquire()
        if _same_file(lock, path):
            return lock
        lock.release()  # the previous holder removed the file we locked: lock a fresh one


def release_lock(lock: Any, path: str | Path, *, remove: bool = True) -> None:
    """Release ``lock`` taken on ``path``, removing the lock file first (while still held).

    Parameters
    ----------
    lock : filelock.FileLock
        A lock returned by :func:`acquire_lock`.
    path : str | Path
        The lock file it holds.
    remove : bool
        Remove the lock file before releasing the lock.
    """
    if remove:
        with suppress(OSError):
            os.unlink(path)
    lock.release()


@contextmanager
def hold_lock(path: str | Path, *, wait: bool = True, what: str = "", remove: bool = True) -> Iterator[None]:
    """Hold the lock ``path`` for the ``with`` block (see :func:`acquire_lock`).

    Parameters
    ----------
    path : str | Path
        The lock file; its folder must exist.
    wait : bool
        Block until the lock is free, or raise at once when another process holds it.
    what : str
        What the holder does, for the waiting and error messages.
    remove : bool
        Remove the lock file when the block ends.

    Yields
    ------
    None
        The lock is held while the ``with`` block runs and released when it ends.

    Raises
    ------
    FolderInUseError
        ``wait`` is False and another process holds the lock.
    """
    lock = acquire_lock(path, wait=wait, what=what)
    if lock is None:
        raise FolderInUseError(f"Another neurodecode process is {what or 'writing here'} (it holds {path}); "
                               "wait for it to finish, or pick another output.")
    try:
        yield
    finally:
        release_lock(lock, path, remove=remove)


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Remove temporary files of killed writers in ``folder`` (the caller holds its lock).

    Removes ``.<name>.<random>.tmp`` files and ``.tmp-step-*`` / ``.old-step-*``
    checkpoint folders, recursively. A sub-folder holding its own lock file
    belongs to another command: it is entered only when that lock can be taken
    (its writer is dead), never while its writer is alive.

    Parameters
    ----------
    folder : str | Path
        The folder to clean; the caller holds its lock.

    Returns
    -------
    removed : list of Path
        The files and folders removed.
    """
    removed: list[Path] = []
    _clean(Path(folder), removed)
    if removed:
        logger.info("Removed %d temporary file(s) left by a killed run in %s: %s", len(removed), folder,
                    ", ".join(str(p.relative_to(folder)) for p in removed[:5]) + (" ..." if len(removed) > 5
                                                                                   else ""))
    return removed


def _clean(folder: Path, removed: list[Path]) -> None:
    try:
        entries = list(folder.iterdir())
    except OSError:
        return
    for entry in entries:
        try:
            if entry.is_symlink():
                continue
            if entry.is_dir():
                if entry.name.startswith(_TMP_DIRS):
                    shutil.rmtree(entry, ignore_errors=True)
                    removed.append(entry)
                elif entry.name.startswith("."):
                    continue
                elif (entry / LOCK_NAME).exists():
                    lock = acquire_lock(entry / LOCK_NAME, wait=False)
                    if lock is not None:  # its writer is dead
                        try:
                            _clean(entry, removed)
                        finally:
                            release_lock(lock, entry / LOCK_NAME)
                else:
                    _clean(entry, removed)
            elif _TMP_FILE.match(entry.name):
                entry.unlink()
                removed.append(entry)
        except OSError as err:  # e.g. removed meanwhile, or no permission: not ours to fight over
            logger.debug("Could not inspect or remove %s: %s", entry, err)


def _has_files(folder: Path, ignore: Sequence[str] = ()) -> bool:
    """Whether ``folder`` holds a file other than its lock file and ``ignore`` (relative POSIX paths)."""
    for p in folder.rglob("*"):
        if p.is_dir() and not p.is_symlink():
            continue
        rel = p.relative_to(folder).as_posix()
        if rel != LOCK_NAME and rel not in ignore:
            return True
    return False


class FolderClaim:
    """Exclusive ownership of an output folder by this process (see :func:`claim_folder`).

    Use as a context manager: the folder is yielded; when the block raises
    and the folder holds nothing but its ``disposable`` files (and empty
    sub-folders), those are removed, and so is the folder itself if this
    claim created it; the lock is released in any case.

    Parameters
    ----------
    path : Path
        The claimed folder.
    lock : filelock.FileLock
        The held lock on ``path / LOCK_NAME``.
    created : list of Path
        The folders the claim created (``path`` and its missing parents, deepest first),
        removed again when the claim is given up empty.
    fresh : bool
        Whether the folder held no files when claimed (only then is it cleaned up on error).
    disposable : sequence of str
        Files (relative POSIX paths) not worth keeping alone (e.g. ``config.yaml``).
    what : str
        What the folder is, for messages.
    """

    def __init__(self, path: Path, lock: Any, *, created: list[Path], fresh: bool,
                 disposable: Sequence[str] = (), what: str = "output") -> None:
        self.path, self._lock, self._created = path, lock, created
        self.fresh, self.disposable, self.what = fresh, tuple(disposable), what
        self.removed = False

    def __repr__(self) -> str:
        return f"<FolderClaim | {self.path}{' (released)' if self._lock is None else ''}>"

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if exc_type is not None and self.fresh:
                self.remove_if_empty()
        finally:
            self.release()

    def remove_if_empty(self) -> bool:
        """Remove what this claim wrote when nothing worth keeping was written.

        The folder itself (and the parents the claim made) is removed too when this claim created it.

        Returns
        -------
        emptied : bool
            True when the folder was emptied; False when it holds other files, is gone, or the
            claim was already released.
        """
        if self._lock is None or not self.path.is_dir():
            return False
        if _has_files(self.path, self.disposable + tuple(_tmp_names(self.path))):
            return False
        for rel in (*self.disposable, *_tmp_names(self.path)):
            with suppress(OSError):
                (self.path / rel).unlink()
        for d in sorted((p for p in self.path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with suppress(OSError):
                d.rmdir()
        if self.path in self._created:
            with suppress(OSError):
                os.unlink(self.path / LOCK_NAME)
            for d in self._created:  # the folder, then the parents this claim created
                try:
                    d.rmdir()
                except OSError:
                    break
            self.removed = not self.path.exists()
            if self.removed:
                logger.info("Removed the %s folder %s: the command failed before writing anything", self.what,
                            self.path)
        return True

    def release(self) -> None:
        """Give the folder up (its lock file is removed)."""
        if self._lock is not None:
            release_lock(self._lock, self.path / LOCK_NAME)
            self._lock = None


def _tmp_names(folder: Path) -> list[str]:
    return [p.relative_to(folder).as_posix() for p in folder.rglob(".*.tmp") if p.is_file()]


def _mkdirs(path: Path) -> list[Path]:
    """Create ``path`` and its missing parents; the folders created, deepest first."""
    missing = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    path.mkdir(parents=True, exist_ok=True)
    return missing


def claim_folder(base: str | Path, *, numbered: bool = False, allow_existing: bool = False,
                 disposable: Sequence[str] = (), what: str = "run") -> FolderClaim:
    """Claim a new output folder atomically: ``base`` (or, if ``numbered``, the first free ``base-<k>``).

    A folder is free when no live process holds its lock and it holds no files
    (stale temporaries of killed runs are removed first). With
    ``allow_existing`` a folder that holds files is taken too (``numbered``
    must then be False).

    Parameters
    ----------
    base : str | Path
        The folder wanted.
    numbered : bool
        Take ``base-1``, ``base-2``, ... when ``base`` is taken or in use.
    allow_existing : bool
        Write into ``base`` even when it holds files (an explicit output folder).
    disposable : sequence of str
        Files (relative POSIX paths) this command writes first that are not
        worth keeping alone (e.g. ``config.yaml``): a failed command that wrote
        nothing else leaves no folder behind.
    what : str
        What the folder is, for messages.

    Returns
    -------
    claim : FolderClaim

    Raises
    ------
    FolderInUseError
        ``base`` is being written by another live process (not ``numbered``).
    FileExistsError
        ``base`` already holds files (not ``numbered``, not ``allow_existing``).
    """
    base = Path(base)
    k, retries = 0, 0
    while True:
        path = base if k == 0 else base.with_name(f"{base.name}-{k}")
        try:
            created = _mkdirs(path)
            lock = acquire_lock(path / LOCK_NAME, wait=False)
        except FileNotFoundError:  # removed meanwhile by a failed command's clean-up: try it again
            retries += 1
            if retries > 20:
                raise
            continue
        except OSError:  # e.g. a read-only folder of someone else's run
            if not numbered:
                raise
            k += 1
            continue
        if lock is None:
            if not numbered:
                raise FolderInUseError(
                    f"The {what} folder {path} is being written by another neurodecode process (it holds "
                    f"{path / LOCK_NAME}); wait for it to finish or pick another folder.")
            k += 1
            continue
        remove_stale_temporaries(path)
        has_files = _has_files(path)
        if not has_files or allow_existing:
            return FolderClaim(path, lock, created=created, fresh=not has_files, disposable=disposable,
                               what=what)
        release_lock(lock, path / LOCK_NAME)
        if not numbered:
            raise FileExistsError(f"The {what} folder {path} already holds files; pick another folder or "
                                  "remove it (neurodecode never overwrites an earlier run).")
        k += 1


def lock_folder(path: str | Path, *, what: str = "run") -> FolderClaim:
    """Claim an existing folder (e.g. a run to resume); refused while another process writes it.

    Stale temporaries of killed writers in the folder are removed first.

    Parameters
    ----------
    path : str | Path
        The folder; it must exist.
    what : str
        What the folder is, for messages.

    Returns
    -------
    claim : FolderClaim
        The claim, holding the folder's lock.

    Raises
    ------
    FolderInUseError
        Another live process holds the folder.
    """
    path = Path(path)
    lock = acquire_lock(path / LOCK_NAME, wait=False)
    if lock is None:
        raise FolderInUseError(f"The {what} folder {path} is being written by another neurodecode process "
                               f"(it holds {path / LOCK_NAME}); wait for it to finish.")
    remove_stale_temporaries(path)
    return FolderClaim(path, lock, created=[], fresh=False, what=what)
