"""Crash side by side: kill -9 during ingest, reopen, count acknowledged rows lost.

A child process opens (or creates) the store and inserts batches of rows; after each call
returns (the store's commit) it prints `ack <last id>`. The parent kills it with SIGKILL at a
random moment, then a fresh process reopens the store and reports which ids it holds. Every
cycle uses its own id range and the store is kept across cycles, so a later cycle also checks
that earlier acknowledged rows survived. kill -9 tests the process dying, not the machine: the
page cache survives, so stores that write without fsync pass it too (the promises below say
what each store claims for power loss).
"""

import json
import os
import random
import shutil
import subprocess
import sys
import time

import numpy as np

DIM = 64
ROWS = 200  # rows per insert call
SPAN = 1_000_000  # ids per cycle

PROMISES = {
    "hivlp": "durability=\"sync\" (the default): every insert is durable (WAL fsync) before it returns; recovery replays the WAL and drops a torn tail",
    "lancedb": "each add() commits a new table version atomically (data files, then the manifest); readers see whole versions",
    "chromadb": "PersistentClient: writes go to a SQLite write-ahead log before add() returns; the HNSW index is rebuilt/caught up from it",
    "sqlite-vec": "a SQLite table: each committed transaction is atomic and durable (rollback journal, synchronous=FULL by default)",
}


def child(kind, path, start):
    """Inserts batches forever, acknowledging each on stdout."""
    rng = np.random.default_rng(start)
    ins = inserter(kind, path)
    i = start
    while True:
        x = rng.standard_normal((ROWS, DIM), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        ins(np.arange(i, i + ROWS), x)
        i += ROWS
        print(f"ack {i - 1}", flush=True)


def inserter(kind, path):
    if kind == "hivlp":
        import hivlp

        db = hivlp.open(path, model=None, fine_dim=DIM, coarse_dim=16)
        return lambda ids, x: db.insert_vectors(image_fine=x, ids=ids.tolist())
    if kind == "lancedb":
        import lancedb
        import pyarrow as pa

        db = lancedb.connect(path)

        def add(ids, x):
            t = pa.table({"id": pa.array(ids.astype(np.int64)),
                          "vector": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), DIM)})
            if "items" in db.table_names():
                db.open_table("items").add(t)
            else:
                db.create_table("items", data=t)
        return add
    if kind == "chromadb":
        from systems import Chroma

        col = Chroma.client(path).get_or_create_collection("items", metadata={"hnsw:space": "ip"})
        return lambda ids, x: col.add(ids=[str(i) for i in ids], embeddings=x)
    from systems import SqliteVec

    os.makedirs(path, exist_ok=True)
    conn = SqliteVec.connect(path)
    conn.execute(f"create virtual table if not exists items using vec0(embedding float[{DIM}])")
    conn.commit()

    def add(ids, x):
        with conn:
            conn.executemany("insert into items(rowid, embedding) values (?, ?)",
                             [(int(i), r.tobytes()) for i, r in zip(ids, x)])
    return add


def held_ids(kind, path):
    """Opens the store in this process and returns every id it holds (raises if it cannot)."""
    if kind == "hivlp":
        import hivlp

        db = hivlp.open(path, model=None)  # read-write, as a user reopens after a crash
        n = len(db)
        if n == 0:
            return []
        probe = np.zeros((1, DIM), dtype=np.float32)
        probe[0, 0] = 1.0
        ids, _ = db.search_batch(probe, k=n, exact=True)
        return [int(i) for i in ids[0]]
    if kind == "lancedb":
        import lancedb

        db = lancedb.connect(path)
        if "items" not in db.table_names():
            return []
        return db.open_table("items").to_arrow()["id"].to_pylist()
    if kind == "chromadb":
        from systems import Chroma

        col = Chroma.client(path).get_or_create_collection("items", metadata={"hnsw:space": "ip"})
        got = col.get(include=[])
        return [int(i) for i in got["ids"]]
    from systems import SqliteVec

    if not os.path.exists(os.path.join(path, "vec.db")):
        return []
    conn = SqliteVec.connect(path)
    try:
        return [r[0] for r in conn.execute("select rowid from items")]
    except Exception as e:  # a missing table after a kill before the first commit is not corruption
        if "no such table" in str(e):
            return []
        raise


