"""A killed `aion demo` never hangs the next one: real processes killed (SIGKILL, SIGTERM, SIGINT) in ingestion,
while image_base_embeddings holds the `gpu` slot, and in training; each next run starts at once, fails the dead
run, frees its slots, and the last one ends with exactly what an uninterrupted demo makes."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from aion_assets.platform.recovery import OWNER_PID_TAG, ProcessOwner, current_owner, owner_is_alive
from aion_assets_tests.subsets import copy_subset

# Two seeds: once the first seed's line is logged, the second is training inside the open MLflow run.
TINY_TRAINING = {"seeds": [0, 1], "epochs": 40, "batch_size": 32, "hidden_dim": 128, "out_dim": 64}
STARTS_WITHIN_S = 60.0  # a hung run never starts; a healthy one starts in seconds (imports included, 2 busy cores)
STOPS_WITHIN_S = 60.0  # SIGINT/SIGTERM end the CLI in the run it is in; a CLI that went on would run on for minutes


@pytest.fixture(scope="module")
def releases(tmp_path_factory, sample_releases: Path, shared_data: Path) -> Path:
    """Two small releases: gz1-sdss objects with recorded descriptions (to train on) and labelled ones (to
    evaluate), and a few rings; several partitions each."""
    recorded = [json.loads(line) for line in (shared_data / "descriptions" / "recorded_descriptions.jsonl").open()]
    described = {r["object_id"] for r in recorded if r["release"] == "gz1-sdss"}
    gz1 = pl.read_csv(sample_releases / "gz1-sdss" / "catalog.csv", infer_schema_length=0)
    keep = set(gz1.filter(pl.col("object_id").is_in(described))["object_id"].head(70).to_list())
    for cls in ("merger", "spiral_clockwise", "edge_on", "elliptical"):
        keep |= set(gz1.filter(pl.col("gz1_class") == cls)["object_id"].head(10).to_list())
    root = tmp_path_factory.mktemp("recovery-releases")
    copy_subset(sample_releases / "gz1-sdss", root / "gz1-sdss", keep)
    rings = pl.read_csv(sample_releases / "gz-decals-rings" / "catalog.csv", infer_schema_length=0)["object_id"]
    copy_subset(sample_releases / "gz-decals-rings", root / "gz-decals-rings", set(rings.head(30).to_list()))
    return root


class Stack:
    """One AION_HOME driven through the real CLI in subprocesses."""

    def __init__(self, home: Path, releases: Path, config_file: Path) -> None:
        self.home = home
        self.config_file = config_file
        self.env = {name: value for name, value in os.environ.items()
                    if not name.startswith(("AION_", "DAGSTER_", "MLFLOW_", "ANTHROPIC_"))}
        self.env |= {"AION_HOME": str(home), "AION_RELEASES_DIR": str(releases), "AION_SHARD_SIZE": "50",
                     "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        self._instance: dg.DagsterInstance | None = None

    def start_demo(self) -> subprocess.Popen:
        if self._instance is None:
            # The instance's sqlite schema is made here, before the demo starts: this test polls the instance
            # while the demo runs, and two processes creating one fresh schema at once race ("table runs
            # already exists").
            from aion_assets.platform.instance import ensure_dagster_home

            ensure_dagster_home(self.home / "dagster")
            _ = self.instance
        self.log = self.home.parent / f"{self.home.name}-{time.monotonic_ns()}.log"
        log = self.log.open("w")
        return subprocess.Popen([str(Path(sys.executable).parent / "aion"), "demo", "--config-file",
                                 str(self.config_file)], env=self.env, stdout=log, stderr=subprocess.STDOUT)

    @property
    def instance(self) -> dg.DagsterInstance:
        if self._instance is None:
            self._instance = dg.DagsterInstance.from_config(str(self.home / "dagster"))
        return self._instance

    def exists(self) -> bool:
        return (self.home / "dagster" / "storage").is_dir()

    def run_ids(self) -> set[str]:
        return {run.run_id for run in self.instance.get_runs()} if self.exists() else set()

    def started_step(self, step_key: str, runs_before: set[str] = frozenset()) -> str | None:
        """The id of a new run that has started ``step_key``, if any."""
        if not self.exists():
            return None
        for run in self.instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
            if run.run_id in runs_before:
                continue
            events = self.instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START)
            if any(event.step_key == step_key for event in events):
                return run.run_id
        return None

    def first_step_of_new_run(self, runs_before: set[str]) -> str | None:
        for run in self.instance.get_runs():
            if run.run_id not in runs_before and self.instance.all_logs(
                    run.run_id, of_type=dg.DagsterEventType.STEP_START):
                return run.run_id
        return None

    def gpu_holders(self) -> set[str]:
        return {slot.run_id for slot in self.instance.event_log_storage.get_concurrency_info("gpu").claimed_slots}

    def slot_holders(self) -> set[str]:
        return set(self.instance.event_log_storage.get_concurrency_run_ids())

    def outcome(self) -> dict:
        """What a demo leaves: cutouts rows, every embeddings array's row count (version ids folded), figures."""
        from aion_assets.platform.lake import Lake
        from aion_assets.platform.warehouse import Warehouse

        lake_root = self.home / "lake"
        warehouse = Warehouse(self.home / "warehouse.duckdb", Lake(str(lake_root)))
        arrays = {re.sub(r"/v\d+/", "/vN/", str(path.relative_to(lake_root))): len(np.load(path, mmap_mode="r"))
                  for path in sorted((lake_root / "embeddings").rglob("*.npy"))}
        figures = warehouse.query("SELECT target, pool, method, metric, round(value, 6) AS value, n_relevant, "
                                  "pool_size FROM eval_results WHERE model_version = (SELECT max(model_version) "
                                  "FROM eval_results) ORDER BY ALL")
        return {"cutouts": warehouse.query("SELECT count(*) AS n FROM cutouts")["n"][0], "arrays": arrays,
                "figures": figures.to_dicts()}


