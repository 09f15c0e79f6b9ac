"""The Kubernetes Jobs that dagster-k8s builds for assets of each compute profile, built by dagster-k8s itself.

There is no cluster: the instance is deploy/dagster.yaml (storage and compute logs made local, and the launcher told
to read a kubeconfig instead of an in-cluster token), runs are created the way the UI and the backfill daemon create
them, dequeued by Dagster's own queue daemon and launched by the real K8sRunLauncher. Only the one API call that
would send the Job to a cluster is replaced by a capture; the captured Job is validated against the Kubernetes
OpenAPI schema.
"""

import itertools
import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import kubernetes
import kubernetes_validate
import pyarrow as pa
import pytest
import yaml
from dagster._config import process_config, resolve_to_config_type
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.events import DagsterEvent
from dagster._core.execution.api import create_execution_plan
from dagster._core.execution.context.system import PlanData, PlanOrchestrationContext
from dagster._core.execution.context_creation_job import create_context_free_log_manager
from dagster._core.execution.plan.step import ExecutionStep
from dagster._core.execution.retries import RetryMode
from dagster._core.executor.init import InitExecutorContext
from dagster._core.executor.step_delegating import StepDelegatingExecutor
from dagster._core.executor.step_delegating.step_handler.base import StepHandlerContext
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._daemon.backfill import execute_backfill_iteration
from dagster._daemon.monitoring import execute_run_monitoring_iteration
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon
from dagster._grpc.types import ExecuteStepArgs
from dagster_graphql.client.query import LAUNCH_PIPELINE_EXECUTION_MUTATION
from dagster_graphql.test.utils import execute_dagster_graphql, infer_job_selector, materialize_assets
from dagster_k8s import K8sRunLauncher, k8s_job_executor
from dagster_k8s.executor import _K8S_EXECUTOR_CONFIG_SCHEMA, K8sStepHandler
from dagster_k8s.job import USER_DEFINED_K8S_CONFIG_KEY

from assets.platform_demo import CARD_TRANSACTIONS, card_transactions
from batch_platform.assets import lake_asset
from batch_platform.compute import (
    COMPUTE_PROFILE_TAG,
    COMPUTE_PROFILES,
    ENGINE_TAG,
    EXECUTOR_POD_TEMPLATE_PATH,
    K8S_CONFIG_TAG,
    MAX_RUNTIME_TAG,
    RETRY_STRATEGY_TAG,
    SPARK_ENGINE,
    ComputeProfile,
    executor_instances,
    get_profile,
    k8s_config_tag,
    profile_tags,
    spark_conf,
)
from batch_platform.lake import IcebergLakeResource, LakeTable
from batch_platform.run_diagnosis import diagnose
from batch_platform.spark import SparkResource

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
IMAGE = "registry.example.com/batch-platform:0.1.0"
LOCATION = "batch_platform"
K8S_VERSION = kubernetes_validate.utils.latest_version()
JOB_NAMESPACE = "batch-platform"
RUN_SERVICE_ACCOUNT = "batch-platform-runs"

# One asset per profile, bodies never run: the probes of the Jobs built for each profile. With them, the real demo
# asset card_transactions (profile medium).
PROBE_TABLES = {
    name: LakeTable(namespace="profile_probe", name=name, schema=pa.schema([pa.field("id", pa.int64())]))
    for name in COMPUTE_PROFILES
}


def _probe_asset(name: str) -> dg.AssetsDefinition:
    @lake_asset(PROBE_TABLES[name], compute=name)
    def probe() -> None:
        raise AssertionError("only the Job is built, the asset never runs")

    return probe


PROBES = {name: _probe_asset(name) for name in COMPUTE_PROFILES}
_RESOURCES = {"lake": IcebergLakeResource(), "spark": SparkResource()}
# The code location the tests load in process: default executor, so each run executes in its run pod.
profile_defs = dg.Definitions(assets=[*PROBES.values(), card_transactions], resources=_RESOURCES)
# The same assets with the k8s_job_executor: one pod per step, built from the step's op tags.
step_pod_defs = dg.Definitions(
    assets=[*PROBES.values(), card_transactions], resources=_RESOURCES, executor=k8s_job_executor
)


