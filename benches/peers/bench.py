"""Side-by-side benchmark of hivlp and the stores users would pick instead (issue 15).

Run through `benches/peers/run`, which prepares the virtualenv. The parent process generates
the data sets and the exact ground truth once, then starts one fresh process per build and one
per query run (`worker build|query`), so every ingest time, disk size and peak RSS belongs to
that system alone. Results go to `benches/results/peers.md`, `peers.json` and the PNG plots.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import systems  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
K = 10
SELECTIVITY = {"1%": 10, "0.1%": 1}  # allowed rows: bucket < value, buckets uniform in 0..999

MODES = {
    # N of the headline data sets, the N series for the scaling plots, query counts, time caps.
    "smoke": dict(n=1_000, series=[1_000], queries=20, batch=50, filtered=5, cap_s=2.0),
    "quick": dict(n=100_000, series=[10_000, 100_000], queries=200, batch=1000, filtered=50, cap_s=15.0),
    "full": dict(n=1_000_000, series=[10_000, 100_000, 1_000_000], queries=200, batch=1000, filtered=50, cap_s=30.0),
}


# ------------------------------------------------------------------------------------ data sets
def synthetic(n, q, dim, clusters, noise, seed):
    """The recipe of `engine/src/synthetic.rs` in numpy: Gaussian clusters (centres N(0,1)),
    within-cluster spread `noise`, dimension j scaled by 1/sqrt(1 + j/8), unit length. Queries
    are fresh points of the same distribution. `clusters=0` draws every point around the
    origin: no cluster structure, the harder case for partitioned and graph indexes."""
    rng = np.random.default_rng(seed)
    spectrum = (1.0 / np.sqrt(1.0 + np.arange(dim) / 8.0)).astype(np.float32)
    centres = rng.standard_normal((max(clusters, 1), dim), dtype=np.float32) if clusters else None

    def draw(m):
        out = np.empty((m, dim), dtype=np.float32)
        for i in range(0, m, 50_000):
            j = min(i + 50_000, m)
            x = noise * rng.standard_normal((j - i, dim), dtype=np.float32)
            if clusters:
                x += centres[rng.integers(0, clusters, size=j - i)]
            x *= spectrum
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            out[i:j] = x
        return out

    return draw(n), draw(q)


def real_set(work, rendered=None, queries=1000):
    """The default model's fine embeddings of real pairs: items are the image tower's vectors,
    queries the caption tower's (text-to-image search, the product's case). Without
    `rendered`, every bundled demo item (300, queried by all their captions); with it, every
    pair of the model's rendered training data (`encoders/train/train.sh` writes it to
    encoders/train/work/rendered-v3: train, test and the unseen style, ~20.8k pairs; the
    reserved evaluation sets are not in it), queried by the captions of `queries` test pairs.
    The Python module has no encode call, so the vectors are read back through search: with
    unit-length items, the exact score of basis vector e_j is coordinate j of every item."""
    import hivlp

    if rendered:
        with open(os.path.join(rendered, "pairs.jsonl"), encoding="utf-8") as f:
            pairs = [json.loads(line) for line in f]
        pairs.sort(key=lambda p: p["split"] != "test")  # the test pairs first: they are the queries
        images = [os.path.join(rendered, p["image"]) for p in pairs]
        captions = [p["caption"] for p in pairs]
        queried = min(queries, sum(p["split"] == "test" for p in pairs))
    else:
        demo = os.path.join(ROOT, "data", "demo")
        names = sorted(f[:-4] for f in os.listdir(demo) if f.endswith(".png"))
        images = [os.path.join(demo, n + ".png") for n in names]
        captions = [open(os.path.join(demo, n + ".txt")).readline().strip() for n in names]
        queried = len(names)
    db = hivlp.open(os.path.join(work, "encode"), model="default", durability="buffered")
    ids = []
    for i in range(0, len(images), 256):
        ids += db.insert(images=images[i:i + 256], captions=captions[i:i + 256])
    dim = db.stats()["fine_dim"]

    def read_back(target):
        basis = np.eye(dim, dtype=np.float32)
        got, scores = db.search_batch(basis, target=target, k=len(ids), exact=True)
        out = np.zeros((len(ids), dim), dtype=np.float32)
        for j in range(dim):
            out[got[j].astype(np.int64) - min(ids), j] = scores[j]
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    items, texts = read_back("image"), read_back("text")
    db.close()
    shutil.rmtree(os.path.join(work, "encode"), ignore_errors=True)
    return items, texts[:queried]


def ground_truth(x, q, allow=None):
    """Exact top-K by inner product over the fine vectors (restricted to `allow` if given)."""
    out = np.empty((len(q), K), dtype=np.int64)
    for i in range(0, len(q), 256):
        s = q[i:i + 256] @ x.T
        if allow is not None:
            mask = np.full(x.shape[0], -np.inf, dtype=np.float32)
            mask[allow] = 0.0
            s = s + mask
        top = np.argpartition(-s, K, axis=1)[:, :K] if s.shape[1] > K else np.tile(np.arange(s.shape[1]), (len(s), 1))
        order = np.take_along_axis(s, top, axis=1).argsort(axis=1)[:, ::-1]
        out[i:i + 256] = np.take_along_axis(top, order, axis=1)[:, :K]
    if allow is not None and len(allow) < K:
        out[:, len(allow):] = -1
    return out


def recall(found, truth):
    """Recall@K; truth entries of -1 (fewer allowed rows than K) count for nothing."""
    hits = sum(len(set(int(i) for i in f[:K]) & set(t[t >= 0].tolist())) for f, t in zip(found, truth))
    return hits / max(1, int((truth >= 0).sum()))


def peak_rss_mib():
    """VmHWM: unlike ru_maxrss it starts afresh at exec, so it is this worker's own peak."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


