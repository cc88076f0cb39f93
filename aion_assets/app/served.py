"""Which heads version answers each request, and the loaded search service of each version. No dagster.

A request resolves its version once, when it starts (the one it asked for, else the lake's latest pointer), and
holds that version's service to the end: a newer version landing mid-request never mixes one version's heads with
another's index. The pointer is read again at most every ``pointer_ttl_s``, so a new version is picked up without
a restart; it is loaded in the background as soon as it is seen, and the ``keep`` most recently used versions stay
in memory (an evicted one is freed once its last request finishes).

A version's index is re-merged whenever a new shard lands (a new build in its folder, see search/artifacts.py);
with the pointer the served version's build is read too, and a newer build is loaded in the background and
swapped in when ready, so new objects become searchable without a restart and no request waits for the load.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from aion_assets.platform.lake import Lake
from aion_assets.platform.layout import heads_checkpoint_path, search_index_dir
from aion_assets.search.artifacts import ModelVersionMissing, index_build, read_latest_pointer, trained_versions
from aion_assets.search.service import SearchService


class UnknownModelVersion(LookupError):
    """A version the lake does not hold, or holds without an index."""


class ServedModels:
    def __init__(self, lake: Lake, make_service: Callable[[int], SearchService], pointer_ttl_s: float = 1.0,
                 keep: int = 3) -> None:
        self.lake = lake
        self._make_service = make_service
        self._pointer_ttl_s = pointer_ttl_s
        self._keep = keep
        self._latest: int | None = None
        self._latest_read_at: float | None = None
        self._services: OrderedDict[int, SearchService] = OrderedDict()
        self._builds: dict[int, str | None] = {}  # the index build each loaded service answers from
        self._refreshing: set[int] = set()
        self._loading: dict[int, threading.Lock] = {}
        self._lock = threading.Lock()

    def latest_version(self) -> int | None:
        """The version the lake's pointer names now (None before the first model), re-read after the TTL."""
        now = time.monotonic()
        if self._latest_read_at is None or now - self._latest_read_at > self._pointer_ttl_s:
            try:
                latest = read_latest_pointer(self.lake).version
            except ModelVersionMissing:
                latest = None
            changed = latest is not None and latest != self._latest and self._latest is not None
            self._latest, self._latest_read_at = latest, now
            if changed:  # load it before the next request asks for it
                threading.Thread(target=self._preload, args=(latest,), name=f"load-v{latest}", daemon=True).start()
            elif latest is not None:
                self._follow_rebuild(latest)
        return self._latest

    def _follow_rebuild(self, version: int) -> None:
        """Reload ``version`` in the background when its index folder names a newer build than the loaded one."""
        with self._lock:
            if version not in self._services or version in self._refreshing:
                return
            loaded = self._builds.get(version)
        try:
            current = index_build(self.lake, search_index_dir(version))
        except OSError:  # the store is briefly unreachable: keep serving what is loaded
            return
        if current == loaded:
            return
        with self._lock:
            self._refreshing.add(version)
        threading.Thread(target=self._reload, args=(version,), name=f"reload-v{version}", daemon=True).start()

    def _reload(self, version: int) -> None:
        try:
            build = index_build(self.lake, search_index_dir(version))
            service = self._make_service(version).warm()
            with self._lock:
                if version in self._services:  # not evicted meanwhile
                    self._services[version], self._builds[version] = service, build
        except Exception:  # noqa: BLE001 - the loaded build goes on answering; the next change tries again
            pass
        finally:
            with self._lock:
                self._refreshing.discard(version)

    def service(self, version: int | None = None) -> tuple[int, SearchService]:
        """(version, its loaded service): ``version`` or, when None, the latest."""
        chosen = self.latest_version() if version is None else version
        if chosen is None:
            raise UnknownModelVersion("no model version is served yet: materialize alignment_model and "
                                      "search_index (or run `aion demo`)")
        with self._lock:
            service = self._services.get(chosen)
            if service is not None:
                self._services.move_to_end(chosen)
                return chosen, service
            loading = self._loading.setdefault(chosen, threading.Lock())
        with loading:  # one load per version, however many requests wait for it
            with self._lock:
                if chosen in self._services:
                    return chosen, self._services[chosen]
            self._check_servable(chosen)
            build = index_build(self.lake, search_index_dir(chosen))
            service = self._make_service(chosen).warm()
            with self._lock:
                self._services[chosen], self._builds[chosen] = service, build
                while len(self._services) > self._keep:
                    evicted, _ = self._services.popitem(last=False)
                    self._builds.pop(evicted, None)
                self._loading.pop(chosen, None)
        return chosen, service

    def loaded_versions(self) -> list[int]:
        with self._lock:
            return sorted(self._services)

    def _check_servable(self, version: int) -> None:
        if not (self.lake.exists(*heads_checkpoint_path(version)) and self.lake.exists(*search_index_dir(version))):
            held = [v for v in trained_versions(self.lake) if self.lake.exists(*search_index_dir(v))]
            raise UnknownModelVersion(f"model version {version} is not served (versions with an index: "
                                      f"{', '.join(map(str, held)) or 'none'})")

    def _preload(self, version: int) -> None:
        try:
            self.service(version)
        except Exception:  # noqa: BLE001 - the request that asks for it will report why
            pass