KUBECONFIG = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [{"name": "none", "cluster": {"server": "https://127.0.0.1:1"}}],
    "users": [{"name": "none", "user": {}}],
    "contexts": [{"name": "none", "context": {"cluster": "none", "user": "none", "namespace": JOB_NAMESPACE}}],
    "current-context": "none",
}


def production_instance_config(kubeconfig: Path) -> dict[str, Any]:
    """deploy/dagster.yaml with only what needs a cloud or a cluster replaced: PostgreSQL storage and S3 compute
    logs by the test instance's local ones, the in-cluster token by a kubeconfig (that no call ever uses)."""
    config: dict[str, Any] = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    del config["storage"], config["compute_logs"]
    config["run_launcher"]["config"].update(load_incluster_config=False, kubeconfig_file=str(kubeconfig))
    return config


@pytest.fixture(scope="module")
def module_instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dg.DagsterInstance]:
    kubeconfig = tmp_path_factory.mktemp("k8s") / "kubeconfig.yaml"
    kubeconfig.write_text(yaml.safe_dump(KUBECONFIG))
    with dg.instance_for_test(overrides=production_instance_config(kubeconfig)) as instance:
        yield instance


CapturedJob = tuple[str, dict[str, Any]]


def capture_created_jobs(api_client: Any, monkeypatch: pytest.MonkeyPatch) -> list[CapturedJob]:
    """Replace the one call that would send a Job to the cluster; returns the list the Jobs are captured in."""
    created: list[CapturedJob] = []

    def create_namespaced_job_with_retries(body: kubernetes.client.V1Job, namespace: str, **_: Any) -> None:
        created.append((namespace, kubernetes.client.ApiClient().sanitize_for_serialization(body)))

    monkeypatch.setattr(api_client, "create_namespaced_job_with_retries", create_namespaced_job_with_retries)
    return created


@contextmanager
def workspace(instance: dg.DagsterInstance, attribute: str = "profile_defs") -> Iterator[WorkspaceProcessContext]:
    """This module loaded in process as the code location, with the image a code server reports in production."""
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(python_file=__file__, attribute=attribute, working_directory=str(ROOT)),
        container_image=IMAGE,
        location_name=LOCATION,
    )
    with WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(origin)) as context:
        yield context


@pytest.fixture(scope="module")
def module_context(module_instance: dg.DagsterInstance) -> Iterator[WorkspaceProcessContext]:
    with workspace(module_instance) as context:
        yield context


@pytest.fixture
def instance(module_instance: dg.DagsterInstance) -> Iterator[dg.DagsterInstance]:
    """The shared instance, emptied of runs after each test (launched runs never finish here and would count
    against the queue's limits in later tests)."""
    yield module_instance
    for run in module_instance.get_runs():
        module_instance.delete_run(run.run_id)


@pytest.fixture
def context(instance: dg.DagsterInstance, module_context: WorkspaceProcessContext) -> WorkspaceProcessContext:
    return module_context


@pytest.fixture
def launched_jobs(instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch) -> list[CapturedJob]:
    """The Jobs the run launcher sends to the cluster, as (namespace, manifest)."""
    launcher = instance.run_launcher
    assert isinstance(launcher, K8sRunLauncher)
    return capture_created_jobs(launcher._api_client, monkeypatch)


def launch_from_ui(context: WorkspaceProcessContext, key: dg.AssetKey, partition: str | None = None) -> str:
    """Materialize an asset as the UI's Materialize button does: GraphQL launchPipelineExecution on the implicit
    asset job with an asset selection (and a dagster/partition tag for a partitioned asset)."""
    request = context.create_request_context()
    result = materialize_assets(request, [key], partition_keys=[partition] if partition else None)
    (first,) = result if isinstance(result, Sequence) else [result]
    data = first.data["launchPipelineExecution"]
    assert data["__typename"] == "LaunchRunSuccess", data
    return str(data["run"]["runId"])


