"""hivlp: an embedded vector database for coarse-to-fine image–text retrieval.

Every item carries a coarse (low-dimensional, scanned over the whole collection) and a fine
(high-dimensional, used to re-rank a few hundred candidates) embedding of its image and/or its
caption. Calls that encode, search, write or compact release the GIL.
"""

import os
import pathlib
from types import TracebackType
from typing import Any, Literal, Optional, Sequence, Union, final

import numpy as np
import numpy.typing as npt

__all__ = [
    "NO_ID",
    "CorruptionError",
    "Database",
    "ForkedError",
    "Hit",
    "HivlpError",
    "InvalidInputError",
    "LockedError",
    "ModelError",
    "__version__",
    "open",
    "verify",
]

__version__: str

#: The id that ``Database.search_batch`` reports where a query has fewer than ``k`` hits.
NO_ID: int

ImageLike = Union[str, os.PathLike[str], bytes]
"""An image: a file path, or the bytes of an encoded file (PNG, JPEG, WebP, GIF, BMP)."""

Metadata = Union[dict[str, Any], list[Any], bytes, str, None]
"""Item metadata: dicts and other JSON values are stored as JSON; bytes as they are."""

ArrayLike = npt.ArrayLike
"""Vectors: C-contiguous float32 arrays are read in place, anything else is converted once."""

Where = Union[str, dict[str, Any]]
"""A search predicate on metadata fields: ``"year >= 2020 AND 'beach' IN tags"`` or
``{"year": {"$gte": 2020}, "tags": {"$contains": "beach"}}`` (see the README's "Filtering")."""

class HivlpError(Exception):
    """Base class of every error raised by hivlp."""

class LockedError(HivlpError):
    """Another handle or process has the database open for writing."""

class CorruptionError(HivlpError):
    """A database file failed its checksum or structure checks."""

class InvalidInputError(HivlpError):
    """An argument was rejected: wrong dimension, NaN, duplicate id, unreadable image, ..."""

class ModelError(HivlpError):
    """The model bundle is missing, broken, or does not match the database."""

class ForkedError(HivlpError):
    """The handle was opened by another process: this is a child of ``os.fork()``.

    A handle cannot cross ``os.fork()`` (what ``multiprocessing`` does by default on Linux):
    the child shares the parent's files and lock but not its threads. Every call on an
    inherited handle, ``close()`` included, raises this and touches nothing; call
    ``hivlp.open()`` in the child instead (``read_only=True`` beside the parent's writer), or
    use the ``"spawn"`` or ``"forkserver"`` start method.
    """

@final
class Hit:
    """One search result."""

    @property
    def id(self) -> int: ...
    @property
    def score(self) -> float:
        """Similarity to the query; higher is better."""
    @property
    def caption(self) -> Optional[str]: ...
    @property
    def uri(self) -> Optional[str]:
        """Where the item came from (an inserted image's path, unless given)."""
    @property
    def metadata(self) -> Union[dict[str, Any], list[Any], bytes, None]:
        """JSON metadata decoded, other metadata as bytes, None when empty."""

