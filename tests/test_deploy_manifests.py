"""Every file in deploy/ is checked the way its consumer would check it, without a cluster, Docker or AWS.

- deploy/dagster.yaml: Dagster's own instance loading (InstanceRef.from_dir, which runs dagster_instance_config)
  and each configured class's config schema, applied as ConfigurableClassData.rehydrate applies it.
- deploy/k8s/*.yaml: the Kubernetes OpenAPI schema (kubernetes-validate, strict, newest version it ships).
- deploy/helm/values.yaml: the official chart's published values.schema.json (vendored in tests/data/helm), applied
  to the values merged over the chart's defaults as Helm applies it; the keys the chart defines (VERIFIED_CHART_KEYS
  below) where that schema leaves maps open; and agreement with deploy/dagster.yaml.
- deploy/iam/*.json: IAM policy structure and least privilege.
- deploy/Dockerfile, deploy/entrypoint.sh: static checks, and the entry point run with a stand-in java.
"""

import copy
import functools
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from dagster._config import process_config, resolve_to_config_type
from dagster._core.instance.config import ConcurrencyConfig, dagster_instance_config
from dagster._core.instance.ref import InstanceRef
from dagster._serdes import ConfigurableClassData
from dagster_k8s.job import UserDefinedDagsterK8sConfig
from jsonschema.exceptions import best_match
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource
from referencing.jsonschema import DRAFT202012

from batch_platform.compute import (
    COMPUTE_PROFILE_TAG,
    COMPUTE_PROFILES,
    DEFAULT_PROFILE,
    ENGINE_TAG,
    EXECUTOR_CONTAINER_NAME,
    EXECUTOR_POD_TEMPLATE_PATH,
    SPARK_ENGINE,
    SPOT_POOL,
    ComputeProfileRunCoordinator,
)
from definitions import DOMAINS, OPTIONAL_DOMAINS

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S_VERSION = kubernetes_validate.utils.latest_version()
RUN_SERVICE_ACCOUNT = "batch-platform-runs"
NAMESPACE = "batch-platform"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def instance_yaml() -> dict[str, Any]:
    return dict(load_yaml(DEPLOY / "dagster.yaml"))


def helm_values() -> dict[str, Any]:
    return dict(load_yaml(DEPLOY / "helm" / "values.yaml"))


