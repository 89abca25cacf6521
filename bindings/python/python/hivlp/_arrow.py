"""Arrow in and out: `Database.insert_arrow` / `insert_pandas` and `to_arrow` /
`to_arrow_reader` / `to_pandas` / `to_polars` (the native methods call these).

Written over the module's NumPy APIs, so the native module links no Arrow implementation. In:
each batch's vector columns become one flat NumPy array (no per-element copy when the Arrow
buffer is already float32) reshaped to rows; a batch is one `insert_vectors` call, so it goes in
whole or not at all; a failure names the batch and its rows, and the batches before it stay.
Out: the live ids are read from one consistent view, then rows are fetched a batch at a time as
flat float32 arrays that become `FixedSizeListArray`s without another copy.
pyarrow is optional (`pip install 'hivlp[arrow]'`); pandas and polars only for their calls.
"""

from importlib import import_module
from typing import Any, Iterator, Optional, Sequence

#: Keyword of `insert_vectors` -> the column read for it unless the caller maps another.
DEFAULT_COLUMNS = {
    "ids": "id",
    "captions": "caption",
    "uris": "uri",
    "metadata": "metadata",
    "image_fine": "image_fine",
    "image_coarse": "image_coarse",
    "text_fine": "text_fine",
    "text_coarse": "text_coarse",
}
VECTOR_ARGS = ("image_fine", "image_coarse", "text_fine", "text_coarse")
#: The columns `to_arrow` writes, in order (the names `insert_arrow` reads by default).
EXPORT_COLUMNS = tuple(DEFAULT_COLUMNS.values())


def _pyarrow() -> Any:
    # Imported by name: pyarrow ships no type information, and it is optional.
    try:
        return import_module("pyarrow")
    except ImportError as e:
        raise ImportError(
            "Arrow support needs pyarrow: pip install 'hivlp[arrow]' (or pip install pyarrow)"
        ) from e


def _batches(pa: Any, data: Any, batch_rows: int) -> Iterator[Any]:
    """Record batches of at most `batch_rows` rows, read one at a time from a reader."""
    if isinstance(data, pa.Table):
        yield from data.to_batches(max_chunksize=batch_rows)
        return
    if isinstance(data, pa.RecordBatch):
        batches: Any = [data]
    elif isinstance(data, pa.RecordBatchReader) or hasattr(data, "read_next_batch"):
        batches = data
    elif hasattr(data, "__arrow_c_stream__"):
        batches = pa.RecordBatchReader.from_stream(data)
    else:
        raise TypeError(
            f"insert_arrow() takes a pyarrow Table, RecordBatch or RecordBatchReader, not "
            f"{type(data).__name__} (a DataFrame goes to insert_pandas())"
        )
    for batch in batches:
        for start in range(0, batch.num_rows, batch_rows):
            yield batch.slice(start, batch_rows)


def _vectors(pa: Any, name: str, column: Any) -> Any:
    """A list or fixed-size-list column of floats as one (rows, dim) NumPy array."""
    import numpy as np

    pc = import_module("pyarrow.compute")

    if column.null_count:
        raise ValueError(
            f"column {name!r} has {column.null_count} null vectors among {len(column)}: every row "
            f"of a batch needs them, or none (map the column out with {name}=None)"
        )
    if not (pa.types.is_fixed_size_list(column.type) or pa.types.is_list(column.type)
            or pa.types.is_large_list(column.type)):
        raise TypeError(f"column {name!r} must be a list of floats, not {column.type}")
    if pa.types.is_fixed_size_list(column.type):
        dim = column.type.list_size
    else:
        lengths = pc.list_value_length(column)
        dim = pc.min(lengths).as_py() if len(column) else 0
        if len(column) and pc.max(lengths).as_py() != dim:
            raise ValueError(f"column {name!r} holds vectors of different lengths")
    flat = column.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(flat).reshape(len(column), dim)


def insert_arrow(
    db: Any,
    data: Any,
    *,
    batch_rows: int = 65536,
    **columns: Optional[str],
) -> list[int]:
    """Inserts the rows of `data`, `batch_rows` at a time; returns their ids.

    Columns are read by the names of `DEFAULT_COLUMNS` (absent ones are skipped); map others
    with keywords, e.g. `ids="item_id", image_fine="embedding"`, or skip one with `uris=None`.
    """
    pa = _pyarrow()
    if batch_rows < 1:
        raise ValueError("batch_rows must be at least 1")
    unknown = set(columns) - set(DEFAULT_COLUMNS)
    if unknown:
        raise TypeError(f"unknown column keywords {sorted(unknown)}; use {sorted(DEFAULT_COLUMNS)}")
    inserted: list[int] = []
    start = 0
    for index, batch in enumerate(_batches(pa, data, batch_rows)):
        names = set(batch.schema.names)
        for arg, name in columns.items():
            if name is not None and name not in names:
                raise KeyError(f"{arg}={name!r}: no such column (columns: {sorted(names)})")
        kwargs: dict[str, Any] = {}
        for arg, default in DEFAULT_COLUMNS.items():
            name = columns.get(arg, default)
            if name is None or name not in names:
                continue
            column = batch.column(name)
            if arg in VECTOR_ARGS and column.null_count == len(column):
                continue  # no row of this batch has these vectors (to_arrow's nulls)
            if arg in VECTOR_ARGS:
                kwargs[arg] = _vectors(pa, name, column)
            elif arg == "ids":
                kwargs[arg] = [int(i) for i in column.to_numpy(zero_copy_only=False)]
            else:
                kwargs[arg] = column.to_pylist()
        rows = batch.num_rows
        try:
            inserted.extend(db.insert_vectors(**kwargs))
        except Exception as e:
            raise type(e)(
                f"batch {index} (rows {start}..{start + rows}) was not inserted, the "
                f"{start} rows before it were: {e}"
            ) from e
        start += rows
    return inserted


