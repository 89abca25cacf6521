"""search_with_timing: the hits of search(vector=...) and what the search did, with the estimated recall."""

import numpy as np
import pytest

import hivlp
from conftest import FINE_DIM, unit_rows


def test_reports_candidates_passes_and_estimated_recall(vec_db):
    vectors = unit_rows(3000, FINE_DIM, seed=2)
    vec_db.insert_vectors(image_fine=vectors)
    query = unit_rows(1, FINE_DIM, seed=99)[0]
    hits, timing = vec_db.search_with_timing(query, k=10)
    assert [h.id for h in hits] == [h.id for h in vec_db.search(vector=query, k=10)]
    assert set(timing) == {"filter_ms", "coarse_ms", "fine_ms", "candidates", "passes", "exact", "estimated_recall", "probe"}
    assert timing["coarse_ms"] >= 0 and timing["fine_ms"] >= 0
    # The default search reaches the target recall or runs the exact scan.
    assert timing["estimated_recall"] >= 0.99 or timing["exact"]
    # A caller's small fixed M is kept, and the estimate says it falls short.
    _, small = vec_db.search_with_timing(query, k=10, candidates=10)
    assert small["candidates"] == 10 and not small["exact"]
    assert small["estimated_recall"] < 0.99
    _, exact = vec_db.search_with_timing(query, k=10, exact=True)
    assert exact["exact"] and exact["candidates"] == 0
    assert exact["estimated_recall"] == pytest.approx(1.0)


def test_partitioned_segments_are_probed_and_agree_with_exact_search(db_path):
    db = hivlp.open(db_path, model=None, durability="buffered", fine_dim=FINE_DIM, coarse_dim=12,
                    partition_min_rows=32768)
    vectors = unit_rows(32768, FINE_DIM, seed=5)
    db.insert_vectors(image_fine=vectors)
    db.flush()
    stats = db.stats()
    assert stats["partitioned_segments"] == 1 and stats["partitions"] == 64
    query = vectors[17] + 0.01 * unit_rows(1, FINE_DIM, seed=6)[0]
    hits, timing = db.search_with_timing(query, k=10, probe=0.25, candidates=100)
    assert timing["probe"] == pytest.approx(0.25, abs=0.1) and hits[0].id == 17
    _, everything = db.search_with_timing(query, k=10, probe=1.0)
    assert everything["probe"] == 1.0
    exact = [h.id for h in db.search(vector=query, k=10, exact=True)]
    assert [h.id for h in db.search(vector=query, k=10, probe=1.0, candidates=32768)] == exact
    with pytest.raises(hivlp.InvalidInputError, match="probe"):
        db.search(vector=query, k=10, probe=0.0)
    ids, _ = db.search_batch(np.stack([query, vectors[3]]), k=10, probe=1.0, candidates=32768)
    assert ids[0].tolist() == exact
    db.close()
