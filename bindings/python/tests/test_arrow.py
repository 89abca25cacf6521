"""Arrow in: `insert_arrow` / `insert_pandas` with column mapping, batches, and the batch
boundary in errors."""

import math

import numpy as np
import pytest

import hivlp
from conftest import COARSE_DIM, FINE_DIM, unit_rows

pa = pytest.importorskip("pyarrow", reason="pyarrow is installed by scripts/setup-python")


def vectors_column(rows, dtype):
    flat = pa.array(np.ascontiguousarray(rows, dtype=dtype).ravel())
    return pa.FixedSizeListArray.from_arrays(flat, rows.shape[1])


def table(n, dtype=np.float32, first_id=100):
    fine = unit_rows(n, FINE_DIM, seed=1)
    return fine, pa.table(
        {
            "item_id": pa.array(range(first_id, first_id + n), type=pa.uint64()),
            "caption": [f"caption {i}" for i in range(n)],
            "uri": [f"file:///{i}.png" for i in range(n)],
            "metadata": [{"n": i, "tag": "x"} for i in range(n)],
            "embedding": vectors_column(fine, dtype),
            "image_coarse": vectors_column(fine[:, :COARSE_DIM], dtype),
        }
    )


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_insert_arrow_maps_columns_in_batches(vec_db, dtype):
    fine, data = table(10, dtype)
    ids = vec_db.insert_arrow(data, batch_rows=3, ids="item_id", image_fine="embedding")
    assert ids == list(range(100, 110))
    for i, item in enumerate(ids):
        hit = vec_db.get(item)
        assert (hit.caption, hit.uri, hit.metadata) == (f"caption {i}", f"file:///{i}.png", {"n": i, "tag": "x"})
        query = np.asarray(fine[i], dtype=dtype).astype(np.float32)
        assert vec_db.search(vector=query, k=1, exact=True)[0].id == item


def test_insert_arrow_reads_a_reader_and_skips_mapped_out_columns(vec_db):
    _, data = table(7)
    reader = pa.RecordBatchReader.from_batches(data.schema, data.to_batches(max_chunksize=4))
    ids = vec_db.insert_arrow(reader, batch_rows=2, ids="item_id", image_fine="embedding", uris=None)
    assert len(ids) == 7 and len(vec_db) == 7
    assert vec_db.get(ids[0]).uri is None


def test_failed_batch_is_named_and_not_inserted(vec_db):
    fine, data = table(9)
    bad = fine.copy()
    bad[4, 0] = math.nan  # row 4: in the second batch of three
    data = data.set_column(data.schema.get_field_index("embedding"), "embedding", vectors_column(bad, np.float32))
    with pytest.raises(hivlp.InvalidInputError, match=r"batch 1 \(rows 3\.\.6\) was not inserted, the 3 rows before it were"):
        vec_db.insert_arrow(data, batch_rows=3, ids="item_id", image_fine="embedding")
    assert len(vec_db) == 3
    assert vec_db.get(103) is None and vec_db.get(102) is not None


def test_unknown_mapping_is_refused(vec_db):
    _, data = table(2)
    with pytest.raises(KeyError, match="no_such"):
        vec_db.insert_arrow(data, ids="no_such", image_fine="embedding")


def test_insert_pandas(vec_db):
    pd = pytest.importorskip("pandas", reason="pandas is installed by scripts/setup-python")
    fine = unit_rows(5, FINE_DIM, seed=2)
    frame = pd.DataFrame({"caption": [f"c{i}" for i in range(5)], "vec": list(fine)})
    ids = vec_db.insert_pandas(frame, image_fine="vec", batch_rows=2)
    assert [vec_db.get(i).caption for i in ids] == [f"c{i}" for i in range(5)]
    assert vec_db.search(vector=fine[3], k=1, exact=True)[0].id == ids[3]


