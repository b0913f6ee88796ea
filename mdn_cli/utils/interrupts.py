"""Ctrl-C and SIGTERM as exceptions that always end the command, and blocks that hold them.

Python raises ``KeyboardInterrupt`` wherever the main thread happens to be. When that is a
destructor (h5py closing an object, a DataLoader iterator shutting down), Python prints
"Exception ignored in ..." and goes on: the command would run to its end and exit 0. So the
handlers here also remember the signal, and ``raise_pending`` (called before an output is
renamed into place and between batches) raises it again. SIGTERM becomes ``Terminated``, a
``KeyboardInterrupt`` that carries its signal, so every cleanup written for Ctrl-C also runs for
it and the command exits with ``128 + signal``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Terminated(KeyboardInterrupt):
    """The process was asked to stop by a signal other than Ctrl-C (SIGTERM from `kill`, a scheduler)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_code(exc: KeyboardInterrupt) -> int:
    """The shell's code for a command ended by a signal: 130 for Ctrl-C, 128 + the signal otherwise."""
    return 128 + (exc.signum if isinstance(exc, Terminated) else signal.SIGINT)


_state = {"received": [], "held": 0, "pid": None}


def _interrupt(signum: int) -> KeyboardInterrupt:
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)


def _handler(signum: int, _frame) -> None:
    if os.getpid() != _state["pid"]:  # a forked child (DataLoader worker): the signal's default action
        signal.signal(signum, signal.SIG_DFL if signum != signal.SIGINT else signal.default_int_handler)
        os.kill(os.getpid(), signum)
        return
    _state["received"].append(signum)
    if not _state["held"]:
        raise _interrupt(signum)


def _ours(handler) -> bool:
    return handler in (signal.default_int_handler, signal.SIG_DFL, _handler)


@contextlib.contextmanager
def signals_handled() -> Iterator[None]:
    """For the length of a command: SIGINT and SIGTERM raise (and are remembered, see the module).

    A signal the caller ignores or handles itself (``nohup``, an embedding program) is left alone.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    _state.update(received=[], held=0, pid=os.getpid())
    for signum, handler in previous.items():
        if _ours(handler):
            signal.signal(signum, _handler)
    hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None if isinstance(unraisable.exc_value, KeyboardInterrupt) else hook(unraisable)  # remembered: raised again
    try:
        yield
    finally:
        sys.unraisablehook = hook
        for signum, handler in previous.items():
            if _ours(handler):
                signal.signal(signum, handler)
        _state["received"] = []


def raise_pending() -> None:
    """Raise a signal received earlier whose exception a destructor swallowed (no-op when none was)."""
    if _state["received"] and _state["pid"] == os.getpid() and not _state["held"]:
        raise _interrupt(_state["received"][-1])


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block is done, so that files written together stay consistent.

    Re-entrant. Outside ``signals_handled`` (the library called directly) it handles SIGINT itself
    for the block, when SIGINT has Python's default handler.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    installed = _state["pid"] == os.getpid() and signal.getsignal(signal.SIGINT) is _handler
    own = not installed and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if own:
        _state.update(received=[], held=0, pid=os.getpid())
        signal.signal(signal.SIGINT, _handler)
    before = len(_state["received"])
    _state["held"] += 1
    try:
        yield
    finally:
        _state["held"] -= 1
        arrived = _state["received"][before:]
        if own:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            _state.update(received=[], pid=None)
    if arrived and not _state["held"]:
        raise _interrupt(arrived[-1])
