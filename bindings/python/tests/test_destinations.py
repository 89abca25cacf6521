"""Where databases and snapshots may be created: over what a killed create left, never into
a database's own folder, and never twice into one destination (issue 8, items 1, 2, 13)."""

import threading

import pytest

import hivlp
from conftest import COARSE_DIM, FINE_DIM, unit_rows


def test_open_creates_over_what_a_killed_create_left(db_path):
    db_path.mkdir()
    for name in ["LOCK", "MANIFEST-000001", "CURRENT.tmp"]:
        (db_path / name).write_bytes(b"partial")
    with hivlp.open(db_path, model=None, fine_dim=FINE_DIM, coarse_dim=COARSE_DIM) as db:
        db.insert_vectors(image_fine=unit_rows(4, FINE_DIM))
    with hivlp.open(db_path, model=None) as db:
        assert len(db) == 4
    assert hivlp.verify(db_path)["ok"]


def test_open_does_not_turn_a_folder_of_other_files_into_a_database(tmp_path):
    (tmp_path / "holiday.jpg").write_bytes(b"not ours")
    with pytest.raises(hivlp.HivlpError):
        hivlp.open(tmp_path, model=None, fine_dim=FINE_DIM, coarse_dim=COARSE_DIM)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["holiday.jpg"]


def test_snapshot_refuses_empty_and_inner_destinations(vec_db, db_path, monkeypatch):
    vec_db.insert_vectors(image_fine=unit_rows(30, FINE_DIM))
    vec_db.flush()
    listing = sorted(p.name for p in db_path.iterdir())
    for dest in ["", db_path, db_path / "backup", db_path / "a" / "b"]:
        with pytest.raises(hivlp.InvalidInputError):
            vec_db.snapshot(dest)
    # The working directory inside the database is where "" used to land.
    monkeypatch.chdir(db_path)
    for dest in ["", ".", "backup"]:
        with pytest.raises(hivlp.InvalidInputError):
            vec_db.snapshot(dest)
    assert sorted(p.name for p in db_path.iterdir()) == listing
    assert len(vec_db.search(vector=unit_rows(1, FINE_DIM)[0], k=3)) == 3
    vec_db.close()
    with hivlp.open(db_path, model=None) as db:
        assert len(db) == 30


def test_two_snapshots_racing_for_one_destination(vec_db, db_path, tmp_path):
    vec_db.insert_vectors(image_fine=unit_rows(50, FINE_DIM))
    vec_db.flush()
    for round in range(10):
        dest = tmp_path / f"snap-{round}"
        start = threading.Barrier(2)
        outcomes = []

        def snapshot():
            start.wait()
            try:
                vec_db.snapshot(dest)
                outcomes.append("ok")
            except hivlp.HivlpError as e:
                outcomes.append(type(e).__name__)

        threads = [threading.Thread(target=snapshot) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert outcomes.count("ok") == 1, outcomes
        with hivlp.open(dest, model=None) as snap:
            assert len(snap) == 50
    vec_db.close()
    with hivlp.open(db_path, model=None) as db:
        assert len(db) == 50
