"""A sharded hivlp collection on Ray: ordinary hivlp databases, each owned by a Ray actor.

Rows are routed to shards by id (``id % shards``); searches fan out to every shard, each runs its
full two-stage search, and the driver merges the hits by fine score. A collection lives in a root
folder: ``collection.json`` (the manifest: format, routing, shard paths, schema) and one hivlp
database folder per shard. Needs Ray (``pip install hivlp[ray]``).

Exactness. Fine scores are computed row by row from the stored float32 vectors, so they are the
same in a shard as in one database holding every row, and merging by (score desc, id asc), the
order a database uses, is exact. With ``exact=True``, and whenever a shard's ``candidates`` covers
its rows, results equal one database's bit for bit. With hierarchical search each shard keeps its
own ``candidates`` coarse candidates. Where a row's coarse vector is the same in its shard as in
one database (the default model's Matryoshka prefix, coarse vectors given at insert, or the fixed
random projection a vectors-only database uses until it fits PCA at 4,096 rows), coarse codes are
per row, so a shard's candidates include every row of that shard in one database's candidate
set: the union is a superset and the i-th merged score is never below one database's i-th
(recall at least as good, at up to ``shards`` times the re-ranking work). A shard that fitted
its own PCA projection (derived coarse, past 4,096 rows) ranks by a projection of its own rows:
as good on average for rows routed uniformly by id, without that per-query guarantee.

Filters and compositions. Every keyword of ``Database.search``/``search_batch`` (``where``,
``min_score``, ``minus_text``, ``weights``, ...) goes to each shard unchanged: a filter or a
minimum score only removes rows within a shard, so the merge stays exact. ``collapse`` does not
compose that way (near-duplicates on two shards both survive their shard's collapse, and a hit a
shard dropped for a neighbour that another shard's better hit knocks out must come back), so the
shards send uncollapsed rankings with the hits' stored fine vectors and the driver walks them as
one database walks its candidates.

Ids. The driver assigns ids when none are given: it starts after the largest ``next_id`` any
shard reports at open (each shard's WAL keeps its own), so ids stay unique across the collection
without a counter to persist. Only one driver writes at a time: every shard holds its database's
write lock, so a second ``open`` of the same root fails with ``LockedError``.

Faults. Writes are acknowledged only after every shard's durable (``durability="sync"``) insert
returned, and a shard actor restarted by Ray (``max_restarts``) reopens its folder and recovers
from its WAL, so an acknowledged row is never lost. A shard batch is all-or-nothing and hivlp
refuses ids it already holds, so an insert whose actor died mid-call is retried idempotently:
once the actor is back the driver looks the batch's ids up; all present means the batch committed
before the death (acknowledged), none present means it is sent again, anything else, or an actor
that does not come back, raises ``ShardUnavailableError``.
"""

from __future__ import annotations

import inspect
import json
import os
import pathlib
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import import_module
from typing import Any, Callable, Literal, Optional, TypeVar, Union

import numpy as np
import numpy.typing as npt
import ray
import ray.exceptions

import hivlp

MANIFEST = "collection.json"
FORMAT = 1
ROUTING = "id % shards"
MAX_ID = 2**63 - 1
#: The largest ``k`` (and ``candidates``) ``Database.search`` takes.
MAX_K = 2**24
#: How long a restarted shard actor retries a lock its killed predecessor may still hold.
RESTART_LOCK_WAIT_S = 10.0

PathLike = Union[str, "os.PathLike[str]"]
T = TypeVar("T")
#: ``Collection.update``'s default: the value is kept (``None`` removes it).
_UNCHANGED: Any = object()


class ShardUnavailableError(hivlp.HivlpError):
    """A shard actor could not be reached (dead beyond its restarts, or past the timeout)."""


@dataclass(frozen=True)
class Hit:
    """One search result, as ``hivlp.Hit`` but a plain value that can cross processes."""

    id: int
    score: float
    caption: Optional[str]
    uri: Optional[str]
    metadata: Union[dict[str, Any], list[Any], bytes, None]


#: A hit as shards send it: a tuple of ``Hit``'s fields pickles faster than a class instance.
HitFields = tuple[
    int, float, Optional[str], Optional[str], Union[dict[str, Any], list[Any], bytes, None]
]


#: Ids and their stored fine vectors ``(n, fine_dim)``, as shards send them for ``collapse``.
FineRows = tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32]]


class Hits(list[Hit]):
    """``search`` results; ``partial`` (and ``missing_shards``) when some shards did not answer."""

    def __init__(self, hits: Iterable[Hit], missing_shards: Sequence[int] = ()) -> None:
        super().__init__(hits)
        self.missing_shards: list[int] = list(missing_shards)

    @property
    def partial(self) -> bool:
        return bool(self.missing_shards)


class BatchHits(tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32]]):
    """``search_batch`` results ``(ids, scores)``, flagged ``partial`` as ``Hits`` is."""

    missing_shards: list[int]

    def __new__(
        cls,
        ids: npt.NDArray[np.uint64],
        scores: npt.NDArray[np.float32],
        missing_shards: Sequence[int] = (),
    ) -> BatchHits:
        self = super().__new__(cls, (ids, scores))
        self.missing_shards = list(missing_shards)
        return self

    @property
    def partial(self) -> bool:
        return bool(self.missing_shards)


