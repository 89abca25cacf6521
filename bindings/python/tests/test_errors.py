"""Every error class: invalid input (dimensions, NaN, lengths, options), locks, corruption, models."""

import os
import subprocess
import sys

import numpy as np
import pytest

import hivlp
from conftest import COARSE_DIM, FINE_DIM, unit_rows


def test_exception_hierarchy():
    for cls in (hivlp.LockedError, hivlp.CorruptionError, hivlp.InvalidInputError, hivlp.ModelError, hivlp.ForkedError):
        assert issubclass(cls, hivlp.HivlpError)
    assert issubclass(hivlp.HivlpError, Exception)


def test_creating_vectors_only_needs_dimensions(db_path):
    with pytest.raises(hivlp.InvalidInputError, match="fine_dim"):
        hivlp.open(db_path, model=None)


@pytest.mark.parametrize("kwargs", [{"coarse_dtype": "i4"}, {"durability": "never"}, {"metric": "l2"}])
def test_unknown_option_values_are_rejected(db_path, kwargs):
    with pytest.raises(hivlp.InvalidInputError):
        hivlp.open(db_path, model=None, fine_dim=8, coarse_dim=4, **kwargs)


def test_wrong_dimension_is_invalid_input(vec_db):
    with pytest.raises(hivlp.InvalidInputError):
        vec_db.insert_vectors(image_fine=unit_rows(2, FINE_DIM + 1))
    with pytest.raises(hivlp.InvalidInputError):
        vec_db.search(vector=unit_rows(1, FINE_DIM - 1)[0])
    with pytest.raises(hivlp.InvalidInputError):
        vec_db.search_batch(unit_rows(2, FINE_DIM * 2))
    assert len(vec_db) == 0


def test_nan_and_inf_are_invalid_input(vec_db):
    bad = unit_rows(3, FINE_DIM)
    bad[1, 4] = np.nan
    with pytest.raises(hivlp.InvalidInputError):
        vec_db.insert_vectors(image_fine=bad)
    bad[1, 4] = np.inf
    with pytest.raises(hivlp.InvalidInputError):
        vec_db.insert_vectors(image_fine=bad)
    assert len(vec_db) == 0, "a rejected batch writes nothing"
    vec_db.insert_vectors(image_fine=unit_rows(2, FINE_DIM))
    query = unit_rows(1, FINE_DIM)[0]
    query[0] = np.nan
    with pytest.raises(hivlp.InvalidInputError):
        vec_db.search(vector=query)


def test_mismatched_lengths_are_invalid_input(vec_db):
    with pytest.raises(hivlp.InvalidInputError, match="captions"):
        vec_db.insert_vectors(image_fine=unit_rows(3, FINE_DIM), captions=["a"])
    with pytest.raises(hivlp.InvalidInputError, match="text_fine"):
        vec_db.insert_vectors(image_fine=unit_rows(3, FINE_DIM), text_fine=unit_rows(2, FINE_DIM))
    with pytest.raises(hivlp.InvalidInputError):
        vec_db.insert_vectors()


def test_zero_width_vectors_are_invalid_input(vec_db):
    with pytest.raises(hivlp.InvalidInputError):
        vec_db.search_batch(np.zeros((2, 0), np.float32))
    with pytest.raises(hivlp.InvalidInputError):
        vec_db.insert_vectors(image_fine=np.zeros((2, 0), np.float32))
    with pytest.raises(hivlp.InvalidInputError):
        vec_db.search_batch(np.zeros((2, 3, 4), np.float32))


def test_search_needs_a_query(vec_db):
    with pytest.raises(hivlp.InvalidInputError, match="needs text="):
        vec_db.search()
    # Several parts make a composed query, whose text part needs a model.
    with pytest.raises(hivlp.ModelError):
        vec_db.search(text="x", vector=unit_rows(1, FINE_DIM)[0])


def test_second_writer_gets_locked_error(vec_db, db_path):
    script = (
        "import sys, hivlp\n"
        "try:\n"
        "    hivlp.open(sys.argv[1], model=None)\n"
        "except hivlp.LockedError as e:\n"
        "    print('locked:', e); sys.exit(3)\n"
    )
    other = subprocess.run(
        [sys.executable, "-c", script, str(db_path)], capture_output=True, text=True, timeout=120
    )
    assert other.returncode == 3, other.stdout + other.stderr
    assert "locked:" in other.stdout
    # In the same process too.
    with pytest.raises(hivlp.LockedError):
        hivlp.open(db_path, model=None)
    # Once closed, the lock is free.
    vec_db.close()
    hivlp.open(db_path, model=None).close()


def _largest_file(folder):
    files = [os.path.join(d, f) for d, _, names in os.walk(folder) for f in names]
    return max(files, key=os.path.getsize)


def test_corrupted_file_raises_corruption_error(db_path):
    with hivlp.open(db_path, model=None, fine_dim=FINE_DIM, coarse_dim=COARSE_DIM) as db:
        db.insert_vectors(image_fine=unit_rows(100, FINE_DIM, seed=17))
        db.flush()
    victim = _largest_file(db_path)
    data = bytearray(open(victim, "rb").read())
    middle = len(data) // 2
    data[middle : middle + 8] = bytes(b ^ 0xFF for b in data[middle : middle + 8])
    with open(victim, "wb") as f:
        f.write(data)
    with pytest.raises(hivlp.CorruptionError, match="crc32|corrupt"):
        hivlp.verify(db_path)


def test_missing_model_is_a_model_error(vec_db):
    vec_db.insert_vectors(image_fine=unit_rows(2, FINE_DIM))
    with pytest.raises(hivlp.ModelError):
        vec_db.search(text="a cat")
    with pytest.raises(hivlp.ModelError):
        vec_db.insert(captions=["a cat"])


def test_model_bundle_that_does_not_exist(db_path, tmp_path):
    with pytest.raises(hivlp.ModelError):
        hivlp.open(db_path, model=str(tmp_path / "no-such-bundle"))


@pytest.mark.parametrize(
    "kwargs",
    [{"k": 10**12}, {"k": 2**62}, {"k": 2**40}, {"k": -1}, {"k": 2**70}, {"candidates": 2**62}, {"candidates": -5}],
)
def test_absurd_k_and_candidates_are_invalid_input(vec_db, kwargs):
    vectors = unit_rows(10, FINE_DIM, seed=19)
    vec_db.insert_vectors(image_fine=vectors)
    with pytest.raises(hivlp.InvalidInputError):
        vec_db.search(vector=vectors[0], **kwargs)
    with pytest.raises(hivlp.InvalidInputError):
        vec_db.search_batch(vectors[:3], **kwargs)
    with pytest.raises(hivlp.InvalidInputError):
        vec_db.search(vector=vectors[0], exact=True, **kwargs)


def test_k_beyond_the_rows_is_clamped(vec_db):
    vectors = unit_rows(10, FINE_DIM, seed=20)
    ids = vec_db.insert_vectors(image_fine=vectors)
    big = 1 << 24  # the documented maximum
    assert sorted(h.id for h in vec_db.search(vector=vectors[0], k=big)) == sorted(ids)
    assert len(vec_db.search(vector=vectors[0], k=big, candidates=big, exact=True)) == 10
    found, scores = vec_db.search_batch(vectors[:3], k=big)
    assert found.shape == scores.shape == (3, 10), "one column per live row at most"
    assert (found[:, 0] == ids[:3]).all()