def dequeue(context: WorkspaceProcessContext) -> None:
    """One iteration of the daemon's run queue: launches the queued runs its limits allow."""
    with QueuedRunCoordinatorDaemon(interval_seconds=1) as daemon:
        list(daemon.run_iteration(context))


def validate_job(manifest: dict[str, Any]) -> None:
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def run_container(manifest: dict[str, Any]) -> dict[str, Any]:
    containers = manifest["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def assert_shaped_by(manifest: dict[str, Any], profile: ComputeProfile) -> None:
    """Requests, limits, node selector, tolerations and label of a pod built for ``profile``."""
    pod = manifest["spec"]["template"]
    container = run_container(manifest)
    assert container["resources"] == {
        "requests": {"cpu": profile.cpu_request, "memory": profile.memory_request},
        "limits": {"cpu": profile.cpu_limit, "memory": profile.memory_limit},
    }
    assert pod["spec"]["nodeSelector"] == profile.pool.selector
    assert pod["spec"].get("tolerations", []) == [t.to_k8s() for t in profile.pool.tolerations]
    assert pod["metadata"]["labels"][COMPUTE_PROFILE_TAG] == profile.name


def assert_production_wiring(manifest: dict[str, Any]) -> None:
    """What every run pod gets from deploy/dagster.yaml: image, account, env sources, secrets, security."""
    pod_spec = manifest["spec"]["template"]["spec"]
    container = run_container(manifest)
    assert container["image"] == IMAGE
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert pod_spec["serviceAccountName"] == RUN_SERVICE_ACCOUNT
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    env_from = container["envFrom"]
    assert {"configMapRef": {"name": "batch-platform-env"}} in env_from
    assert {"secretRef": {"name": "batch-platform-secrets"}} in env_from
    env = {e["name"]: e for e in container["env"]}
    assert env["DAGSTER_PG_PASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": "dagster-postgresql-secret", "key": "postgresql-password"}
    }
    assert env["DAGSTER_HOME"]["value"] == "/opt/dagster/dagster_home"
    # No secret value travels in the Job: every env var is a reference or a plain setting.
    assert not any("PASSWORD" in name and "value" in e for name, e in env.items())


# --- The profiles and the tags they produce ----------------------------------------------------------------------


def test_profile_tag_keys_are_the_ones_dagster_k8s_reads() -> None:
    assert K8S_CONFIG_TAG == USER_DEFINED_K8S_CONFIG_KEY


def _quantity(value: str) -> float:
    """A memory quantity ("4Gi") or JVM size ("2g", "512m") in bytes; a whole number of CPUs as is."""
    units = {"Gi": 2**30, "Mi": 2**20, "g": 2**30, "m": 2**20}
    unit = next((u for u in units if value.endswith(u)), "")
    return float(value.removesuffix(unit)) * units.get(unit, 1)


def test_a_profile_later_in_the_registry_is_never_smaller_so_a_run_takes_its_biggest_steps_profile() -> None:
    # largest() picks a run's profile by registry order: that order must be the order of size.
    def size(profile: ComputeProfile) -> tuple[float, ...]:
        executors = profile.executors
        return (
            _quantity(profile.cpu_limit),
            _quantity(profile.memory_limit),
            _quantity(profile.driver_memory),
            profile.max_runtime_seconds,
            executors.max_instances * executors.cores,
            executors.max_instances * _quantity(executors.memory),
        )

    profiles = COMPUTE_PROFILES.values()
    for smaller, larger in itertools.pairwise(profiles):
        assert all(a <= b for a, b in zip(size(smaller), size(larger), strict=True)), (smaller.name, larger.name)


def test_unregistered_profiles_are_refused() -> None:
    with pytest.raises(ValueError, match="unregistered compute profile 'huge'"):
        get_profile("huge")
    impostor = COMPUTE_PROFILES["small"].__class__(**{**COMPUTE_PROFILES["small"].__dict__, "cpu_limit": "64"})
    with pytest.raises(ValueError, match="unregistered"):
        get_profile(impostor)


