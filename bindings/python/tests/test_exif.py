"""EXIF as metadata fields: real JPEGs with EXIF, written by Pillow at test time, inserted
through the module and through the CLI import."""

import io
import random
import json
import subprocess
import sys

import pytest

import hivlp
from conftest import png_bytes, requires_model

Image = pytest.importorskip("PIL.Image")

pytestmark = requires_model

# EXIF tags (TIFF/EXIF 2.32): IFD0, the Exif sub-IFD and the GPS sub-IFD.
MAKE, MODEL, EXIF_IFD, GPS_IFD = 0x010F, 0x0110, 0x8769, 0x8825
DATE_TIME_ORIGINAL, OFFSET_TIME_ORIGINAL = 0x9003, 0x9011
GPS_LAT_REF, GPS_LAT, GPS_LON_REF, GPS_LON = 1, 2, 3, 4

LISBON = {
    "taken_at": "2024-07-01T18:30:05+01:00",
    "camera": "Canon EOS 5D",
    "gps_lat": 38 + 42 / 60 + 30 / 3600,
    "gps_lon": -(9 + 8 / 60 + 24 / 3600),
}


def jpeg(rgb=(200, 40, 40), make="Canon", model="Canon EOS 5D", gps=True, offset=True):
    """A 32×32 JPEG whose EXIF has the capture time, camera and (optionally) GPS position."""
    exif = Image.Exif()
    if make:
        exif[MAKE] = make
    if model:
        exif[MODEL] = model
    sub = exif.get_ifd(EXIF_IFD)
    sub[DATE_TIME_ORIGINAL] = "2024:07:01 18:30:05"
    if offset:
        sub[OFFSET_TIME_ORIGINAL] = "+01:00"
    if gps:
        position = exif.get_ifd(GPS_IFD)
        position[GPS_LAT_REF], position[GPS_LAT] = "N", (38.0, 42.0, 30.0)
        position[GPS_LON_REF], position[GPS_LON] = "W", (9.0, 8.0, 24.0)
    out = io.BytesIO()
    Image.new("RGB", (32, 32), rgb).save(out, "JPEG", exif=exif)
    return out.getvalue()


def assert_lisbon(metadata, **expected_overrides):
    expected = {**LISBON, **expected_overrides}
    for key in ("gps_lat", "gps_lon"):
        assert metadata.pop(key) == pytest.approx(expected.pop(key), abs=1e-9)
    assert metadata == expected


@pytest.fixture
def model_db(tmp_path):
    db = hivlp.open(tmp_path / "db")
    yield db
    db.close()


def test_exif_fields_are_added_from_paths_and_bytes(model_db, tmp_path):
    path = tmp_path / "lisbon.jpg"
    path.write_bytes(jpeg())
    ids = model_db.insert(images=[str(path), jpeg(rgb=(20, 40, 200))])
    for id in ids:
        assert_lisbon(model_db.get(id).metadata)
    hits = model_db.search(text="a red square", k=2)
    assert {h.id for h in hits} == set(ids)
    for hit in hits:
        assert_lisbon(hit.metadata)


def test_callers_keys_win_and_other_metadata_is_kept(model_db):
    [id] = model_db.insert(
        images=[jpeg()], metadata=[{"camera": "my phone", "album": "summer"}]
    )
    assert_lisbon(model_db.get(id).metadata, camera="my phone", album="summer")


def test_opting_out_and_metadata_that_is_not_an_object(model_db):
    plain, kept = model_db.insert(images=[jpeg()] * 2, metadata=[None, {"a": 1}], exif=False)
    assert model_db.get(plain).metadata is None
    assert model_db.get(kept).metadata == {"a": 1}
    # With EXIF on, metadata that is not a JSON object is left as it is.
    raw, text, array = model_db.insert(images=[jpeg()] * 3, metadata=[b"\x00raw", "a note", [1, 2]])
    assert model_db.get(raw).metadata == b"\x00raw"
    assert model_db.get(text).metadata == b"a note"
    assert model_db.get(array).metadata == [1, 2]


def test_partial_and_missing_exif(model_db):
    no_gps, model_only, no_offset, png = model_db.insert(
        images=[
            jpeg(gps=False),
            jpeg(make=None, model="EOS R5"),
            jpeg(make="NIKON", model="D750", offset=False),
            png_bytes((1, 2, 3)),
        ]
    )
    assert model_db.get(no_gps).metadata == {
        "taken_at": LISBON["taken_at"],
        "camera": "Canon EOS 5D",
    }
    assert model_db.get(model_only).metadata["camera"] == "EOS R5"
    assert model_db.get(no_offset).metadata["camera"] == "NIKON D750"
    assert model_db.get(no_offset).metadata["taken_at"] == "2024-07-01T18:30:05"
    assert model_db.get(png).metadata is None


def run_cli(*args):
    """The `hivlp` console command of the wheel (the same code as the Rust binary)."""
    code = "import sys; from hivlp._cli import main; sys.argv = ['hivlp', *sys.argv[1:]]; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=300
    )


def test_cli_import_records_exif_unless_told_not_to(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "lisbon.jpg").write_bytes(jpeg())
    (folder / "lisbon.txt").write_text("a red square\n")
    source = tmp_path / "photos.jsonl"
    (tmp_path / "porto.jpg").write_bytes(jpeg(rgb=(30, 30, 220)))
    source.write_text(json.dumps({"image": "porto.jpg", "caption": "a blue square", "camera": "mine"}))
    with_exif, without = tmp_path / "with", tmp_path / "without"
    for db, extra in ((with_exif, []), (without, ["--no-exif"])):
        assert run_cli("create", db).returncode == 0
        for src in (folder, source):
            result = run_cli("import", db, src, *extra)
            assert result.returncode == 0, result.stderr
    with hivlp.open(with_exif) as db:
        by_caption = {db.get(i).caption: db.get(i).metadata for i in range(len(db))}
        assert_lisbon(by_caption["a red square"])
        assert_lisbon(by_caption["a blue square"], camera="mine")
    with hivlp.open(without) as db:
        by_caption = {db.get(i).caption: db.get(i).metadata for i in range(len(db))}
        assert by_caption == {"a red square": None, "a blue square": {"camera": "mine"}}


def test_damaged_exif_never_fails_the_insert(model_db):
    """Bytes of the EXIF segment overwritten (the pixels untouched): every image still goes in."""
    good = jpeg()
    start = good.index(b"Exif\x00\x00")
    length = int.from_bytes(good[start - 2 : start], "big")
    body = range(start + 6, start - 2 + length)
    rng = random.Random(7)
    damaged = []
    for _ in range(40):
        data = bytearray(good)
        for offset in rng.sample(body, 4):
            data[offset] = rng.choice((0x00, 0xFF, rng.randrange(256)))
        damaged.append(bytes(data))
    ids = model_db.insert(images=damaged, metadata=[{"n": i} for i in range(len(damaged))])
    for i, id in enumerate(ids):
        metadata = model_db.get(id).metadata
        assert metadata["n"] == i
        assert set(metadata) <= {"n", "taken_at", "camera", "gps_lat", "gps_lon"}
