"""Answering queries: a typed text through the text model and head, or an object's own image, against FAISS."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from aion_assets.platform.layout import image_similarity_index_dir, search_index_dir
from aion_assets.search.artefacts import demote_artefacts as demote
from aion_assets.search.artefacts import query_asks_for_artefacts

# torch, faiss and the text model load on first use, inside the methods: `aion similar` needs no text model,
# and nothing here imports dagster, mlflow or sentence-transformers (seconds of start-up for one query).
if TYPE_CHECKING:
    from aion_assets.encoders.text import TextEncoder
    from aion_assets.platform.lake import Lake
    from aion_assets.platform.warehouse import Warehouse
    from aion_assets.search.index import VectorIndex

RESULT_COLUMNS = ["rank", "object_id", "release", "score"]
# A version with an artefact model adds each result's score (the calibrated probability that the cutout is a star,
# a trail, a spike or empty sky); likely artefacts are demoted below the rest unless the query asks for them.
ARTEFACT_COLUMN = "artefact_score"
# Demotion re-orders this many candidates at least: an artefact is pushed past the ones fetched with it.
DEMOTION_CANDIDATES = 64
RELEASES_REFRESH_S = 10.0
QUERY_CACHE_SIZE = 4096


class UnknownRelease(LookupError):
    """A release filter naming no release the index serves."""


class UnknownObject(LookupError):
    """An object id not found (in the index, or in the release given)."""


class AmbiguousObject(LookupError):
    """An object id found in several releases, none named."""


class SearchService:
    """Loads the heads, the text model and the indexes once; each query is then one encode and one search.

    ``model_version`` pins a heads version (its heads and its index); None serves the latest, resolved once at
    construction, so a new version landing mid-session never mixes one version's heads with another's index.
    """

    def __init__(self, warehouse: Warehouse, text_encoder_spec: str, image_encoder_id: str,
                 model_version: int | None = None, text_encoder: TextEncoder | None = None) -> None:
        """``text_encoder``: an already loaded one to share (a server's, batching its requests); default: the
        query encoder of ``text_encoder_spec``, loaded on the first query."""
        self.warehouse = warehouse
        self.lake: Lake = warehouse.lake
        self._text_encoder_spec = text_encoder_spec
        self._image_encoder_id = image_encoder_id
        self._requested_version = model_version
        self._model_version: int | None = None
        self._search_index: VectorIndex | None = None
        self._similarity_index: VectorIndex | None = None
        self._heads = None
        self._served_releases: set[str] | None = None
        self._served_releases_read_at: float | None = None
        self._text = text_encoder
        self._load_lock = threading.Lock()
        self._query_cache: OrderedDict[str, np.ndarray] = OrderedDict()

    # Loaded lazily: `aion similar` needs neither the heads nor the text model.
    @property
    def model_version(self) -> int:
        if self._model_version is None:
            from aion_assets.search.artifacts import resolve_version

            self._model_version = resolve_version(self.lake, self._requested_version)
        return self._model_version

    @property
    def search_index(self) -> VectorIndex:
        if self._search_index is None:
            from aion_assets.search.artifacts import load_index_from_lake

            self._search_index = load_index_from_lake(self.lake, search_index_dir(self.model_version))
        return self._search_index

    @property
    def similarity_index(self) -> VectorIndex:
        if self._similarity_index is None:
            from aion_assets.search.artifacts import load_index_from_lake

            self._similarity_index = load_index_from_lake(self.lake, image_similarity_index_dir(self._image_encoder_id))
        return self._similarity_index

    def encode_query(self, text: str) -> np.ndarray:
        """The query's vector in this version's search space; the most recent ``QUERY_CACHE_SIZE`` distinct
        texts are kept (a user changing k or the release filter, or a popular query, encodes nothing again)."""
        with self._load_lock:
            cached = self._query_cache.get(text)
            if cached is not None:
                self._query_cache.move_to_end(text)
                return cached
        vector = self._encode_query(text)
        vector.setflags(write=False)  # shared by every request that asks the same
        with self._load_lock:
            self._query_cache[text] = vector
            while len(self._query_cache) > QUERY_CACHE_SIZE:
                self._query_cache.popitem(last=False)
        return vector

    def _encode_query(self, text: str) -> np.ndarray:
        import torch

        from aion_assets.encoders.text import load_query_text_encoder
        from aion_assets.search.artifacts import load_heads_from_lake

        with self._load_lock:  # threads of a server share one service
            if self._heads is None:
                self._text = self._text or load_query_text_encoder(self._text_encoder_spec)
                self._heads = load_heads_from_lake(self.lake, self.model_version).eval()
        # One short sentence gains nothing from intra-op threads, and OpenMP's spinning workers make it ~40x
        # slower whenever another process holds a core (measured: 13 ms on one thread, 0.5 s on two).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            base = torch.from_numpy(self._text.encode([text]))
            # The head in place, read-only (no device moves or mode flips): requests share it across threads.
            with torch.inference_mode():
                return self._heads.encode_text(base)[0].float().numpy()
        finally:
            torch.set_num_threads(threads)

    @classmethod
    def from_environment(cls, model_version: int | None = None) -> SearchService:
        """The service over the configured stack and models (what the CLI uses)."""
        # encoders.image, not encoders.resources (the same id): the latter imports dagster.
        from aion_assets.encoders.image import canonical_image_encoder
        from aion_assets.platform.layout import encoder_artifact_id
        from aion_assets.platform.settings import get_settings
        from aion_assets.platform.warehouse import stack_warehouse

        settings = get_settings()
        image_id = encoder_artifact_id(canonical_image_encoder(settings.image_encoder), settings.image_precision)
        return cls(stack_warehouse(), settings.text_encoder, image_id, model_version)

    @property
    def served_releases(self) -> set[str] | None:
        """The releases ingested now (the `cutouts` view), or None when the warehouse has no cutouts table.

        An index built before a release was retired still holds its vectors until it is rebuilt; results are
        drawn only from releases the lake still serves, so a retired release is never silently returned. Read
        again after ``RELEASES_REFRESH_S``: a long-lived server follows releases coming and going."""
        now = time.monotonic()
        if self._served_releases_read_at is None or now - self._served_releases_read_at > RELEASES_REFRESH_S:
            try:
                self._served_releases = self._read_served_releases()
            except Exception:
                if self._served_releases_read_at is None:
                    raise
                # A run holding the warehouse (or a view mid-rebuild): keep serving the set read last time.
            self._served_releases_read_at = now
        return self._served_releases

    def _read_served_releases(self) -> set[str] | None:
        if "cutouts" not in self.warehouse.tables():
            return None
        _, rows = self.warehouse.query_rows("SELECT DISTINCT release FROM cutouts")
        return {row[0] for row in rows}

    def warm(self) -> SearchService:
        """Load the heads, the text model and the search index now (a server does this before serving)."""
        self.encode_query("warm-up")
        _ = self.search_index, self.served_releases
        return self

    def search(self, text: str, k: int = 10, release: str | None = None) -> pl.DataFrame:
        """Top k for a typed query; likely artefacts go below the rest unless the query asks for them."""
        if not text.strip():
            raise ValueError("empty query")
        return ranked(self.search_index, self.encode_query(text), k, release, self.served_releases,
                      demote_artefacts=not query_asks_for_artefacts(text))

    def similar(self, object_id: str, k: int = 10, release: str | None = None) -> pl.DataFrame:
        """The image-similarity baseline: nearest neighbours of the object's own base embedding."""
        row, own_release = self.similarity_row(object_id, release)
        query = self.similarity_index.cpu_index.reconstruct(row)
        found = ranked(self.similarity_index, query, k + 1, release, self.served_releases)
        found = found.filter(~((pl.col("object_id") == object_id) & (pl.col("release") == own_release)))
        return _numbered(found.head(k))

    def similarity_row(self, object_id: str, release: str | None = None) -> tuple[int, str]:
        """(row in the image-similarity index, release) of the object; its release is needed only when its id
        is in several."""
        matches = self.similarity_index.ids.with_row_index("vector_row").filter(pl.col("object_id") == object_id)
        if release is not None:
            matches = matches.filter(pl.col("release") == release)
        if matches.is_empty():
            raise UnknownObject(f"object {object_id!r} is not in the image-similarity index"
                                + (f" for release {release!r}" if release else ""))
        if matches.height > 1:
            raise AmbiguousObject(f"object {object_id!r} is in several releases "
                                  f"({', '.join(matches['release'].to_list())}): pass --release")
        return int(matches["vector_row"][0]), str(matches["release"][0])

    def log(self, kind: str, query: str, k: int, release: str | None, results: int, seconds: float) -> None:
        """One row in `search_log` (a new lake file); a search never fails because its log could not be written."""
        from aion_assets.search.search_log import SearchRecord, log_searches

        try:
            log_searches(self.warehouse, [SearchRecord(
                source="cli", kind=kind, query=query, k=k, release=release,
                model_version=self.model_version if kind == "text" else None,
                latency_ms=seconds * 1000.0, n_results=results)])
        except Exception:  # noqa: BLE001 - logging is best effort by design
            pass


def check_release(index: VectorIndex, release: str | None, served: set[str] | None = None) -> None:
    """An unknown release filter is an error naming the known ones, not an empty result; so is a retired one."""
    if release is None:
        return
    in_index = index.releases
    known = sorted(in_index & served if served is not None else in_index)
    if release not in known:
        why = "was retired (its folder left the watched folder)" if release in in_index else "is not in the index"
        raise UnknownRelease(f"release {release!r} {why}; known: {', '.join(known)}")


def ranked(index: VectorIndex, query: np.ndarray, k: int, release: str | None = None,
           served_releases: set[str] | None = None, demote_artefacts: bool = False) -> pl.DataFrame:
    """Top k rows of the index for one query, optionally within one release, and only from ``served_releases``
    when given (None: every release in the index).

    With a filter the search widens (doubling k) until k hits pass it or the whole index was scanned, so a small
    release inside a large index is still answered exactly. The filter is a row mask, applied before any id is
    looked up. ``demote_artefacts`` (with an index that has artefact scores) re-orders at least
    ``DEMOTION_CANDIDATES`` candidates so that likely artefacts follow every other one.
    """
    scored = ARTEFACT_COLUMN in index.ids.columns
    if demote_artefacts and scored:
        rows, scores = _ranked_rows(index, query, max(k, DEMOTION_CANDIDATES), release, served_releases)
        artefact = index.ids[ARTEFACT_COLUMN].to_numpy()[rows]
        order = np.argsort(-demote(scores, artefact), kind="stable")[:k]
        rows, scores = rows[order], scores[order]
    else:
        rows, scores = _ranked_rows(index, query, k, release, served_releases)
    hits = index.ids[rows.tolist()].with_columns(pl.Series("score", scores, pl.Float64))
    return _numbered(hits, with_artefacts=scored)


def _ranked_rows(index: VectorIndex, query: np.ndarray, k: int, release: str | None,
                 served_releases: set[str] | None) -> tuple[np.ndarray, np.ndarray]:
    """(rows, scores) of the top k that pass the release filters, best first."""
    wanted = set(served_releases) if served_releases is not None else None
    if release is not None:
        wanted = {release} & wanted if wanted is not None else {release}
    allowed = index.rows_in_releases(frozenset(wanted)) if wanted is not None else None
    fetch = k if allowed is None else max(4 * k, 64)
    while True:
        fetch = min(fetch, index.ntotal)
        scores, rows = index.search(query[None, :].astype(np.float32), fetch)
        keep = rows[0] >= 0
        if allowed is not None:
            keep &= allowed[np.where(keep, rows[0], 0)]
        found_rows, found_scores = rows[0][keep], scores[0][keep]
        if len(found_rows) >= k or fetch >= index.ntotal:
            break
        fetch *= 2
    return found_rows[:k], found_scores[:k]


def _numbered(hits: pl.DataFrame, with_artefacts: bool = False) -> pl.DataFrame:
    """Results in the CLI's contract: ranks 1..n in the frame's (score) order, and the artefact score when the
    index has one."""
    columns = RESULT_COLUMNS + ([ARTEFACT_COLUMN] if with_artefacts else [])
    return hits.with_columns(pl.int_range(1, pl.len() + 1).alias("rank")).select(columns)


def timed(call, *args, **kwargs) -> tuple[pl.DataFrame, float]:
    started = time.perf_counter()
    result = call(*args, **kwargs)
    return result, time.perf_counter() - started