def test_k8s_config_tag_is_valid_user_defined_dagster_k8s_config() -> None:
    from dagster_k8s.job import get_user_defined_k8s_config

    for profile in COMPUTE_PROFILES.values():
        parsed = get_user_defined_k8s_config(profile_tags(profile))
        assert parsed.container_config["resources"]["limits"]["memory"] == profile.memory_limit
        assert parsed.pod_spec_config["node_selector"] == profile.pool.selector
        assert json.loads(profile_tags(profile)[K8S_CONFIG_TAG]) == k8s_config_tag(profile)


def test_lake_asset_puts_the_profile_on_op_tags_and_asset_tags() -> None:
    op_tags = card_transactions.op.tags
    assert op_tags[COMPUTE_PROFILE_TAG] == "medium"
    assert json.loads(op_tags[K8S_CONFIG_TAG]) == k8s_config_tag(COMPUTE_PROFILES["medium"])
    assert card_transactions.tags_by_key[CARD_TRANSACTIONS.asset_key][COMPUTE_PROFILE_TAG] == "medium"
    assert PROBES["small"].op.tags[COMPUTE_PROFILE_TAG] == "small"


def test_lake_asset_refuses_profile_tags_given_by_hand() -> None:
    with pytest.raises(ValueError, match="compute="):
        lake_asset(PROBE_TABLES["small"], op_tags={K8S_CONFIG_TAG: "{}"})
    with pytest.raises(ValueError, match="unregistered"):
        lake_asset(PROBE_TABLES["small"], compute="gigantic")


def test_backfill_scales_executors_with_partitions_up_to_the_profile_cap() -> None:
    medium, xlarge = COMPUTE_PROFILES["medium"], COMPUTE_PROFILES["xlarge"]
    # One partition: the base count; a range: one executor per partitions_per_executor partitions; then the cap.
    assert executor_instances(medium, 1) == 2
    assert executor_instances(medium, 10) == 3
    assert executor_instances(medium, 31) == 6
    assert executor_instances(xlarge, 31) == 31 and executor_instances(xlarge, 365) == 32
    for profile in COMPUTE_PROFILES.values():
        counts = [executor_instances(profile, n) for n in range(1, 400)]
        assert counts == sorted(counts)
        assert counts[0] == profile.executors.instances and counts[-1] == profile.executors.max_instances
    with pytest.raises(ValueError):
        executor_instances(medium, 0)


def test_spark_conf_sizes_executors_and_pins_them_to_the_profiles_pool() -> None:
    conf = spark_conf("large", partitions=5)
    assert conf["spark.executor.instances"] == "4"
    assert conf["spark.executor.cores"] == conf["spark.kubernetes.executor.request.cores"] == "4"
    assert conf["spark.kubernetes.executor.limit.cores"] == "4"
    assert conf["spark.executor.memory"] == "8g" and conf["spark.executor.memoryOverhead"] == "2g"
    assert conf["spark.kubernetes.executor.node.selector.batch-platform/node-pool"] == "batch-spot"
    assert conf["spark.kubernetes.executor.podTemplateFile"] == EXECUTOR_POD_TEMPLATE_PATH
    assert conf["spark.dynamicAllocation.enabled"] == "false"
    assert all(isinstance(v, str) for v in conf.values())


def test_spark_resource_reads_the_profile_of_the_step_being_executed() -> None:
    seen: dict[str, dict[str, str]] = {}

    @lake_asset(CARD_TRANSACTIONS, partitions_def=card_transactions.partitions_def, compute="large")
    def sized(context: dg.AssetExecutionContext, spark: SparkResource) -> None:
        # step_spark_config is what session_for starts the session with; no Spark is started here.
        seen["conf"] = spark.step_spark_config(context)

    result = dg.materialize(
        [sized],
        resources={"spark": SparkResource()},
        # The tags a backfill run over a range carries.
        tags={"dagster/asset_partition_range_start": "2024-01-01", "dagster/asset_partition_range_end": "2024-01-09"},
    )
    assert result.success
    assert seen["conf"] == spark_conf("large", partitions=9)
    assert seen["conf"]["spark.executor.instances"] == "5"


# --- Run pods: K8sRunLauncher -------------------------------------------------------------------------------------


