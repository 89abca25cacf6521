"""Opening, closing, durability, snapshots, compaction and verification of a vectors-only database."""

import numpy as np
import pytest

import hivlp
from conftest import COARSE_DIM, FINE_DIM, unit_rows


def test_open_creates_then_reopens(db_path):
    with hivlp.open(db_path, model=None, fine_dim=FINE_DIM, coarse_dim=COARSE_DIM) as db:
        assert len(db) == 0
        db.insert_vectors(image_fine=unit_rows(5, FINE_DIM))
        assert len(db) == 5
    assert db.closed
    with hivlp.open(db_path, model=None) as db:
        assert len(db) == 5
        stats = db.stats()
        assert stats["fine_dim"] == FINE_DIM
        assert stats["coarse_dim"] == COARSE_DIM


def test_delete_flush_and_compact(vec_db):
    vectors = unit_rows(40, FINE_DIM, seed=13)
    ids = vec_db.insert_vectors(image_fine=vectors)
    vec_db.flush()
    assert vec_db.delete(ids[:10] + [999_999]) == 10
    assert len(vec_db) == 30
    assert vec_db.search(vector=vectors[0], k=1)[0].id != ids[0]
    report = vec_db.compact()
    assert isinstance(report, dict)
    assert len(vec_db) == 30
    assert vec_db.search(vector=vectors[20], k=1)[0].id == ids[20]
    assert vec_db.get(ids[0]) is None


def test_buffered_durability_is_durable_after_flush(db_path):
    vectors = unit_rows(8, FINE_DIM, seed=14)
    with hivlp.open(db_path, model=None, fine_dim=FINE_DIM, coarse_dim=COARSE_DIM, durability="buffered") as db:
        db.insert_vectors(image_fine=vectors)
        db.flush()
    with hivlp.open(db_path, model=None) as db:
        assert len(db) == 8


def test_snapshot_round_trip(vec_db, tmp_path):
    vectors = unit_rows(60, FINE_DIM, seed=15)
    ids = vec_db.insert_vectors(image_fine=vectors, captions=[f"c{i}" for i in range(60)])
    vec_db.delete(ids[:5])
    before, before_scores = vec_db.search_batch(vectors, k=5)
    dest = tmp_path / "snap"
    vec_db.snapshot(dest)
    vec_db.insert_vectors(image_fine=unit_rows(3, FINE_DIM, seed=16))  # after the snapshot
    vec_db.close()
    hivlp.verify(dest)
    with hivlp.open(dest, model=None) as snap:
        assert len(snap) == 55
        after, after_scores = snap.search_batch(vectors, k=5)
        assert (before == after).all()
        np.testing.assert_allclose(before_scores, after_scores, rtol=1e-6)
        assert snap.get(ids[10]).caption == "c10"


def test_snapshot_into_existing_database_fails(vec_db, tmp_path):
    vec_db.insert_vectors(image_fine=unit_rows(2, FINE_DIM))
    dest = tmp_path / "snap"
    vec_db.snapshot(dest)
    with pytest.raises(hivlp.HivlpError):
        vec_db.snapshot(dest)


def test_closed_database_raises(vec_db):
    vec_db.close()
    vec_db.close()  # idempotent
    assert "closed" in repr(vec_db)
    with pytest.raises(hivlp.HivlpError, match="closed"):
        len(vec_db)
    with pytest.raises(hivlp.HivlpError, match="closed"):
        vec_db.search(vector=unit_rows(1, FINE_DIM)[0])


def test_read_only_handle_beside_the_writer(vec_db, db_path):
    vectors = unit_rows(6, FINE_DIM, seed=18)
    ids = vec_db.insert_vectors(image_fine=vectors)
    vec_db.flush()
    with hivlp.open(db_path, model=None, read_only=True) as reader:
        assert len(reader) == 6
        assert reader.search(vector=vectors[4], k=1)[0].id == ids[4]
        with pytest.raises(hivlp.HivlpError):
            reader.insert_vectors(image_fine=vectors[:1])


def test_verify_reports_a_healthy_database(vec_db, db_path):
    vec_db.insert_vectors(image_fine=unit_rows(10, FINE_DIM))
    vec_db.flush()
    vec_db.close()
    report = hivlp.verify(db_path)
    assert isinstance(report, dict)
