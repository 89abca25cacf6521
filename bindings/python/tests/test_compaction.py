"""Background compaction: the open option, pause and resume, and its stats."""

import time

import hivlp
from conftest import COARSE_DIM, FINE_DIM, unit_rows


def add_segments(db, count, rows, seed):
    for i in range(count):
        db.insert_vectors(image_fine=unit_rows(rows, FINE_DIM, seed=seed + i))
        db.flush()


def wait_for(db, done):
    """Polls stats() until `done` holds; the deadline only keeps a broken build from hanging."""
    deadline = time.monotonic() + 120
    while True:
        stats = db.stats()
        if done(stats):
            return stats
        assert time.monotonic() < deadline, f"background compaction never got there: {stats}"
        time.sleep(0.005)


def test_pause_stops_background_merges_and_resume_restarts_them(db_path):
    with hivlp.open(db_path, model=None, fine_dim=FINE_DIM, coarse_dim=COARSE_DIM, durability="buffered") as db:
        db.pause_compaction()
        add_segments(db, 12, 5, seed=30)
        stats = db.stats()
        assert stats["auto_compaction"] == "paused"
        assert (stats["segments"], stats["background_merges"]) == (12, 0)
        db.resume_compaction()
        # The merge count moves just after the merged segments are installed.
        stats = wait_for(db, lambda s: s["segments"] < 8 and s["background_merges"] > 0)
        assert stats["background_merge_error"] is None
        assert len(db) == 60


def test_auto_compaction_off_merges_only_on_compact(db_path):
    with hivlp.open(
        db_path, model=None, fine_dim=FINE_DIM, coarse_dim=COARSE_DIM, durability="buffered",
        auto_compaction=False,
    ) as db:
        add_segments(db, 12, 5, seed=40)
        db.pause_compaction()  # a no-op without the thread
        db.resume_compaction()
        stats = db.stats()
        assert (stats["auto_compaction"], stats["segments"], stats["background_merges"]) == ("off", 12, 0)
        db.compact()
        assert db.stats()["segments"] == 1
    with hivlp.open(db_path, model=None, read_only=True) as reader:
        assert reader.stats()["auto_compaction"] == "off"
