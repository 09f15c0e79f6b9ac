"""Compute profiles: how big a step's pod is, which nodes it runs on, and how many Spark executors it may use.

Framework code: it knows Kubernetes, dagster-k8s and Spark, nothing of the lending domain.

How a profile reaches Kubernetes
- ``lake_asset(compute=...)`` puts the profile on the asset's op tags: ``dagster-k8s/config`` (dagster-k8s's own
  ``UserDefinedDagsterK8sConfig`` shape) and ``COMPUTE_PROFILE_TAG``. The ``k8s_job_executor`` builds each step's
  Job from these op tags.
- The ``K8sRunLauncher`` builds the run's Job from *run* tags only (``dagster_k8s.launcher`` reads
  ``dagster_run.tags``); Dagster never copies op tags to run tags, not for UI materializations nor for backfills.
  ``ComputeProfileRunCoordinator`` closes that gap: every run submitted to the instance (UI, backfill daemon,
  sensors, schedules, retries) gets the largest profile among the steps it executes as run tags, before it is
  queued, so the run pod is sized by it and the queue's tag concurrency limits see it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import dagster as dg
from dagster import _check as check

from batch_platform.backfill_completion import install_backfill_completion_guard
from batch_platform.partition_offsets import install_fast_partition_offsets

# The op/run tag naming a step's (or run's) profile; also the pod label, so one key works in the UI and in kubectl.
COMPUTE_PROFILE_TAG = "batch-platform/compute-profile"
# dagster-k8s's tag key (dagster_k8s.job.USER_DEFINED_K8S_CONFIG_KEY), repeated here so that loading the code
# location does not import the Kubernetes client; a test checks the two agree.
K8S_CONFIG_TAG = "dagster-k8s/config"
# Op tag of steps that start a Spark session; the run coordinator copies it onto the run, where the instance's
# ``tag_concurrency_limits`` cap how many Spark runs (drivers, and in local mode their JVMs) run at once.
ENGINE_TAG = "batch-platform/engine"
# Op tag of a step whose table reads its own earlier partitions (a day chain: day N waits for day N-1). The run
# coordinator gives runs of such steps DAY_CHAIN_PRIORITY in the run queue (Dagster launches higher first), so a
# chain's next day is not queued behind a backfill's other chunks, which can all wait for it.
DAY_CHAIN_TAG = "batch-platform/day-chain"
DAY_CHAIN_PRIORITY = 10
SPARK_ENGINE = "spark"
# Dagster's run tags (dagster._core.storage.tags): the run monitoring loop fails a run that outlives its max runtime,
# and the run retry daemon re-executes a crashed run with the retry strategy (from the failed step, not whole).
MAX_RUNTIME_TAG = "dagster/max_runtime"
RETRY_STRATEGY_TAG = "dagster/retry_strategy"
PRIORITY_TAG = "dagster/priority"  # the queued run coordinator launches higher first, FIFO among equals
FROM_FAILURE = "FROM_FAILURE"
# Runs whose steps name no profile (maintenance, raw loads) are bounded too.
DEFAULT_MAX_RUNTIME_SECONDS = 4 * 3600

# Where the image ships the Spark executor pod template (deploy/Dockerfile copies it there).
EXECUTOR_POD_TEMPLATE_PATH = "/opt/batch_platform/spark/executor-pod-template.yaml"
EXECUTOR_CONTAINER_NAME = "spark-executor"

# Node pools are told apart by this node label; spot nodes also carry the taint spot=true:NoSchedule.
NODE_POOL_LABEL = "batch-platform/node-pool"


@dataclass(frozen=True)
class Toleration:
    key: str
    value: str
    effect: str = "NoSchedule"
    operator: str = "Equal"

    def to_k8s(self) -> dict[str, str]:
        return {"key": self.key, "operator": self.operator, "value": self.value, "effect": self.effect}


@dataclass(frozen=True)
class NodePool:
    """Where pods go: the node selector that picks the pool and the tolerations its taints need."""

    name: str
    node_selector: tuple[tuple[str, str], ...]
    tolerations: tuple[Toleration, ...] = ()

    @property
    def selector(self) -> dict[str, str]:
        return dict(self.node_selector)


ON_DEMAND_POOL = NodePool("on-demand", ((NODE_POOL_LABEL, "batch-on-demand"),))
SPOT_POOL = NodePool("spot", ((NODE_POOL_LABEL, "batch-spot"),), (Toleration(key="spot", value="true"),))


@dataclass(frozen=True)
class SparkExecutors:
    """Spark executors for a step running Spark on Kubernetes (ignored by Spark in local mode).

    ``instances`` serve one partition; a run over a partition range gets one executor per
    ``partitions_per_executor`` partitions, never fewer than ``instances`` nor more than ``max_instances``.
    """

    instances: int
    max_instances: int
    partitions_per_executor: int
    cores: int
    memory: str
    memory_overhead: str
    pool: NodePool

    def __post_init__(self) -> None:
        if not 1 <= self.instances <= self.max_instances:
            raise ValueError(f"need 1 <= instances <= max_instances, got {self.instances}, {self.max_instances}")
        if self.partitions_per_executor < 1 or self.cores < 1:
            raise ValueError("partitions_per_executor and cores must be at least 1")


@dataclass(frozen=True)
class ComputeProfile:
    """A named size for a step: its pod (which hosts the Spark driver) and its Spark executors.

    Requests equal limits (Guaranteed QoS): a batch pod is sized for its job, is evicted last under node pressure,
    and a killed run costs a whole re-run. ``driver_memory`` is the JVM heap of the Spark driver inside the pod;
    the rest of the pod's memory is for Python, Arrow buffers and the JVM's off-heap use. ``max_runtime_seconds``
    bounds a run of the profile (a range run of a backfill included): past it, run monitoring fails the run, so a
    hung run or one whose worker vanished unseen frees its tables and lets the retry go.
    """

    name: str
    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str
    driver_memory: str
    pool: NodePool
    executors: SparkExecutors
    max_runtime_seconds: int

    @property
    def rank(self) -> int:
        """Position in COMPUTE_PROFILES, smallest first: a run takes the largest profile of its steps."""
        return list(COMPUTE_PROFILES).index(self.name)


COMPUTE_PROFILES: dict[str, ComputeProfile] = {
    p.name: p
    for p in (
        ComputeProfile(
            name="small",
            cpu_request="1",
            cpu_limit="1",
            memory_request="4Gi",
            memory_limit="4Gi",
            driver_memory="2g",
            max_runtime_seconds=2 * 3600,
            pool=ON_DEMAND_POOL,
            executors=SparkExecutors(
                instances=1,
                max_instances=2,
                partitions_per_executor=8,
                cores=1,
                memory="2g",
                memory_overhead="512m",
                pool=ON_DEMAND_POOL,
            ),
        ),
        ComputeProfile(
            name="medium",
            cpu_request="2",
            cpu_limit="2",
            memory_request="8Gi",
            memory_limit="8Gi",
            driver_memory="4g",
            max_runtime_seconds=3 * 3600,
            pool=ON_DEMAND_POOL,
            executors=SparkExecutors(
                instances=2,
                max_instances=6,
                partitions_per_executor=4,
                cores=2,
                memory="4g",
                memory_overhead="1g",
                pool=ON_DEMAND_POOL,
            ),
        ),
        # Large work goes to spot capacity: partitions are idempotent (whole-partition replace) and run retries
        # in deploy/dagster.yaml re-launch a run whose pod was reclaimed.
        ComputeProfile(
            name="large",
            cpu_request="4",
            cpu_limit="4",
            memory_request="16Gi",
            memory_limit="16Gi",
            driver_memory="10g",
            max_runtime_seconds=4 * 3600,
            pool=SPOT_POOL,
            executors=SparkExecutors(
                instances=4,
                max_instances=16,
                partitions_per_executor=2,
                cores=4,
                memory="8g",
                memory_overhead="2g",
                pool=SPOT_POOL,
            ),
        ),
        ComputeProfile(
            name="xlarge",
            cpu_request="8",
            cpu_limit="8",
            memory_request="32Gi",
            memory_limit="32Gi",
            driver_memory="20g",
            max_runtime_seconds=6 * 3600,
            pool=SPOT_POOL,
            executors=SparkExecutors(
                instances=8,
                max_instances=32,
                partitions_per_executor=1,
                cores=4,
                memory="16g",
                memory_overhead="4g",
                pool=SPOT_POOL,
            ),
        ),
    )
}
DEFAULT_PROFILE = "small"


def get_profile(profile: str | ComputeProfile) -> ComputeProfile:
    """The registered profile for a name or profile; an unknown one is an error, never a default.

    Profiles must be registered in COMPUTE_PROFILES: runs carry only the profile's name, and the daemon and the
    webserver, which do not load the code location, resolve it here.
    """
    name = profile.name if isinstance(profile, ComputeProfile) else profile
    registered = COMPUTE_PROFILES.get(name)
    if registered is None or (isinstance(profile, ComputeProfile) and profile != registered):
        raise ValueError(f"unregistered compute profile {name!r}; registered: {', '.join(COMPUTE_PROFILES)}")
    return registered


def largest(profiles: Iterable[ComputeProfile]) -> ComputeProfile | None:
    """The largest of some profiles (by registry order), or None for none."""
    return max(profiles, key=lambda p: p.rank, default=None)


def k8s_config_tag(profile: ComputeProfile) -> dict[str, Any]:
    """The value of the ``dagster-k8s/config`` tag for a profile (dagster-k8s's UserDefinedDagsterK8sConfig keys)."""
    pod_spec: dict[str, Any] = {"node_selector": profile.pool.selector}
    if profile.pool.tolerations:
        pod_spec["tolerations"] = [t.to_k8s() for t in profile.pool.tolerations]
    return {
        "container_config": {
            "resources": {
                "requests": {"cpu": profile.cpu_request, "memory": profile.memory_request},
                "limits": {"cpu": profile.cpu_limit, "memory": profile.memory_limit},
            }
        },
        "pod_spec_config": pod_spec,
        # The label lets cost reports group pods by profile.
        "pod_template_spec_metadata": {"labels": {COMPUTE_PROFILE_TAG: profile.name}},
    }


def profile_tags(profile: str | ComputeProfile) -> dict[str, str]:
    """Op or run tags that apply a profile: its name and its ``dagster-k8s/config``."""
    p = get_profile(profile)
    return {COMPUTE_PROFILE_TAG: p.name, K8S_CONFIG_TAG: json.dumps(k8s_config_tag(p), sort_keys=True)}


def profile_of_tags(tags: Mapping[str, Any]) -> ComputeProfile | None:
    """The profile named by a set of op or run tags, or None if they name none."""
    name = tags.get(COMPUTE_PROFILE_TAG)
    return get_profile(str(name)) if name else None


def executor_instances(profile: ComputeProfile, partitions: int) -> int:
    """Executors for a step over ``partitions`` partitions.

    The rule: one executor per ``partitions_per_executor`` partitions, at least the profile's base ``instances``
    (a one-day run is never slower than before) and at most its ``max_instances``. Daily partitions are
    independent, so a backfill's executor-hours stay about the same whether it runs on few executors for long or
    many for short: scaling out buys wall-clock time almost free, while the cap bounds the burst one backfill may
    take from the node pool (and the spot quota) and the shuffle fan-in on one driver.
    """
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, got {partitions}")
    ex = profile.executors
    return min(ex.max_instances, max(ex.instances, math.ceil(partitions / ex.partitions_per_executor)))


def spark_conf(profile: str | ComputeProfile, partitions: int = 1) -> dict[str, str]:
    """Spark settings of a profile for a step over ``partitions`` partitions (see executor_instances).

    Static executor allocation: the count is decided here, where the partition count is known. Tolerations cannot
    be set through Spark conf, hence the pod template (deploy/k8s/spark-executor-pod-template.yaml) that carries
    the spot toleration; the node selector pins each profile's executors to its pool.
    """
    p = get_profile(profile)
    ex = p.executors
    conf = {
        "spark.driver.memory": p.driver_memory,
        "spark.dynamicAllocation.enabled": "false",
        "spark.executor.instances": str(executor_instances(p, partitions)),
        "spark.executor.cores": str(ex.cores),
        "spark.executor.memory": ex.memory,
        "spark.executor.memoryOverhead": ex.memory_overhead,
        "spark.kubernetes.executor.request.cores": str(ex.cores),
        "spark.kubernetes.executor.limit.cores": str(ex.cores),
        "spark.kubernetes.executor.podTemplateFile": EXECUTOR_POD_TEMPLATE_PATH,
        "spark.kubernetes.executor.podTemplateContainerName": EXECUTOR_CONTAINER_NAME,
        f"spark.kubernetes.executor.label.{COMPUTE_PROFILE_TAG}": p.name,
    }
    conf.update({f"spark.kubernetes.executor.node.selector.{k}": v for k, v in ex.pool.node_selector})
    return conf


def profile_of_run(instance: dg.DagsterInstance, run: dg.DagsterRun) -> ComputeProfile | None:
    """The profile a run's pod needs: the one its tags name, else the largest among the steps it executes.

    With the K8sRunLauncher and the default executor every step of a run executes in the run's pod, so the pod
    must fit the largest. Steps come from the run's stored execution plan, which holds only the selected assets'
    steps (an asset-selection run from the UI, one backfill run) and their op tags.
    """
    if COMPUTE_PROFILE_TAG in run.tags:
        return get_profile(run.tags[COMPUTE_PROFILE_TAG])
    return largest(
        profile for tags in _selected_step_tags(instance, run) if (profile := profile_of_tags(tags)) is not None
    )


def _selected_step_tags(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[Mapping[str, Any]]:
    """The op tags of the steps the run executes, from its stored execution plan."""
    if not run.execution_plan_snapshot_id:
        return []
    plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
    selected = set(run.step_keys_to_execute) if run.step_keys_to_execute else None
    return [step.tags or {} for step in plan.steps if selected is None or step.key in selected]


def run_tags_for(instance: dg.DagsterInstance, run: dg.DagsterRun) -> dict[str, str]:
    """Tags to add to a run so the K8sRunLauncher and the run queue see its profile and whether it runs Spark, run
    monitoring its max runtime, run retries their strategy (from failure), and the queue its priority if it runs a
    day chain; an explicit run tag (e.g. a ``dagster-k8s/config`` set in the launchpad) is kept as the user's
    override."""
    profile = profile_of_run(instance, run)
    tags = profile_tags(profile) if profile is not None else {}
    tags[MAX_RUNTIME_TAG] = str(profile.max_runtime_seconds if profile is not None else DEFAULT_MAX_RUNTIME_SECONDS)
    tags[RETRY_STRATEGY_TAG] = FROM_FAILURE
    steps = _selected_step_tags(instance, run)
    if any(step.get(ENGINE_TAG) == SPARK_ENGINE for step in steps):
        tags[ENGINE_TAG] = SPARK_ENGINE
    if any(step.get(DAY_CHAIN_TAG) == "true" for step in steps):
        tags[PRIORITY_TAG] = str(DAY_CHAIN_PRIORITY)  # a priority the run was given (a backfill's tag) is kept
    return {k: v for k, v in tags.items() if k not in run.tags}


class ComputeProfileRunCoordinator(dg.QueuedRunCoordinator):
    """The QueuedRunCoordinator, plus: each submitted run is tagged with its compute profile before it is queued.

    Configure it in dagster.yaml as ``run_coordinator: {module: batch_platform.compute, class:
    ComputeProfileRunCoordinator}``; it takes QueuedRunCoordinator's config and honours ``concurrency: runs:``.
    The webserver and the daemon both submit runs, so both need this package installed (deploy/helm uses the
    code-location image for them). Created in the daemon's process, it also installs the backfill completion guard
    there (batch_platform.backfill_completion), and the one-walk partition offsets the daemon's backfill ticks and
    the webserver's partition views need (batch_platform.partition_offsets): they run no other code of the project.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        install_backfill_completion_guard()
        install_fast_partition_offsets()
        super().__init__(*args, **kwargs)

    def submit_run(self, context: dg.SubmitRunContext) -> dg.DagsterRun:
        instance = self._instance
        tags = run_tags_for(instance, context.dagster_run)
        if tags:
            instance.add_run_tags(context.dagster_run.run_id, tags)
            run = check.not_none(instance.get_run_by_id(context.dagster_run.run_id))
            context = context._replace(dagster_run=run)
        return super().submit_run(context)
