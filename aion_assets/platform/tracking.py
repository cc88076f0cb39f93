"""MLflow tracking on the embedded stack: a sqlite backend and local artifacts, both under AION_HOME."""

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
        location = artifact_root if "://" in artifact_root else Path(artifact_root).resolve().as_uri()
        experiment_id = mlflow.create_experiment(name, artifact_location=f"{location.rstrip('/')}/{name}")
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


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