def _wait_for(found: Callable[[], object], timeout_s: float, what: str, process: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = found()
        if value:
            return value
        if process is not None and process.poll() is not None:
            pytest.fail(f"the demo ended (exit {process.returncode}) before {what}")
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def stacks(tmp_path_factory, releases: Path) -> tuple[Stack, Stack]:
    root = tmp_path_factory.mktemp("recovery")
    config_file = root / "tiny.json"
    config_file.write_text(json.dumps({"alignment_model": TINY_TRAINING}))
    return Stack(root / "uninterrupted", releases, config_file), Stack(root / "killed", releases, config_file)


def _tracking_run_statuses(stack: Stack) -> list[str]:
    """The statuses of the MLflow runs in the stack's sqlite store, read with sqlite3 (no MLflow client)."""
    import sqlite3

    database = stack.home / "mlflow.db"
    if not database.exists():
        return []
    with contextlib.closing(sqlite3.connect(database, timeout=10)) as con:
        try:
            return [row[0] for row in con.execute("SELECT status FROM runs")]
        except sqlite3.OperationalError:  # the schema is being created
            return []


def _kill_during(stack: Stack, step_key: str, signo: int, holding_gpu: bool = False) -> str:
    """Start a demo, wait until its run has started ``step_key`` (and holds the gpu slot), send ``signo``; the
    id of the run it left behind."""
    before = stack.run_ids()
    started = time.monotonic()
    demo = stack.start_demo()
    if before:  # a run was killed before this one: this one must not hang behind it
        _wait_for(lambda: stack.first_step_of_new_run(before), STARTS_WITHIN_S, "the first step", demo)
        assert time.monotonic() - started < STARTS_WITHIN_S
    run_id = _wait_for(lambda: stack.started_step(step_key, before), 240, f"{step_key} to start", demo)
    if holding_gpu:
        _wait_for(lambda: run_id in stack.gpu_holders(), 60, f"{step_key} to hold the gpu slot", demo)
    if step_key == "alignment_model":  # killed while its MLflow run is open: after seed 0, during seed 1
        _wait_for(lambda: any("seed 0:" in (event.user_message or "") for event in stack.instance.all_logs(run_id)),
                  120, "the first seed to finish", demo)
    runs_at_signal = stack.run_ids()
    # A small shard's step can finish between the check above and the signal: the run the signal lands in is
    # then the demo's next one, still unfinished, and that is the run left behind.
    unfinished = stack.instance.get_runs(filters=dg.RunsFilter(statuses=[
        dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]))
    unfinished = [run for run in unfinished if run.run_id not in before]  # this demo's own
    if unfinished and run_id not in {run.run_id for run in unfinished}:
        run_id = unfinished[0].run_id  # newest first
    demo.send_signal(signo)
    try:
        exit_code = demo.wait(timeout=STOPS_WITHIN_S)
    except subprocess.TimeoutExpired:
        demo.kill()
        pytest.fail(f"{signal.Signals(signo).name} did not stop the demo; its log ends:\n"
                    + "\n".join(stack.log.read_text().splitlines()[-15:]))
    assert exit_code != 0
    assert len(stack.run_ids() - runs_at_signal) <= 1  # at most a run it was starting as the signal came
    return run_id


def test_killed_runs_are_failed_and_freed_and_the_result_is_unchanged(stacks: tuple[Stack, Stack]) -> None:
    uninterrupted, killed = stacks
    demo = uninterrupted.start_demo()
    assert demo.wait(timeout=600) == 0
    expected = uninterrupted.outcome()
    assert expected["cutouts"] > 0 and expected["arrays"] and expected["figures"]

    kills = [("raw_cutouts", signal.SIGINT, False), ("image_base_embeddings", signal.SIGKILL, True),
             ("image_base_embeddings", signal.SIGTERM, True), ("alignment_model", signal.SIGKILL, False)]
    dead_runs: list[tuple[str, int]] = []
    for step_key, signo, holding_gpu in kills:
        dead_runs.append((_kill_during(killed, step_key, signo, holding_gpu), signo))
        run_id, _ = dead_runs[-1]
        if signo != signal.SIGKILL:  # the process itself ended its run on the way out
            assert killed.instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
            assert run_id not in killed.slot_holders()
        elif holding_gpu:  # nothing could end it: it still holds the slot until the next run frees it
            assert run_id in killed.gpu_holders()

    before = killed.run_ids()
    started = time.monotonic()
    demo = killed.start_demo()
    _wait_for(lambda: killed.first_step_of_new_run(before), STARTS_WITHIN_S, "the first step", demo)
    assert time.monotonic() - started < STARTS_WITHIN_S
    assert demo.wait(timeout=600) == 0
    for run_id, signo in dead_runs:
        assert killed.instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE, signal.Signals(signo)
    assert not killed.slot_holders()
    assert killed.outcome() == expected
    # The training run's MLflow run, left RUNNING by the SIGKILL, was closed by the next demo.
    statuses = _tracking_run_statuses(killed)
    assert "KILLED" in statuses and "RUNNING" not in statuses


def test_a_live_owner_is_never_judged_dead() -> None:
    me = current_owner()
    assert owner_is_alive(me)
    assert not owner_is_alive(ProcessOwner(me.pid, me.host, str(int(me.started or "0") + 1)))  # a reused pid
    assert owner_is_alive(ProcessOwner(me.pid, "another-host", ""))  # cannot check another host: alive
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    assert not owner_is_alive(ProcessOwner(finished.pid, me.host, ""))
    assert me.as_tags()[OWNER_PID_TAG] == str(os.getpid())


def test_a_run_without_owner_tags_is_left_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A STARTED run the UI's queue launched (no owner tags) keeps its status and its slot."""
    monkeypatch.setenv("AION_HOME", str(tmp_path / "aion"))
    for var in ("DAGSTER_HOME",):
        monkeypatch.delenv(var, raising=False)
    from aion_assets.runner import recover_dead_runs, stack_instance

    instance = stack_instance()
    queued = instance.create_run_for_job(dg.GraphDefinition("noop").to_job(), status=dg.DagsterRunStatus.STARTED)
    instance.event_log_storage.claim_concurrency_slot("gpu", queued.run_id, "step")
    assert recover_dead_runs(instance, progress=lambda line: None) == []
    assert instance.get_run_by_id(queued.run_id).status == dg.DagsterRunStatus.STARTED
    assert queued.run_id in instance.event_log_storage.get_concurrency_run_ids()


def _live_processes() -> dict[int, int]:
    """pid -> parent pid of every process that is not a zombie (fields of /proc/PID/stat)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parents[int(entry.name)] = int(fields[1])
    return parents


def _descendants(pid: int) -> set[int]:
    parents, found, frontier = _live_processes(), set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def test_aion_ui_stops_with_its_children_on_sigterm(tmp_path: Path) -> None:
    """The webserver alone ignores SIGTERM; `aion ui` stops dagster dev's whole process group."""
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("AION_", "DAGSTER_", "MLFLOW_", "ANTHROPIC_"))}
    env |= {"AION_HOME": str(tmp_path / "aion"), "AION_RELEASES_DIR": ""}
    ui = subprocess.Popen([str(Path(sys.executable).parent / "aion"), "ui", "--port", str(port)], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    children: set[int] = set()
    try:
        def answers() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5):
                    return True
            except OSError:
                return False

        _wait_for(answers, 240, "the webserver to answer", ui)
        children = _descendants(ui.pid)
        assert len(children) >= 2  # dagster dev, its webserver and its daemon
        ui.send_signal(signal.SIGTERM)
        assert ui.wait(timeout=15) is not None
        _wait_for(lambda: not children & set(_live_processes()), 15, "every child to stop")
    finally:  # whatever failed, leave no webserver or daemon behind
        for pid in (children | _descendants(ui.pid)) & set(_live_processes()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if ui.poll() is None:
            os.killpg(ui.pid, signal.SIGKILL)


def test_an_interrupt_dagster_swallowed_still_stops_the_next_partition(monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGINT while Dagster writes the run's success event: its handler only notes the signal there, the run
    completes and forgets it; the CLI must still stop before the next partition."""
    from aion_assets.runner import materialize

    @dg.asset(partitions_def=dg.StaticPartitionsDefinition(["p1", "p2"]))
    def numbers() -> int:
        return 1

    instance = dg.DagsterInstance.ephemeral()
    storage = instance.event_log_storage
    store_event = storage.store_event
    sent: list[str] = []

    def store_then_interrupt(event) -> None:
        store_event(event)
        if event.dagster_event is not None and event.dagster_event.event_type == dg.DagsterEventType.RUN_SUCCESS:
            sent.append(event.run_id)
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(storage, "store_event", store_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        materialize(dg.Definitions(assets=[numbers]), "*", instance, progress=lambda _line: None)
    runs = instance.get_runs()
    assert [run.tags.get("dagster/partition") for run in runs] == ["p1"] and [runs[0].run_id] == sent  # no p2
    assert runs[0].status == dg.DagsterRunStatus.SUCCESS  # the run had finished: it keeps its result


def test_the_witness_sees_a_signal_another_handler_took() -> None:
    from aion_assets.platform.recovery import InterruptWitness

    taken: list[int] = []
    previous = {signo: signal.signal(signo, lambda signo, _frame: taken.append(signo))  # Dagster's kind
                for signo in (signal.SIGINT, signal.SIGUSR1)}
    try:
        with InterruptWitness() as witness:
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.01)
            assert taken == [signal.SIGUSR1] and not witness.received()  # not a request to stop
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
            assert taken[-1] == signal.SIGINT and witness.received()
            assert witness.received()  # it stays seen
    finally:
        for signo, handler in previous.items():
            signal.signal(signo, handler)
