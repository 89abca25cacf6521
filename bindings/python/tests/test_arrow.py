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
