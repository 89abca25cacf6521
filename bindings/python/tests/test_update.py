"""`Database.update`: metadata, caption and URI replaced without re-encoding, durable."""

import pytest

import hivlp
from conftest import COARSE_DIM, FINE_DIM, unit_rows


def test_update_replaces_metadata_and_caption_and_keeps_vectors(db_path):
    vectors = unit_rows(30, FINE_DIM, seed=21)
    with hivlp.open(db_path, model=None, fine_dim=FINE_DIM, coarse_dim=COARSE_DIM) as db:
        ids = db.insert_vectors(
            image_fine=vectors,
            captions=[f"item {i}" for i in range(30)],
            metadata=[{"year": 2000 + i} for i in range(30)],
        )
        db.flush()
        assert db.update(ids[3], metadata={"year": 1999, "tags": ["beach"]}, caption="renamed") is True
        assert db.update(ids[4], caption=None) is True
        hit = db.search(vector=vectors[3], k=1)[0]
        assert hit.id == ids[3]
        assert hit.metadata == {"year": 1999, "tags": ["beach"]}
        assert hit.caption == "renamed"
        assert db.get(ids[4]).caption is None
        assert db.get(ids[4]).metadata == {"year": 2004}, "metadata not given is kept"
        assert db.update(999_999, caption="x") is False
        db.delete([ids[5]])
        assert db.update(ids[5], caption="x") is False
        with pytest.raises(TypeError, match="colour"):
            db.update(ids[3], colour="red")
        with pytest.raises(TypeError, match="caption"):
            db.update(ids[3], caption=3)
        with pytest.raises(hivlp.InvalidInputError):
            db.update(ids[3], metadata=b" " * ((1 << 20) + 1))
    with hivlp.open(db_path, model=None) as db:
        assert db.get(ids[3]).metadata == {"year": 1999, "tags": ["beach"]}
        assert db.get(ids[3]).caption == "renamed"
        assert db.search(vector=vectors[3], k=1)[0].id == ids[3]
        assert len(db) == 29
