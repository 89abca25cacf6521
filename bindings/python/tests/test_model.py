"""The model surface: insert of images and captions, search by text and image, with the bundled
default model."""

import numpy as np
import pytest

import hivlp
from conftest import png_bytes, requires_model

pytestmark = requires_model


@pytest.fixture
def model_db(db_path):
    db = hivlp.open(db_path)  # model="default", coarse_dtype="i8", durability="sync"
    yield db
    db.close()


def test_insert_images_and_search(model_db, images):
    paths, captions = images
    metadata = [{"src": p} for p in paths[:2]] + [None, None]
    ids = model_db.insert(images=paths, captions=captions, metadata=metadata)
    assert len(ids) == 4 and len(model_db) == 4
    hits = model_db.search(text="a red square", k=4)
    assert len(hits) == 4
    assert {h.id for h in hits} == set(ids)
    assert all(-1.01 <= h.score <= 1.01 for h in hits)
    by_id = {h.id: h for h in hits}
    assert by_id[ids[0]].caption == "a red square"
    assert by_id[ids[0]].metadata == {"src": paths[0]}
    assert by_id[ids[0]].uri.endswith("red.png"), "an image's path is its default uri"
    # An image finds itself first.
    top = model_db.search(image=paths[1], k=1)[0]
    assert top.id == ids[1]
    assert top.score == pytest.approx(1.0, abs=0.02)


def test_image_bytes_and_text_target(model_db):
    ids = model_db.insert(
        images=[png_bytes((10, 10, 10)), png_bytes((240, 240, 240))],
        captions=["a black square", None],
    )
    assert model_db.search(image=png_bytes((10, 10, 10)), k=1)[0].id == ids[0]
    # Only the first item has a caption embedding.
    text_hits = model_db.search(text="a black square", target="text", k=5)
    assert [h.id for h in text_hits] == [ids[0]]
    assert model_db.get(ids[1]).uri is None


def test_text_only_items(model_db):
    ids = model_db.insert(captions=["a cat on a mat", "a dog in fog"], ids=[5, 6])
    assert ids == [5, 6]
    assert model_db.search(text="a cat on a mat", target="text", k=1)[0].id == 5
    assert model_db.search(text="a cat", target="image", k=5) == []


def test_missing_image_file(model_db, tmp_path):
    with pytest.raises(hivlp.InvalidInputError, match="no-such.png"):
        model_db.insert(images=[str(tmp_path / "no-such.png")], captions=["x"])
    with pytest.raises(hivlp.InvalidInputError, match="no-such.png"):
        model_db.search(image=str(tmp_path / "no-such.png"))
    assert len(model_db) == 0


def test_broken_image_rejects_the_whole_batch(model_db, images):
    paths, captions = images
    with pytest.raises(hivlp.HivlpError):
        model_db.insert(images=[paths[0], b"not an image"], captions=captions[:2])
    assert len(model_db) == 0


def test_wrong_argument_types(model_db):
    with pytest.raises(hivlp.InvalidInputError, match="path"):
        model_db.insert(images=[12345])
    with pytest.raises(hivlp.InvalidInputError, match="captions"):
        model_db.insert(images=[png_bytes((1, 2, 3))], captions=["a", "b"])
    with pytest.raises(hivlp.InvalidInputError):
        model_db.insert()


def test_vectors_of_the_model_dimension(model_db, images):
    paths, captions = images
    model_db.insert(images=paths, captions=captions)
    dim = model_db.stats()["fine_dim"]
    ids, scores = model_db.search_batch(np.random.default_rng(0).standard_normal((3, dim)).astype(np.float32), k=2)
    assert ids.shape == (3, 2) and scores.shape == (3, 2)
    with pytest.raises(hivlp.InvalidInputError):
        model_db.insert_vectors(image_fine=np.ones((1, dim + 1), np.float32))


def test_reopen_keeps_model_items(db_path, images):
    paths, captions = images
    with hivlp.open(db_path) as db:
        ids = db.insert(images=paths, captions=captions)
    with hivlp.open(db_path) as db:
        assert len(db) == 4
        assert db.search(image=paths[2], k=1)[0].id == ids[2]