class _ShardServer:
    """The Ray actor: owns one or more shard databases, opened (WAL recovery) on every start."""

    def __init__(self, paths: dict[int, str], options: dict[str, Any]) -> None:
        # An open that fails (e.g. LockedError) is kept and raised by every call, so the driver
        # sees the hivlp error itself instead of a dead actor.
        self.dbs: dict[int, hivlp.Database] = {}
        self.opening_error: Optional[hivlp.HivlpError] = None
        restarted = ray.get_runtime_context().was_current_actor_reconstructed
        try:
            for shard, path in paths.items():
                self.dbs[shard] = _open_shard(path, options, restarted)
        except hivlp.HivlpError as e:
            self.opening_error = e
            self.close()

    def db(self, shard: int) -> hivlp.Database:
        if self.opening_error is not None:
            raise self.opening_error
        return self.dbs[shard]

    def insert(self, shard: int, kwargs: dict[str, Any]) -> list[int]:
        return self.db(shard).insert(**kwargs)

    def insert_vectors(self, shard: int, kwargs: dict[str, Any]) -> list[int]:
        return self.db(shard).insert_vectors(**kwargs)

    def present(self, shard: int, ids: list[int]) -> list[int]:
        db = self.db(shard)
        return [i for i in ids if db.get(i) is not None]

    def get(self, shard: int, id: int) -> Optional[HitFields]:
        hit = self.db(shard).get(id)
        return None if hit is None else _fields(hit)

    def search(self, shard: int, kwargs: dict[str, Any]) -> list[HitFields]:
        return [_fields(h) for h in self.db(shard).search(**kwargs)]

    def search_batch(
        self, shard: int, kwargs: dict[str, Any]
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32]]:
        return self.db(shard).search_batch(**kwargs)

    def search_with_vectors(
        self, shard: int, kwargs: dict[str, Any]
    ) -> tuple[list[HitFields], FineRows]:
        """``search`` and the hits' stored fine vectors, for the driver's collapse."""
        hits = self.search(shard, kwargs)
        return hits, self.fine_rows(shard, [h[0] for h in hits], kwargs.get("target", "image"))

    def search_batch_with_vectors(
        self, shard: int, kwargs: dict[str, Any]
    ) -> tuple[tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32]], FineRows]:
        """``search_batch`` and the hits' stored fine vectors, for the driver's collapse."""
        ids, scores = self.search_batch(shard, kwargs)
        hit_ids = np.unique(ids[ids != hivlp.NO_ID]).tolist()
        return (ids, scores), self.fine_rows(shard, hit_ids, kwargs.get("target", "image"))

    def fine_rows(self, shard: int, ids: list[int], target: str) -> FineRows:
        db = self.db(shard)
        rows = _NATIVE._export_rows(db, ids)
        fine = np.asarray(rows[f"{target}_fine"], dtype=np.float32)
        return np.asarray(rows["id"], dtype=np.uint64), fine.reshape(-1, rows["fine_dim"])

    def update(self, shard: int, id: int, changes: dict[str, Any]) -> bool:
        return self.db(shard).update(id, **changes)

    def delete(self, shard: int, ids: list[int]) -> int:
        return self.db(shard).delete(ids)

    def flush(self, shard: int) -> None:
        self.db(shard).flush()

    def compact(self, shard: int) -> dict[str, Any]:
        return self.db(shard).compact()

    def snapshot(self, shard: int, dest: str) -> None:
        self.db(shard).snapshot(dest)

    def stats(self, shard: int) -> dict[str, Any]:
        return self.db(shard).stats()

    def length(self, shard: int) -> int:
        return len(self.db(shard))

    def close(self) -> None:
        for db in self.dbs.values():
            db.close()


def _open_shard(path: str, options: dict[str, Any], restarted: bool) -> hivlp.Database:
    """Opens a shard; after a restart, waits out the dead predecessor's lock for a few seconds."""
    deadline = time.monotonic() + RESTART_LOCK_WAIT_S
    while True:
        try:
            return hivlp.open(path, **options)
        except hivlp.LockedError:
            if not restarted or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _fields(hit: hivlp.Hit) -> HitFields:
    return (hit.id, hit.score, hit.caption, hit.uri, hit.metadata)