@final
class Database:
    """An open database. Close it with ``close()`` or use it as a context manager.

    A handle belongs to the process that opened it: in a child of ``os.fork()`` every call
    raises ``ForkedError``.
    """

    @property
    def path(self) -> pathlib.Path: ...
    @property
    def closed(self) -> bool: ...
    def insert(
        self,
        images: Optional[Sequence[ImageLike]] = None,
        captions: Optional[Sequence[Optional[str]]] = None,
        metadata: Optional[Sequence[Metadata]] = None,
        ids: Optional[Sequence[int]] = None,
        uris: Optional[Sequence[Optional[str]]] = None,
        exif: bool = True,
    ) -> list[int]:
        """Encodes images and captions with the model and inserts them, all or nothing.

        Without ``images`` the items are text-only. Returns the ids (given or assigned); given
        ids must be between 0 and 2**63 - 1.

        With ``exif`` (the default), an image's EXIF is added to its metadata as the fields
        ``taken_at`` (``"2024-07-01T18:30:00"``, plus ``"+01:00"`` when EXIF records the
        offset), ``camera`` (make and model) and ``gps_lat``/``gps_lon`` (decimal degrees,
        negative south and west), each unless the item's metadata already has that key. Only
        metadata that is None or a dict is extended; images without readable EXIF are
        inserted as they are. ``exif=False`` records none.
        """
    def insert_vectors(
        self,
        image_fine: Optional[ArrayLike] = None,
        image_coarse: Optional[ArrayLike] = None,
        text_fine: Optional[ArrayLike] = None,
        text_coarse: Optional[ArrayLike] = None,
        captions: Optional[Sequence[Optional[str]]] = None,
        ids: Optional[Sequence[int]] = None,
        uris: Optional[Sequence[Optional[str]]] = None,
        metadata: Optional[Sequence[Metadata]] = None,
    ) -> list[int]:
        """Inserts precomputed ``(n, dim)`` float32 vectors, all or nothing.

        Coarse vectors are derived from the fine ones when not given. Given ``ids`` must be
        between 0 and 2**63 - 1; assigned ones continue after the largest id used.
        """
    def insert_arrow(
        self, data: Any, *, batch_rows: int = 65536, **columns: Optional[str]
    ) -> list[int]:
        """Inserts a pyarrow ``Table``, ``RecordBatch`` or ``RecordBatchReader``, ``batch_rows``
        rows per ``insert_vectors`` call; returns the ids.

        Columns ``id``, ``caption``, ``uri``, ``metadata`` (dicts as JSON, str, bytes) and
        ``image_fine``, ``image_coarse``, ``text_fine``, ``text_coarse`` (list or fixed-size list
        of any float type) are read when present; map others by keyword
        (``ids="item_id", image_fine="embedding"``) or skip one with ``uris=None``. Each batch
        goes in whole or not at all; an error names the failed batch and its rows, and the
        batches before it stay inserted. A reader is consumed batch by batch, so memory stays
        bounded by ``batch_rows``. Needs pyarrow (``pip install 'hivlp[arrow]'``).
        """
    def to_arrow(
        self,
        columns: Optional[Sequence[str]] = None,
        where: Any = None,
        *,
        batch_rows: int = 65536,
    ) -> Any:
        """The live items as a ``pyarrow.Table``: ``id`` (uint64), ``caption``, ``uri``,
        ``metadata`` (the stored bytes), and ``image_fine``, ``image_coarse``, ``text_fine``,
        ``text_coarse`` as fixed-size lists of float32 (null where an item lacks the modality;
        coarse ``i8``/``f16`` vectors are dequantised). ``columns`` selects and orders columns;
        ``where`` is a ``pyarrow.compute`` expression rows must satisfy. The same columns are
        what ``insert_arrow`` reads, so ``other.insert_arrow(db.to_arrow())`` copies a
        database. Needs pyarrow (``pip install 'hivlp[arrow]'``).
        """
    def to_arrow_reader(
        self,
        columns: Optional[Sequence[str]] = None,
        where: Any = None,
        *,
        batch_rows: int = 65536,
    ) -> Any:
        """``to_arrow`` as a ``pyarrow.RecordBatchReader``: rows are fetched ``batch_rows`` at a
        time from one consistent list of live ids, so memory stays bounded."""
    def to_pandas(
        self,
        columns: Optional[Sequence[str]] = None,
        where: Any = None,
        *,
        batch_rows: int = 65536,
    ) -> Any:
        """``to_arrow(...).to_pandas()`` (needs pandas)."""
    def to_polars(
        self,
        columns: Optional[Sequence[str]] = None,
        where: Any = None,
        *,
        batch_rows: int = 65536,
    ) -> Any:
        """``polars.from_arrow(to_arrow(...))`` (needs polars)."""
    def insert_pandas(
        self, frame: Any, *, batch_rows: int = 65536, **columns: Optional[str]
    ) -> list[int]:
        """``insert_arrow`` of a pandas DataFrame (vector cells as lists or NumPy arrays)."""
    def search(
        self,
        text: Union[str, Sequence[str], None] = None,
        image: Union[ImageLike, Sequence[ImageLike], None] = None,
        vector: Optional[ArrayLike] = None,
        k: int = 10,
        candidates: Optional[int] = None,
        target: Literal["image", "text"] = "image",
        exact: bool = False,
        coarse_vector: Optional[ArrayLike] = None,
        allow_ids: Optional[Sequence[int]] = None,
        deny_ids: Optional[Sequence[int]] = None,
        min_score: Optional[float] = None,
        collapse: Optional[float] = None,
        minus_text: Union[str, Sequence[str], None] = None,
        weights: Optional[Sequence[float]] = None,
        where: Optional[Where] = None,
        probe: Optional[float] = None,
    ) -> list[Hit]:
        """Top ``k`` items for ``text``, ``image`` or a fine ``vector``, or for a query composed
        of several of them.

        ``target`` picks the items' image or caption embeddings; ``candidates`` is how many rows
        the coarse scan keeps for fine re-ranking; ``exact`` re-ranks every row. ``allow_ids``
        restricts the results to those ids, ``deny_ids`` leaves those out. ``k`` and
        ``candidates`` must be between 1 and 2**24 (``candidates`` at least ``k``), else
        ``InvalidInputError``; values beyond the number of items return every item.
        ``probe`` (0 to 1) is the share of each partitioned segment's rows the coarse scan
        reads, nearest partitions first (1: every row); by default it is chosen per query with
        ``candidates`` (or every row when ``candidates`` is given).

        ``where`` keeps only items whose metadata fields match, as a string
        (``"year >= 2020 AND 'beach' IN tags"``) or a dict
        (``{"year": {"$gte": 2020}, "tags": {"$contains": "beach"}}``); see the README's
        "Filtering". A predicate that does not parse, names a field no item has, or compares
        a field with a value of a type it never holds raises ``InvalidInputError`` naming the
        offending part. ``k`` results come back whenever at least ``k`` items match.

        ``min_score`` leaves out hits scoring below it, so fewer than ``k`` come back rather
        than unrelated ones. ``collapse`` (a cosine similarity, e.g. ``0.95``) counts
        near-duplicates once: walking the hits best first, one whose fine vector is at least
        that similar to a hit already kept is dropped, and more candidates are searched until
        ``k`` distinct hits are found or none are left.

        Composed queries: ``text`` and ``image`` may be lists, and may be given together and
        with ``vector``; ``minus_text`` names texts to move away from. The parts are, in this
        order, the texts, the images, the vector, the minus texts; each is normalised, weighted
        and summed in the fine space, and the coarse vector is derived from the sum as for
        stored rows. Weights are 1 per part and -0.5 per minus text, or ``weights``: one value
        per part in that order, used as given (write minus texts' weights negative)::

            db.search(text="beach", minus_text="people")
            db.search(image="dog.jpg", text="in the snow", weights=(0.5, 0.5))
            db.search(text=["red car", "vintage"], minus_text="toy", weights=(1, 0.5, -0.3))

        Parts that cancel out (a zero sum) raise ``InvalidInputError``.
        """
    def search_with_timing(
        self,
        vector: ArrayLike,
        k: int = 10,
        candidates: Optional[int] = None,
        target: Literal["image", "text"] = "image",
        exact: bool = False,
        coarse_vector: Optional[ArrayLike] = None,
        allow_ids: Optional[Sequence[int]] = None,
        deny_ids: Optional[Sequence[int]] = None,
        where: Optional[Where] = None,
        probe: Optional[float] = None,
    ) -> tuple[list[Hit], dict[str, Any]]:
        """``search(vector=...)`` and a dict of what it did.

        Keys: ``filter_ms``, ``coarse_ms``, ``fine_ms`` (stage times: evaluating ``where``,
        the coarse scan, the re-rank), ``candidates`` (rows re-ranked with fine
        vectors: chosen per query unless ``candidates`` is given, 0 when the fine scan ran),
        ``passes`` (coarse passes), ``exact`` (the fine scan produced the hits),
        ``estimated_recall`` (of recall@k against an exact search; the default search aims at
        0.99 or falls back to the fine scan) and ``probe`` (the share of each partitioned
        segment's rows the last coarse pass read; 1 when every row was read).
        """
    def search_batch(
        self,
        vectors: ArrayLike,
        target: Literal["image", "text"] = "image",
        k: int = 10,
        candidates: Optional[int] = None,
        exact: bool = False,
        coarse_vectors: Optional[ArrayLike] = None,
        allow_ids: Optional[Sequence[int]] = None,
        deny_ids: Optional[Sequence[int]] = None,
        min_score: Optional[float] = None,
        collapse: Optional[float] = None,
        where: Optional[Where] = None,
        probe: Optional[float] = None,
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32]]:
        """Searches ``(q, dim)`` fine vectors; returns ``(ids, scores)`` of shape ``(q, min(k, len(db)))``.

        Rows with fewer hits (e.g. through ``allow_ids``, ``where``, ``min_score`` or
        ``collapse``) are padded with ``NO_ID`` and ``-inf``. ``k``, ``candidates``, ``where``,
        ``min_score``, ``collapse`` and ``probe`` are as in ``search``.
        """
    def get(self, id: int) -> Optional[Hit]:
        """The item with this id (score 0.0), or None."""
    def delete(self, ids: Sequence[int]) -> int:
        """Deletes items; returns how many existed."""
    def update(
        self,
        id: int,
        *,
        metadata: Metadata = ...,
        caption: Optional[str] = ...,
        uri: Optional[str] = ...,
    ) -> bool:
        """Replaces the metadata, caption and/or URI of item ``id``, keeping its vectors.

        Nothing is re-encoded: a new caption does not change the text vector the item was
        inserted with. A keyword not given is kept; ``None`` removes the value. Durable like
        an insert, and visible to ``get``, search hits and ``where=`` filters at once. Returns
        False, changing nothing, when no live item has ``id`` (never inserted, or deleted).
        Example: ``db.update(7, metadata={"year": 2021, "tags": ["beach"]}, caption="sunset")``.
        """
    def flush(self) -> None:
        """Makes buffered writes durable and writes the in-memory rows to a segment."""
    def sync(self) -> None:
        """Makes every write so far durable (fsync), what ``durability="buffered"`` defers.

        Raises ``HivlpError`` if the disk reports a failure; the handle then refuses writes
        until the database is reopened. A no-op on a read-only handle.
        """
    def compact(self) -> dict[str, Any]:
        """Merges every segment into one and drops deleted rows, now."""
    def pause_compaction(self) -> None:
        """Stops background compaction until ``resume_compaction()``; waits for a running merge."""
    def resume_compaction(self) -> None:
        """Lets background compaction run again."""
    def snapshot(self, dest: Union[str, os.PathLike[str]]) -> None:
        """Writes a consistent copy to the new folder ``dest``, openable with ``hivlp.open``."""
    def stats(self) -> dict[str, Any]:
        """Counts, sizes and the schema."""
    def close(self) -> None:
        """Makes the writes durable and releases the write lock; later calls raise ``HivlpError``.

        Raises ``HivlpError`` if the writes could not be made durable (with
        ``durability="buffered"``, those since the last ``sync()`` may be lost); the handle is
        closed either way. Leaving a ``with`` block closes the same way and raises the same.
        """
    def __len__(self) -> int: ...
    def __enter__(self) -> "Database": ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

