"""insert_vectors, search and search_batch on a vectors-only database: results, numpy in and out, metadata, filters, threads."""

import threading
import time

import numpy as np
import pytest

import hivlp
from conftest import COARSE_DIM, FINE_DIM, unit_rows


@pytest.mark.parametrize("dtype", ["i8", "f16", "f32"])
def test_insert_then_search_finds_each_vector_first(db_path, dtype):
    vectors = unit_rows(200, FINE_DIM, seed=1)
    with hivlp.open(db_path, model=None, fine_dim=FINE_DIM, coarse_dim=COARSE_DIM, coarse_dtype=dtype) as db:
        ids = db.insert_vectors(image_fine=vectors, captions=[f"item {i}" for i in range(200)])
        assert len(ids) == 200 and len(set(ids)) == 200
        for row in (0, 57, 199):
            hits = db.search(vector=vectors[row], k=3)
            assert hits[0].id == ids[row]
            assert hits[0].caption == f"item {row}"
            assert hits[0].score == pytest.approx(1.0, abs=1e-3)
            assert hits[0].score >= hits[1].score >= hits[2].score
        exact = db.search(vector=vectors[3], k=5, exact=True)
        assert [h.id for h in exact][0] == ids[3]


def test_own_ids_and_duplicates(vec_db):
    ids = vec_db.insert_vectors(image_fine=unit_rows(3, FINE_DIM), ids=[10, 20, 2**63 - 1])
    assert ids == [10, 20, 2**63 - 1]
    with pytest.raises(hivlp.InvalidInputError):
        vec_db.insert_vectors(image_fine=unit_rows(1, FINE_DIM, seed=3), ids=[20])
    with pytest.raises(hivlp.InvalidInputError):
        vec_db.insert_vectors(image_fine=unit_rows(2, FINE_DIM, seed=4), ids=[7, 7])
    assert len(vec_db) == 3


def test_ids_above_the_int64_range_are_refused_and_automatic_ids_continue(vec_db, db_path):
    for too_large in (2**63, 2**64 - 2):
        with pytest.raises(hivlp.InvalidInputError, match=str(too_large)):
            vec_db.insert_vectors(image_fine=unit_rows(1, FINE_DIM), ids=[too_large])
    top = 2**63 - 1
    assert vec_db.insert_vectors(image_fine=unit_rows(1, FINE_DIM), ids=[top]) == [top]
    assert vec_db.insert_vectors(image_fine=unit_rows(2, FINE_DIM, seed=1)) == [top + 1, top + 2]
    vec_db.close()
    with hivlp.open(db_path, model=None) as db:
        assert db.insert_vectors(image_fine=unit_rows(1, FINE_DIM, seed=2)) == [top + 3]
        assert len(db) == 4


def test_text_and_image_targets(vec_db):
    images, texts = unit_rows(20, FINE_DIM, seed=5), unit_rows(20, FINE_DIM, seed=6)
    ids = vec_db.insert_vectors(image_fine=images[:10], text_fine=texts[:10])
    only_text = vec_db.insert_vectors(text_fine=texts[10:])
    assert vec_db.search(vector=texts[15], target="text", k=1)[0].id == only_text[5]
    assert vec_db.search(vector=images[4], target="image", k=1)[0].id == ids[4]
    # Items without an image embedding are never image hits.
    image_hits = vec_db.search(vector=texts[15], target="image", k=20)
    assert {h.id for h in image_hits} <= set(ids)
    with pytest.raises(hivlp.InvalidInputError, match="target"):
        vec_db.search(vector=images[0], target="video")


def test_explicit_coarse_vectors(vec_db):
    fine = unit_rows(30, FINE_DIM, seed=7)
    coarse = np.ascontiguousarray(fine[:, :COARSE_DIM])
    ids = vec_db.insert_vectors(image_fine=fine, image_coarse=coarse)
    hits = vec_db.search(vector=fine[9], coarse_vector=coarse[9], k=1)
    assert hits[0].id == ids[9]
    with pytest.raises(hivlp.InvalidInputError):
        vec_db.insert_vectors(image_fine=fine[:2], image_coarse=unit_rows(2, COARSE_DIM + 3))
    with pytest.raises(hivlp.InvalidInputError, match="image_fine"):
        vec_db.insert_vectors(image_coarse=coarse)


def test_search_batch_returns_numpy_arrays(vec_db):
    vectors = unit_rows(50, FINE_DIM, seed=8)
    ids = np.array(vec_db.insert_vectors(image_fine=vectors), dtype=np.uint64)
    found, scores = vec_db.search_batch(vectors[:7], k=4)
    assert found.shape == (7, 4) and found.dtype == np.uint64
    assert scores.shape == (7, 4) and scores.dtype == np.float32
    assert (found[:, 0] == ids[:7]).all()
    assert (np.diff(scores, axis=1) <= 1e-6).all(), "scores descend along each row"
    # One result per row matches a single search.
    single = vec_db.search(vector=vectors[2], k=4)
    assert list(found[2]) == [h.id for h in single]