def insert_pandas(db: Any, frame: Any, *, batch_rows: int = 65536, **columns: Optional[str]) -> list[int]:
    """`insert_arrow` of a pandas DataFrame (vectors as lists or NumPy arrays per cell)."""
    pa = _pyarrow()
    return insert_arrow(
        db, pa.Table.from_pandas(frame, preserve_index=False), batch_rows=batch_rows, **columns
    )


def _export_schema(pa: Any, fine_dim: int, coarse_dim: int) -> Any:
    vectors = {"fine": pa.list_(pa.float32(), fine_dim), "coarse": pa.list_(pa.float32(), coarse_dim)}
    return pa.schema(
        [("id", pa.uint64()), ("caption", pa.string()), ("uri", pa.string()), ("metadata", pa.binary())]
        + [(name, vectors[name.split("_")[1]]) for name in VECTOR_ARGS]
    )


def _export_batch(pa: Any, rows: dict[str, Any], schema: Any) -> Any:
    arrays = [
        pa.array(rows["id"], pa.uint64()),
        pa.array(rows["caption"], pa.string()),
        pa.array(rows["uri"], pa.string()),
        pa.array(rows["metadata"], pa.binary()),
    ]
    for name in VECTOR_ARGS:
        modality, tier = name.split("_")
        dim = rows[f"{tier}_dim"]
        absent = pa.array(~rows[f"{modality}_present"])
        # pa.array over a float32 NumPy array wraps its buffer: no copy.
        arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(rows[name]), dim, mask=absent))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def to_arrow_reader(
    db: Any,
    columns: Optional[Sequence[str]] = None,
    where: Any = None,
    *,
    batch_rows: int = 65536,
) -> Any:
    """A `pyarrow.RecordBatchReader` over the live items, `batch_rows` rows per batch."""
    pa = _pyarrow()
    native = import_module("hivlp._hivlp")
    if batch_rows < 1:
        raise ValueError("batch_rows must be at least 1")
    selected = list(EXPORT_COLUMNS if columns is None else columns)
    unknown = [c for c in selected if c not in EXPORT_COLUMNS]
    if unknown:
        raise KeyError(f"unknown columns {unknown}; to_arrow() has {list(EXPORT_COLUMNS)}")
    ids = native._live_ids(db)
    empty = native._export_rows(db, [])
    full = _export_schema(pa, empty["fine_dim"], empty["coarse_dim"])
    schema = pa.schema([full.field(c) for c in selected])

    def batches() -> Iterator[Any]:
        for start in range(0, len(ids), batch_rows):
            rows = native._export_rows(db, ids[start : start + batch_rows].tolist())
            batch = _export_batch(pa, rows, full)
            if where is not None:
                for part in pa.Table.from_batches([batch]).filter(where).to_batches():
                    yield part.select(selected)
            else:
                yield batch.select(selected)

    return pa.RecordBatchReader.from_batches(schema, batches())


def to_arrow(
    db: Any, columns: Optional[Sequence[str]] = None, where: Any = None, *, batch_rows: int = 65536
) -> Any:
    """The live items as one `pyarrow.Table`."""
    return to_arrow_reader(db, columns, where, batch_rows=batch_rows).read_all()


def to_pandas(
    db: Any, columns: Optional[Sequence[str]] = None, where: Any = None, *, batch_rows: int = 65536
) -> Any:
    """`to_arrow(...).to_pandas()` (needs pandas)."""
    return to_arrow(db, columns, where, batch_rows=batch_rows).to_pandas()


def to_polars(
    db: Any, columns: Optional[Sequence[str]] = None, where: Any = None, *, batch_rows: int = 65536
) -> Any:
    """`polars.from_arrow(to_arrow(...))` (needs polars: pip install polars)."""
    try:
        polars = import_module("polars")
    except ImportError as e:
        raise ImportError("to_polars() needs polars: pip install polars") from e
    return polars.from_arrow(to_arrow(db, columns, where, batch_rows=batch_rows))