def open(
    root: PathLike,
    shards: int = 4,
    *,
    model: Optional[str] = "default",
    coarse_dtype: Literal["i8", "f16", "f32"] = "i8",
    durability: Literal["sync", "buffered"] = "sync",
    coarse_dim: Optional[int] = None,
    fine_dim: Optional[int] = None,
    metric: Literal["cosine", "ip"] = "cosine",
    actors: Optional[int] = None,
    max_restarts: int = 3,
    timeout: Optional[float] = None,
    actor_options: Optional[Mapping[str, Any]] = None,
) -> Collection:
    """Opens the collection in folder ``root``, creating it with ``shards`` shards if it has none.

    The schema arguments are those of ``hivlp.open`` and are recorded in the manifest when
    creating; an existing collection keeps its own (and its shard count). ``actors`` (default:
    one per shard) spreads the shards over fewer Ray actors, several shards per actor.
    ``max_restarts`` is how often Ray restarts a dead shard actor; ``timeout`` (seconds) bounds
    every wait on a shard, after which it counts as unavailable. ``actor_options`` go to
    ``ray.remote`` (e.g. ``num_cpus``, ``num_gpus``, ``scheduling_strategy`` to pin a shard to the
    node whose disk holds it).
    """
    # Absolute: shard actors do not share the driver's working directory.
    root = pathlib.Path(root).absolute()
    manifest_path = root / MANIFEST
    if manifest_path.exists():
        manifest = _read_manifest(manifest_path)
    else:
        if model not in (None, "default"):
            model = str(pathlib.Path(model).absolute())  # a bundle folder, as the driver sees it
        if shards < 1:
            raise hivlp.InvalidInputError(f"shards must be at least 1, got {shards}")
        manifest = {
            "format": FORMAT,
            "routing": ROUTING,
            "shards": [{"path": f"shard-{i:03}"} for i in range(shards)],
            "options": {
                "model": model,
                "coarse_dtype": coarse_dtype,
                "durability": durability,
                "coarse_dim": coarse_dim,
                "fine_dim": fine_dim,
                "metric": metric,
            },
        }
        root.mkdir(parents=True, exist_ok=True)
        _write_manifest(manifest_path, manifest)
    return Collection(root, manifest, actors, max_restarts, timeout, dict(actor_options or {}))


def _read_manifest(path: pathlib.Path) -> dict[str, Any]:
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise hivlp.CorruptionError(f"{path}: unreadable collection manifest: {e}") from e
    if manifest.get("format") != FORMAT or manifest.get("routing") != ROUTING:
        raise hivlp.CorruptionError(
            f"{path}: format {manifest.get('format')!r}, routing {manifest.get('routing')!r}; "
            f"this hivlp reads format {FORMAT} with routing {ROUTING!r}"
        )
    return manifest


