#!/usr/bin/env bash
# Entry point of the batch_platform image.
# - Spark on Kubernetes starts executor pods from this image with the single argument "executor" and everything
#   else in SPARK_* variables: start Spark's executor backend with them.
# - Any other command (dagster api grpc, dagster api execute_run, dagster-webserver, dagster-daemon) runs as given.
set -euo pipefail

if [[ "${1:-}" != "executor" ]]; then
  exec "$@"
fi

spark_home="${SPARK_HOME:?SPARK_HOME must point at the pyspark installation}"

# The driver passes the executor's JVM options as SPARK_JAVA_OPT_0, SPARK_JAVA_OPT_1, ...: keep their order.
java_opts=()
while IFS= read -r name; do
  java_opts+=("${!name}")
done < <(compgen -e | grep '^SPARK_JAVA_OPT_' | sort -t_ -k4 -n || true)

exec java "${java_opts[@]}" \
  -Xms"${SPARK_EXECUTOR_MEMORY}" -Xmx"${SPARK_EXECUTOR_MEMORY}" \
  -cp "${SPARK_CONF_DIR:-$spark_home/conf}:$spark_home/jars/*${SPARK_CLASSPATH:+:$SPARK_CLASSPATH}" \
  org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
  --driver-url "${SPARK_DRIVER_URL}" \
  --executor-id "${SPARK_EXECUTOR_ID}" \
  --cores "${SPARK_EXECUTOR_CORES}" \
  --app-id "${SPARK_APPLICATION_ID}" \
  --hostname "${SPARK_EXECUTOR_POD_IP}" \
  --resourceProfileId "${SPARK_RESOURCE_PROFILE_ID}" \
  --podName "${SPARK_EXECUTOR_POD_NAME}"