def open(
    path: Union[str, os.PathLike[str]],
    model: Optional[str] = "default",
    coarse_dtype: Literal["i8", "f16", "f32"] = "i8",
    durability: Literal["sync", "buffered"] = "sync",
    *,
    coarse_dim: Optional[int] = None,
    fine_dim: Optional[int] = None,
    metric: Literal["cosine", "ip"] = "cosine",
    read_only: bool = False,
    memtable_rows: Optional[int] = None,
    threads: Optional[int] = None,
    allow_model_mismatch: bool = False,
    auto_compaction: bool = True,
    compaction_budget_bytes: Optional[int] = None,
    partition_min_rows: Optional[int] = None,
) -> Database:
    """Opens the database in folder ``path``, creating it if the folder holds none.

    ``model`` is ``"default"`` (the bundled model), a model bundle folder, or None for a
    vectors-only database (then ``fine_dim`` and ``coarse_dim`` are required when creating).
    ``durability="sync"`` makes every write durable before it returns; ``"buffered"`` at
    ``flush()``. Reopen a vectors-only database with ``model=None``.

    ``auto_compaction`` merges segments and drops deleted rows in a background thread of a
    writer handle; ``compaction_budget_bytes`` bounds the segment bytes one background merge
    reads (and so the extra disk it holds), 2 GiB by default. ``stats()`` reports it under
    ``auto_compaction``, ``background_merges`` and ``background_merge_error``.

    ``partition_min_rows`` partitions every segment that flush, compaction or snapshot writes
    with at least that many rows of a modality (k-means on the coarse vectors, one centroid per
    512 rows), so that search reads the best partitions instead of every row; off (None) by
    default, 32,768 is the smallest size worth setting. ``search(probe=...)`` fixes the share read.

    ``"default"`` is the model installed with the package (``hivlp/models/default``:
    hivlp-default v3, EfficientNet-Lite0 and MiniLM towers, 256-d fine / 64-d coarse), or
    ``$HIVLP_MODEL_DIR``. ONNX Runtime is loaded, on first use of a model, from
    ``$ORT_DYLIB_PATH``, else from the installed ``onnxruntime`` (or ``onnxruntime-gpu``)
    package; a vectors-only database never loads it.
    """

def verify(path: Union[str, os.PathLike[str]]) -> dict[str, Any]:
    """Checks every file of the database; raises ``CorruptionError`` if anything is wrong."""