def _write_manifest(path: pathlib.Path, manifest: dict[str, Any]) -> None:
    """Writes the manifest atomically: a torn write never replaces a good one."""
    temporary = path.with_suffix(".json.tmp")
    with temporary.open("w") as f:
        json.dump(manifest, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


class Collection:
    """An open sharded collection: ``hivlp.Database``'s surface over Ray actors.

    Writes and ``snapshot`` hold one driver-side lock, so a snapshot never sees half of a write.
    Close it with ``close()`` or use it as a context manager.
    """

    def __init__(
        self,
        root: pathlib.Path,
        manifest: dict[str, Any],
        actors: Optional[int],
        max_restarts: int,
        timeout: Optional[float],
        actor_options: dict[str, Any],
    ) -> None:
        self.root = root
        self.manifest = manifest
        self.timeout = timeout
        self.shards = len(manifest["shards"])
        actor_count = self.shards if actors is None else actors
        if not 1 <= actor_count <= self.shards:
            raise hivlp.InvalidInputError(
                f"actors must be between 1 and the {self.shards} shards, got {actor_count}"
            )
        options = {k: v for k, v in manifest["options"].items() if v is not None or k == "model"}
        if manifest["options"].get("model") is not None:
            options.pop("fine_dim", None)
            options.pop("coarse_dim", None)
        server = ray.remote(max_restarts=max_restarts, max_task_retries=0, **actor_options)(
            _ShardServer
        )
        self._actors: list[Any] = []
        self._actor_of: list[Any] = [None] * self.shards
        for a in range(actor_count):
            owned = {s: self.shard_path(s) for s in range(a, self.shards, actor_count)}
            actor = server.remote({s: str(p) for s, p in owned.items()}, options)
            self._actors.append(actor)
            for s in owned:
                self._actor_of[s] = actor
        self._write_lock = threading.RLock()
        self._closed = False
        try:
            stats = self._all("stats")
        except BaseException:
            self.close()
            raise
        self.fine_dim: int = stats[0]["fine_dim"]
        self.coarse_dim: int = stats[0]["coarse_dim"]
        self._next_id: int = max(s["next_id"] for s in stats)

    def shard_path(self, shard: int) -> pathlib.Path:
        """The folder of shard ``shard``: relative manifest paths are under the root."""
        return self.root / str(self.manifest["shards"][shard]["path"])

    # --- calling shards -------------------------------------------------------------------

    def _wait(self, shard: int, ref: Any) -> Any:
        """The result of one shard call; a hivlp error inside the shard is re-raised as itself."""
        try:
            return ray.get(ref, timeout=self.timeout)
        except ray.exceptions.RayTaskError as e:
            cause = e.cause
            if isinstance(cause, hivlp.HivlpError):
                raise type(cause)(f"shard {shard}: {cause}") from None
            raise
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as e:
            raise ShardUnavailableError(f"shard {shard} is unavailable: {e}") from e

    def _gather(self, refs: Mapping[int, Any]) -> dict[int, Any]:
        """Every shard's result or error: all are awaited, so no shard's error goes unseen."""
        outcomes: dict[int, Any] = {}
        for s, ref in refs.items():
            try:
                outcomes[s] = self._wait(s, ref)
            except hivlp.HivlpError as e:
                outcomes[s] = e
        return outcomes

    def _call(self, method: str, shard: int, *args: Any) -> Any:
        """One call to a shard; a read or an idempotent write is retried once if its actor died
        (Ray restarts it)."""
        self._check_open()
        for attempt in range(2):
            ref = getattr(self._actor_of[shard], method).remote(shard, *args)
            try:
                return self._wait(shard, ref)
            except ShardUnavailableError:
                if attempt == 1:
                    raise
        raise AssertionError("unreachable")

    def _all(self, method: str, *args: Any) -> list[Any]:
        """The same call on every shard, in parallel."""
        return self._each(method, {s: args for s in range(self.shards)})

    def _each(self, method: str, args: Mapping[int, Sequence[Any]]) -> list[Any]:
        """Per-shard calls in parallel; shards whose actor died are retried once."""
        self._check_open()
        refs = {s: getattr(self._actor_of[s], method).remote(s, *a) for s, a in args.items()}
        outcomes = self._gather(refs)
        for s, outcome in outcomes.items():
            if isinstance(outcome, ShardUnavailableError):
                outcomes[s] = self._call(method, s, *args[s])
        for outcome in outcomes.values():
            if isinstance(outcome, hivlp.HivlpError):
                raise outcome
        return list(outcomes.values())

    def _check_open(self) -> None:
        if self._closed:
            raise hivlp.HivlpError("the collection is closed")

    # --- writes ---------------------------------------------------------------------------

    def insert(
        self,
        images: Optional[Sequence[hivlp.ImageLike]] = None,
        captions: Optional[Sequence[Optional[str]]] = None,
        metadata: Optional[Sequence[hivlp.Metadata]] = None,
        ids: Optional[Sequence[int]] = None,
        uris: Optional[Sequence[Optional[str]]] = None,
    ) -> list[int]:
        """Encodes (in the shards) and inserts images and captions; see ``Database.insert``.

        Image paths are read on the driver and sent as bytes (their path is the default uri),
        so shards need not see the driver's files.
        """
        columns = {"images": images, "captions": captions, "metadata": metadata, "uris": uris}
        n = _rows(columns, ("images", "captions"), "insert() needs images=, captions= or both")
        if images is not None:
            columns["uris"] = [
                u if u is not None or isinstance(im, bytes) else os.fspath(im)
                for im, u in zip(images, uris or [None] * n)
            ]
            columns["images"] = [_image_bytes(im) for im in images]
        return self._insert("insert", columns, ids, n)

    def insert_vectors(
        self,
        image_fine: Optional[hivlp.ArrayLike] = None,
        image_coarse: Optional[hivlp.ArrayLike] = None,
        text_fine: Optional[hivlp.ArrayLike] = None,
        text_coarse: Optional[hivlp.ArrayLike] = None,
        captions: Optional[Sequence[Optional[str]]] = None,
        ids: Optional[Sequence[int]] = None,
        uris: Optional[Sequence[Optional[str]]] = None,
        metadata: Optional[Sequence[hivlp.Metadata]] = None,
    ) -> list[int]:
        """Inserts precomputed vectors; see ``Database.insert_vectors``.

        Shapes and values are checked on the driver before any shard is written.
        """
        columns: dict[str, Any] = {
            "image_fine": self._rows_of("image_fine", image_fine, self.fine_dim),
            "image_coarse": self._rows_of("image_coarse", image_coarse, self.coarse_dim),
            "text_fine": self._rows_of("text_fine", text_fine, self.fine_dim),
            "text_coarse": self._rows_of("text_coarse", text_coarse, self.coarse_dim),
            "captions": captions,
            "uris": uris,
            "metadata": metadata,
        }
        n = _rows(
            columns,
            ("image_fine", "text_fine"),
            "insert_vectors() needs image_fine=, text_fine= or both",
        )
        return self._insert("insert_vectors", columns, ids, n)

    def _rows_of(
        self, name: str, value: Optional[hivlp.ArrayLike], dim: int
    ) -> Optional[npt.NDArray[np.float32]]:
        if value is None:
            return None
        rows = np.asarray(value, dtype=np.float32)
        if rows.ndim == 1:
            rows = rows[None, :]
        if rows.ndim != 2 or rows.shape[1] != dim:
            raise hivlp.InvalidInputError(
                f"{name} has shape {rows.shape}; the collection stores (n, {dim}) vectors"
            )
        if not np.isfinite(rows).all():
            raise hivlp.InvalidInputError(f"{name} holds NaN or infinite values")
        return rows

    def _insert(
        self, method: str, columns: dict[str, Any], ids: Optional[Sequence[int]], n: int
    ) -> list[int]:
        with self._write_lock:
            self._check_open()
            if ids is None:
                ids = list(range(self._next_id, self._next_id + n))
            else:
                ids = [int(i) for i in ids]
                _check_ids(ids, n)
                taken = [i for found in self._each("present", self._split(ids)) for i in found]
                if taken:
                    raise hivlp.InvalidInputError(
                        f"ids {sorted(taken)[:10]} already exist in the collection"
                    )
            batches = self._route(columns, ids, n)
            refs = {s: getattr(self._actor_of[s], method).remote(s, b) for s, b in batches.items()}
            done: list[int] = []
            failure: Optional[hivlp.HivlpError] = None
            for s, outcome in self._gather(refs).items():
                if isinstance(outcome, ShardUnavailableError):
                    try:
                        self._recover_insert(method, s, batches[s])
                        outcome = None
                    except hivlp.HivlpError as e:
                        outcome = e
                if isinstance(outcome, hivlp.HivlpError):
                    failure = failure or outcome
                else:
                    done.append(s)
            self._next_id = max(self._next_id, max(ids, default=-1) + 1)
            if failure is not None:
                # Rolls the committed shards back so that the call is all or nothing.
                if done:
                    self._each("delete", {s: (batches[s]["ids"],) for s in done})
                raise failure
            return ids

    def _recover_insert(self, method: str, shard: int, batch: dict[str, Any]) -> None:
        """After the shard's actor died mid-insert: acknowledge, resend once, or raise."""
        ids = batch["ids"]
        present = self._call("present", shard, ids)
        if len(present) == len(ids):
            return
        if present:
            raise ShardUnavailableError(
                f"shard {shard} died mid-insert and holds {len(present)} of the batch's "
                f"{len(ids)} rows; the batch is neither in nor out"
            )
        self._call(method, shard, batch)

    def _split(self, ids: Sequence[int]) -> dict[int, tuple[list[int]]]:
        by_shard: dict[int, list[int]] = {}
        for i in ids:
            by_shard.setdefault(i % self.shards, []).append(i)
        return {s: (v,) for s, v in by_shard.items()}

    def _route(self, columns: dict[str, Any], ids: list[int], n: int) -> dict[int, dict[str, Any]]:
        """Splits a batch's columns by shard (``id % shards``)."""
        shard_of = np.asarray(ids, dtype=np.uint64) % np.uint64(self.shards)
        batches = {}
        for s in range(self.shards):
            rows = np.flatnonzero(shard_of == s)
            if rows.size == 0:
                continue
            batch: dict[str, Any] = {"ids": [ids[r] for r in rows]}
            for name, value in columns.items():
                if value is None:
                    continue
                if isinstance(value, np.ndarray):
                    batch[name] = np.ascontiguousarray(value[rows])
                else:
                    batch[name] = [value[r] for r in rows]
            batches[s] = batch
        return batches

    def delete(self, ids: Sequence[int]) -> int:
        """Deletes items; returns how many existed."""
        with self._write_lock:
            return sum(self._each("delete", self._split([int(i) for i in ids])))

    def update(
        self,
        id: int,
        *,
        metadata: hivlp.Metadata = _UNCHANGED,
        caption: Optional[str] = _UNCHANGED,
        uri: Optional[str] = _UNCHANGED,
    ) -> bool:
        """Changes item ``id``'s metadata, caption and/or URI in its shard; see
        ``Database.update`` (a keyword not given is kept, ``None`` removes the value).

        Returns False when no live item has ``id``. Idempotent, so it is retried once if the
        shard's actor died during the call.
        """
        given = {"metadata": metadata, "caption": caption, "uri": uri}
        changes = {name: value for name, value in given.items() if value is not _UNCHANGED}
        with self._write_lock:
            updated: bool = self._call("update", int(id) % self.shards, int(id), changes)
            return updated

    def flush(self) -> None:
        """Flushes every shard, in parallel."""
        with self._write_lock:
            self._all("flush")

    def compact(self) -> list[dict[str, Any]]:
        """Compacts every shard, in parallel; returns the shards' reports."""
        with self._write_lock:
            return self._all("compact")

    def snapshot(self, dest: PathLike) -> None:
        """Writes a consistent copy of the collection to the new folder ``dest``.

        Consistent: writes are paused while every shard snapshots (in parallel), so the copy
        holds exactly the writes acknowledged before the call, each write wholly or not at all.
        It opens with ``hivlp.cluster.open(dest)``.
        """
        dest = pathlib.Path(dest).absolute()
        with self._write_lock:
            dest.mkdir(parents=True, exist_ok=False)
            self._each("snapshot", {s: (str(dest / f"shard-{s:03}"),) for s in range(self.shards)})
            manifest = dict(self.manifest)
            manifest["shards"] = [{"path": f"shard-{s:03}"} for s in range(self.shards)]
            _write_manifest(dest / MANIFEST, manifest)

    # --- reads ----------------------------------------------------------------------------

    def search(
        self,
        text: Union[str, Sequence[str], None] = None,
        image: Union[hivlp.ImageLike, Sequence[hivlp.ImageLike], None] = None,
        vector: Optional[hivlp.ArrayLike] = None,
        k: int = 10,
        *,
        allow_partial: bool = False,
        **options: Any,
    ) -> Hits:
        """Top ``k`` over every shard; see ``Database.search``.

        Every other keyword of ``Database.search`` (``where``, ``min_score``, ``collapse``,
        ``minus_text``, ``weights``, ``candidates``, ``exact``, ``allow_ids``, ...) goes to each
        shard unchanged; names it does not take raise ``TypeError`` on the driver. Each shard
        composes and encodes a text or image query itself (image paths are read here and sent
        as bytes). With ``collapse`` the driver walks the shards' merged hits as one database
        would, so near-duplicates held by different shards also count once. A shard that cannot
        be reached raises ``ShardUnavailableError``, or with ``allow_partial=True`` is left out
        and named in the result's ``missing_shards`` (``partial`` is then true).
        """
        kwargs = _search_options(
            _SEARCH,
            {"text": text, "image": _query_images(image), "vector": vector, "k": k, **options},
        )
        collapse = kwargs.pop("collapse", None)
        if collapse is not None:
            return self._collapsed_search(kwargs, k, _threshold(collapse), allow_partial)
        answers, missing = self._fan_out("search", kwargs, allow_partial)
        return Hits((Hit(*h) for h in _best(answers, k)), missing)

    def _collapsed_search(
        self, kwargs: dict[str, Any], k: int, threshold: np.float32, allow_partial: bool
    ) -> Hits:
        """``search`` with ``collapse``: uncollapsed shard rankings, collapsed here, deepened
        until ``k`` distinct hits are certain."""
        for depth in _depths(k):
            answers, missing = self._fan_out(
                "search_with_vectors", _deeper(kwargs, depth), allow_partial
            )
            rankings = [[(h[0], h[1]) for h in hits] for hits, _ in answers]
            units = _units(answers)
            kept, certain = _collapse(rankings, depth, units, k, threshold)
            if certain or depth == MAX_K:
                fields = {h[0]: h for hits, _ in answers for h in hits}
                return Hits((Hit(*fields[i]) for i, _ in kept), missing)
        raise AssertionError("unreachable")

    def search_batch(
        self,
        vectors: hivlp.ArrayLike,
        target: Literal["image", "text"] = "image",
        k: int = 10,
        *,
        allow_partial: bool = False,
        **options: Any,
    ) -> BatchHits:
        """Searches ``(q, dim)`` fine vectors over every shard; see ``Database.search_batch``.

        Returns ``(ids, scores)`` of shape ``(q, min(k, len(collection)))``, padded as there;
        other keywords (``where``, ``min_score``, ``collapse``, ...) and ``allow_partial`` as in
        ``search``.
        """
        kwargs = _search_options(
            _SEARCH_BATCH, {"vectors": vectors, "target": target, "k": k, **options}
        )
        collapse = kwargs.pop("collapse", None)
        if collapse is not None:
            return self._collapsed_search_batch(kwargs, k, _threshold(collapse), allow_partial)
        answers, missing = self._fan_out("search_batch", kwargs, allow_partial)
        ids, scores = _best_batch(answers, k)
        return BatchHits(ids, scores, missing)

    def _collapsed_search_batch(
        self, kwargs: dict[str, Any], k: int, threshold: np.float32, allow_partial: bool
    ) -> BatchHits:
        """``search_batch`` with ``collapse``, query by query as ``_collapsed_search``; deeper
        rounds send only the queries still without a certain answer."""
        depths = iter(_depths(k))
        depth = next(depths)
        answers, lost = self._fan_out(
            "search_batch_with_vectors", _deeper(kwargs, depth), allow_partial
        )
        missing = set(lost)
        queries = answers[0][0][0].shape[0]
        width = min(k, sum(a[0][0].shape[1] for a in answers))
        ids = np.full((queries, width), hivlp.NO_ID, dtype=np.uint64)
        scores = np.full((queries, width), -np.inf, dtype=np.float32)
        short = list(range(queries))
        while True:
            units = _units(answers)
            still = []
            for row, query in enumerate(short):
                rankings = [
                    [
                        (int(i), float(s))
                        for i, s in zip(shard_ids[row], shard_scores[row])
                        if i != hivlp.NO_ID
                    ]
                    for (shard_ids, shard_scores), _ in answers
                ]
                kept, certain = _collapse(rankings, depth, units, k, threshold)
                if certain or depth == MAX_K:
                    ids[query, : len(kept)] = [i for i, _ in kept]
                    scores[query, : len(kept)] = [s for _, s in kept]
                else:
                    still.append(query)
            if not still:
                return BatchHits(ids, scores, sorted(missing))
            short = still
            depth = next(depths)
            call = _deeper(kwargs, depth)
            for name in ("vectors", "coarse_vectors"):  # arrays the shards accepted already
                if call.get(name) is not None:
                    call[name] = np.asarray(call[name], dtype=np.float32)[short]
            answers, lost = self._fan_out("search_batch_with_vectors", call, allow_partial)
            missing.update(lost)

    def _fan_out(
        self, method: str, kwargs: dict[str, Any], allow_partial: bool
    ) -> tuple[list[Any], list[int]]:
        """Runs one search on every shard in parallel; unreachable shards raise or are listed."""
        self._check_open()
        refs = {s: getattr(self._actor_of[s], method).remote(s, kwargs) for s in range(self.shards)}
        answers, missing = [], []
        for s, outcome in self._gather(refs).items():
            if isinstance(outcome, ShardUnavailableError) and allow_partial:
                missing.append(s)
            elif isinstance(outcome, hivlp.HivlpError):
                raise outcome
            else:
                answers.append(outcome)
        if not answers:
            raise ShardUnavailableError(f"no shard of {self.root} answered")
        return answers, missing

    def get(self, id: int) -> Optional[Hit]:
        """The item with this id (score 0.0), or None."""
        fields: Optional[HitFields] = self._call("get", int(id) % self.shards, int(id))
        return None if fields is None else Hit(*fields)

    def stats(self) -> dict[str, Any]:
        """Counts and sizes summed over the shards, the schema, and ``shards``: each one's stats."""
        per_shard = self._all("stats")
        total: dict[str, Any] = {
            key: sum(s[key] for s in per_shard)
            for key in ("items", "deleted", "segments", "segment_rows", "memtable_rows")
            + ("wal_bytes", "disk_bytes", "partitioned_segments", "partitions")
        }
        for key in ("fine_dim", "coarse_dim", "fine_dtype", "coarse_dtype", "metric", "model"):
            total[key] = per_shard[0][key]
        total["next_id"] = self._next_id
        total["shards"] = per_shard
        return total

    def __len__(self) -> int:
        return sum(self._all("length"))

    def close(self) -> None:
        """Closes every shard database (durable writes, locks released) and ends the actors."""
        if self._closed:
            return
        self._closed = True
        refs = [actor.close.remote() for actor in self._actors]
        try:
            for ref in refs:
                try:
                    ray.get(ref, timeout=self.timeout)
                except ray.exceptions.RayActorError:
                    pass  # a dead actor's process took its locks with it
        finally:
            for actor in self._actors:
                ray.kill(actor, no_restart=True)

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def ingest(
        self,
        dataset: ray.data.Dataset,
        batch_size: int = 256,
        progress: Optional[Callable[[int], None]] = None,
    ) -> int:
        """Inserts every row of a Ray Dataset; returns how many.

        Columns named as ``insert_vectors``' arguments (``image_fine``, ``text_fine``,
        ``captions``, ``ids``, ...) are inserted as vectors; with an ``images`` column (encoded
        image bytes) rows go through ``insert`` and the shards encode them. Upstream stages (e.g.
        ``map_batches`` running an encoder on GPU workers) stream: Ray Data only runs ahead of
        this loop by its bounded prefetch, so a slow shard slows the readers down rather than
        filling memory (backpressure). ``progress`` is called with the running row count.
        """
        count = 0
        for batch in dataset.iter_batches(batch_size=batch_size, batch_format="numpy"):
            columns = {name: _column(values) for name, values in batch.items()}
            if "images" in columns:
                self.insert(**columns)
            else:
                self.insert_vectors(**columns)
            count += len(next(iter(batch.values())))
            if progress is not None:
                progress(count)
        return count


#: The native module: ``_export_rows`` reads stored vectors by id (as ``to_arrow`` does).
_NATIVE = import_module("hivlp._hivlp")
_SEARCH = inspect.signature(hivlp.Database.search)
_SEARCH_BATCH = inspect.signature(hivlp.Database.search_batch)


def _search_options(signature: inspect.Signature, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keywords for every shard's search, checked against ``Database``'s own signature, so
    a misspelt name fails on the driver and a keyword ``Database`` gains needs no change here."""
    try:
        signature.bind(None, **kwargs)
    except TypeError as e:
        raise TypeError(f"search: {e}") from None
    return kwargs


def _query_images(
    image: Union[hivlp.ImageLike, Sequence[hivlp.ImageLike], None],
) -> Union[bytes, list[bytes], None]:
    """Query images as bytes: shards need not see the driver's files."""
    if image is None:
        return None
    if isinstance(image, (str, bytes, os.PathLike)):
        return _image_bytes(image)
    return [_image_bytes(im) for im in image]


def _best(answers: Sequence[list[HitFields]], k: int) -> list[HitFields]:
    """The top ``k`` of the shards' hits in one database's order: score descending, id
    ascending."""
    return sorted((h for a in answers for h in a), key=lambda h: (-h[1], h[0]))[:k]


def _best_batch(
    answers: Sequence[tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32]]], k: int
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32]]:
    """``_best`` row by row over the shards' padded ``(ids, scores)`` arrays."""
    ids = np.concatenate([a[0] for a in answers], axis=1)
    scores = np.concatenate([a[1] for a in answers], axis=1)
    order = np.lexsort((ids, -scores), axis=1)[:, :k]
    return np.take_along_axis(ids, order, axis=1), np.take_along_axis(scores, order, axis=1)


