"""search_with_timing: the hits of search(vector=...) and what the search did, with the estimated recall."""

import pytest

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
