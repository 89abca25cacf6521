"""where= on search and search_batch: the string language and the dict form, one meaning."""

import datetime

import numpy as np
import pytest

import hivlp
from conftest import FINE_DIM, unit_rows

ROWS = 40


@pytest.fixture
def tagged(vec_db):
    """Rows with an int `year`, a `tags` list, a `place` string and a `taken` timestamp."""
    vectors = unit_rows(ROWS, FINE_DIM, seed=5)
    metadata = [
        {
            "year": 2010 + i % 15,
            "tags": ["beach"] if i % 4 == 0 else ["city"],
            "place": "Lisbon" if i % 3 == 0 else "Porto",
            "taken": f"2021-07-{1 + i % 28:02d}T12:00:00Z",
        }
        for i in range(ROWS)
    ]
    ids = vec_db.insert_vectors(image_fine=vectors, metadata=metadata)
    return vec_db, vectors, dict(zip(ids, metadata))


def matching(db, vector, where):
    return {h.id for h in db.search(vector=vector, k=ROWS, where=where)}


def test_string_and_dict_select_the_same_rows(tagged):
    db, vectors, meta = tagged
    cases = [
        (
            "year >= 2020 AND 'beach' IN tags",
            {"year": {"$gte": 2020}, "tags": {"$contains": "beach"}},
            lambda m: m["year"] >= 2020 and "beach" in m["tags"],
        ),
        ("place = 'Lisbon'", {"place": "Lisbon"}, lambda m: m["place"] == "Lisbon"),
        (
            "year IN (2011, 2012) OR place != 'Porto'",
            {"$or": [{"year": {"$in": [2011, 2012]}}, {"place": {"$ne": "Porto"}}]},
            lambda m: m["year"] in (2011, 2012) or m["place"] != "Porto",
        ),
        (
            "NOT year < 2015 AND year NOT IN (2020)",
            {"$not": {"year": {"$lt": 2015}}, "year": {"$nin": [2020]}},
            lambda m: m["year"] >= 2015 and m["year"] != 2020,
        ),
        (
            "taken >= timestamp '2021-07-20'",
            {"taken": {"$gte": datetime.date(2021, 7, 20)}},
            lambda m: int(m["taken"][8:10]) >= 20,
        ),
        ("tags IS NULL", {"tags": {"$exists": False}}, lambda m: False),
    ]
    for text, doc, expected in cases:
        want = {i for i, m in meta.items() if expected(m)}
        assert matching(db, vectors[0], text) == want, text
        assert matching(db, vectors[0], doc) == want, doc


def test_search_batch_takes_where(tagged):
    db, vectors, meta = tagged
    lisbon = {i for i, m in meta.items() if m["place"] == "Lisbon"}
    for where in ("place = 'Lisbon'", {"place": "Lisbon"}):
        found, scores = db.search_batch(vectors[:3], k=5, where=where)
        assert found.shape == (3, 5)
        assert set(found.ravel()) <= lisbon
        assert np.isfinite(scores).all()


def test_the_id_is_a_field(tagged):
    db, vectors, meta = tagged
    some = sorted(meta)[:3]
    assert matching(db, vectors[0], f"id IN ({', '.join(map(str, some))})") == set(some)
    assert matching(db, vectors[0], {"id": {"$in": some}}) == set(some)


def test_bad_predicates_raise_invalid_input_naming_the_part(tagged):
    db, vectors, _ = tagged
    with pytest.raises(hivlp.InvalidInputError, match=r"syntax error at 8: expected a value after '>='"):
        db.search(vector=vectors[0], where="year >= AND x = 1")
    with pytest.raises(hivlp.InvalidInputError, match="unknown field yeer at 0"):
        db.search(vector=vectors[0], where="yeer = 2020")
    with pytest.raises(hivlp.InvalidInputError, match="unknown field yeer"):
        db.search_batch(vectors[:2], where={"yeer": 2020})
    with pytest.raises(hivlp.InvalidInputError, match="type mismatch for year at 0"):
        db.search(vector=vectors[0], where="year = 'recent'")
    with pytest.raises(hivlp.InvalidInputError, match=r"\$.year.\$between"):
        db.search(vector=vectors[0], where={"year": {"$between": [1, 2]}})
    with pytest.raises(hivlp.InvalidInputError, match="where= takes a string"):
        db.search(vector=vectors[0], where=42)
    with pytest.raises(hivlp.InvalidInputError, match="cannot be compared"):
        db.search(vector=vectors[0], where={"year": object()})


def test_readme_filtering_example_runs(tmp_path):
    from test_readme import readme_blocks, run_block

    blocks = readme_blocks("python filtering")
    assert len(blocks) == 1, "the README has one filtering example"
    run = run_block(blocks[0], tmp_path)
    assert run.stdout.startswith("where=: syntax error at 8: expected a value after '>='"), run.stdout


def test_predicates_nested_too_deep_are_invalid_input_not_a_crash(tagged):
    db, vector = tagged[0], tagged[1][0]
    for where in ["(" * 100_000 + "year = 1" + ")" * 100_000, "NOT " * 100_000 + "year = 1"]:
        with pytest.raises(hivlp.InvalidInputError, match="nested more than"):
            db.search(vector=vector, where=where)
    deep = {"year": 1}
    for _ in range(5_000):
        deep = {"$not": deep}
    with pytest.raises(hivlp.InvalidInputError, match="nested more than"):
        db.search(vector=vector, where=deep)
