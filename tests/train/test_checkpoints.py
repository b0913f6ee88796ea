"""Checkpoints: each is serialised once, best.pt of the last epoch is the same file, and
``train.checkpoint_every`` changes when files are written, never what they hold."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from mdn_cli.config import load_spec
from mdn_cli.model import checkpoint
from mdn_cli.train.loop import Trainer, train
from mdn_cli.utils.fileio import atomic_link, discard_spare, recycled_file
from tests.helpers import Stop, epoch_metrics, make_small_data, stop_after, write_spec


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("checkpoints")
    make_small_data(folder, per_group=20)
    return folder


@pytest.fixture
def best_epochs(monkeypatch):
    """Make exactly the given epochs improve on the best (``best_epochs({1, 3})``), whatever their metrics."""
    def choose(epochs: set[int]) -> None:
        monkeypatch.setattr(Trainer, "_is_better", lambda self, metrics: metrics["epoch"] in epochs)
    return choose


@pytest.fixture
def serialisations(monkeypatch) -> list[int]:
    """The epoch of every checkpoint ``torch.save`` writes, in order."""
    saved: list[int] = []
    real_save = torch.save

    def counting(state, path, *args, **kwargs):
        saved.append(state["epoch"])
        return real_save(state, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", counting)
    return saved


def load(run: Path, name: str) -> dict:
    return torch.load(run / "checkpoints" / name, weights_only=True)


def same_weights(a: dict, b: dict) -> bool:
    return a["model"].keys() == b["model"].keys() and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_each_epoch_is_serialised_once_and_best_of_the_last_epoch_is_the_same_file(folder, tmp_path, best_epochs, serialisations):
    best_epochs({1, 2})
    run = tmp_path / "run"
    train(load_spec(write_spec(folder, epochs=3)), run, progress=_check_files_after_epoch(run))
    assert serialisations == [1, 2, 3]
    assert load(run, "best.pt")["epoch"] == 2 and load(run, "last.pt")["epoch"] == 3
    assert not os.path.samefile(run / "checkpoints" / "best.pt", run / "checkpoints" / "last.pt")  # epoch 3 replaced last.pt, not best.pt


def _check_files_after_epoch(run: Path):
    """A progress callback asserting, after epochs 1 and 2 (both best), that best.pt and last.pt are one file holding that epoch."""
    def progress(event, **info):
        if event == "epoch_end" and info["metrics"]["epoch"] in (1, 2):
            last, best = run / "checkpoints" / "last.pt", run / "checkpoints" / "best.pt"
            assert os.path.samefile(last, best) and load(run, "best.pt")["epoch"] == info["metrics"]["epoch"]
    return progress


def test_checkpoint_every_writes_less_and_the_same_checkpoints(folder, tmp_path, best_epochs, serialisations):
    """Epochs 1 and 3 are the best: with checkpoint_every 2, epoch 3 is between checkpoints and reaches best.pt from memory."""
    best_epochs({1, 3})
    train(load_spec(write_spec(folder, "every1.yaml", epochs=5)), tmp_path / "every1")
    assert serialisations == [1, 2, 3, 4, 5]
    serialisations.clear()
    spec = load_spec(write_spec(folder, "every2.yaml", epochs=5, train={"checkpoint_every": 2}))
    seen = []

    def saved_epoch(event, **info):
        if event == "epoch_end":
            last = tmp_path / "every2" / "checkpoints" / "last.pt"
            seen.append(load(tmp_path / "every2", "last.pt")["epoch"] if last.exists() else None)

    train(spec, tmp_path / "every2", progress=saved_epoch)
    assert seen == [None, 2, 2, 4, 5]  # last.pt after each epoch: every second one, and the run's last
    assert serialisations == [1, 2, 3, 4, 5]  # the best epochs' states at the next checkpoint (1 at 2, 3 at 4), then 2, 4 and 5
    for name in ("best.pt", "last.pt"):
        a, b = load(tmp_path / "every1", name), load(tmp_path / "every2", name)
        assert a["epoch"] == b["epoch"] and same_weights(a, b) and a["best"] == b["best"]
        assert [{k: v for k, v in m.items() if k != "seconds"} for m in a["history"]] == [{k: v for k, v in m.items() if k != "seconds"} for m in b["history"]]
    assert load(tmp_path / "every2", "best.pt")["epoch"] == 3
    assert epoch_metrics(tmp_path / "every1") == epoch_metrics(tmp_path / "every2")


def test_a_run_stopped_between_checkpoints_resumes_from_the_last_one(folder, tmp_path):
    spec = load_spec(write_spec(folder, "stopped.yaml", epochs=4, train={"checkpoint_every": 2}))
    train(spec, tmp_path / "straight")
    with pytest.raises(Stop):
        train(spec, tmp_path / "split", progress=stop_after(3))
    assert load(tmp_path / "split", "last.pt")["epoch"] == 2
    assert len(epoch_metrics(tmp_path / "split")) == 2  # metrics.jsonl lands with its checkpoint
    train(spec, tmp_path / "split", resume=True)
    assert epoch_metrics(tmp_path / "split") == epoch_metrics(tmp_path / "straight")
    assert same_weights(load(tmp_path / "split", "last.pt"), load(tmp_path / "straight", "last.pt"))
    assert same_weights(load(tmp_path / "split", "best.pt"), load(tmp_path / "straight", "best.pt"))


def test_checkpoint_every_may_change_on_resume(folder, tmp_path):
    first = load_spec(write_spec(folder, "two.yaml", epochs=2))
    train(first, tmp_path / "run")
    train(load_spec(write_spec(folder, "more.yaml", epochs=3, train={"checkpoint_every": 5})), tmp_path / "run", resume=True)
    assert load(tmp_path / "run", "last.pt")["epoch"] == 3  # the run's last epoch is always saved


@pytest.mark.parametrize("links", [True, False])
def test_atomic_link_makes_the_same_bytes_under_a_new_name(tmp_path, monkeypatch, links):
    source, target = tmp_path / "last.pt", tmp_path / "best.pt"
    source.write_bytes(b"new")
    target.write_bytes(b"old")
    if not links:  # a filesystem without hard links: a copy
        monkeypatch.setattr(os, "link", lambda *_: (_ for _ in ()).throw(OSError(95, "Operation not supported")))
    atomic_link(source, target)
    assert target.read_bytes() == b"new" and os.path.samefile(source, target) == links
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]  # no temporary left


def test_last_pt_is_written_over_the_file_it_displaced_and_never_over_best_pt(folder, tmp_path, best_epochs):
    """Epoch 1 is the best: best.pt keeps its file while last.pt alternates between two others from epoch 2 on."""
    best_epochs({1})
    run = tmp_path / "run"
    files: list[tuple[int, int]] = []  # (inode of last.pt, inode of best.pt) after each epoch

    def progress(event, **info):
        if event == "epoch_end":
            files.append(((run / "checkpoints" / "last.pt").stat().st_ino, (run / "checkpoints" / "best.pt").stat().st_ino))
            assert load(run, "best.pt")["epoch"] == 1 and load(run, "last.pt")["epoch"] == info["metrics"]["epoch"]

    train(load_spec(write_spec(folder, epochs=5)), run, progress=progress)
    lasts, bests = [last for last, _ in files], {best for _, best in files}
    assert bests == {lasts[0]}  # best.pt is epoch 1's file throughout
    assert lasts[3] == lasts[1] and lasts[4] == lasts[2] and len(set(lasts)) == 3  # epoch 4 over epoch 2's file, 5 over 3's
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last.pt"]  # the spare goes at the end


def test_recycled_file_keeps_the_target_whole_and_spares_other_names(tmp_path):
    target = tmp_path / "last.pt"
    spare = tmp_path / ".last.pt.spare"
    for content in (b"first, long", b"second", b"third"):
        with recycled_file(target) as file:
            file.write(content)
        assert target.read_bytes() == content
    assert spare.read_bytes() == b"second"  # the displaced version, whole
    inode = spare.stat().st_ino
    with pytest.raises(RuntimeError):  # a write that fails leaves the target as it was
        with recycled_file(target) as file:
            file.write(b"fourth, half")
            raise RuntimeError
    assert target.read_bytes() == b"third" and spare.stat().st_ino == inode  # (the spare is scratch: it holds the half)
    os.link(spare, tmp_path / "backup")  # a spare that another name holds is never written
    with recycled_file(target) as file:
        file.write(b"fifth")
    assert (tmp_path / "backup").read_bytes() == b"fourth, half" and target.read_bytes() == b"fifth"
    discard_spare(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backup", "last.pt"]
