"""Runs the README's Python example (the fenced block tagged `python example`) as a user would:
from a folder where `data/demo` is reachable."""

import os
import re
import subprocess
import sys

from conftest import REPO, requires_model


def readme_blocks(tag):
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return re.findall(r"^```" + re.escape(tag) + r"\n(.*?)^```", text, flags=re.S | re.M)


def run_block(block, tmp_path):
    """Runs a README block as a script in `tmp_path` (beside a link to the demo data); it must
    succeed."""
    (tmp_path / "data").symlink_to(REPO / "data")
    script = tmp_path / "block.py"
    script.write_text(block, encoding="utf-8")
    run = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return run


@requires_model
def test_readme_python_example_runs(tmp_path):
    blocks = readme_blocks("python example")
    assert len(blocks) == 1, "the README has one Python example"
    run = run_block(blocks[0], tmp_path)
    lines = run.stdout.splitlines()
    assert len(lines) == 4, run.stdout  # three hits and the verify report
    assert os.path.isdir(tmp_path / "example.hivlp")


@requires_model
def test_readme_python_quickstart_runs(tmp_path):
    blocks = readme_blocks("python quickstart")
    assert len(blocks) == 1, "the README has one Python quick start"
    assert len(blocks[0].strip().splitlines()) == 4, "the quick start is four lines"
    run = run_block(blocks[0], tmp_path)
    assert run.stdout.startswith("[Hit(id=0, "), run.stdout
    assert "caption='a boy plays soccer'" in run.stdout, run.stdout
