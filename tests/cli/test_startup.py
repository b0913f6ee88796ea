"""Start-up: each command imports only what it uses. Those that run no network (`audit`, `residualize`,
`report` without --plot, `--help`) never import torch, the audit's t-test takes its distribution
from `scipy.special` (not the second-long `scipy.stats`), and the file readers' libraries load
only for their formats. Checked by listing ``sys.modules`` at the exit
of a fresh process."""

from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pandas as pd
import pytest

HEAVY = ("torch", "scipy.stats", "sklearn", "PIL", "nibabel", "av", "matplotlib")
# `python -c PROBE ARGS...` runs `mdn ARGS...` and prints, at exit, which of HEAVY it imported.
PROBE = f"""
import atexit, sys
atexit.register(lambda: print("\\nloaded:", *[m for m in {HEAVY!r} if m in sys.modules], file=sys.stderr))
sys.argv = ["mdn", *sys.argv[1:]]
from mdn_cli.cli import main
main()
"""


def loaded_by(*args) -> set[str]:
    """The modules of HEAVY that `mdn ARGS` imported (the command must succeed)."""
    done = subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return set(done.stderr.rsplit("loaded:", 1)[1].split())


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A 200-row feature file with ids and its table: a numeric and a categorical column, a label and batches."""
    folder = tmp_path_factory.mktemp("startup")
    rng = np.random.default_rng(0)
    ids = [f"s{i:03d}" for i in range(200)]
    with h5py.File(folder / "f.h5", "w") as f:
        f["features"] = rng.normal(size=(200, 16)).astype(np.float32)
        f["ids"] = np.array(ids, dtype="S")
    pd.DataFrame({"id": ids, "age": rng.normal(size=200), "site": rng.integers(0, 3, 200), "label": rng.integers(0, 2, 200),
                  "batch": rng.integers(0, 4, 200)}).to_csv(folder / "t.csv", index=False)
    return folder


def test_help_imports_nothing_heavy():
    assert loaded_by("--help") == set()
    assert loaded_by("audit", "--help") == set()


def test_audit_needs_no_torch_nor_scipy_stats(stored):
    f, t = stored / "f.h5", stored / "t.csv"
    assert loaded_by("audit", f, t, "--columns", "age") == set()
    assert loaded_by("audit", f, t, "--columns", "site", "--categorical", "site", "--by", "label", "--test", "permutation", "--permutations", 9,
                     "--permute-within", "batch", "--given", "age", "--ci", 0.9, "--format", "json") == set()  # fmt: skip
    assert loaded_by("audit", f, t, "--columns", "age", "--test", "t") == set()  # its t distribution comes from scipy.special


def test_residualize_needs_no_torch(stored, tmp_path):
    assert loaded_by("residualize", stored / "f.h5", stored / "t.csv", "--columns", "age,site", "--categorical", "site",
                     "--preserve", "label", "--save-model", tmp_path / "m.json", "-o", tmp_path / "clean.h5") == set()  # fmt: skip
    assert loaded_by("residualize", stored / "f.h5", stored / "t.csv", "--model", tmp_path / "m.json", "-o", tmp_path / "again.h5") == set()


def test_report_needs_no_torch(trained_runs):
    assert loaded_by("report", trained_runs / "mdn") == set()
    assert loaded_by("report", trained_runs / "baseline", trained_runs / "mdn", "--format", "json") == set()


def test_readers_load_their_library_on_the_first_file_of_its_format(tmp_path):
    code = """
import sys, numpy as np
from PIL import Image
Image.fromarray(np.zeros((4, 4), np.uint8)).save(sys.argv[1])
for name in ("PIL", "nibabel"):
    sys.modules.pop(name, None)
from mdn_cli.data import readers
print(sorted(m for m in ("PIL", "nibabel") if m in sys.modules))
readers.read_raw(sys.argv[1])
print(sorted(m for m in ("PIL", "nibabel") if m in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "a.png")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["[]", "['PIL']"]