def filled(db, n, seed=3):
    """`n` items in a segment and the memtable (one deleted): image vectors for all, text
    vectors for none or all of an insert call, captions, uris and metadata of every kind."""
    image = unit_rows(n, FINE_DIM, seed=seed)
    text = unit_rows(n, FINE_DIM, seed=seed + 1)
    half = n // 2
    first = db.insert_vectors(
        image_fine=image[:half],
        text_fine=text[:half],
        captions=[f"caption {i}" if i % 3 else None for i in range(half)],
        uris=[f"u{i}" for i in range(half)],
        metadata=[{"n": i} if i % 2 else b"\x00raw" for i in range(half)],
    )
    db.flush()
    second = db.insert_vectors(image_fine=image[half:], captions=[f"late {i}" for i in range(half, n)])
    db.delete([first[1]])
    return first + second, image


@pytest.mark.parametrize(
    "coarse_dtype, metric", [("i8", "ip"), ("f16", "ip"), ("f32", "ip"), ("f32", "cosine")]
)
def test_to_arrow_insert_arrow_round_trip_is_bit_exact(tmp_path, coarse_dtype, metric):
    # Inner product stores vectors as given; cosine normalises on insert, which leaves a vector
    # already of unit length to f32 precision as it is. (Quantised coarse vectors read back as
    # f32 are not unit length, so under cosine they are normalised again: f32 coarse only.)
    dims = dict(
        model=None, fine_dim=FINE_DIM, coarse_dim=COARSE_DIM, coarse_dtype=coarse_dtype, metric=metric
    )
    with hivlp.open(tmp_path / "a", **dims) as a, hivlp.open(tmp_path / "b", **dims) as b:
        ids, image = filled(a, 10)
        exported = a.to_arrow(batch_rows=3)
        assert exported.column_names == [
            "id", "caption", "uri", "metadata", "image_fine", "image_coarse", "text_fine", "text_coarse",
        ]
        live = [i for i in ids if i != ids[1]]
        assert exported.column("id").to_pylist() == live
        assert exported.column("metadata").to_pylist()[0] == b"\x00raw"
        # Fine vectors are stored as float32: out exactly as they went in.
        fine = np.stack(exported.column("image_fine").to_numpy(zero_copy_only=False))
        np.testing.assert_array_equal(fine, image[[ids.index(i) for i in live]])
        assert exported.column("text_fine").null_count == 5  # the memtable rows have no text
        # Batches stay whole: text vectors for all rows of a batch or none.
        b.insert_arrow(a.to_arrow_reader(batch_rows=4))
        again = b.to_arrow()
        assert again.equals(exported), "export -> insert -> export changed something"


def test_to_arrow_columns_and_where(vec_db):
    import pyarrow.compute as pc

    ids, _ = filled(vec_db, 8)
    table = vec_db.to_arrow(columns=["caption", "id"], where=pc.field("id") >= ids[5])
    assert table.column_names == ["caption", "id"]
    assert table.column("id").to_pylist() == ids[5:]
    with pytest.raises(KeyError, match="nope"):
        vec_db.to_arrow(columns=["nope"])


def test_to_arrow_feeds_parquet_pandas_duckdb_and_lance(vec_db, tmp_path):
    import pyarrow.parquet as pq

    filled(vec_db, 6)
    table = vec_db.to_arrow()
    pq.write_table(table, tmp_path / "items.parquet")
    assert pq.read_table(tmp_path / "items.parquet").equals(table)
    frame = vec_db.to_pandas(columns=["id", "caption"])
    assert list(frame["id"]) == table.column("id").to_pylist()
    try:
        import duckdb
    except ImportError:
        print("duckdb is not installed: the DuckDB read is skipped")
        return
    items = table  # DuckDB reads Arrow tables by their Python variable name
    assert duckdb.sql("select count(*) from items").fetchall() == [(items.num_rows,)]
    try:
        import lance
    except ImportError:
        print("pylance is not installed: the Lance write is skipped")
        return
    lance.write_dataset(table, tmp_path / "items.lance")
    assert lance.dataset(tmp_path / "items.lance").to_table().equals(table)
