"""The handle and its process: use after os.fork(), and failures of the final fsync at close()."""

import os
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import hivlp
from conftest import COARSE_DIM, FINE_DIM, requires_model, unit_rows

# Every call a child might make on the handle it inherited, and what it passes.
CHILD_CALLS = [
    ("insert_vectors", lambda db, v: db.insert_vectors(image_fine=v[10:11])),
    ("search", lambda db, v: db.search(vector=v[0], k=1)),
    ("search_batch", lambda db, v: db.search_batch(v[:2], k=1)),
    ("len", lambda db, v: len(db)),
    ("get", lambda db, v: db.get(0)),
    ("stats", lambda db, v: db.stats()),
    ("delete", lambda db, v: db.delete([0])),
    ("flush", lambda db, v: db.flush()),
    ("sync", lambda db, v: db.sync()),
    ("compact", lambda db, v: db.compact()),
    ("snapshot", lambda db, v: db.snapshot(os.path.join(os.path.dirname(db.path), "child-snap"))),
    ("close", lambda db, v: db.close()),
]


def _child(db, db_path, vectors, report):
    """Runs in the forked child: tries every call, reports one line per call, then reopens."""
    for name, call in CHILD_CALLS:
        report(f"start {name}")
        try:
            call(db, vectors)
            outcome = "returned"
        except BaseException as e:  # noqa: BLE001 - the parent judges every outcome
            outcome = f"{type(e).__name__}: {e}"
        report(f"{name}: {outcome}")
    # The advice in the error works: a handle opened in this process serves it.
    with hivlp.open(db_path, model=None, read_only=True) as mine:
        report(f"own handle: {len(mine)} rows")


def _in_child(work, timeout=30):
    """Forks; the child runs `work(report)` (`report(line)` sends a line to the parent) and
    exits at once with `os._exit` (0, or 1 if `work` raised). Returns what the child reported
    and its exit status, or `None` for the status when it had not finished within `timeout`
    seconds (it is then killed)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(read)
            work(lambda line: os.write(write, f"{line}\n".encode()))
        except BaseException:  # noqa: BLE001 - the parent judges every outcome
            code = 1
        finally:
            os._exit(code)
    os.close(write)
    out, deadline = b"", time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return out.decode(), None
            ready, _, _ = select.select([read], [], [], left)
            if ready:
                chunk = os.read(read, 65536)
                if not chunk:
                    _, status = os.waitpid(pid, 0)
                    return out.decode(), status
                out += chunk
    finally:
        os.close(read)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork() of a multi-threaded process
def test_a_handle_used_after_fork_raises_in_the_child_and_the_parent_keeps_its_data(db_path):
    vectors = unit_rows(20, FINE_DIM, seed=30)
    db = hivlp.open(db_path, model=None, fine_dim=FINE_DIM, coarse_dim=COARSE_DIM, threads=2)
    ids = db.insert_vectors(image_fine=vectors[:10])
    assert db.search(vector=vectors[3], k=1)[0].id == ids[3]  # the search threads are running
    report, status = _in_child(lambda report: _child(db, db_path, vectors, report))
    assert status is not None, f"the child hung; its report so far:\n{report}"
    assert os.waitstatus_to_exitcode(status) == 0, report
    lines = dict(line.split(": ", 1) for line in report.splitlines() if ": " in line)
    for name, _ in CHILD_CALLS:
        assert lines.get(name, "").startswith("ForkedError: "), f"{name}: {lines.get(name)}\n{report}"
        assert "open the database again" in lines[name], lines[name]
    assert lines["own handle"] == "10 rows", report
    assert issubclass(hivlp.ForkedError, hivlp.HivlpError)

    # The parent's handle is untouched and its writes land after the child's attempts.
    more = db.insert_vectors(image_fine=vectors[10:])
    assert len(db) == 20
    db.close()
    hivlp.verify(db_path)
    with hivlp.open(db_path, model=None) as again:
        assert len(again) == 20
        assert sorted(h.id for h in (again.get(i) for i in ids + more)) == sorted(ids + more)


@requires_model
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_child_drops_an_inherited_model_handle_without_hanging(db_path):
    db = hivlp.open(db_path, model="default")
    db.insert(captions=["a red car", "a dog on a beach"])
    assert db.search(text="a car", target="text", k=1)[0].caption == "a red car"

    def child(report):
        try:
            db.search(text="a car", target="text")
        except hivlp.ForkedError:
            report("search: ForkedError")
        try:
            db.close()  # releasing the encoder's runtime here would wait for absent threads
        except hivlp.ForkedError:
            report("close: ForkedError")

    report, status = _in_child(child)
    assert status is not None, f"the child hung; its report so far:\n{report}"
    assert os.waitstatus_to_exitcode(status) == 0, report
    assert report.splitlines() == ["search: ForkedError", "close: ForkedError"], report
    db.insert(captions=["a cat"])
    db.close()
    with hivlp.open(db_path, model="default") as again:
        assert len(again) == 3


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
