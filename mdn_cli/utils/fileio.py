"""Atomic file output: everything is written to a temporary name beside the target and renamed."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Mapping

from mdn_cli.utils.errors import MdnError
from mdn_cli.utils.interrupts import raise_pending

TMP_SUFFIX = ".tmp"
LOCK_NAME = ".lock"  # held by `directory_lock` while a process writes a run directory


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "", directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``target`` (an empty folder with ``directory``); rename it onto ``target`` only on success.

    The temporary name carries the writer's pid (``.NAME.<pid>-XXXX.tmp``): one left by a killed
    writer (kill -9, a power cut) is removed by the next write of the same target.
    """
    target = Path(target)
    parent = target.parent if str(target.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(target)
        make = tempfile.mkdtemp if directory else tempfile.mkstemp
        made = make(prefix=f".{target.name}.{os.getpid()}-", suffix=suffix + TMP_SUFFIX, dir=parent)
        tmp = made if directory else made[1]
        if not directory:
            os.close(made[0])
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, (0o777 if directory else 0o666) & ~umask)  # mkstemp makes 0600; give the file the usual permissions
    except OSError as exc:
        raise _cannot_write(target, exc) from None
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        raise_pending()  # a Ctrl-C swallowed by a destructor during the write: no rename
        os.replace(tmp_path, target)
    finally:
        _remove(tmp_path)