@pytest.mark.parametrize("profile_name", list(COMPUTE_PROFILES))
def test_run_pod_of_an_asset_is_built_from_its_profile(
    instance: dg.DagsterInstance,
    context: WorkspaceProcessContext,
    launched_jobs: list[CapturedJob],
    profile_name: str,
) -> None:
    profile = COMPUTE_PROFILES[profile_name]
    run_id = launch_from_ui(context, PROBE_TABLES[profile_name].asset_key)
    dequeue(context)
    run = instance.get_run_by_id(run_id)
    assert run is not None and run.tags[COMPUTE_PROFILE_TAG] == profile_name
    assert len(launched_jobs) == 1
    namespace, manifest = launched_jobs[0]
    validate_job(manifest)
    assert namespace == JOB_NAMESPACE
    assert manifest["metadata"]["name"] == f"dagster-run-{run_id}"
    assert_shaped_by(manifest, profile)
    assert_production_wiring(manifest)


def test_ui_materialization_of_the_demo_asset_gets_the_medium_profile(
    instance: dg.DagsterInstance, context: WorkspaceProcessContext, launched_jobs: list[CapturedJob]
) -> None:
    run_id = launch_from_ui(context, CARD_TRANSACTIONS.asset_key, partition="2024-01-05")
    run = instance.get_run_by_id(run_id)
    # Queued with its profile already on it: the UI sent no such tag, the run coordinator added it.
    assert run is not None and run.status == dg.DagsterRunStatus.QUEUED
    assert run.tags[COMPUTE_PROFILE_TAG] == "medium" and run.tags["dagster/partition"] == "2024-01-05"
    assert run.tags[ENGINE_TAG] == SPARK_ENGINE  # a Spark asset: the run counts against the Spark run limit
    dequeue(context)
    ((_, manifest),) = launched_jobs
    validate_job(manifest)
    assert_shaped_by(manifest, COMPUTE_PROFILES["medium"])
    assert_production_wiring(manifest)


LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
  }
}
"""


def test_backfill_runs_of_the_demo_asset_get_the_medium_profile(
    instance: dg.DagsterInstance, context: WorkspaceProcessContext, launched_jobs: list[CapturedJob]
) -> None:
    # The UI's "Launch backfill" for ten days of the asset.
    partitions = {"range": {"start": "2024-01-01", "end": "2024-01-10"}}
    params = {
        "partitionsByAssets": [{"assetKey": {"path": CARD_TRANSACTIONS.asset_key.path}, "partitions": partitions}]
    }
    result = execute_dagster_graphql(context.create_request_context(), LAUNCH_BACKFILL, {"params": params})
    launched = result.data["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    # What the backfill daemon does on its tick: create and submit the backfill's runs.
    list(execute_backfill_iteration(context, logging.getLogger("test_backfill")))
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": launched["backfillId"]}))
    dequeue(context)
    # BackfillPolicy.multi_run(31): the ten days are one run over a partition range.
    assert len(runs) == 1
    run = runs[0]
    assert run.tags["dagster/asset_partition_range_start"] == "2024-01-01"
    assert run.tags["dagster/asset_partition_range_end"] == "2024-01-10"
    assert run.tags[COMPUTE_PROFILE_TAG] == "medium"
    ((_, manifest),) = launched_jobs
    assert manifest["metadata"]["name"] == f"dagster-run-{run.run_id}"
    validate_job(manifest)
    assert_shaped_by(manifest, COMPUTE_PROFILES["medium"])
    assert_production_wiring(manifest)


def test_a_run_of_several_assets_gets_the_largest_of_their_profiles(
    context: WorkspaceProcessContext, launched_jobs: list[CapturedJob]
) -> None:
    keys = [PROBE_TABLES["small"].asset_key, PROBE_TABLES["large"].asset_key, PROBE_TABLES["medium"].asset_key]
    result = materialize_assets(context.create_request_context(), keys)
    (first,) = result if isinstance(result, Sequence) else [result]
    launched = first.data["launchPipelineExecution"]
    assert launched["__typename"] == "LaunchRunSuccess"
    run = context.instance.get_run_by_id(launched["run"]["runId"])
    assert run is not None and ENGINE_TAG not in run.tags  # no Spark asset among them
    dequeue(context)
    ((_, manifest),) = launched_jobs
    assert_shaped_by(manifest, COMPUTE_PROFILES["large"])


def launch_with_tags(context: WorkspaceProcessContext, key: dg.AssetKey, tags: dict[str, str]) -> str:
    """Launch from the UI's launchpad, with run tags typed in by the user."""
    request = context.create_request_context()
    selection: list[Any] = [key.to_graphql_input()]
    selector = infer_job_selector(request, "__ASSET_JOB", asset_selection=selection)
    metadata = {"tags": [{"key": k, "value": v} for k, v in tags.items()]}
    params = {"selector": selector, "executionMetadata": metadata}
    result = execute_dagster_graphql(request, LAUNCH_PIPELINE_EXECUTION_MUTATION, {"executionParams": params})
    data = result.data["launchPipelineExecution"]
    assert data["__typename"] == "LaunchRunSuccess", data
    return str(data["run"]["runId"])


