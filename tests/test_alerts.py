"""Run-failure alerts: real failed runs on a real Dagster instance, a real file, a real local HTTP server."""

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from batch_platform.alerts import AlertDeliveryError, AlertsResource, LogFileAlerts, WebhookAlerts
from batch_platform.failure_sensor import build_run_failure_alert_sensor
from batch_platform.settings import DATA_DIR_ENV

DAYS = dg.DailyPartitionsDefinition(start_date="2024-01-01")
FAILURE_TEXT = "loan book for the day has 0 rows"
WEBSERVER = "https://dagster.example.com/"


@dg.asset(key_prefix="alerts_test", partitions_def=DAYS)
def exploding_book() -> None:
    raise ValueError(FAILURE_TEXT)


@dg.asset(key_prefix="alerts_test", partitions_def=DAYS)
def healthy_book() -> None:
    return None


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as test_instance:
        yield test_instance


def _failed_run(instance: dg.DagsterInstance, partition_key: str) -> dg.ExecuteInProcessResult:
    result = dg.materialize([exploding_book], instance=instance, partition_key=partition_key, raise_on_error=False)
    assert not result.success
    return result


def _alert_on(instance: dg.DagsterInstance, failed: dg.ExecuteInProcessResult, alerts: AlertsResource) -> None:
    """Evaluate the sensor on one failed run, with the resource the definitions would bind to ``alerts``."""
    sensor = build_run_failure_alert_sensor(webserver_base_url=WEBSERVER)
    with dg.build_run_status_sensor_context(
        sensor_name=sensor.name,
        dagster_event=failed.get_run_failure_event(),
        dagster_instance=instance,
        dagster_run=failed.dagster_run,
        resources={"alerts": alerts},
    ) as context:
        sensor(context)


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


class _ScriptedWebhook(BaseHTTPRequestHandler):
    """Answers POSTs with the server's scripted statuses (the last one repeats) and keeps every JSON body."""

    def do_POST(self) -> None:
        server: Any = self.server
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server.received.append(json.loads(body))
        status = server.statuses[min(len(server.received), len(server.statuses)) - 1]
        self.send_response(status)
        self.end_headers()
        self.wfile.write(b"ok" if status < 300 else b"upstream trouble")

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        return None