def k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.name, doc)
        for path in sorted((DEPLOY / "k8s").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def k8s_object(kind: str, name: str | None = None) -> dict[str, Any]:
    (found,) = [
        doc
        for _, doc in k8s_documents()
        if doc["kind"] == kind and (name is None or doc.get("metadata", {}).get("name") == name)
    ]
    return found


def configmap_env() -> dict[str, str]:
    return dict(k8s_object("ConfigMap", "batch-platform-env")["data"])


def env_refs(node: Any) -> set[str]:
    """Names of the environment variables a Dagster config reads (``{env: NAME}``)."""
    if isinstance(node, dict):
        if set(node) == {"env"}:
            return {node["env"]}
        return {name for value in node.values() for name in env_refs(value)}
    if isinstance(node, list):
        return {name for value in node for name in env_refs(value)}
    return set()


# --- deploy/dagster.yaml ------------------------------------------------------------------------------------------


@pytest.fixture
def production_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment of a production pod: the ConfigMap, plus the password that the Secret mounts."""
    env = {**configmap_env(), "DAGSTER_PG_PASSWORD": "stand-in-for-the-secret"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def processed_class_config(data: ConfigurableClassData | None) -> dict[str, Any]:
    """A configured class's config after its own schema processed it (defaults filled, env resolved), which is
    what ConfigurableClassData.rehydrate hands the class; fails like rehydrate on invalid config."""
    assert data is not None
    module = __import__(data.module_name, fromlist=[data.class_name])
    klass = getattr(module, data.class_name)
    result = process_config(resolve_to_config_type(klass.config_type()), data.config_dict)
    assert result.success, (data.class_name, result.errors)
    return dict(result.value or {})


def test_instance_yaml_passes_dagsters_instance_config_validation(
    tmp_path: Path, production_env: dict[str, str]
) -> None:
    # The instance schema and its cross-field checks (storage, run_coordinator vs concurrency, pools).
    config, custom_instance_class = dagster_instance_config(str(DEPLOY))
    assert custom_instance_class is None
    assert {"storage", "run_launcher", "run_coordinator", "concurrency", "run_monitoring", "run_retries"} <= set(config)
    # What DagsterInstance.from_config builds it from, each class's config through that class's schema.
    ref = InstanceRef.from_dir(str(tmp_path), config_dir=str(DEPLOY))
    storage = processed_class_config(ref.storage_data)
    launcher = processed_class_config(ref.run_launcher_data)
    logs = processed_class_config(ref.compute_logs_data)
    processed_class_config(ref.run_coordinator_data)
    assert ref.storage_data is not None and ref.storage_data.class_name == "DagsterPostgresStorage"
    db = storage["postgres_db"]
    assert db["scheme"] == "postgresql+psycopg2"  # SQLAlchemy 2.1 (Dagster issue 33958)
    assert (db["hostname"], db["username"], db["db_name"]) == (
        production_env["DAGSTER_PG_HOST"],
        production_env["DAGSTER_PG_USERNAME"],
        production_env["DAGSTER_PG_DB_NAME"],
    )
    assert db["password"] == production_env["DAGSTER_PG_PASSWORD"]
    assert ref.run_launcher_data is not None and ref.run_launcher_data.class_name == "K8sRunLauncher"
    assert launcher["job_namespace"] == NAMESPACE and launcher["service_account_name"] == RUN_SERVICE_ACCOUNT
    assert launcher["env_config_maps"] == ["batch-platform-env"] and launcher["env_secrets"] == [
        "batch-platform-secrets"
    ]
    assert launcher["image_pull_policy"] == "IfNotPresent"
    assert ref.compute_logs_data is not None and ref.compute_logs_data.class_name == "S3ComputeLogManager"
    assert (logs["bucket"], logs["prefix"]) == (
        production_env["DAGSTER_COMPUTE_LOGS_BUCKET"],
        production_env["DAGSTER_COMPUTE_LOGS_PREFIX"],
    )


def test_instance_queue_is_the_compute_profile_coordinator_with_the_profile_limits(tmp_path: Path) -> None:
    ref = InstanceRef.from_dir(str(tmp_path), config_dir=str(DEPLOY))
    assert ref.run_coordinator_data is not None
    coordinator = ref.run_coordinator_data.rehydrate(ComputeProfileRunCoordinator)
    # The limits live in concurrency.runs: with them also in run_coordinator, the plain QueuedRunCoordinator's
    # config check would fail and ours would silently prefer concurrency.runs.
    assert not {"max_concurrent_runs", "tag_concurrency_limits"} & set(ref.run_coordinator_data.config_dict)
    settings = instance_yaml()["concurrency"]
    queue = ConcurrencyConfig.from_concurrency_settings(settings, coordinator.get_run_queue_config()).run_queue_config
    assert queue is not None and queue.max_concurrent_runs == 20
    limits = {(limit["key"], limit.get("value")): limit["limit"] for limit in queue.tag_concurrency_limits}
    assert limits[(COMPUTE_PROFILE_TAG, "xlarge")] == 2
    assert limits[(COMPUTE_PROFILE_TAG, "large")] == 4
    assert limits[(ENGINE_TAG, SPARK_ENGINE)] == 12
    allowed = {(COMPUTE_PROFILE_TAG, name) for name in COMPUTE_PROFILES} | {("dagster/backfill", None)}
    assert set(limits) <= allowed | {(ENGINE_TAG, SPARK_ENGINE)}


def test_instance_monitors_and_retries_runs_lost_with_their_pod() -> None:
    config = instance_yaml()
    assert config["run_monitoring"]["enabled"] is True and config["run_monitoring"]["start_timeout_seconds"] >= 300
    assert config["run_retries"] == {"enabled": True, "max_retries": 2, "retry_on_asset_or_op_failure": False}


def test_local_and_production_instances_free_dead_runs_slots_and_retry_crashes_alike() -> None:
    """Both instances free the pool slots of ended runs (0 or absent would keep them for ever), bound how long a
    run can hang, and retry crashed runs (not failed steps) the same number of times."""
    local, production = dict(load_yaml(ROOT / "dagster.yaml")), instance_yaml()
    for config in (local, production):
        monitoring = config["run_monitoring"]
        assert monitoring["enabled"] is True
        assert monitoring["free_slots_after_run_end_seconds"] > 0
        assert monitoring["start_timeout_seconds"] > 0 and monitoring["cancel_timeout_seconds"] > 0
        # Freeing happens in the monitoring loop: a slot is free at most one interval after the delay.
        assert monitoring["poll_interval_seconds"] <= 120
    assert local["run_retries"] == production["run_retries"]
    assert local["concurrency"]["pools"] == production["concurrency"]["pools"]


def test_default_run_pod_size_is_the_default_profiles() -> None:
    resources = instance_yaml()["run_launcher"]["config"]["resources"]
    profile = COMPUTE_PROFILES[DEFAULT_PROFILE]
    assert resources == {
        "requests": {"cpu": profile.cpu_request, "memory": profile.memory_request},
        "limits": {"cpu": profile.cpu_limit, "memory": profile.memory_limit},
    }


def test_every_variable_the_instance_reads_comes_from_the_configmap_or_the_password_secret() -> None:
    config = instance_yaml()
    read = env_refs(config)
    assert read == env_refs(helm_values()["computeLogManager"]) | {
        "DAGSTER_PG_HOST",
        "DAGSTER_PG_USERNAME",
        "DAGSTER_PG_PASSWORD",
        "DAGSTER_PG_DB_NAME",
    }
    # The password is the only one from a Secret: the launcher mounts it into run pods as DAGSTER_PG_PASSWORD.
    assert read - set(configmap_env()) == {"DAGSTER_PG_PASSWORD"}
    assert config["run_launcher"]["config"]["postgres_password_secret"] == "dagster-postgresql-secret"


def test_configmap_carries_every_variable_the_prod_resources_read_except_secrets() -> None:
    from resources import ENV_VAR, PROD_ENV_VARS, SECRET_ENV_VARS

    env = configmap_env()
    assert env[ENV_VAR] == "PROD"
    assert set(PROD_ENV_VARS) - set(SECRET_ENV_VARS) <= set(env)
    assert not set(SECRET_ENV_VARS) & set(env), "secrets belong in Secret batch-platform-secrets"


# --- deploy/k8s ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,doc", k8s_documents(), ids=[f"{n}:{d['kind']}" for n, d in k8s_documents()])
def test_kubernetes_manifests_validate_against_the_api_schema(name: str, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_kubernetes_validation_rejects_what_the_api_would() -> None:
    # The validator is strict: an unknown field in a pod spec is an error, not ignored.
    template = k8s_object("Pod")
    broken = {**template, "spec": {**template["spec"], "tolerration": []}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_spark_driver_role_lets_the_run_account_manage_executors_in_its_namespace_only() -> None:
    account = k8s_object("ServiceAccount", RUN_SERVICE_ACCOUNT)
    role = k8s_object("Role")
    binding = k8s_object("RoleBinding")
    assert account["metadata"]["namespace"] == role["metadata"]["namespace"] == NAMESPACE
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    granted = {(res, verb) for rule in role["rules"] for res in rule["resources"] for verb in rule["verbs"]}
    for resource in ("pods", "services", "configmaps"):
        assert {(resource, v) for v in ("create", "get", "list", "watch", "delete")} <= granted
    assert all(rule["apiGroups"] == [""] for rule in role["rules"])
    assert "*" not in {v for _, v in granted} and "*" not in {r for r, _ in granted}
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": RUN_SERVICE_ACCOUNT, "namespace": NAMESPACE}]


def test_executor_pod_template_tolerates_spot_and_runs_as_the_run_account() -> None:
    template = k8s_object("Pod")
    spec = template["spec"]
    assert [c["name"] for c in spec["containers"]] == [EXECUTOR_CONTAINER_NAME]
    assert spec["tolerations"] == [t.to_k8s() for t in SPOT_POOL.tolerations]
    assert spec["serviceAccountName"] == RUN_SERVICE_ACCOUNT
    assert spec["securityContext"]["runAsNonRoot"] is True


# --- deploy/helm/values.yaml --------------------------------------------------------------------------------------

# Keys of the official chart's values schema (helm/dagster/values.schema.json, generated from the pydantic models in
# helm/dagster/schema/schema/charts/ of dagster-io/dagster), for the sections these values use; ANY marks free-form
# maps (Kubernetes objects, annotations, class config). Read from the chart's current schema models, not pinned to
# chart 1.13.27 byte for byte: newer keys may exist, none used here is missing.
# Kept beside the published-schema test below, which does not cover it: that schema allows unknown keys at the top
# level and in global, serviceAccount, postgresql, the user deployments, s3ComputeLogManager, runRetries and the
# ingress hosts (a misspelt key there would be silently ignored by the chart); this list rejects them.
ANY = "any"
IMAGE = {"repository": ANY, "tag": ANY, "pullPolicy": ANY}
K8S_POD_KEYS = dict.fromkeys(
    [
        "env",
        "envConfigMaps",
        "envSecrets",
        "deploymentLabels",
        "labels",
        "nodeSelector",
        "affinity",
        "tolerations",
        "podSecurityContext",
        "securityContext",
        "resources",
        "readinessProbe",
        "livenessProbe",
        "startupProbe",
        "annotations",
        "schedulerName",
        "volumeMounts",
        "volumes",
        "initContainerResources",
        "checkDbReadyInitContainer",
    ],
    ANY,
)
INGRESS_HOST = {
    "host": ANY,
    "path": ANY,
    "pathType": ANY,
    "tls": {"enabled": ANY, "secretName": ANY},
    "precedingPaths": ANY,
    "succeedingPaths": ANY,
}
VERIFIED_CHART_KEYS: dict[str, Any] = {
    "global": dict.fromkeys(
        ["postgresqlSecretName", "dagsterHome", "serviceAccountName", "celeryConfigSecretName"], ANY
    ),
    "serviceAccount": {"create": ANY, "name": ANY, "annotations": ANY},
    "generatePostgresqlPasswordSecret": ANY,
    "telemetry": {"enabled": ANY},
    "postgresql": {
        **dict.fromkeys(
            [
                "image",
                "enabled",
                "postgresqlHost",
                "postgresqlUsername",
                "postgresqlPassword",
                "postgresqlDatabase",
                "postgresqlParams",
                "postgresqlScheme",
            ],
            ANY,
        ),
        "service": {"port": ANY},
    },
    "dagster-user-deployments": {
        "enabled": ANY,
        "enableSubchart": ANY,
        "imagePullSecrets": ANY,
        "deployments": [
            {
                **K8S_POD_KEYS,
                **dict.fromkeys(
                    ["name", "dagsterApiGrpcArgs", "codeServerArgs", "deploymentNamespace", "port", "replicaCount"],
                    ANY,
                ),
                "image": IMAGE,
                "includeConfigInLaunchedRuns": {"enabled": ANY},
                "initContainers": ANY,
                "sidecarContainers": ANY,
            }
        ],
    },
    "dagsterWebserver": {
        **K8S_POD_KEYS,
        **dict.fromkeys(
            ["replicaCount", "nameOverride", "pathPrefix", "service", "workspace", "enableReadOnly", "logLevel"], ANY
        ),
        **dict.fromkeys(["dbStatementTimeout", "dbPoolRecycle", "dbPoolMaxOverflow"], ANY),
        "image": IMAGE,
    },
    "dagsterDaemon": {
        **K8S_POD_KEYS,
        **dict.fromkeys(["enabled", "heartbeatTolerance", "sensors", "schedules", "backfills", "logFormat"], ANY),
        "image": IMAGE,
        "runCoordinator": {
            "enabled": ANY,
            "type": ANY,
            "config": {
                "queuedRunCoordinator": dict.fromkeys(
                    [
                        "maxConcurrentRuns",
                        "tagConcurrencyLimits",
                        "dequeueIntervalSeconds",
                        "dequeueNumWorkers",
                        "dequeueUseThreads",
                        "blockOpConcurrencyLimitedRuns",
                    ],
                    ANY,
                ),
                "customRunCoordinator": {"module": ANY, "class": ANY, "config": ANY},
            },
        },
        # runMonitoring is a free map in the schema; these are the keys the chart's instance template reads.
        "runMonitoring": dict.fromkeys(
            [
                "enabled",
                "startTimeoutSeconds",
                "cancelTimeoutSeconds",
                "maxResumeRunAttempts",
                "pollIntervalSeconds",
                "freeSlotsAfterRunEndSeconds",
            ],
            ANY,
        ),
        "runRetries": {"enabled": ANY, "maxRetries": ANY, "retryOnAssetOrOpFailure": ANY},
    },
    "concurrency": {
        "enabled": ANY,
        "pools": {"defaultLimit": ANY, "granularity": ANY, "opGranularityRunBuffer": ANY},
        "runs": {"maxConcurrentRuns": ANY, "tagConcurrencyLimits": [{"key": ANY, "value": ANY, "limit": ANY}]},
    },
    "runLauncher": {
        "type": ANY,
        "config": {
            "k8sRunLauncher": {
                **dict.fromkeys(
                    [
                        "image",
                        "imagePullPolicy",
                        "jobNamespace",
                        "loadInclusterConfig",
                        "kubeconfigFile",
                        "envConfigMaps",
                        "envSecrets",
                        "envVars",
                        "volumeMounts",
                        "volumes",
                        "labels",
                        "failPodOnRunFailure",
                        "resources",
                        "schedulerName",
                        "securityContext",
                    ],
                    ANY,
                ),
                "runK8sConfig": dict.fromkeys(
                    ["containerConfig", "podSpecConfig", "podTemplateSpecMetadata", "jobSpecConfig", "jobMetadata"],
                    ANY,
                ),
            },
        },
    },
    "computeLogManager": {
        "type": ANY,
        "config": {
            "s3ComputeLogManager": dict.fromkeys(
                [
                    "bucket",
                    "localDir",
                    "prefix",
                    "useSsl",
                    "verify",
                    "verifyCertPath",
                    "endpointUrl",
                    "skipEmptyFiles",
                    "uploadInterval",
                    "uploadExtraArgs",
                    "showUrlOnly",
                    "region",
                ],
                ANY,
            )
        },
    },
    "ingress": {
        "enabled": ANY,
        "apiVersion": ANY,
        "labels": ANY,
        "annotations": ANY,
        "flower": ANY,
        "dagsterWebserver": INGRESS_HOST,
        "readOnlyDagsterWebserver": INGRESS_HOST,
    },
}
CHART_ENUMS = {
    "pullPolicy": {"Always", "IfNotPresent", "Never"},
    "imagePullPolicy": {"Always", "IfNotPresent", "Never"},
    "pathType": {"Exact", "Prefix", "ImplementationSpecific"},
}


def unknown_keys(values: Any, spec: Any, path: str = "") -> list[str]:
    if spec == ANY:
        return []
    if isinstance(spec, list):
        assert isinstance(values, list), path
        return [err for i, item in enumerate(values) for err in unknown_keys(item, spec[0], f"{path}[{i}]")]
    assert isinstance(values, dict), path
    errors = [f"{path}.{key}".lstrip(".") for key in values if key not in spec]
    return errors + [
        err for key, value in values.items() if key in spec for err in unknown_keys(value, spec[key], f"{path}.{key}")
    ]


def walk(node: Any, path: str = "") -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        return [item for key, value in node.items() for item in walk(value, f"{path}.{key}")]
    if isinstance(node, list):
        return [item for i, value in enumerate(node) for item in walk(value, f"{path}[{i}]")]
    return [(path, node)]


def test_helm_values_use_only_keys_the_chart_schema_defines() -> None:
    values = helm_values()
    assert unknown_keys(values, VERIFIED_CHART_KEYS) == []
    for path, value in walk(values):
        field = path.rsplit(".", 1)[-1]
        if field in CHART_ENUMS:
            assert value in CHART_ENUMS[field], path
    for deployment in values["dagster-user-deployments"]["deployments"]:
        assert {"name", "image", "port"} <= set(deployment)
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "CustomRunCoordinator"
    assert values["computeLogManager"]["type"] == "S3ComputeLogManager"


def test_helm_values_render_the_same_instance_as_deploy_dagster_yaml() -> None:
    instance, values = instance_yaml(), helm_values()
    daemon = values["dagsterDaemon"]
    coordinator = daemon["runCoordinator"]["config"]["customRunCoordinator"]
    assert {k: coordinator[k] for k in ("module", "class", "config")} == instance["run_coordinator"]
    concurrency = values["concurrency"]
    assert concurrency["enabled"] is True
    assert concurrency["runs"]["maxConcurrentRuns"] == instance["concurrency"]["runs"]["max_concurrent_runs"]
    assert concurrency["runs"]["tagConcurrencyLimits"] == instance["concurrency"]["runs"]["tag_concurrency_limits"]
    assert concurrency["pools"] == {
        "defaultLimit": instance["concurrency"]["pools"]["default_limit"],
        "granularity": instance["concurrency"]["pools"]["granularity"],
    }
    monitoring = instance["run_monitoring"]
    assert daemon["runMonitoring"] == {
        "enabled": monitoring["enabled"],
        "startTimeoutSeconds": monitoring["start_timeout_seconds"],
        "cancelTimeoutSeconds": monitoring["cancel_timeout_seconds"],
        "maxResumeRunAttempts": monitoring["max_resume_run_attempts"],
        "pollIntervalSeconds": monitoring["poll_interval_seconds"],
        "freeSlotsAfterRunEndSeconds": monitoring["free_slots_after_run_end_seconds"],
    }
    retries = instance["run_retries"]
    assert daemon["runRetries"] == {
        "enabled": retries["enabled"],
        "maxRetries": retries["max_retries"],
        "retryOnAssetOrOpFailure": retries["retry_on_asset_or_op_failure"],
    }
    launcher, chart_launcher = instance["run_launcher"]["config"], values["runLauncher"]["config"]["k8sRunLauncher"]
    assert chart_launcher["jobNamespace"] == launcher["job_namespace"]
    assert chart_launcher["imagePullPolicy"] == launcher["image_pull_policy"]
    assert [m["name"] for m in chart_launcher["envConfigMaps"]] == launcher["env_config_maps"]
    assert [s["name"] for s in chart_launcher["envSecrets"]] == launcher["env_secrets"]
    assert chart_launcher["resources"] == launcher["resources"]
    assert chart_launcher["securityContext"] == launcher["security_context"]
    assert chart_launcher["failPodOnRunFailure"] == launcher["fail_pod_on_run_failure"]
    # The chart gives run pods its own account; runK8sConfig puts them on the Spark driver's account instead.
    pod_spec = UserDefinedDagsterK8sConfig.from_dict(
        {"pod_spec_config": chart_launcher["runK8sConfig"]["podSpecConfig"]}
    )
    assert pod_spec.pod_spec_config["service_account_name"] == launcher["service_account_name"]
    assert (
        chart_launcher["runK8sConfig"]["podSpecConfig"]["securityContext"]
        == (launcher["run_k8s_config"]["pod_spec_config"]["security_context"])
    )
    logs = values["computeLogManager"]["config"]["s3ComputeLogManager"]
    assert {k: logs[k] for k in ("bucket", "prefix", "region")} == {
        k: instance["compute_logs"]["config"][k] for k in ("bucket", "prefix", "region")
    }
    postgres = values["postgresql"]
    assert postgres["enabled"] is False and values["generatePostgresqlPasswordSecret"] is False
    assert postgres["postgresqlScheme"] == instance["storage"]["postgres"]["postgres_db"]["scheme"]
    assert postgres["postgresqlParams"] == instance["storage"]["postgres"]["postgres_db"]["params"]
    env = configmap_env()
    assert (postgres["postgresqlHost"], postgres["postgresqlUsername"], postgres["postgresqlDatabase"]) == (
        env["DAGSTER_PG_HOST"],
        env["DAGSTER_PG_USERNAME"],
        env["DAGSTER_PG_DB_NAME"],
    )
    assert values["global"]["postgresqlSecretName"] == launcher["postgres_password_secret"]


def test_webserver_and_daemon_run_the_code_location_image_that_holds_the_run_coordinator() -> None:
    values = helm_values()
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", "definitions"]
    assert values["dagsterWebserver"]["image"] == deployment["image"] == values["dagsterDaemon"]["image"]
    assert values["dagsterWebserver"]["enableReadOnly"] is True


def test_webserver_ingress_requires_login_through_an_auth_proxy() -> None:
    ingress = helm_values()["ingress"]
    assert ingress["enabled"] is True
    annotations = ingress["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/auth-url"].endswith("/oauth2/auth")
    assert "/oauth2/start" in annotations["nginx.ingress.kubernetes.io/auth-signin"]
    for host in ("dagsterWebserver", "readOnlyDagsterWebserver"):
        assert ingress[host]["tls"]["enabled"] is True


# --- deploy/helm/values.yaml against the chart's published values schema ------------------------------------------

# The official chart's values.schema.json and default values.yaml, copied unchanged from dagster-io/dagster (commit
# 437f92d9; tests/data/helm/README.md says where from, and that this commit is not confirmed to be the 1.13.27 tag).
CHART_DATA = ROOT / "tests" / "data" / "helm"
CHART_SCHEMA = CHART_DATA / "dagster-chart-437f92d9.values.schema.json"
CHART_DEFAULT_VALUES = CHART_DATA / "dagster-chart-437f92d9.values.yaml"
# The schema's Kubernetes types are $refs to this file; nothing is fetched. The address is served offline from the
# definitions kubernetes-validate ships: its oldest version (the closest to the chart's 1.19 pin), non-strict like the
# referenced file (the chart's own defaults set startupProbe.enabled, which a strict Probe rejects). The shipped file
# keys its types under "$defs" where the referenced one has "definitions", so the resource carries both. Any other
# remote $ref fails instead of being downloaded.
CHART_K8S_DEFINITIONS = (
    "https://raw.githubusercontent.com/yannh/kubernetes-json-schema/master/v1.19.0/_definitions.json"
)


@functools.cache
def chart_schema_validator() -> jsonschema.Draft202012Validator:
    k8s_version = kubernetes_validate.utils.all_versions()[0]
    definitions = kubernetes_validate.utils.schema_contents(
        f"kubernetes-json-schema/v{k8s_version}-local/_definitions.json", k8s_version
    )["$defs"]
    kubernetes = Resource.from_contents(
        {"definitions": definitions, "$defs": definitions}, default_specification=DRAFT202012
    )

    def offline(uri: str) -> Resource[Any]:
        raise NoSuchResource(ref=uri)

    registry: Registry[Any] = Registry(retrieve=offline).with_resource(CHART_K8S_DEFINITIONS, kubernetes)
    schema = json.loads(CHART_SCHEMA.read_text())
    # The schema declares no $schema: pydantic 2 generates it ($defs, $ref beside other keywords) for draft 2020-12.
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, registry=registry)


def chart_default_values() -> dict[str, Any]:
    return dict(load_yaml(CHART_DEFAULT_VALUES))


def helm_merge(defaults: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The values Helm validates: the chart's defaults with ours over them, maps merged key by key, lists and scalars
    replaced, and a null deleting the chart's key."""
    merged = dict(defaults)
    for key, value in overrides.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = helm_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def chart_schema_errors(values: dict[str, Any]) -> list[str]:
    """Each error's path and message. Most chart fields are "X or null" (anyOf); best_match goes into the branch
    that names the offending field instead of reporting the whole anyOf."""
    leaves = [best_match([error]) for error in chart_schema_validator().iter_errors(values)]
    return sorted(f"{leaf.json_path}: {leaf.message}" for leaf in leaves if leaf is not None)


def test_chart_default_values_pass_the_vendored_schema_offline() -> None:
    # The vendored pair and the offline Kubernetes definitions fit together: the chart's own defaults are valid.
    assert chart_schema_errors(chart_default_values()) == []


def test_helm_values_merged_over_the_chart_defaults_pass_the_charts_values_schema() -> None:
    errors = chart_schema_errors(helm_merge(chart_default_values(), helm_values()))
    assert not errors, "deploy/helm/values.yaml fails the chart's values.schema.json:\n" + "\n".join(errors)


@pytest.mark.parametrize(
    "path,bad,expected_path,expected_message",
    [
        (("dagsterWebserver", "replicaCount"), "2", "$.dagsterWebserver.replicaCount", "'2' is not of type 'integer'"),
        (
            ("runLauncher", "config", "k8sRunLauncher", "jobNamespce"),
            NAMESPACE,
            "$.runLauncher.config.k8sRunLauncher",
            "Additional properties are not allowed ('jobNamespce' was unexpected)",
        ),
        # A Kubernetes type, checked through the offline definitions.
        (
            ("dagsterDaemon", "resources", "requests"),
            "1Gi",
            "$.dagsterDaemon.resources.requests",
            "'1Gi' is not of type 'object', 'null'",
        ),
    ],
    ids=["wrong-type", "unknown-key", "kubernetes-type"],
)
def test_chart_values_schema_rejects_a_bad_field(
    path: tuple[str, ...], bad: Any, expected_path: str, expected_message: str
) -> None:
    values = copy.deepcopy(helm_merge(chart_default_values(), helm_values()))
    node = values
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = bad
    assert chart_schema_errors(values) == [f"{expected_path}: {expected_message}"]


# --- deploy/iam ---------------------------------------------------------------------------------------------------


def policy(name: str) -> dict[str, Any]:
    document = json.loads((DEPLOY / "iam" / name).read_text())
    assert document["Version"] == "2012-10-17"
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow" and {"Sid", "Action", "Resource"} <= set(statement)
        actions = [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
        resources = [statement["Resource"]] if isinstance(statement["Resource"], str) else statement["Resource"]
        # Least privilege: no wildcard action or resource at service level.
        assert all(not a.endswith("*") for a in actions), statement["Sid"]
        assert all(r != "*" and not r.endswith(":::*") for r in resources), statement["Sid"]
    return dict(document)


def statement(document: dict[str, Any], sid: str) -> dict[str, Any]:
    (found,) = [s for s in document["Statement"] if s["Sid"] == sid]
    return dict(found)


def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def test_warehouse_policy_grants_the_warehouse_prefix_and_the_lake_databases_only() -> None:
    document = policy("warehouse-policy.json")
    bucket, _, prefix = configmap_env()["BATCH_PLATFORM_WAREHOUSE"].removeprefix("s3://").partition("/")
    listing = statement(document, "ListWarehousePrefix")
    assert as_list(listing["Action"]) == ["s3:ListBucket"]
    assert listing["Resource"] == f"arn:aws:s3:::{bucket}"
    assert listing["Condition"] == {"StringLike": {"s3:prefix": [prefix, f"{prefix}/*"]}}
    objects = statement(document, "ReadWriteWarehouseObjects")
    assert set(as_list(objects["Action"])) == {
        "s3:GetObject",
        "s3:PutObject",
        "s3:DeleteObject",
        "s3:AbortMultipartUpload",
    }
    assert objects["Resource"] == f"arn:aws:s3:::{bucket}/{prefix}/*"
    glue = statement(document, "IcebergTablesInTheLakeDatabase")
    assert all(a.startswith("glue:") and not a.startswith("glue:Delete") for a in as_list(glue["Action"]))
    # Every lake namespace of the code location's domains (optional ones too: a deployment may register them) is a
    # Glue database (pyiceberg's Glue catalog); the policy names exactly those, and their tables.
    # (A Domain refuses an asset writing a table missing from its lake_tables.)
    namespaces = {table.namespace for domain in [*DOMAINS, *OPTIONAL_DOMAINS] for table in domain.lake_tables}
    arns = as_list(glue["Resource"])
    region_account = {":".join(arn.split(":")[3:5]) for arn in arns}
    assert len(region_account) == 1
    databases = {arn.split(":database/")[1] for arn in arns if ":database/" in arn}
    tables = {arn.split(":table/")[1] for arn in arns if ":table/" in arn}
    # A new lake namespace needs its database added here, or its first write fails with AccessDenied in production.
    assert databases == namespaces, f"policy databases {sorted(databases)} != lake namespaces {sorted(namespaces)}"
    assert tables == {f"{ns}/*" for ns in namespaces}
    assert len(document["Statement"]) == 3


def test_compute_log_policy_grants_the_log_prefix_only() -> None:
    document = policy("compute-logs-policy.json")
    env = configmap_env()
    bucket, prefix = env["DAGSTER_COMPUTE_LOGS_BUCKET"], env["DAGSTER_COMPUTE_LOGS_PREFIX"]
    assert statement(document, "ListComputeLogPrefix")["Condition"] == {
        "StringLike": {"s3:prefix": [prefix, f"{prefix}/*"]}
    }
    objects = statement(document, "ReadWriteComputeLogs")
    assert set(as_list(objects["Action"])) == {"s3:GetObject", "s3:PutObject"}
    assert objects["Resource"] == f"arn:aws:s3:::{bucket}/{prefix}/*"


def test_landing_policy_grants_reading_the_landing_prefix_only() -> None:
    """Run pods read the drops (raw assets), the code server lists them (landing sensors): read-only, one prefix."""
    document = policy("landing-read-policy.json")
    bucket, _, prefix = configmap_env()["BATCH_PLATFORM_LANDING_URI"].removeprefix("s3://").partition("/")
    listing = statement(document, "ListLandingPrefix")
    assert as_list(listing["Action"]) == ["s3:ListBucket"]
    assert listing["Resource"] == f"arn:aws:s3:::{bucket}"
    assert listing["Condition"] == {"StringLike": {"s3:prefix": [prefix, f"{prefix}/*"]}}
    objects = statement(document, "ReadLandingDrops")
    assert as_list(objects["Action"]) == ["s3:GetObject"]
    assert objects["Resource"] == f"arn:aws:s3:::{bucket}/{prefix}/*"
    assert len(document["Statement"]) == 2


# --- deploy/Dockerfile and entry point ----------------------------------------------------------------------------


def dockerfile() -> str:
    return (DEPLOY / "Dockerfile").read_text()


def test_image_is_python_311_slim_with_debians_java_17_and_hash_checked_dependencies() -> None:
    text = dockerfile()
    (base,) = re.findall(r"^FROM (\S+)", text, flags=re.M)
    assert base == "python:3.11-slim-bookworm"
    assert "openjdk-17-jre-headless" in text
    assert re.search(r"uv pip install .*--require-hashes", text)
    assert "-c /tmp/build/requirements.lock" in text
    assert re.search(r"^USER 10001", text, flags=re.M)


def test_image_ships_the_executor_pod_template_where_spark_conf_points() -> None:
    copies = re.findall(r"^COPY (?:--\S+ )*(\S+) (\S+)$", dockerfile(), flags=re.M)
    assert ("deploy/k8s/spark-executor-pod-template.yaml", EXECUTOR_POD_TEMPLATE_PATH) in copies
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert ("deploy/entrypoint.sh", "/usr/local/bin/batch-platform-entrypoint") in copies
    # The build context holds only what the image copies (BuildKit reads <Dockerfile>.dockerignore).
    included = {entry[1:].rstrip("/") for entry in ignore if entry.startswith("!")}
    for source, _ in copies:
        # A file is in the context if it, or a folder above it, is un-ignored.
        parts = Path(source.rstrip("/")).parts
        assert any("/".join(parts[:n]) in included for n in range(1, len(parts) + 1)), source


def fake_java(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    java = bin_dir / "java"
    java.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    java.chmod(0o755)
    return bin_dir


def test_entrypoint_starts_spark_executor_backend_from_the_executor_pods_environment(tmp_path: Path) -> None:
    env = {
        "PATH": f"{fake_java(tmp_path)}:{os.environ['PATH']}",
        "SPARK_HOME": "/spark",
        "SPARK_EXECUTOR_MEMORY": "4g",
        "SPARK_DRIVER_URL": "spark://CoarseGrainedScheduler@10.0.0.1:7078",
        "SPARK_EXECUTOR_ID": "3",
        "SPARK_EXECUTOR_CORES": "2",
        "SPARK_APPLICATION_ID": "spark-app-1",
        "SPARK_EXECUTOR_POD_IP": "10.0.0.7",
        "SPARK_RESOURCE_PROFILE_ID": "0",
        "SPARK_EXECUTOR_POD_NAME": "exec-3",
        "SPARK_JAVA_OPT_10": "-Dlast=with space",
        "SPARK_JAVA_OPT_0": "-Dspark.driver.port=7078",
        "SPARK_JAVA_OPT_2": "-Dthird",
    }
    out = subprocess.run(
        ["bash", str(DEPLOY / "entrypoint.sh"), "executor"], env=env, capture_output=True, text=True, check=True
    )
    args = out.stdout.splitlines()
    assert args[:3] == ["-Dspark.driver.port=7078", "-Dthird", "-Dlast=with space"]
    assert args[3:6] == ["-Xms4g", "-Xmx4g", "-cp"]
    assert args[6] == "/spark/conf:/spark/jars/*"
    backend = args.index("org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend")
    flags = dict(zip(args[backend + 1 :: 2], args[backend + 2 :: 2], strict=True))
    assert flags == {
        "--driver-url": env["SPARK_DRIVER_URL"],
        "--executor-id": "3",
        "--cores": "2",
        "--app-id": "spark-app-1",
        "--hostname": "10.0.0.7",
        "--resourceProfileId": "0",
        "--podName": "exec-3",
    }


def test_entrypoint_runs_any_other_command_as_given() -> None:
    out = subprocess.run(
        ["bash", str(DEPLOY / "entrypoint.sh"), "echo", "dagster", "api", "grpc"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout == "dagster api grpc\n"


# --- Everything in deploy/ ----------------------------------------------------------------------------------------

SECRET_PATTERNS = [
    re.compile(r"AKIA[0-9A-Z]{16}"),  # AWS access key id
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"(?i)(password|secret_access_key|token)\s*[:=]\s*['\"]?[A-Za-z0-9/+]{8,}"),
]


@pytest.mark.parametrize("path", sorted(p for p in DEPLOY.rglob("*") if p.is_file()), ids=lambda p: p.name)
def test_deploy_files_hold_no_secrets_and_no_paths_of_a_machine(path: Path) -> None:
    text = path.read_text()
    for pattern in SECRET_PATTERNS:
        assert not pattern.search(text), (path.name, pattern.pattern)
    assert not re.search(r"/(work|home|root|Users)/", text), path.name
    if path.suffix in {".yaml", ".yml"}:
        for doc in yaml.safe_load_all(text):
            for key_path, value in walk(doc):
                if re.search(r"(?i)password$", key_path.rsplit(".", 1)[-1]):
                    pytest.fail(f"{path.name}{key_path} = {value!r}: passwords come from Secrets")