def test_a_profile_named_in_the_launchpad_overrides_the_assets_profile(
    context: WorkspaceProcessContext, launched_jobs: list[CapturedJob]
) -> None:
    launch_with_tags(context, PROBE_TABLES["small"].asset_key, {COMPUTE_PROFILE_TAG: "xlarge"})
    dequeue(context)
    ((_, manifest),) = launched_jobs
    assert_shaped_by(manifest, COMPUTE_PROFILES["xlarge"])


@pytest.mark.parametrize("profile_name", list(COMPUTE_PROFILES))
def test_every_run_is_bounded_by_its_profiles_max_runtime_and_retried_from_failure(
    instance: dg.DagsterInstance, context: WorkspaceProcessContext, profile_name: str
) -> None:
    run = instance.get_run_by_id(launch_from_ui(context, PROBE_TABLES[profile_name].asset_key))
    assert run is not None
    # Run monitoring fails a run past this (even one whose worker vanished); retries resume at the failed step.
    assert run.tags[MAX_RUNTIME_TAG] == str(COMPUTE_PROFILES[profile_name].max_runtime_seconds)
    assert run.tags[RETRY_STRATEGY_TAG] == "FROM_FAILURE"
    assert MAX_RUNTIME_TAG == dg.MAX_RUNTIME_SECONDS_TAG  # the tag Dagster's run monitoring reads