# -------------------------------------------------------------------------------------- workers
def by_name(name, smoke, data):
    """The system's definition, with the data set's model (hivlp uses it on the real set)."""
    sysdef = next(s for s in systems.catalogue(smoke) if s.name == name)
    meta = os.path.join(data, "model")
    if sysdef.family == "hivlp" and os.path.exists(meta):
        sysdef.options["model"] = open(meta).read().strip()
    return sysdef


def worker_build(args):
    sysdef = by_name(args.system, args.smoke, args.data)
    x = np.load(os.path.join(args.data, "x.npy"), mmap_mode="r")
    bucket = np.load(os.path.join(args.data, "bucket.npy"))
    os.makedirs(args.store, exist_ok=True)
    t = time.perf_counter()
    extra = sysdef.build(args.store, x, bucket) or {}
    took = time.perf_counter() - t
    print(json.dumps({"build_s": took, "disk_bytes": systems.dir_size(args.store),
                      "build_rss_mib": peak_rss_mib(), **extra}))


def timed(fn, count, cap_s):
    """Runs fn(i) for i < count or until cap_s has passed; returns (results, seconds each)."""
    res, lat = [], []
    start = time.perf_counter()
    for i in range(count):
        t = time.perf_counter()
        res.append(fn(i))
        lat.append(time.perf_counter() - t)
        if time.perf_counter() - start > cap_s and i >= 4:
            break
    return res, np.array(lat)


