"""One adapter per system under test: build a store from vectors, reopen it, query it.

Every adapter gets the same unit-length float32 vectors and ids 0..n-1, and answers top-k by
inner product (= cosine). `build` runs in a fresh process and writes everything to `path`;
`Searcher` runs in another fresh process, so its peak RSS is what a query process costs.
A filter is a sorted int64 array of allowed ids plus `bucket`, the row's filter column value
(ids with bucket < b are allowed), so stores that filter by column and by id list see the same
subset.
"""

import os

import numpy as np

try:  # sqlite-vec needs extension loading, which some Python builds (pyenv's here) leave out
    import pysqlite3 as sqlite3
except ImportError:
    import sqlite3

BATCH = 10_000  # rows per insert call for every store that ingests in batches


def buckets(n):
    """The filter column: a fixed pseudo-random value in 0..999 per row."""
    return np.random.default_rng(7).integers(0, 1000, size=n, dtype=np.int64)


def dir_size(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


class System:
    """A named configuration; `params` are the search-time settings swept for recall/latency."""

    filters = False
    batch_api = True

    def __init__(self, name, family, params, shares=None, **options):
        self.name = name
        self.family = family
        self.params = params
        self.shares = shares  # another system's store this one queries (same build)
        self.options = options


# ---------------------------------------------------------------------------------------- hivlp
class Hivlp(System):
    filters = True

    def build(self, path, x, bucket):
        import hivlp

        n, d = x.shape
        # Vectors only: hivlp derives the coarse tier (PCA once 4,096 rows exist); on the
        # real set the default model's own derivation (its Matryoshka prefix) is used.
        model = self.options.get("model")
        dims = {} if model else {"fine_dim": d, "coarse_dim": min(64, d)}
        # Partitioned: every segment of at least 32,768 rows is partitioned, and the build ends
        # with a compaction into one segment (what auto-compaction converges to), so that a
        # query probes one partition index rather than one per 50,000-row flush.
        partitioned = self.options.get("partitioned", False)
        extra = {"partition_min_rows": 32_768} if partitioned else {}
        db = hivlp.open(path, model=model, coarse_dtype=self.options["coarse"], **dims, **extra)
        for i in range(0, n, BATCH):
            db.insert_vectors(image_fine=np.ascontiguousarray(x[i:i + BATCH]),
                              ids=list(range(i, min(i + BATCH, n))))
        db.flush()
        if partitioned:
            db.compact()
        stats = db.stats()
        db.close()
        # What the partitions cost: the k-means time and count of the final store's segments
        # (after compact(), the one segment a query probes).
        return {"partitions": stats["partitions"], "partition_build_s": stats["partition_build_ms"] / 1e3}

    class Searcher:
        def __init__(self, sysdef, path, threads):
            import hivlp

            self.exact = sysdef.options.get("exact", False)
            self.db = hivlp.open(path, model=sysdef.options.get("model"), read_only=True, threads=threads)

        def kwargs(self, k, p):
            """`p`: "default" (the adaptive search, what a user gets), M, or (probe share, M)."""
            if self.exact:
                return {"exact": True}
            if p == "default":
                return {}
            if isinstance(p, (list, tuple)):
                return {"probe": p[0], "candidates": max(p[1], k)}
            return {"candidates": max(p, k)}

        def search(self, q, k, p, allow=None):
            hits = self.db.search(vector=q, k=k, allow_ids=None if allow is None else allow[0], **self.kwargs(k, p))
            return [h.id for h in hits]

        def batch(self, qs, k, p):
            ids, _ = self.db.search_batch(qs, k=k, **self.kwargs(k, p))
            return ids


# ---------------------------------------------------------------------------------------- FAISS
class Faiss(System):
    filters = True

    def build(self, path, x, bucket):
        import faiss

        n, d = x.shape
        kind = self.options["kind"]
        if kind == "flat":
            index = faiss.IndexFlatIP(d)
        elif kind == "refine":
            # A 64-d PCA coarse index re-ranked by the full vectors: FAISS's coarse-to-fine.
            base = faiss.IndexPreTransform(faiss.PCAMatrix(d, min(64, d)), faiss.IndexFlatIP(min(64, d)))
            index = faiss.IndexRefineFlat(base)
        elif kind == "ivf":
            quantizer = faiss.IndexFlatIP(d)
            index = faiss.IndexIVFFlat(quantizer, d, ivf_lists(n), faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        if not index.is_trained:
            index.train(np.ascontiguousarray(x[: min(n, 50_000)]))
        for i in range(0, n, BATCH):
            index.add(np.ascontiguousarray(x[i:i + BATCH]))
        faiss.write_index(index, os.path.join(path, "index.faiss"))

    class Searcher:
        def __init__(self, sysdef, path, threads):
            import faiss

            faiss.omp_set_num_threads(threads)
            self.faiss = faiss
            self.kind = sysdef.options["kind"]
            self.index = faiss.read_index(os.path.join(path, "index.faiss"))

        def _params(self, p, sel=None):
            f = self.faiss
            if self.kind == "flat":
                return f.SearchParameters(sel=sel) if sel is not None else None
            if self.kind == "refine":
                return f.IndexRefineSearchParameters(k_factor=float(p), sel=sel) if sel is not None \
                    else f.IndexRefineSearchParameters(k_factor=float(p))
            if self.kind == "ivf":
                return f.SearchParametersIVF(nprobe=p, sel=sel) if sel is not None \
                    else f.SearchParametersIVF(nprobe=p)
            return f.SearchParametersHNSW(efSearch=p, sel=sel) if sel is not None \
                else f.SearchParametersHNSW(efSearch=p)

        def search(self, q, k, p, allow=None):
            sel = None if allow is None else self.faiss.IDSelectorBatch(allow[0])
            _, ids = self.index.search(q[None, :], k, params=self._params(p, sel))
            return [i for i in ids[0] if i >= 0]

        def batch(self, qs, k, p):
            _, ids = self.index.search(qs, k, params=self._params(p))
            return ids


def ivf_lists(n):
    """The usual 4·sqrt(n) lists, but at least 39 training points a list."""
    return max(1, min(int(4 * np.sqrt(n)), n // 39))


# -------------------------------------------------------------------------------------- USearch
class USearch(System):
    def build(self, path, x, bucket):
        from usearch.index import Index

        n, d = x.shape
        index = Index(ndim=d, metric="ip", dtype=self.options["dtype"])
        for i in range(0, n, BATCH):
            index.add(np.arange(i, min(i + BATCH, n), dtype=np.uint64), np.ascontiguousarray(x[i:i + BATCH]))
        index.save(os.path.join(path, "index.usearch"))

    class Searcher:
        def __init__(self, sysdef, path, threads):
            from usearch.index import Index

            self.threads = threads
            self.index = Index.restore(os.path.join(path, "index.usearch"))

        def search(self, q, k, p, allow=None):
            self.index.expansion_search = p
            return list(self.index.search(q, k).keys)

        def batch(self, qs, k, p):
            self.index.expansion_search = p
            return self.index.search(qs, k, threads=self.threads).keys


# -------------------------------------------------------------------------------------- hnswlib
class Hnswlib(System):
    filters = True

    def build(self, path, x, bucket):
        import hnswlib

        n, d = x.shape
        index = hnswlib.Index(space="ip", dim=d)
        index.init_index(max_elements=n, ef_construction=200, M=16)
        for i in range(0, n, BATCH):
            index.add_items(np.ascontiguousarray(x[i:i + BATCH]), np.arange(i, min(i + BATCH, n)))
        index.save_index(os.path.join(path, "index.hnsw"))
        with open(os.path.join(path, "dim"), "w") as f:
            f.write(str(d))

    class Searcher:
        def __init__(self, sysdef, path, threads):
            import hnswlib

            self.threads = threads
            self.index = hnswlib.Index(space="ip", dim=int(open(os.path.join(path, "dim")).read()))
            self.index.load_index(os.path.join(path, "index.hnsw"))

        def search(self, q, k, p, allow=None):
            self.index.set_ef(max(p, k))
            if allow is None:
                labels, _ = self.index.knn_query(q, k=k, num_threads=1)
            else:
                allowed = allow[2]
                labels, _ = self.index.knn_query(q, k=min(k, len(allowed)), num_threads=1,
                                                 filter=lambda i: i in allowed)
            return list(labels[0])

        def batch(self, qs, k, p):
            self.index.set_ef(max(p, k))
            labels, _ = self.index.knn_query(qs, k=k, num_threads=self.threads)
            return labels


# -------------------------------------------------------------------------------------- LanceDB
class Lance(System):
    filters = True
    batch_api = False

    def build(self, path, x, bucket):
        import lancedb
        import pyarrow as pa

        n, d = x.shape
        db = lancedb.connect(path)
        table = None
        for i in range(0, n, BATCH):
            j = min(i + BATCH, n)
            flat = pa.array(np.ascontiguousarray(x[i:j]).reshape(-1), type=pa.float32())
            batch = pa.table({
                "id": pa.array(np.arange(i, j, dtype=np.int64)),
                "bucket": pa.array(bucket[i:j]),
                "vector": pa.FixedSizeListArray.from_arrays(flat, d),
            })
            if table is None:
                table = db.create_table("items", data=batch)
            else:
                table.add(batch)
        if self.options["index"]:
            # IVF-PQ, the index LanceDB documents for vector search; refine_factor re-ranks.
            table.create_index(metric="dot", num_partitions=max(1, ivf_lists(n) // 4),
                               num_sub_vectors=max(1, d // 8), vector_column_name="vector")

    class Searcher:
        def __init__(self, sysdef, path, threads):
            import lancedb

            self.indexed = sysdef.options["index"]
            self.table = lancedb.connect(path).open_table("items")

        def search(self, q, k, p, allow=None):
            s = self.table.search(q).distance_type("dot").limit(k).select(["id"])
            if self.indexed:
                nprobes, refine = p
                s = s.nprobes(nprobes).refine_factor(refine)
            if allow is not None:
                s = s.where(f"bucket < {allow[1]}", prefilter=True)
            return s.to_arrow()["id"].to_pylist()


# --------------------------------------------------------------------------------------- Chroma
class Chroma(System):
    filters = True

    @staticmethod
    def client(path):
        import chromadb
        from chromadb.config import Settings

        return chromadb.PersistentClient(path=path, settings=Settings(anonymized_telemetry=False))

    def build(self, path, x, bucket):
        n, _ = x.shape
        client = self.client(path)
        col = client.create_collection("items", metadata={"hnsw:space": "ip"})
        step = min(BATCH, client.get_max_batch_size())
        for i in range(0, n, step):
            j = min(i + step, n)
            col.add(ids=[str(t) for t in range(i, j)], embeddings=np.ascontiguousarray(x[i:j]),
                    metadatas=[{"bucket": int(b)} for b in bucket[i:j]])

    class Searcher:
        def __init__(self, sysdef, path, threads):
            self.col = Chroma.client(path).get_collection("items")

        def search(self, q, k, p, allow=None):
            where = None if allow is None else {"bucket": {"$lt": int(allow[1])}}
            r = self.col.query(query_embeddings=q[None, :], n_results=k, where=where, include=[])
            return [int(i) for i in r["ids"][0]]

        def batch(self, qs, k, p):
            r = self.col.query(query_embeddings=qs, n_results=k, include=[])
            return [[int(i) for i in row] for row in r["ids"]]


# ----------------------------------------------------------------------------------- sqlite-vec
class SqliteVec(System):
    filters = True
    batch_api = False

    @staticmethod
    def connect(path):
        import sqlite_vec

        conn = sqlite3.connect(os.path.join(path, "vec.db"))
        conn.enable_load_extension(True)
        sqlite_vec.load(conn)
        conn.enable_load_extension(False)
        return conn

    def build(self, path, x, bucket):
        n, d = x.shape
        conn = self.connect(path)
        conn.execute(f"create virtual table items using vec0(embedding float[{d}] distance_metric=cosine, bucket integer)")
        for i in range(0, n, BATCH):
            j = min(i + BATCH, n)
            rows = [(t, np.ascontiguousarray(x[t]).tobytes(), int(bucket[t])) for t in range(i, j)]
            with conn:
                conn.executemany("insert into items(rowid, embedding, bucket) values (?, ?, ?)", rows)
        conn.close()

    class Searcher:
        def __init__(self, sysdef, path, threads):
            self.conn = SqliteVec.connect(path)

        def search(self, q, k, p, allow=None):
            sql = "select rowid from items where embedding match ? and k = ?"
            args = [np.ascontiguousarray(q).tobytes(), k]
            if allow is not None:
                sql += " and bucket < ?"
                args.append(int(allow[1]))
            return [r[0] for r in self.conn.execute(sql, args)]


def catalogue(smoke=False):
    """Every configuration of the issue, with the search-time settings swept (in a smoke run
    only the first and last of each)."""
    every = [
        Hivlp("hivlp i8", "hivlp", ["default", 50, 100, 200, 400], coarse="i8"),
        Hivlp("hivlp f16", "hivlp", [50, 100, 200, 400], coarse="f16"),
        Hivlp("hivlp f32", "hivlp", [50, 100, 200, 400], coarse="f32"),
        Hivlp("hivlp exact", "hivlp", [0], shares="hivlp i8", coarse="i8", exact=True),
        # Issue 10: partitioned segments, probed; "default" grows the probe and M per query.
        Hivlp("hivlp i8 partitioned", "hivlp", ["default", (0.02, 200), (0.05, 400), (0.1, 800)],
              coarse="i8", partitioned=True),
        Faiss("faiss Flat", "faiss", [0], kind="flat"),
        Faiss("faiss RefineFlat(PCA64)", "faiss", [5, 10, 20, 40], kind="refine"),
        Faiss("faiss IVF-Flat", "faiss", [4, 16, 64], kind="ivf"),
        Faiss("faiss HNSW32", "faiss", [16, 32, 64, 128], kind="hnsw"),
        USearch("usearch f32", "usearch", [16, 32, 64, 128], dtype="f32"),
        USearch("usearch i8", "usearch", [16, 32, 64, 128], dtype="i8"),
        Hnswlib("hnswlib", "hnswlib", [16, 32, 64, 128]),
        Lance("lancedb flat", "lancedb", [0], index=False),
        Lance("lancedb IVF-PQ", "lancedb", [(20, 1), (20, 10), (50, 10)], index=True),
        Chroma("chroma", "chromadb", [0]),
        SqliteVec("sqlite-vec", "sqlite-vec", [0]),
    ]
    if smoke:
        for s in every:
            s.params = list(dict.fromkeys([s.params[0], s.params[-1]]))
    return every
