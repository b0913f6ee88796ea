"""numba's compile cache, placed where it can be written: ``CACHE`` is the ``cache=`` of every kernel.

numba caches beside the source (``__pycache__``) or, when the package is read-only (a system or
container install), in the user's cache folder. With both read-only (a cluster's shared install
and an unwritable ``$HOME``) it fails at import with "no locator available". Then the cache goes
to the temporary folder, and if even that cannot be written the kernels compile on each run.
A ``NUMBA_CACHE_DIR`` the user set is left as it is.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numba
from numba.misc.appdirs import AppDirs


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
        return True
    except OSError:
        return False


def choose_cache(package: Path, user: Path, temporary: Path) -> tuple[bool, Path | None]:
    """(whether to cache, a folder to give numba or None to leave numba's own choice)."""
    if numba.config.CACHE_DIR or _writable(package) or _writable(user):
        return True, None
    if _writable(temporary):
        return True, temporary
    return False, None


CACHE, _folder = choose_cache(Path(__file__).parent / "__pycache__", Path(AppDirs(appname="numba", appauthor=False).user_cache_dir),
                              Path(tempfile.gettempdir()) / f"mdn-numba-{os.getuid()}")
if _folder is not None:
    numba.config.CACHE_DIR = str(_folder)