def _threshold(collapse: Any) -> np.float32:
    """``collapse`` as the engine compares it (float32), refused with the engine's message: the
    shards never see it, since they are asked for uncollapsed rankings."""
    try:
        threshold = float(collapse)
    except (TypeError, ValueError) as e:
        raise hivlp.InvalidInputError(f"collapse must be a number: {e}") from None
    if not -1.0 <= threshold <= 1.0:
        raise hivlp.InvalidInputError(
            f"collapse must be a cosine similarity between -1 and 1, got {threshold}"
        )
    return np.float32(threshold)


def _depths(k: int) -> Iterable[int]:
    """How many uncollapsed hits to ask each shard for, round after round: twice ``k``, doubling
    up to ``MAX_K`` (the last round's walk is taken as it stands, so a shard with more than
    ``MAX_K`` rows of near-duplicates can return fewer than ``k``). An invalid ``k`` is sent as
    it is, for the shards' usual error."""
    if not 1 <= k <= MAX_K:
        yield k
        return
    depth = min(2 * k, MAX_K)
    while True:
        yield depth
        if depth == MAX_K:
            return
        depth = min(2 * depth, MAX_K)


def _deeper(kwargs: dict[str, Any], depth: int) -> dict[str, Any]:
    """The search asking for ``depth`` hits; a given ``candidates`` grows with it (it must be at
    least ``k``), as one database's collapse grows its candidates."""
    call = dict(kwargs, k=depth)
    if call.get("candidates") is not None:
        call["candidates"] = max(int(call["candidates"]), depth)
    return call


