"""Uses an installed hivlp wheel as a new user would; run by `scripts/test-install` with the
fresh venv's Python, from a temporary folder outside the checkout, with HIVLP_MODEL_DIR and
ORT_DYLIB_PATH unset. Usage: check_installed.py DATA_DIR CHECKOUT_DIR

Checks that the package, its native module, the model and ONNX Runtime all come from the venv;
that vectors-only use never loads ONNX Runtime; that to_arrow/insert_arrow round-trip bit for
bit; and that each demo image is found by its caption and by itself. Prints the import and first-query times (figures for the notes, not asserted).
"""

import os
import sys
import tempfile
import time
from pathlib import Path

data = Path(sys.argv[1]).resolve()
checkout = Path(sys.argv[2]).resolve()
venv = Path(sys.prefix).resolve()
for var in ("HIVLP_MODEL_DIR", "ORT_DYLIB_PATH"):
    assert var not in os.environ, f"{var} is set"
cwd = Path.cwd().resolve()
assert cwd != checkout and checkout not in cwd.parents, f"run from {cwd}, inside the checkout"
assert venv != checkout and checkout not in venv.parents, f"venv {venv} is inside the checkout"

started = time.perf_counter()
import hivlp  # noqa: E402

imported = time.perf_counter()


def inside_venv(path):
    path = Path(path).resolve()
    return venv in path.parents


def onnxruntime_mapped():
    """The ONNX Runtime libraries this process has mapped."""
    maps = Path("/proc/self/maps").read_text().splitlines()
    return {line.split()[-1] for line in maps if "libonnxruntime" in line}


for module in (hivlp, hivlp._hivlp):
    assert inside_venv(module.__file__), f"{module.__name__} comes from {module.__file__}"

with tempfile.TemporaryDirectory(dir=cwd) as work:
    work = Path(work)

    # Vectors only: works, and ONNX Runtime stays unloaded.
    import numpy as np

    with hivlp.open(work / "vectors", model=None, fine_dim=8, coarse_dim=4) as db:
        rows = np.eye(8, dtype=np.float32)
        ids = db.insert_vectors(image_fine=rows)
        assert db.search(vector=rows[3], k=1)[0].id == ids[3]
    assert not onnxruntime_mapped(), f"vectors-only use loaded {onnxruntime_mapped()}"

    # Arrow out and back in (the wheel's `arrow` extra): bit for bit.
    dims = dict(model=None, fine_dim=8, coarse_dim=4, metric="ip")
    with hivlp.open(work / "arrow-a", **dims) as a, hivlp.open(work / "arrow-b", **dims) as b:
        rows = np.random.default_rng(0).standard_normal((20, 8)).astype(np.float32)
        a.insert_vectors(image_fine=rows, captions=[f"c{i}" for i in range(20)],
                         metadata=[{"i": i} for i in range(20)])
        exported = a.to_arrow()
        b.insert_arrow(exported, batch_rows=7)
        assert b.to_arrow().equals(exported), "to_arrow -> insert_arrow -> to_arrow changed rows"
        fine = np.stack(exported.column("image_fine").to_numpy(zero_copy_only=False))
        assert np.array_equal(fine, rows), "exported vectors differ from the inserted ones"

    images = sorted(data.glob("*.png"))
    captions = [p.with_suffix(".txt").read_text().strip() for p in images]
    assert len(images) >= 3, f"too few demo images in {data}"
    with hivlp.open(work / "demo") as db:
        opened = time.perf_counter()
        ids = db.insert(images=[str(p) for p in images], captions=captions)
        inserted = time.perf_counter()
        first = db.search(text=captions[0], k=1)
        first_query = time.perf_counter()
        assert first[0].id == ids[0], f"{captions[0]!r} found {first}"
        for item, caption, image in zip(ids, captions, images):
            by_text = db.search(text=caption, k=1)
            assert by_text[0].id == item, f"{caption!r} found {by_text}"
            by_image = db.search(image=str(image), k=1)
            assert by_image[0].id == item, f"{image.name} found {by_image}"
    loaded = onnxruntime_mapped()
    assert loaded and all(inside_venv(p) for p in loaded), f"ONNX Runtime from {loaded}"

print(
    f"installed wheel: Arrow round trip bit-exact; {len(images)} demo images found by caption "
    f"and by image; "
    f"import {imported - started:.3f}s, open with the model {opened - imported:.3f}s, "
    f"insert {inserted - opened:.3f}s, first query {first_query - inserted:.3f}s; "
    f"ONNX Runtime {sorted(loaded)[0]}"
)