def cycle(kind, path, start, rng):
    """One kill: returns (last acknowledged id or None, seconds the child ran)."""
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.abspath(__file__)))
    p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "child", kind, path, str(start)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    first = p.stdout.readline()  # wait until it ingests at all (imports can take seconds)
    last = int(first.split()[1]) if first.startswith("ack") else None
    deadline = time.time() + rng.uniform(0.05, 1.5)
    os.set_blocking(p.stdout.fileno(), False)
    while time.time() < deadline and p.poll() is None:
        time.sleep(0.005)
    if p.poll() is not None:  # it stopped by itself: the store refused a write after reopening
        raise ChildFailed(f"{kind} writer exited with {p.returncode} before the kill: "
                          + " | ".join(p.stderr.read().strip().splitlines()[-3:])[-400:])
    os.kill(p.pid, 9)
    p.wait()
    rest = p.stdout.read() or ""
    for line in rest.splitlines():
        if line.startswith("ack"):
            last = int(line.split()[1])
    if last is None:
        err = p.stderr.read()
        raise RuntimeError(f"{kind} child acknowledged nothing: {err.strip()[-300:]}")
    return last


class ChildFailed(RuntimeError):
    """The writer process failed on its own (not killed): reported as a failure of the store."""


def run_store(work, kind, cycles, log):
    path = os.path.join(work, "crash", kind)
    shutil.rmtree(path, ignore_errors=True)
    rng = random.Random(1)
    acked = []
    lost, open_failures, extra = 0, 0, 0
    write_failures, errors = [], []
    for c in range(cycles):
        start = c * SPAN
        try:
            last = cycle(kind, path, start, rng)
        except ChildFailed as e:
            write_failures.append(f"cycle {c}: {e}")
            log(f"    {kind} cycle {c}: {e}")
            continue
        acked.append((start, last))
        check = subprocess.run([sys.executable, os.path.abspath(__file__), "check", kind, path],
                               capture_output=True, text=True,
                               env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.abspath(__file__))))
        if check.returncode != 0:
            open_failures += 1
            errors.append(f"cycle {c}: reopen failed: " + "".join(check.stderr.strip().splitlines()[-1:])[-300:])
            log(f"    {kind} {errors[-1]}")
            break
        held = set(json.loads(check.stdout.strip().splitlines()[-1]))
        want = [i for s, e in acked for i in range(s, e + 1)]
        lost = sum(1 for i in want if i not in held)
        extra = len(held) - (len(want) - lost)
    total = sum(e - s + 1 for s, e in acked)
    log(f"    {kind}: {len(acked)} kills, {total} acknowledged rows, {lost} lost, {open_failures} failed reopen")
    return {"store": kind, "kills": len(acked), "acknowledged": total, "lost": lost,
            "unacknowledged_kept": extra, "open_failures": open_failures,
            "write_failures": write_failures, "errors": errors, "promise": PROMISES[kind]}


def run_all(work, cycles, log):
    out = []
    for kind, module in [("hivlp", "hivlp"), ("lancedb", "lancedb"), ("chromadb", "chromadb"), ("sqlite-vec", "sqlite_vec")]:
        try:
            __import__(module)
        except ImportError:
            continue
        try:
            out.append(run_store(work, kind, cycles, log))
        except Exception as e:  # one store's harness failure must not hide the others' results
            log(f"    {kind}: crash loop error {e}")
            out.append({"store": kind, "error": str(e)[:300], "promise": PROMISES[kind]})
    return out


if __name__ == "__main__":
    if sys.argv[1] == "child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        print(json.dumps(held_ids(sys.argv[2], sys.argv[3])))