def _units(answers: Sequence[tuple[Any, FineRows]]) -> dict[int, npt.NDArray[np.float32]]:
    """Each hit's fine vector at unit length, normalised as the engine's ``l2_normalize``
    (norm in float64; vectors already within 2 float32 epsilons of unit length kept as
    stored)."""
    units: dict[int, npt.NDArray[np.float32]] = {}
    for _, (ids, fine) in answers:
        norms = np.sqrt(np.square(fine.astype(np.float64)).sum(axis=1))
        for i, row, norm in zip(ids.tolist(), fine, norms):
            if norm != 0.0 and abs(norm - 1.0) > 2.0 * np.finfo(np.float32).eps:
                row = (row.astype(np.float64) / norm).astype(np.float32)
            units[i] = row
    return units


def _collapse(
    rankings: Sequence[Sequence[tuple[int, float]]],
    depth: int,
    units: Mapping[int, npt.NDArray[np.float32]],
    k: int,
    threshold: np.float32,
) -> tuple[list[tuple[int, float]], bool]:
    """One database's collapse walk over the shards' uncollapsed rankings (``(id, score)``, best
    first): hits merged by (score descending, id ascending), each dropped when its unit fine
    vector's cosine with a kept hit's is at least ``threshold`` (float64 dot, compared in
    float32, as the engine). A shard that returned ``depth`` hits may hold more below its last
    one, so the walk is certain only down to the highest such last hit. Returns the kept
    ``(id, score)`` pairs and whether they are final (``k`` kept, or every ranking exhausted)."""
    full = [(-r[-1][1], r[-1][0]) for r in rankings if len(r) == depth]
    bound = min(full, default=None)
    merged = sorted((-score, i) for ranking in rankings for i, score in ranking)
    kept: list[tuple[int, float]] = []
    kept_units: list[npt.NDArray[np.float64]] = []
    for key in merged:
        if len(kept) == k:
            return kept, True
        if bound is not None and key > bound:
            return kept, False
        unit = units[key[1]].astype(np.float64)
        if kept_units and (np.stack(kept_units) @ unit).astype(np.float32).max() >= threshold:
            continue
        kept.append((key[1], -key[0]))
        kept_units.append(unit)
    return kept, len(kept) == k or bound is None


