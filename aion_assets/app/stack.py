"""The app over the configured stack: the settings' warehouse, lake, encoders and MLflow store."""

from __future__ import annotations

import os

from starlette.applications import Starlette

from aion_assets.app.api import SearchApi
from aion_assets.app.served import ServedModels
from aion_assets.app.server import build_app
from aion_assets.search.search_log import BufferedSearchLog
from aion_assets.search.service import SearchService

# A request may wait this long for a run's write to the warehouse to finish, then it is answered 503.
WAREHOUSE_WAIT_S = 5.0


def app_from_environment(log_flush_s: float = 2.0, log_source: str = "app") -> Starlette:
    """``log_source`` names who searched in `search_log` ("bench" for `aion bench app`'s load)."""
    from aion_assets.encoders.batching import BatchingTextEncoder
    from aion_assets.encoders.image import canonical_image_encoder
    from aion_assets.encoders.text import load_query_text_encoder
    from aion_assets.platform.layout import encoder_artifact_id
    from aion_assets.platform.settings import get_settings
    from aion_assets.platform.warehouse import stack_warehouse
    from aion_assets.search.versions import list_versions
    from aion_assets.vlm.client import has_api_key

    _one_thread_per_request()
    settings = get_settings()
    warehouse = stack_warehouse(settings, lock_timeout_s=WAREHOUSE_WAIT_S)
    image_id = encoder_artifact_id(canonical_image_encoder(settings.image_encoder), settings.image_precision)

    # One text model for every version; concurrent requests share its passes, one pass at a time per core.
    text_encoder = BatchingTextEncoder(load_query_text_encoder(settings.text_encoder),
                                       workers=os.cpu_count() or 1)

    def make_service(version: int) -> SearchService:
        return SearchService(warehouse, settings.text_encoder, image_id, version, text_encoder=text_encoder)

    served = ServedModels(warehouse.lake, make_service)
    search_log = BufferedSearchLog(warehouse, flush_every_s=log_flush_s)
    api = SearchApi(warehouse, served, search_log, rerank_available=has_api_key,
                    list_versions=lambda: [v.as_dict() for v in list_versions(
                        warehouse.lake, warehouse, settings.mlflow_tracking_uri)], log_source=log_source)
    try:
        served.service()  # the latest version loaded before the first request, when there is one
    except LookupError:
        pass
    return build_app(api, on_shutdown=search_log.close)


def _one_thread_per_request() -> None:
    """Requests run in parallel threads; intra-op threads on top would oversubscribe the cores (and OpenMP's
    spinning workers slow a one-sentence encode ~40x when another thread holds a core)."""
    import faiss
    import torch

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
