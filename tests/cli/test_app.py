"""The command line as a whole: help and version, MDN_DEBUG's traceback, the malloc setting of the process."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from tests.helpers import mdn, run_cli, write_spec


@pytest.mark.slow
def test_debug_env_shows_traceback(synth_data):
    spec = write_spec(synth_data, name="bad_debug.yaml", data={"metadata": ["nope"]})
    result = run_cli("validate", spec, env={"MDN_DEBUG": "1"})
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_help_and_version():
    assert mdn("--version").stdout.startswith("mdn ")
    for command in ("synth", "validate", "train", "pack", "report", "audit", "layers", "extract", "evaluate", "refit", "residualize"):
        result = mdn(command, "--help")
        assert result.returncode == 0 and "Example" in result.stdout, command


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc settings")
@pytest.mark.slow
def test_freed_memory_is_kept_unless_asked_not_to():
    """The CLI sets glibc's thresholds (one process each: the setting lasts for the process)."""
    probe = "from mdn_cli.cli import reuse_freed_memory; print(reuse_freed_memory())"

    def setting(**env: str) -> str:
        environment = {k: v for k, v in os.environ.items() if k != "MDN_MALLOC"} | env
        return subprocess.run([sys.executable, "-c", probe], env=environment, capture_output=True, text=True, check=True).stdout.strip()

    assert setting() == "True"
    assert setting(MDN_MALLOC="system") == "False"
