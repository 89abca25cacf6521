"""Filtered search side by side (issue 11): hivlp's `where=` against LanceDB's pre- and
post-filter on the same data, in the same run.

Run through `benches/peers/run --filter` (the peers' virtualenv, a release build of hivlp).
Rows are the clustered synthetic recipe of `bench.py` (128-d, 200 clusters, the shape of the
issue's LanceDB figures) with one integer metadata field `bucket`, uniform in 0..9999, so that
`bucket < b` matches b/100 % of the rows: 50%, 10%, 1%, 0.1% and 0.01%. Recall@10 is against
exact filtered search over the fine vectors; "hits" is the mean number of results a query
returned (k = 10 whenever at least 10 rows match). Results: benches/results/filter.md and .json.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
import systems  # noqa: E402

K = bench.K
BUCKETS = 10_000
SELECTIVITY = {"50%": 5000, "10%": 1000, "1%": 100, "0.1%": 10, "0.01%": 1}


def hivlp_store(path, x, bucket):
    import hivlp

    n, d = x.shape
    db = hivlp.open(path, model=None, fine_dim=d, coarse_dim=d // 4, durability="buffered")
    for i in range(0, n, systems.BATCH):
        j = min(i + systems.BATCH, n)
        db.insert_vectors(image_fine=np.ascontiguousarray(x[i:j]), ids=list(range(i, j)),
                          metadata=[{"bucket": int(b)} for b in bucket[i:j]])
    db.flush()
    db.compact()
    db.close()
    return hivlp.open(path, model=None, read_only=True)


def lance_store(path, x, bucket, index):
    import lancedb
    import pyarrow as pa

    n, d = x.shape
    db = lancedb.connect(path)
    table = None
    for i in range(0, n, systems.BATCH):
        j = min(i + systems.BATCH, n)
        flat = pa.array(np.ascontiguousarray(x[i:j]).reshape(-1), type=pa.float32())
        batch = pa.table({"id": pa.array(np.arange(i, j, dtype=np.int64)), "bucket": pa.array(bucket[i:j]),
                          "vector": pa.FixedSizeListArray.from_arrays(flat, d)})
        if table is None:
            table = db.create_table("items", data=batch)
        else:
            table.add(batch)
    if index == "ivf-pq":
        table.create_index(metric="dot", num_partitions=max(1, systems.ivf_lists(n) // 4),
                           num_sub_vectors=max(1, d // 8), vector_column_name="vector")
    elif index == "hnsw-sq":
        table.create_index(metric="dot", index_type="IVF_HNSW_SQ", vector_column_name="vector",
                           num_partitions=max(1, systems.ivf_lists(n) // 16))
    table.create_scalar_index("bucket")
    return lancedb.connect(path).open_table("items")


def measure(search, queries, truth, cap_s):
    """(recall@10, median ms, p99 ms, mean hits) over the queries, stopping after cap_s."""
    for i in range(min(5, len(queries))):  # warm-up
        search(queries[i])
    found, lat = bench.timed(lambda i: search(queries[i]), len(queries), cap_s)
    return {"recall": bench.recall(found, truth[:len(found)]), "median_ms": float(np.median(lat) * 1e3),
            "p99_ms": float(np.percentile(lat, 99) * 1e3), "hits": float(np.mean([len(f) for f in found])),
            "queries": len(found)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--cap-s", type=float, default=20.0, help="time limit per measured configuration")
    ap.add_argument("--only", default="", help="comma-separated system names (default: all)")
    ap.add_argument("--work", default=None)
    ap.add_argument("--out", default=os.path.join(bench.ROOT, "benches", "results"))
    args = ap.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="hivlp-filter-")
    started = time.time()
    loads = []

    def log(msg):
        loads.append(os.getloadavg()[0])
        print(f"[{time.time() - started:7.1f}s load {loads[-1]:.1f}] {msg}", flush=True)

    x, q = bench.synthetic(args.rows, args.queries, args.dim, clusters=200, noise=1.1, seed=44)
    bucket = np.random.default_rng(8).integers(0, BUCKETS, size=len(x), dtype=np.int64)
    log(f"data {args.rows} x {args.dim}: exact (filtered) ground truth")
    truth = {"none": bench.ground_truth(x, q)}
    for label, bound in SELECTIVITY.items():
        truth[label] = bench.ground_truth(x, q, np.flatnonzero(bucket < bound))

    rows = []
    wanted = ["hivlp", "lancedb flat", "lancedb IVF-PQ", "lancedb IVF_HNSW_SQ"]
    for name in [w for w in wanted if not args.only or w in args.only.split(",")]:
        path = os.path.join(work, name.replace(" ", "_"))
        shutil.rmtree(path, ignore_errors=True)
        t = time.perf_counter()
        if name == "hivlp":
            db = hivlp_store(path, x, bucket)
            variants = {"where": lambda qv, w: [h.id for h in db.search(vector=qv, k=K, where=w)]}
            # What evaluating the predicate costs apart from the scan: hivlp times it per search.
            timing = db.search_with_timing
        else:
            table = lance_store(path, x, bucket, {"lancedb flat": None, "lancedb IVF-PQ": "ivf-pq",
                                                  "lancedb IVF_HNSW_SQ": "hnsw-sq"}[name])
            timing = None

            def lance(prefilter):
                def run(qv, w):
                    s = table.search(qv).distance_type("dot").limit(K).select(["id", "_distance"])
                    if w is not None:
                        s = s.where(w, prefilter=prefilter)
                    return s.to_arrow()["id"].to_pylist()
                return run

            variants = {"prefilter": lance(True)} if name != "lancedb IVF-PQ" else \
                {"prefilter": lance(True), "postfilter": lance(False)}
        build_s = time.perf_counter() - t
        log(f"{name}: built in {build_s:.1f} s, {systems.dir_size(path) / 2**20:.0f} MiB")
        for variant, run in variants.items():
            row = {"system": name, "variant": variant, "build_s": build_s,
                   "disk_mib": systems.dir_size(path) / 2**20, "by_selectivity": {}}
            row["by_selectivity"]["none"] = measure(lambda qv: run(qv, None), q, truth["none"], args.cap_s)
            for label, bound in SELECTIVITY.items():
                where = f"bucket < {bound}"
                # hivlp caches a predicate's bitmap per immutable segment: the first search
                # with it pays the evaluation, later ones look it up.
                cold = timing(vector=q[0], k=K, where=where)[1]["filter_ms"] if timing else None
                m = measure(lambda qv: run(qv, where), q, truth[label], args.cap_s)
                if timing is not None:
                    spent = [timing(vector=q[i], k=K, where=where)[1] for i in range(min(20, len(q)))]
                    m["predicate_first_ms"] = cold
                    m["predicate_ms"] = float(np.median([t["filter_ms"] for t in spent]))
                    m["exact_share"] = float(np.mean([t["exact"] for t in spent]))
                row["by_selectivity"][label] = m
            log(f"  {name} {variant}: " + "; ".join(
                f"{lab} r={v['recall']:.3f} {v['median_ms']:.2f} ms" for lab, v in row["by_selectivity"].items()))
            rows.append(row)
        if name == "hivlp":
            db.close()
        shutil.rmtree(path, ignore_errors=True)

    report = {"rows_n": args.rows, "dim": args.dim, "queries": args.queries, "commit": bench.commit(),
              "machine": bench.machine(), "versions": bench.versions(),
              "load": {"min": min(loads), "max": max(loads), "mean": float(np.mean(loads))},
              "wall_s": time.time() - started, "started_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
              "results": rows}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "filter.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(args.out, "filter.md"), "w") as f:
        f.write(markdown(report))
    log(f"done in {time.time() - started:.0f} s: {os.path.join(args.out, 'filter.md')}")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


def markdown(r):
    m = r["machine"]
    labels = ["none", *SELECTIVITY]
    out = [f"# Filtered search: {r['rows_n']:,} rows x {r['dim']}-d, k = {K}", "",
           f"Commit {r['commit']}, {r['started_utc']}, {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; "
           f"load {r['load']['min']:.1f}-{r['load']['max']:.1f}; wall {r['wall_s'] / 60:.1f} min; "
           + ", ".join(f"{k} {v}" for k, v in r["versions"].items() if k in ("hivlp", "lancedb", "pylance")) + ".",
           "", "Filter `bucket < b` (uniform 0..9999). Each cell: recall@10 against exact filtered search / "
           "median ms / mean hits returned. `predicate` is hivlp's own time evaluating the predicate, "
           "part of its latency: on the first search with it, and median once its per-segment bitmaps "
           "are cached.", "",
           "| system | build s | " + " | ".join("unfiltered" if lab == "none" else lab for lab in labels) + " |",
           "|---|---|" + "---|" * len(labels)]
    for row in r["results"]:
        cells = []
        for lab in labels:
            v = row["by_selectivity"][lab]
            cell = f"{v['recall']:.3f} / {v['median_ms']:.2f} / {v['hits']:.1f}"
            if "predicate_ms" in v:
                cell += f" (predicate {v['predicate_first_ms']:.2f} first, {v['predicate_ms']:.3f} cached)"
            cells.append(cell)
        out.append(f"| {row['system']} {row['variant']} | {row['build_s']:.0f} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
