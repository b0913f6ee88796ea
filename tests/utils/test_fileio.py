"""``interrupts_deferred``: a Ctrl-C during an epoch's writes waits for them; an ignored Ctrl-C stays ignored."""

from __future__ import annotations

import os
import signal
import time

import pytest


@pytest.fixture
def sigint_handler():
    """Sets SIGINT's handler for one test (``sigint_handler(h)``) and restores the one before."""
    before = signal.getsignal(signal.SIGINT)
    yield lambda handler: signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGINT, before)


def test_ctrl_c_during_an_epochs_writes_waits_for_them(tmp_path, sigint_handler):
    from mdn_cli.utils.fileio import atomic_write_text
    from mdn_cli.utils.interrupts import interrupts_deferred

    sigint_handler(signal.default_int_handler)
    with pytest.raises(KeyboardInterrupt):
        with interrupts_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the signal arrives here, inside the block
            atomic_write_text(tmp_path / "a.txt", "written")
    assert (tmp_path / "a.txt").read_text() == "written"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_ignored_ctrl_c_stays_ignored(tmp_path, sigint_handler):
    from mdn_cli.utils.fileio import atomic_write_text
    from mdn_cli.utils.interrupts import interrupts_deferred

    sigint_handler(signal.SIG_IGN)  # as under nohup or in a background job
    with interrupts_deferred():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        atomic_write_text(tmp_path / "a.txt", "written")
    assert (tmp_path / "a.txt").read_text() == "written"
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