def worker_query(args):
    """Opens the store in this fresh process and runs every measurement at `threads`."""
    if args.threads == 1:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    sysdef = by_name(args.system, args.smoke, args.data)
    mode = MODES[args.mode]
    q = np.load(os.path.join(args.data, "q.npy"))
    truth = np.load(os.path.join(args.data, "truth.npy"))
    t = time.perf_counter()
    searcher = sysdef.Searcher(sysdef, args.store, args.threads)
    out = {"open_s": time.perf_counter() - t, "params": []}
    nq = min(mode["queries"], len(q))
    for p in sysdef.params:
        for i in range(min(10, nq)):  # warm-up
            searcher.search(q[i], K, p)
        found, lat = timed(lambda i: searcher.search(q[i], K, p), nq, mode["cap_s"])
        row = {"param": p, "queries": len(found), "median_ms": float(np.median(lat) * 1e3),
               "p99_ms": float(np.percentile(lat, 99) * 1e3), "recall": recall(found, truth[:len(found)])}
        if args.threads == max(args.thread_counts):
            nb = min(mode["batch"], len(q))
            t = time.perf_counter()
            if sysdef.batch_api:
                searcher.batch(q[:nb], K, p)
                row["batch_qps"] = nb / (time.perf_counter() - t)
            else:
                done, _ = timed(lambda i: searcher.search(q[i], K, p), nb, mode["cap_s"])
                row["batch_qps"] = len(done) / (time.perf_counter() - t)
                row["batch_is_loop"] = True
        if args.threads == 1 and sysdef.filters:
            for label in SELECTIVITY:
                allow = np.load(os.path.join(args.data, f"allow_{label}.npy"))
                if len(allow) < K:  # too small a set for this selectivity (the real set at 0.1%)
                    continue
                ftruth = np.load(os.path.join(args.data, f"truth_{label}.npy"))
                bound = SELECTIVITY[label]
                allowed = (allow, bound, set(allow.tolist()))
                nf = min(mode["filtered"], len(q))
                found, lat = timed(lambda i: searcher.search(q[i], K, p, allowed), nf, mode["cap_s"])
                row[f"filtered_{label}"] = {"median_ms": float(np.median(lat) * 1e3),
                                            "recall": recall(found, ftruth[:len(found)])}
        out["params"].append(row)
    out["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(out))


def spawn(*argv, timeout):
    """Runs this script as a worker in a fresh interpreter; returns its JSON report or an error."""
    cmd = [sys.executable, os.path.abspath(__file__), *argv]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["?"]
        return {"error": f"exit {p.returncode}: {tail[0][:200]}"}
    return json.loads(p.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------- the run
def machine():
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    mem = next((int(line.split()[1]) // 1024 // 1024 for line in open("/proc/meminfo") if line.startswith("MemTotal")), 0)
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem, "python": platform.python_version(),
            "kernel": platform.release()}


def versions():
    out = {}
    for pkg in ["hivlp", "faiss-cpu", "usearch", "hnswlib", "lancedb", "pylance", "chromadb", "sqlite-vec", "pysqlite3-binary", "numpy"]:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    out["sqlite"] = systems.sqlite3.sqlite_version
    return out


def available(sysdef):
    module = {"hivlp": "hivlp", "faiss": "faiss", "usearch": "usearch", "hnswlib": "hnswlib",
              "lancedb": "lancedb", "chromadb": "chromadb", "sqlite-vec": "sqlite_vec"}[sysdef.family]
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def prepare(work, name, x, q, model=None):
    data = os.path.join(work, "data", name)
    os.makedirs(data, exist_ok=True)
    if model:
        with open(os.path.join(data, "model"), "w") as f:
            f.write(model)
    np.save(os.path.join(data, "x.npy"), x)
    np.save(os.path.join(data, "q.npy"), q)
    np.save(os.path.join(data, "truth.npy"), ground_truth(x, q))
    bucket = systems.buckets(len(x))
    np.save(os.path.join(data, "bucket.npy"), bucket)
    for label, bound in SELECTIVITY.items():
        allow = np.flatnonzero(bucket < bound).astype(np.int64)
        np.save(os.path.join(data, f"allow_{label}.npy"), allow)
        np.save(os.path.join(data, f"truth_{label}.npy"), ground_truth(x, q, allow))
    return data


def run_set(work, label, data, n, sysdefs, args, log):
    """Builds and queries every system on one prepared data set."""
    rows = []
    built = {}
    for s in sysdefs:
        store = os.path.join(work, "stores", label, (s.shares or s.name).replace(" ", "_"))
        if s.shares:
            build = built.get(s.shares, {"error": "shared build missing"})
        else:
            shutil.rmtree(store, ignore_errors=True)
            build = spawn("worker", "build", s.name, data, store, *args.flags, timeout=args.build_timeout)
            built[s.name] = build
        row = {"set": label, "n": n, "system": s.name, "family": s.family, "build": build, "query": {}}
        if "error" not in build:
            for t in args.thread_counts:
                row["query"][t] = spawn("worker", "query", s.name, data, store, "--threads", str(t),
                                        "--thread-counts", ",".join(map(str, args.thread_counts)),
                                        *args.flags, timeout=args.query_timeout)
        log(f"  {label} n={n} {s.name}: build {build.get('build_s', build.get('error'))}"
            + "".join(f"; t{t} {summary(r)}" for t, r in row["query"].items()))
        rows.append(row)
        if not s.shares and not any(o.shares == s.name for o in sysdefs):
            shutil.rmtree(store, ignore_errors=True)
    for s in sysdefs:  # stores kept for a sharing system are dropped after the set
        shutil.rmtree(os.path.join(work, "stores", label, s.name.replace(" ", "_")), ignore_errors=True)
    return rows


def summary(r):
    if "error" in r:
        return r["error"]
    best = r["params"][-1]
    return f"{best['median_ms']:.2f} ms r={best['recall']:.3f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=MODES, default="quick")
    ap.add_argument("--out", default=None, help="default: benches/results (smoke: a temporary folder)")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--only", default="", help="comma-separated system names (default: all installed)")
    ap.add_argument("--sets", default="clustered,unclustered,real")
    ap.add_argument("--rows", default="", help="comma-separated N of the synthetic sets (default: the mode's)")
    ap.add_argument("--name", default=None, help="file name of the results (default: peers)")
    ap.add_argument("--real-data", default=None,
                    help="the rendered pairs of encoders/train/train.sh (e.g. encoders/train/work/rendered-v3): "
                         "the real set is all of them instead of the 300 demo items")
    ap.add_argument("--no-crash", action="store_true")
    ap.add_argument("--crash-cycles", type=int, default=None, help="kills per store (default 3 smoke, 8 otherwise)")
    ap.add_argument("--crash-only", action="store_true",
                    help="run only the crash loop and add it to an earlier run's results in --out")
    args = ap.parse_args()
    mode = MODES[args.mode]
    args.smoke = args.mode == "smoke"
    args.flags = ["--mode", args.mode] + (["--smoke"] if args.smoke else [])
    args.thread_counts = [1, 2]
    # The limit is 30 minutes a build; quick mode allows 10 so that one slow peer
    # cannot stall the run (a timed-out build is reported as such).
    args.build_timeout = 1800.0 if args.mode == "full" else 600.0
    args.query_timeout = 1800.0 if args.mode == "full" else 600.0
    wanted = [s for s in systems.catalogue(args.smoke) if not args.only or s.name in args.only.split(",")]
    sysdefs = [s for s in wanted if available(s)]
    missing = [s.name for s in wanted if s not in sysdefs]

    work = args.work or tempfile.mkdtemp(prefix="hivlp-peers-")
    if args.out is None:
        args.out = os.path.join(work, "results") if args.smoke else os.path.join(ROOT, "benches", "results")
    os.makedirs(args.out, exist_ok=True)
    started = time.time()
    loads = []

    def log(msg):
        loads.append(os.getloadavg()[0])
        print(f"[{time.time() - started:7.1f}s load {loads[-1]:.1f}] {msg}", flush=True)

    log(f"mode {args.mode}, work {work}, systems {len(sysdefs)} (not installed: {', '.join(missing) or 'none'})")
    name = args.name or ("peers" if args.mode != "smoke" else "peers-smoke")
    commit_id = commit()

    def save(rows, crash, partial):
        """Writes the JSON, the table and the plots; after every data set too, so that an
        interrupted run leaves what it measured (marked partial)."""
        import report as report_mod

        report = {"mode": args.mode, "commit": commit_id, "machine": machine(), "versions": versions(),
                  "load": {"min": min(loads), "max": max(loads), "mean": float(np.mean(loads))},
                  "wall_s": time.time() - started, "partial": partial,
                  "started_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
                  "not_installed": missing, "rows": rows, "crash": crash}
        with open(os.path.join(args.out, name + ".json"), "w") as f:
            json.dump(report, f, indent=1, default=str)
        report_mod.write(report, args.out, name)

    rows = []
    sets = [] if args.crash_only else args.sets.split(",")
    if args.crash_only:
        with open(os.path.join(args.out, name + ".json")) as f:
            earlier = json.load(f)
        rows, loads[:0] = earlier["rows"], [earlier["load"]["min"], earlier["load"]["max"]]
        started -= earlier["wall_s"]
    for label in sets:
        if label == "real":
            x, q = real_set(work, args.real_data)
            ns = [len(x)]
        else:
            clusters = 1000 if label == "clustered" else 0
            noise = 1.1 if label == "clustered" else 1.0
            ns = mode["series"] if label == "clustered" else [mode["n"]]
            if args.rows:
                ns = [int(n) for n in args.rows.split(",")]
            x, q = synthetic(max(ns), 1000, 512, clusters, noise, seed=42 if label == "clustered" else 43)
        for n in ns:
            xs = x[:n]
            log(f"data {label} n={n} dim={xs.shape[1]}: exact ground truth")
            data = prepare(work, f"{label}-{n}", xs, q, model="default" if label == "real" else None)
            rows += run_set(work, label, data, n, sysdefs, args, log)
            shutil.rmtree(data, ignore_errors=True)
            save(rows, None, partial=True)

    crash = None
    if not args.no_crash:
        import crash as crash_mod

        log("crash loop")
        crash = crash_mod.run_all(work, cycles=args.crash_cycles or (3 if args.smoke else 8), log=log)
    save(rows, crash, partial=False)
    log(f"done in {time.time() - started:.0f} s; {os.path.join(args.out, name + '.md')}")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    failed = [r["system"] for r in rows if "error" in r["build"]
              or any("error" in v for v in r["query"].values())]
    if args.smoke and failed:
        print("failed: " + ", ".join(sorted(set(failed))), file=sys.stderr)
        sys.exit(1)


def commit():
    try:
        sha = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except OSError:
        return "?"


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        wp = argparse.ArgumentParser()
        wp.add_argument("worker")
        wp.add_argument("kind", choices=["build", "query"])
        wp.add_argument("system")
        wp.add_argument("data")
        wp.add_argument("store")
        wp.add_argument("--mode", default="quick")
        wp.add_argument("--smoke", action="store_true")
        wp.add_argument("--threads", type=int, default=1)
        wp.add_argument("--thread-counts", default="1,2")
        wa = wp.parse_args()
        wa.thread_counts = [int(t) for t in wa.thread_counts.split(",")]
        (worker_build if wa.kind == "build" else worker_query)(wa)
    else:
        main()
