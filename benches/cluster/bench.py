"""The cost of hivlp.cluster on one machine, and a projection to 10 and 100 nodes.

Measures, within one run (so ratios compare like with like on a shared machine):
  1. per-query latency of a 4-shard collection (4 Ray actors) against one database of the same
     rows, single queries and batches, and the bare Ray fan-out (a no-op call to every shard);
  2. ingest throughput with 1 and 2 shard actors (vectors, and images the actors encode);
  3. per-shard search cost on one thread at two sizes, from which it projects latency and
     throughput for 10 and 100 nodes at 100M and 1B rows (assumptions printed with the table).

Usage: .venv/bin/python benches/cluster/bench.py [--rows 100000] [--queries 300] [--json out.json]
"""

import argparse
import glob
import json
import os
import pathlib
import tempfile
import time

import numpy as np
import ray

import hivlp
from hivlp import cluster

REPO = pathlib.Path(__file__).resolve().parents[2]
FINE, COARSE = 256, 64  # the default model's dimensions
K = 10


def unit_rows(n, seed):
    rows = np.random.default_rng(seed).standard_normal((n, FINE)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def latencies_ms(call, queries):
    """Per-call wall times in ms after two warm-up calls."""
    for q in queries[:2]:
        call(q)
    times = []
    for q in queries:
        start = time.perf_counter()
        call(q)
        times.append((time.perf_counter() - start) * 1e3)
    return np.array(times)


def summary(times):
    return {
        "median_ms": float(np.median(times)),
        "p90_ms": float(np.percentile(times, 90)),
        "p99_ms": float(np.percentile(times, 99)),
    }


def insert_in_batches(target, rows, batch):
    start = time.perf_counter()
    for i in range(0, len(rows), batch):
        target.insert_vectors(image_fine=rows[i : i + batch])
    return len(rows) / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--ingest-rows", type=int, default=50_000)
    parser.add_argument("--json", type=pathlib.Path)
    args = parser.parse_args()
    results = {"load_average_start": os.getloadavg(), "rows": args.rows, "shards": 4}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    work = pathlib.Path(tempfile.mkdtemp(prefix="hivlp-cluster-bench-"))
    vectors_only = {"model": None, "fine_dim": FINE, "coarse_dim": COARSE}
    rows = unit_rows(args.rows, seed=1)
    # Queries near stored rows, as real ones are: each has a true neighbour to find.
    queries = rows[:: max(1, args.rows // args.queries)][: args.queries] + 0.05 * unit_rows(
        args.queries, seed=2
    )
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)

    # 1. Query latency: one database against 4 shards on 4 actors, same rows, same ids.
    single = hivlp.open(work / "single", **vectors_only)
    results["ingest_single_db_rows_per_s"] = insert_in_batches(single, rows, 10_000)
    collection = cluster.open(work / "c4", 4, **vectors_only)
    results["ingest_4_shards_4_actors_rows_per_s"] = insert_in_batches(collection, rows, 10_000)
    assert len(collection) == len(single) == args.rows
    lat = {
        "single db, search": latencies_ms(lambda q: single.search(vector=q, k=K), queries),
        "4 shards, search": latencies_ms(lambda q: collection.search(vector=q, k=K), queries),
        "4 shards, no-op fan-out": latencies_ms(lambda q: collection._all("length"), queries),
    }
    results["latency"] = {name: summary(t) for name, t in lat.items()}
    batch = queries[:100]
    for name, target in (("single db", single), ("4 shards", collection)):
        target.search_batch(batch, k=K)
        start = time.perf_counter()
        for _ in range(3):
            target.search_batch(batch, k=K)
        results["latency"][f"{name}, search_batch(100) per query"] = {
            "median_ms": (time.perf_counter() - start) / 3 / len(batch) * 1e3
        }
    # Recall@10 against the exact top 10: each shard re-ranks its own candidates.
    truth = single.search_batch(batch, k=K, exact=True)[0]
    for name, target in (("single db", single), ("4 shards", collection)):
        found = target.search_batch(batch, k=K)[0]
        results[f"recall_at_10_{name}"] = float(
            np.mean([len(set(a) & set(b)) / K for a, b in zip(found, truth)])
        )
    # What the driver spends submitting one shard call (the rest of a fan-out is waiting).
    actors = [collection._actor_of[s] for s in range(4)]
    submit_start = time.perf_counter()
    refs = [a.length.remote(s) for _ in range(200) for s, a in enumerate(actors)]
    results["submit_ms_per_shard_call"] = (time.perf_counter() - submit_start) / len(refs) * 1e3
    ray.get(refs)
    collection.close()

    # 3. Per-shard cost on one thread at two sizes: cost = fixed + per_row * rows.
    shard_rows = args.rows // 4
    one_thread = {}
    for label, path, n in (
        ("shard", work / "c4" / "shard-000", shard_rows),
        ("db", None, args.rows),
    ):
        db = hivlp.open(path or work / "single", model=None, read_only=True, threads=1)
        assert len(db) == n
        # The lowest of three medians: load from other work on this machine only adds time.
        one_thread[n] = min(
            float(np.median(latencies_ms(lambda q: db.search(vector=q, k=K), queries)))
            for _ in range(3)
        )
        db.close()
    single.close()
    per_row_ms = (one_thread[args.rows] - one_thread[shard_rows]) / (args.rows - shard_rows)
    fixed_ms = one_thread[shard_rows] - per_row_ms * shard_rows
    results["one_thread_search_median_ms"] = {str(n): v for n, v in one_thread.items()}
    results["per_row_ns_one_thread"] = per_row_ms * 1e6
    results["fixed_ms_one_thread"] = fixed_ms

    # 2. Ingest with 1 and 2 shard actors (4 shards either way).
    ingest_rows = unit_rows(args.ingest_rows, seed=3)
    images = sorted(glob.glob(str(REPO / "data" / "demo" / "*.png")))
    image_bytes = [pathlib.Path(p).read_bytes() for p in images]
    for actors in (1, 2):
        with cluster.open(work / f"v{actors}", 4, actors=actors, **vectors_only) as c:
            results[f"ingest_vectors_{actors}_actors_rows_per_s"] = insert_in_batches(
                c, ingest_rows, 5_000
            )
        with cluster.open(work / f"i{actors}", 4, actors=actors) as c:
            c.insert(images=image_bytes[:8])  # loads the model in every actor
            start = time.perf_counter()
            for i in range(0, len(image_bytes), 50):
                c.insert(images=image_bytes[i : i + 50])
            elapsed = time.perf_counter() - start
            results[f"ingest_images_{actors}_actors_per_s"] = len(image_bytes) / elapsed
    results["load_average_end"] = os.getloadavg()
    results["projection"] = project(results)
    print_report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


# Assumed node for the projection: what a common cloud VM offers.
NODE_CORES = 32
NODE_BANDWIDTH_GBS = 100.0  # sustained memory read bandwidth, all cores
COARSE_BYTES_PER_ROW = COARSE + 4  # i8 codes and their f32 scale
NETWORK_RTT_MS = 0.2  # driver to node and back, same data centre


def project(results):
    """Latency and throughput per (nodes, rows), from the measured single-thread cost.

    Per node: the coarse scan of its rows, spread over its cores, but never faster than its
    memory bandwidth allows, plus the fixed (re-rank) cost; the query waits for the slowest
    node. Every query visits every node, so throughput is what one node sustains with all
    cores busy; replicas (not more shards) multiply it.
    """
    per_row_ms = results["per_row_ns_one_thread"] / 1e6
    fixed_ms = results["fixed_ms_one_thread"]
    fan_out = results["latency"]["4 shards, no-op fan-out"]["median_ms"]
    submit_ms = results["submit_ms_per_shard_call"]
    table = []
    for nodes in (10, 100):
        for total in (100_000_000, 1_000_000_000):
            per_node = total // nodes
            compute_ms = per_row_ms * per_node / NODE_CORES
            bandwidth_ms = per_node * COARSE_BYTES_PER_ROW / (NODE_BANDWIDTH_GBS * 1e6)
            node_ms = max(compute_ms, bandwidth_ms) + fixed_ms
            # The measured local no-op fan-out, a network round trip, one submit per extra node.
            ray_ms = fan_out + NETWORK_RTT_MS + (nodes - 4) * submit_ms
            table.append(
                {
                    "nodes": nodes,
                    "rows": total,
                    "rows_per_node": per_node,
                    "bound": "bandwidth" if bandwidth_ms > compute_ms else "compute",
                    "node_ms": node_ms,
                    "ray_ms": ray_ms,
                    "latency_ms": node_ms + ray_ms,
                    "queries_per_s": min(
                        NODE_CORES * 1e3 / (per_row_ms * per_node + fixed_ms), 1e3 / bandwidth_ms
                    ),
                    "driver_queries_per_s": 1e3 / (nodes * submit_ms),
                }
            )
    return table


def print_report(r):
    print(
        f"rows {r['rows']}, 4 shards; load average {r['load_average_start']} -> "
        f"{r['load_average_end']}"
    )
    print("\n| query | median ms | p90 ms | p99 ms |\n|---|---|---|---|")
    for name, s in r["latency"].items():
        print(
            f"| {name} | {s['median_ms']:.3f} | {s.get('p90_ms', float('nan')):.3f} | "
            f"{s.get('p99_ms', float('nan')):.3f} |"
        )
    print(
        f"\nrecall@10 against exact: single db {r['recall_at_10_single db']:.3f}, "
        f"4 shards {r['recall_at_10_4 shards']:.3f}; submit {r['submit_ms_per_shard_call']:.3f} ms"
    )
    print(
        f"one thread: {r['one_thread_search_median_ms']} ms median; "
        f"per row {r['per_row_ns_one_thread']:.2f} ns, fixed {r['fixed_ms_one_thread']:.3f} ms"
    )
    print("\n| ingest | per s |\n|---|---|")
    for key, value in r.items():
        if key.startswith("ingest"):
            print(f"| {key} | {value:.0f} |")
    print(
        "\n| nodes | rows | rows/node | bound | node ms | Ray ms | latency ms | q/s | driver q/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for p in r["projection"]:
        print(
            f"| {p['nodes']} | {p['rows']:.0e} | {p['rows_per_node']:.0e} | {p['bound']} | "
            f"{p['node_ms']:.1f} | {p['ray_ms']:.1f} | {p['latency_ms']:.1f} | "
            f"{p['queries_per_s']:.0f} | {p['driver_queries_per_s']:.0f} |"
        )


if __name__ == "__main__":
    main()
