"""The type stubs (`hivlp/__init__.pyi`) agree with the built module (mypy's stubtest) and type
the README's Python blocks under `mypy --strict`."""

import subprocess
import sys

import pytest

from conftest import REPO
from test_readme import readme_blocks

pytest.importorskip("mypy", reason="mypy is installed by scripts/setup-python")

ALLOWLIST = REPO / "bindings" / "python" / "stubtest-allowlist.txt"


def run_mypy(args, tmp_path):
    """Runs a mypy tool from `tmp_path`, so its cache stays out of the checkout."""
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_stubs_match_the_built_module(tmp_path):
    run = run_mypy(["mypy.stubtest", "hivlp", "--allowlist", str(ALLOWLIST)], tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr


def test_readme_examples_pass_mypy_strict(tmp_path):
    files = []
    for tag in ("python quickstart", "python example"):
        (block,) = readme_blocks(tag)
        path = tmp_path / (tag.replace(" ", "_") + ".py")
        path.write_text(block, encoding="utf-8")
        files.append(str(path))
    run = run_mypy(["mypy", "--strict", *files], tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