def atomic_link(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Make ``target`` the same file as ``source`` atomically, without reading it: a hard link under a
    temporary name, renamed onto ``target``; a copy where the filesystem has no hard links.

    Both names then share one file until either is replaced, which every writer here does by rename,
    never in place.
    """
    with atomic_path(target) as tmp:
        tmp.unlink()  # os.link makes the name; the temporary's own name stays reserved by its pid and random part
        try:
            os.link(source, tmp)
        except OSError:  # no hard links here (some network and FUSE filesystems)
            shutil.copyfile(source, tmp)


def _cannot_write(target: Path, exc: OSError, hint: str = "choose a writable output path.") -> MdnError:
    return MdnError(f"cannot write here ({exc.strerror}).", where=str(target), hint=hint)


SPARE_SUFFIX = ".spare"


@contextlib.contextmanager
def recycled_file(target: str | os.PathLike) -> Iterator[BinaryIO]:
    """``atomic_path`` for a file replaced again and again (a run's ``last.pt``), as an open binary file.

    The content is written over the file that the previous replacement displaced, kept under
    ``.NAME.spare`` while no other name holds it, then renamed onto ``target``; the file displaced
    now becomes the next spare. Overwriting a file's cached pages costs a tenth of filling a new
    file's (benchmarks/README.md). ``target`` is still only ever replaced by rename, so an
    interrupted write leaves it whole, and a spare that another name holds (``best.pt``, a backup's
    hard link) is never written: a new file is. ``discard_spare`` gives the space back.
    """
    target = Path(target)
    spare, displaced = _sibling(target, SPARE_SUFFIX), _sibling(target, ".displaced")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        reusable = spare.is_file() and not spare.is_symlink() and spare.stat().st_nlink == 1
        if not reusable:
            _remove(spare)
        file = open(spare, "r+b" if reusable else "xb")
    except OSError as exc:
        raise _cannot_write(target, exc) from None
    with file:
        yield file
        file.truncate()  # at the end of what was written: a spare may have been longer
    raise_pending()  # a Ctrl-C swallowed by a destructor during the write: no rename
    _remove(displaced)
    try:
        os.link(target, displaced)  # the file target names now, kept past the rename as the next spare
    except OSError:  # no target yet, or no hard links here: it is deleted by the rename, as atomic_path's would be
        pass
    os.replace(spare, target)
    if displaced.exists():
        os.replace(displaced, spare)


def discard_spare(target: str | os.PathLike) -> None:
    """Remove ``recycled_file``'s spare of ``target`` (when the writing is over)."""
    _remove(_sibling(Path(target), SPARE_SUFFIX))


def _sibling(target: Path, suffix: str) -> Path:
    return target.with_name(f".{target.name}{suffix}")


def remove_stale_temporaries(target: str | os.PathLike) -> None:
    """Remove the temporaries of ``target`` whose writing process is gone (a writer's own, and a running one's, stay)."""
    target = Path(target)
    parent = target.parent if str(target.parent) else Path(".")
    for candidate in parent.glob(f".{glob.escape(target.name)}.*{TMP_SUFFIX}"):
        pid = candidate.name[len(target.name) + 2 :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            _remove(candidate)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # no signal sent: only whether the process exists (PermissionError: another user's, alive)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def read_json(path: str | os.PathLike, hint: str):
    """Parse a JSON file; a missing or malformed file is an MdnError carrying ``hint``."""
    import json

    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise MdnError("file not found.", where=str(path), hint=hint) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MdnError(f"not valid JSON ({exc}).", where=str(path), hint=hint) from None


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file (links and ``..`` resolved; hard links when both exist)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def check_outputs(outputs: Mapping[str, str | os.PathLike | None], inputs: Mapping[str, str | os.PathLike | None] | None = None, *,
                  replace: bool = True, owned: Mapping[str, Iterable[str | os.PathLike]] | None = None) -> None:
    """Refuse outputs that would destroy data, before anything is computed: the one home of these checks.

    ``outputs`` and ``inputs`` map an option's name (``-o``, ``TABLE``) to its path (None, or '-'
    for a standard stream, is skipped). An output may not be an input, another output, or one of
    the files ``owned`` lists (a run's checkpoints and data, by owner). With ``replace`` false an
    existing file is refused too (the commands whose outputs are costly to remake: --force).
    """
    given = {name: Path(path) for name, path in outputs.items() if path is not None and str(path) != "-"}
    sources = {name: Path(path) for name, path in (inputs or {}).items() if path is not None and str(path) != "-"}
    for i, (name, path) in enumerate(given.items()):
        if path.is_dir():
            raise MdnError("is a directory; expected the path of a file to write.", where=f"{name} {path}", hint="add a file name.")
        for source_name, source in sources.items():
            if same_file(path, source):
                raise MdnError(f"is also {source_name}, an input of this command: writing it would destroy the input.", where=f"{name} {path}",
                               hint="write to another path.")
        for other_name, other in list(given.items())[:i]:
            if same_file(path, other):
                raise MdnError(f"is also {other_name}: one output would overwrite the other.", where=f"{name} {path}", hint="give each output its own path.")
        for owner, files in (owned or {}).items():
            if any(same_file(path, file) for file in files):
                raise MdnError(f"is one of the files of {owner}: writing it would destroy it.", where=f"{name} {path}", hint="write to another path.")
        if not replace and path.exists():
            raise MdnError("exists.", where=f"{name} {path}", hint="add --force to replace it, or choose another path.")


@contextlib.contextmanager
def directory_lock(folder: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold ``folder`` for this process alone (``flock`` on ``folder/.lock``, released by the kernel even on kill -9).

    A second process gets an MdnError naming the folder and the holder's pid; ``what`` says what
    the holder is doing. The lock file goes when the block ends, and so does a folder this call
    made that is empty then (a run that failed before writing anything).
    """
    import fcntl

    folder = Path(folder)
    created = not folder.exists()
    lock_path = folder / LOCK_NAME
    while True:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise _cannot_write(folder, exc, "choose a writable output directory.") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise MdnError(f"another process{f' (pid {holder})' if holder.isdigit() else ''} is {what} in this directory.", where=str(folder),
                           hint="wait for it to finish, or choose another output directory.") from None
        try:
            if os.stat(lock_path).st_ino == os.fstat(fd).st_ino:
                break  # locked the file that is there: not one its last holder removed as we opened it
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            lock_path.unlink()  # while still held: a process that opened it meanwhile sees it gone and tries again
            if created:
                folder.rmdir()  # only when empty
        os.close(fd)