@pytest.fixture
def webhook_server() -> Iterator[Any]:
    """A real HTTP server on 127.0.0.1 and a random port; set ``.statuses`` before posting."""
    server: Any = ThreadingHTTPServer(("127.0.0.1", 0), _ScriptedWebhook)
    server.statuses, server.received = [200], []
    server.url = f"http://127.0.0.1:{server.server_address[1]}/services/T000/B000/secret"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def test_failed_partition_run_writes_an_alert_line_naming_run_asset_partition_and_error(
    instance: dg.DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Made before the data dir is set: the default file must be resolved when alerting, not when configuring.
    alerts = LogFileAlerts()
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    failed = _failed_run(instance, "2024-01-03")

    _alert_on(instance, failed, alerts)

    [line] = _lines(tmp_path / "alerts" / "alerts.jsonl")
    run_id = failed.dagster_run.run_id
    assert line["run_id"] == run_id
    assert line["asset_keys"] == ["alerts_test/exploding_book"]
    assert line["partition"] == "2024-01-03"
    assert line["severity"] == "error"
    assert line["link"] == f"https://dagster.example.com/runs/{run_id}"
    # The failed step and the user's exception, not Dagster's wrapper or a bare "run failed".
    assert (
        f"step alerts_test__exploding_book (alerts_test/exploding_book): ValueError: {FAILURE_TEXT}"
        in (line["error_message"])
    )
    assert "DagsterExecutionStepExecutionError" not in line["error_message"]
    assert "2024-01-03" in line["title"] and "alerts_test/exploding_book" in line["title"]
    assert FAILURE_TEXT in line["text"] and run_id in line["text"]


def test_webhook_posts_a_slack_message_with_the_same_facts(instance: dg.DagsterInstance, webhook_server: Any) -> None:
    failed = _failed_run(instance, "2024-01-04")

    _alert_on(instance, failed, WebhookAlerts(url=webhook_server.url, channel="#lending-oncall"))

    [message] = webhook_server.received
    run_id = failed.dagster_run.run_id
    assert message["channel"] == "#lending-oncall"
    # The notification text alone carries every fact, for clients that do not render blocks.
    for fact in (run_id, "alerts_test/exploding_book", "2024-01-04", FAILURE_TEXT):
        assert fact in message["text"]
    header, facts, error = message["blocks"][:3]
    assert header["type"] == "header" and header["text"]["type"] == "plain_text"
    assert "alerts_test/exploding_book" in header["text"]["text"]
    field_texts = {field["text"].split("\n")[0]: field["text"] for field in facts["fields"]}
    assert field_texts["*Run*"] == f"*Run*\n<https://dagster.example.com/runs/{run_id}|{run_id}>"
    assert field_texts["*Partition*"] == "*Partition*\n2024-01-04"
    assert field_texts["*Assets*"] == "*Assets*\nalerts_test/exploding_book"
    assert error["text"]["type"] == "mrkdwn" and f"ValueError: {FAILURE_TEXT}" in error["text"]["text"]


def test_webhook_retries_server_errors_and_delivers_the_alert_once(
    instance: dg.DagsterInstance, webhook_server: Any
) -> None:
    webhook_server.statuses = [500, 500, 200]
    failed = _failed_run(instance, "2024-01-05")

    _alert_on(instance, failed, WebhookAlerts(url=webhook_server.url, backoff_seconds=0.01))

    # Two refused attempts, then one delivery; nothing is posted after the success.
    assert len(webhook_server.received) == 3
    assert webhook_server.received[0] == webhook_server.received[2]
    assert failed.dagster_run.run_id in webhook_server.received[2]["text"]


def test_webhook_that_keeps_failing_raises_an_error_naming_the_status(
    instance: dg.DagsterInstance, webhook_server: Any
) -> None:
    webhook_server.statuses = [500]
    failed = _failed_run(instance, "2024-01-05")

    with pytest.raises(AlertDeliveryError, match=r"HTTP 500.*upstream trouble.*after 3 attempts") as raised:
        _alert_on(instance, failed, WebhookAlerts(url=webhook_server.url, backoff_seconds=0.01))

    assert len(webhook_server.received) == 3
    assert "secret" not in str(raised.value)  # the webhook URL is a credential


def test_webhook_does_not_retry_a_client_error(webhook_server: Any, instance: dg.DagsterInstance) -> None:
    webhook_server.statuses = [404]
    failed = _failed_run(instance, "2024-01-05")

    with pytest.raises(AlertDeliveryError, match="HTTP 404"):
        _alert_on(instance, failed, WebhookAlerts(url=webhook_server.url, backoff_seconds=0.01))

    assert len(webhook_server.received) == 1


def test_sensor_ticks_alert_on_failed_runs_only_with_their_partition_range_and_backfill(
    instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    alerts_file = tmp_path / "oncall.jsonl"
    sensor = build_run_failure_alert_sensor(name="oncall_failures", alerts_resource_key="oncall")
    resources = {"oncall": LogFileAlerts(path=str(alerts_file))}
    defs = dg.Definitions(assets=[exploding_book, healthy_book], sensors=[sensor], resources=resources)
    loaded_sensor = defs.resolve_sensor_def("oncall_failures")
    assert loaded_sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert loaded_sensor.required_resource_keys == {"oncall"}
    # Evaluated the way the daemon does: the first tick sets the cursor, later ticks see new run status events; the
    # daemon hands the sensor the definitions' resources it requires.
    context = dg.build_sensor_context(instance=instance, resources=resources)
    loaded_sensor.evaluate_tick(context)

    succeeded = dg.materialize([healthy_book], instance=instance, partition_key="2024-01-02")
    assert succeeded.success
    range_tags = {
        "dagster/asset_partition_range_start": "2024-01-08",
        "dagster/asset_partition_range_end": "2024-01-10",
        "dagster/backfill": "bkfl_abc",
    }
    failed = dg.materialize([exploding_book], instance=instance, tags=range_tags, raise_on_error=False)
    assert not failed.success
    loaded_sensor.evaluate_tick(context)

    [line] = _lines(alerts_file)
    assert line["run_id"] == failed.dagster_run.run_id
    assert line["partition"] == "2024-01-08...2024-01-10"
    assert line["backfill_id"] == "bkfl_abc"
    assert FAILURE_TEXT in line["error_message"]

    # A later tick does not alert on the same failure again.
    loaded_sensor.evaluate_tick(context)
    assert len(_lines(alerts_file)) == 1


def test_a_failed_step_alert_says_to_fix_the_cause_first_and_how_to_re_execute(
    instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    path = tmp_path / "alerts.jsonl"
    failed = _failed_run(instance, "2024-01-05")
    _alert_on(instance, failed, LogFileAlerts(path=str(path)))
    [line] = _lines(path)
    run_id = failed.dagster_run.run_id
    action = line["action"]
    # A step that raised is not retried automatically (retries are for crashes): re-running unchanged fails again.
    assert action.startswith("Fix the cause in the error above first")
    assert f"Runs > {run_id} > Re-execute > From failure" in action
    assert (
        "batch-platform backfill 'key:alerts_test/exploding_book' --from 2024-01-05 --to 2024-01-05 --downstream"
        in action
    )
    assert f"What to do:\n{action}" in line["text"]
