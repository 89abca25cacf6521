"""The handle and its process: failures of the final fsync at close()."""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

# Makes fsync and fdatasync fail with EIO once the file named by $HIVLP_FAIL_FSYNC_AT exists.
FSYNC_SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

static int failing(void) {
    const char *trigger = getenv("HIVLP_FAIL_FSYNC_AT");
    return trigger != NULL && access(trigger, F_OK) == 0;
}

int fsync(int fd) {
    if (failing()) { errno = EIO; return -1; }
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    return real(fd);
}

int fdatasync(int fd) {
    if (failing()) { errno = EIO; return -1; }
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    return real(fd);
}
"""

# Buffered writes, then fsync starts failing, then the scenario's way of finishing.
FSYNC_SCRIPT = textwrap.dedent(
    """
    import sys, hivlp, numpy as np
    path, trigger, scenario = sys.argv[1:]
    db = hivlp.open(path, model=None, fine_dim=8, coarse_dim=4, durability="buffered")
    db.insert_vectors(image_fine=np.eye(8, dtype=np.float32)[:4])  # written, not yet fsynced
    open(trigger, "w").close()
    def attempt(what, call):
        try:
            call()
            print(what, "returned")
        except hivlp.HivlpError as e:
            print(what, "raised", type(e).__name__, e)
    if scenario == "close":
        attempt("close", db.close)
    elif scenario == "exit":
        def in_with_block():
            with db:
                pass
        attempt("exit", in_with_block)
    elif scenario == "sync":
        attempt("sync", db.sync)
        attempt("close", db.close)
    print("closed", db.closed)
    """
)


@pytest.fixture(scope="module")
def fsync_shim(tmp_path_factory):
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        pytest.skip("no C compiler to build the fsync fault-injection shim")
    folder = tmp_path_factory.mktemp("shim")
    source = folder / "failing_fsync.c"
    source.write_text(FSYNC_SHIM)
    library = folder / "failing_fsync.so"
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(library), str(source), "-ldl"], check=True)
    return library


@pytest.mark.parametrize("scenario", ["close", "exit", "sync"])
def test_a_failed_fsync_at_close_or_sync_raises(fsync_shim, tmp_path, scenario):
    trigger = tmp_path / "fail-fsync-now"
    env = dict(os.environ, LD_PRELOAD=str(fsync_shim), HIVLP_FAIL_FSYNC_AT=str(trigger))
    run = subprocess.run(
        [sys.executable, "-c", FSYNC_SCRIPT, str(tmp_path / "db"), str(trigger), scenario],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    expected = {"close": ["close"], "exit": ["exit"], "sync": ["sync", "close"]}[scenario]
    for what, line in zip(expected, lines):
        assert line.startswith(f"{what} raised HivlpError"), run.stdout + run.stderr
    assert "fsync" in lines[0] and "Input/output error" in lines[0], lines[0]
    assert lines[len(expected)] == "closed True", run.stdout