def test_a_run_whose_pod_is_gone_is_marked_failed_by_run_monitoring_and_the_alert_can_say_why(
    instance: dg.DagsterInstance,
    context: WorkspaceProcessContext,
    launched_jobs: list[CapturedJob],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_id = launch_from_ui(context, PROBE_TABLES["medium"].asset_key)
    dequeue(context)
    assert len(launched_jobs) == 1
    run = instance.get_run_by_id(run_id)
    assert run is not None
    instance.report_dagster_event(
        DagsterEvent(event_type_value=dg.DagsterEventType.RUN_START.value, job_name=run.job_name), run_id
    )
    # What the cluster answers once the run pod was OOM-killed or its node reclaimed: the Job has no active pod.
    launcher = instance.run_launcher
    assert isinstance(launcher, K8sRunLauncher)
    monkeypatch.setattr(
        launcher._api_client, "get_job_status", lambda **_: kubernetes.client.V1JobStatus(active=0, failed=1)
    )
    monkeypatch.setattr(launcher._api_client, "get_pod_names_in_job", lambda *_, **__: [])

    # One iteration of the daemon's monitoring loop (every poll_interval_seconds in deploy/dagster.yaml).
    list(execute_run_monitoring_iteration(context, logging.getLogger("test_run_monitoring")))
    failed = instance.get_run_by_id(run_id)
    assert failed is not None and failed.status == dg.DagsterRunStatus.FAILURE
    (cause,) = diagnose(instance, run_id).causes
    assert "Detected run worker status" in cause and "K8s job has no active pods" in cause


def test_a_max_runtime_typed_in_the_launchpad_is_kept(
    instance: dg.DagsterInstance, context: WorkspaceProcessContext
) -> None:
    run = instance.get_run_by_id(launch_with_tags(context, PROBE_TABLES["small"].asset_key, {MAX_RUNTIME_TAG: "60"}))
    assert run is not None and run.tags[MAX_RUNTIME_TAG] == "60"


def test_the_queue_launches_at_most_two_xlarge_runs_at_once(
    instance: dg.DagsterInstance, context: WorkspaceProcessContext, launched_jobs: list[CapturedJob]
) -> None:
    # Three xlarge runs of three different tables (runs of one table already wait for its pool), and one medium.
    xlarge = [
        launch_with_tags(context, PROBE_TABLES[name].asset_key, {COMPUTE_PROFILE_TAG: "xlarge"})
        for name in ("small", "medium", "large")
    ]
    medium = launch_from_ui(context, CARD_TRANSACTIONS.asset_key, partition="2024-01-05")
    dequeue(context)
    launched = {m["metadata"]["name"].removeprefix("dagster-run-") for _, m in launched_jobs}
    # deploy/dagster.yaml's tag concurrency limit on the profile tag: two xlarge runs; the medium one is not held.
    assert len(launched & set(xlarge)) == 2
    assert medium in launched
    (waiting,) = set(xlarge) - launched
    run = instance.get_run_by_id(waiting)
    assert run is not None and run.status == dg.DagsterRunStatus.QUEUED


# --- Step pods: k8s_job_executor ----------------------------------------------------------------------------------


def step_handler_for(
    instance: dg.DagsterInstance, run: dg.DagsterRun, job_def: dg.JobDefinition
) -> tuple[K8sStepHandler, StepHandlerContext]:
    """The k8s_job_executor of a run, as the run pod initializes it, and the context it launches the run's one step
    with: its step handler builds the step's Job from the step's op tags."""
    config = process_config(resolve_to_config_type(_K8S_EXECUTOR_CONFIG_SCHEMA), {})
    assert config.success and config.value is not None, config.errors
    job = InMemoryJob(job_def)
    assert k8s_job_executor.executor_creation_fn is not None
    executor = k8s_job_executor.executor_creation_fn(
        InitExecutorContext(job=job, executor_def=k8s_job_executor, executor_config=config.value, instance=instance)
    )
    assert isinstance(executor, StepDelegatingExecutor)
    plan = create_execution_plan(job)
    (step,) = plan.steps
    assert isinstance(step, ExecutionStep)
    plan_context = PlanOrchestrationContext(
        plan_data=PlanData(
            job=job,
            dagster_run=run,
            instance=instance,
            execution_plan=plan,
            raise_on_error=True,
            retry_mode=RetryMode.DISABLED,
        ),
        log_manager=create_context_free_log_manager(instance, run),
        executor=executor,
        output_capture=None,
    )
    assert run.job_code_origin is not None
    args = ExecuteStepArgs(run.job_code_origin, run.run_id, [step.key], print_serialized_events=False)
    handler_context = StepHandlerContext(
        instance=instance, plan_context=plan_context, steps=[step], execute_step_args=args, dagster_run=run
    )
    handler = executor._step_handler
    assert isinstance(handler, K8sStepHandler)
    return handler, handler_context


@pytest.mark.parametrize("profile_name", ["small", "xlarge"])
def test_k8s_job_executor_builds_step_pods_from_the_assets_op_tags(
    instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch, profile_name: str
) -> None:
    key = PROBE_TABLES[profile_name].asset_key
    with workspace(instance, attribute="step_pod_defs") as step_pod_context:
        run = instance.get_run_by_id(launch_from_ui(step_pod_context, key))
    assert run is not None
    job_def = step_pod_defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection={key})
    handler, handler_context = step_handler_for(instance, run, job_def)
    step_jobs = capture_created_jobs(handler._api_client, monkeypatch)
    list(handler.launch_step(handler_context))
    ((namespace, manifest),) = step_jobs
    validate_job(manifest)
    assert namespace == JOB_NAMESPACE
    assert manifest["metadata"]["labels"]["app.kubernetes.io/component"] == "step_worker"
    assert_shaped_by(manifest, COMPUTE_PROFILES[profile_name])
    assert_production_wiring(manifest)