def _column(values: npt.NDArray[Any]) -> Any:
    """A Ray Data column as ``insert``/``insert_vectors`` take it: vectors stay 2-D arrays."""
    if values.dtype == object:
        if len(values) and isinstance(values[0], np.ndarray):
            return np.stack(list(values))
        return list(values)
    if values.ndim == 2:
        return values
    return values.tolist()


def _image_bytes(image: hivlp.ImageLike) -> bytes:
    if isinstance(image, bytes):
        return image
    try:
        return pathlib.Path(image).read_bytes()
    except OSError as e:
        raise hivlp.InvalidInputError(f"image file not readable: {image}: {e}") from e


def _rows(columns: dict[str, Any], primary: Sequence[str], missing: str) -> int:
    """The batch's row count; every given column must have it."""
    given = [name for name in primary if columns[name] is not None]
    if not given:
        raise hivlp.InvalidInputError(missing)
    n = len(columns[given[0]])
    for name, value in columns.items():
        if value is not None and len(value) != n:
            raise hivlp.InvalidInputError(f"{name} has {len(value)} rows, expected {n}")
    return n


def _check_ids(ids: list[int], n: int) -> None:
    if len(ids) != n:
        raise hivlp.InvalidInputError(f"ids has {len(ids)} rows, expected {n}")
    bad = [i for i in ids if not 0 <= i <= MAX_ID]
    if bad:
        raise hivlp.InvalidInputError(f"id {bad[0]} is outside 0..=2**63 - 1")
    if len(set(ids)) != n:
        raise hivlp.InvalidInputError("ids holds the same id twice")


__all__ = ["BatchHits", "Collection", "Hit", "Hits", "ShardUnavailableError", "open"]
