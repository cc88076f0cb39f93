"""MLflow tracking: a sqlite backend and local artifacts under AION_HOME (embedded), or a tracking server with
its PostgreSQL backend and artifacts in the object store (cluster)."""

from __future__ import annotations

from pathlib import Path


def use_experiment(tracking_uri: str, artifact_root: str, name: str) -> str:
    """Point MLflow at the store and return the experiment id, creating it with artifacts under artifact_root.

    Artifacts are placed explicitly: MLflow's default (./mlruns beside the working directory) would scatter
    checkpoints wherever a command happened to start.
    """
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        experiment_id = mlflow.create_experiment(name, artifact_location=_artifact_location(tracking_uri,
                                                                                           artifact_root, name))
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def _artifact_location(tracking_uri: str, artifact_root: str, name: str) -> str | None:
    """Where the experiment's artifacts go. A tracking server (the cluster's) keeps them in its own store
    (``--artifacts-destination``, proxied as ``mlflow-artifacts:``) unless the root is itself a URL: a local
    folder there would be one client's disk, unreadable from every other pod."""
    remote_server = tracking_uri.startswith(("http://", "https://"))
    if "://" in artifact_root:
        return f"{artifact_root.rstrip('/')}/{name}"
    if remote_server:
        return None
    return f"{Path(artifact_root).resolve().as_uri().rstrip('/')}/{name}"


def register_version(name: str, description: str, run, artifact_path: str, tags: dict[str, str]) -> int:
    """A new version of the registered model ``name`` (created on first use) from the run's ``artifact_path``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    try:
        client.get_registered_model(name)
    except Exception:  # noqa: BLE001 - MLflow raises its own RestException for "not found"
        client.create_registered_model(name, description=description)
    version = client.create_model_version(name, source=f"{run.info.artifact_uri}/{artifact_path}",
                                          run_id=run.info.run_id, tags=tags)
    return int(version.version)


def log_png(png: bytes, artifact_file: str) -> None:
    """A PNG (from platform/plots) as an image of the active run."""
    import io

    import mlflow
    from PIL import Image

    mlflow.log_image(Image.open(io.BytesIO(png)), artifact_file)