def test_search_batch_pads_short_rows(vec_db):
    vectors = unit_rows(6, FINE_DIM, seed=9)
    ids = vec_db.insert_vectors(image_fine=vectors)
    found, scores = vec_db.search_batch(vectors[:3], k=5, allow_ids=ids[:3])
    assert found.shape == scores.shape == (3, 5)
    assert (found[:, 3:] == hivlp.NO_ID).all()
    assert np.isneginf(scores[:, 3:]).all()
    assert (found[:, :3] != hivlp.NO_ID).all()


def test_search_batch_converts_other_layouts(vec_db):
    vectors = unit_rows(10, FINE_DIM, seed=10)
    vec_db.insert_vectors(image_fine=vectors.astype(np.float64).tolist())
    as_f32, _ = vec_db.search_batch(vectors, k=2)
    as_f64, _ = vec_db.search_batch(vectors.astype(np.float64), k=2)
    fortran, _ = vec_db.search_batch(np.asfortranarray(vectors), k=2)
    strided, _ = vec_db.search_batch(np.repeat(vectors, 2, axis=0)[::2], k=2)
    assert (as_f32 == as_f64).all() and (as_f32 == fortran).all() and (as_f32 == strided).all()
    empty_ids, empty_scores = vec_db.search_batch(np.zeros((0, FINE_DIM), np.float32), k=3)
    assert empty_ids.shape == (0, 3) and empty_scores.shape == (0, 3)


def test_metadata_round_trip(vec_db):
    vectors = unit_rows(4, FINE_DIM, seed=12)
    ids = vec_db.insert_vectors(
        image_fine=vectors,
        metadata=[{"src": "x", "n": [1, 2]}, None, b"\x00raw", "plain text"],
        uris=["file:///a.png", None, None, None],
    )
    hits = {h.id: h for h in vec_db.search(vector=vectors[0], k=4, exact=True)}
    assert hits[ids[0]].metadata == {"src": "x", "n": [1, 2]}
    assert hits[ids[0]].uri == "file:///a.png"
    assert hits[ids[1]].metadata is None
    assert hits[ids[2]].metadata == b"\x00raw"
    assert hits[ids[3]].metadata == b"plain text"
    got = vec_db.get(ids[0])
    assert got.id == ids[0] and got.metadata == {"src": "x", "n": [1, 2]}
    assert vec_db.get(123456789) is None
    with pytest.raises(hivlp.InvalidInputError, match="metadata"):
        vec_db.insert_vectors(image_fine=vectors[:1], metadata=[{"bad": object()}])


def test_allow_and_deny_filters(vec_db):
    vectors = unit_rows(30, FINE_DIM, seed=21)
    ids = vec_db.insert_vectors(image_fine=vectors)
    hits = vec_db.search(vector=vectors[0], k=5, deny_ids=[ids[0]])
    assert ids[0] not in [h.id for h in hits] and len(hits) == 5
    hits = vec_db.search(vector=vectors[0], k=5, allow_ids=ids[10:12])
    assert sorted(h.id for h in hits) == sorted(ids[10:12])
    found, _ = vec_db.search_batch(vectors[:3], k=1, deny_ids=ids[:3])
    assert not set(found[:, 0]) & set(ids[:3])
    with pytest.raises(hivlp.InvalidInputError, match="not both"):
        vec_db.search(vector=vectors[0], allow_ids=[1], deny_ids=[2])


def test_concurrent_searches_from_threads(vec_db):
    vectors = unit_rows(300, FINE_DIM, seed=11)
    ids = vec_db.insert_vectors(image_fine=vectors)
    errors, results = [], {}

    def worker(t):
        try:
            for _ in range(5):
                found, _ = vec_db.search_batch(vectors[t * 10 : t * 10 + 10], k=1)
            results[t] = list(found[:, 0])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for t in range(4):
        assert results[t] == ids[t * 10 : t * 10 + 10]


def test_search_releases_the_gil(db_path):
    """While one thread is inside a long search, another keeps running Python code: the
    longest pause of the other thread is far shorter than the search."""
    with hivlp.open(db_path, model=None, fine_dim=FINE_DIM, coarse_dim=COARSE_DIM, threads=1) as db:
        db.insert_vectors(image_fine=unit_rows(20_000, FINE_DIM, seed=19))
        queries = unit_rows(400, FINE_DIM, seed=20)
        window = {}

        def search():
            window["start"] = time.perf_counter()
            db.search_batch(queries, k=10, exact=True)
            window["end"] = time.perf_counter()

        worker = threading.Thread(target=search)
        ticks = []
        worker.start()
        while worker.is_alive():
            ticks.append(time.perf_counter())
        worker.join()
    duration = window["end"] - window["start"]
    inside = [t for t in ticks if window["start"] <= t <= window["end"]]
    assert duration > 0.05, "the search is long enough to measure"
    edges = [window["start"], *inside, window["end"]]
    longest_pause = max(b - a for a, b in zip(edges, edges[1:]))
    assert longest_pause < duration / 2, (longest_pause, duration)


def test_hit_repr_shows_python_values(vec_db):
    [item] = vec_db.insert_vectors(image_fine=unit_rows(1, FINE_DIM), captions=["a 'flag'"])
    hit = vec_db.get(item)
    assert repr(hit) == f"Hit(id={item}, score=0.0000, caption=\"a 'flag'\", uri=None)"
