"""The compositions users ask for: min_score=, collapse=, and queries of several weighted parts
(minus_text=, text with image, weights=)."""

import numpy as np
import pytest

import hivlp
from conftest import FINE_DIM, requires_model, unit_rows


def unit(v):
    return (v / np.linalg.norm(v)).astype(np.float32)


def test_min_score_returns_fewer_rather_than_unrelated(vec_db):
    rows = unit_rows(300, FINE_DIM, seed=1)
    vec_db.insert_vectors(image_fine=rows)
    every = vec_db.search(vector=rows[0], k=10, exact=True)
    threshold = every[3].score
    hits = vec_db.search(vector=rows[0], k=10, exact=True, min_score=threshold)
    assert [h.id for h in hits] == [h.id for h in every[:4]]
    ids, scores = vec_db.search_batch(rows[:2], k=10, exact=True, min_score=threshold)
    assert list(ids[0][:4]) == [h.id for h in every[:4]]
    assert (ids[0][4:] == hivlp.NO_ID).all() and np.isneginf(scores[0][4:]).all()
    with pytest.raises(hivlp.InvalidInputError, match="min_score"):
        vec_db.search(vector=rows[0], min_score=float("nan"))


def test_collapse_counts_near_duplicates_once(vec_db):
    rng = np.random.default_rng(4)
    photos = unit_rows(12, FINE_DIM, seed=2)
    # Each photo 30 times with slight noise: a burst of near-identical shots.
    bursts = np.stack(
        [unit(p + 0.02 * rng.standard_normal(FINE_DIM)) for p in photos for _ in range(30)]
    )
    vec_db.insert_vectors(image_fine=bursts, ids=list(range(len(bursts))))
    query = unit(photos[:6].sum(axis=0))
    plain = vec_db.search(vector=query, k=10, exact=True)
    assert len({h.id // 30 for h in plain}) < 10
    for exact in (True, False):
        hits = vec_db.search(vector=query, k=10, exact=exact, collapse=0.95)
        assert len(hits) == 10
        assert len({h.id // 30 for h in hits}) == 10, hits
    ids, _ = vec_db.search_batch(query[None, :], k=10, exact=True, collapse=0.95)
    assert len({int(i) // 30 for i in ids[0]}) == 10
    with pytest.raises(hivlp.InvalidInputError, match="collapse"):
        vec_db.search(vector=query, collapse=1.5)


def test_vector_parts_combine_with_weights(vec_db):
    rows = unit_rows(200, FINE_DIM, seed=3)
    vec_db.insert_vectors(image_fine=rows)
    # The vector with weights is the same direction as the vector alone.
    alone = vec_db.search(vector=rows[5], k=5, exact=True)
    weighted = vec_db.search(vector=rows[5], weights=[2.0], k=5, exact=True)
    assert [h.id for h in alone] == [h.id for h in weighted]
    with pytest.raises(hivlp.InvalidInputError, match="weights= has 2 values"):
        vec_db.search(vector=rows[5], weights=[1.0, 2.0])
    with pytest.raises(hivlp.InvalidInputError, match="cancel out"):
        vec_db.search(vector=rows[5], weights=[0.0])
    with pytest.raises(hivlp.ModelError):
        vec_db.search(vector=rows[5], minus_text="people")


@requires_model
def test_minus_text_moves_results_away(tmp_path, images):
    paths, captions = images
    with hivlp.open(tmp_path / "db") as db:
        db.insert(images=paths, captions=captions)
        flag = "a white flag with a red stripe"
        plain = db.search(text="a red thing", target="text", k=4)
        assert plain[0].caption == "a red square"
        away = db.search(text="a red thing", minus_text="a square", target="text", k=4)
        assert away[0].caption == flag
        # The same with the minus text's weight written out.
        weighted = db.search(
            text="a red thing", minus_text="a square", weights=(1.0, -0.5), target="text", k=4
        )
        assert [(h.id, h.score) for h in weighted] == [(h.id, h.score) for h in away]
        # A list of texts, an image and weights in the documented order.
        both = db.search(
            text=["a square"], image=paths[1], weights=(0.2, 1.0), target="image", k=1
        )
        assert both[0].caption == captions[1]
        with pytest.raises(hivlp.InvalidInputError, match="weights= has 1 values"):
            db.search(text="a", minus_text="b", weights=[1.0])
