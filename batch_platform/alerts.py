"""Alerts: what went wrong, where to look, and resources that deliver it (a local JSON-lines file, a Slack webhook).

Both resources render an ``Alert`` with the same formatting, so the file on a laptop shows what Slack would say.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from batch_platform.settings import data_dir

# Slack's limits: header text 150 characters, a section's text 3,000, a field's text 2,000, 10 fields a section.
SLACK_HEADER_LIMIT = 150
SLACK_SECTION_LIMIT = 3000
SLACK_FIELD_LIMIT = 2000
ASSET_KEYS_SHOWN = 20
# Keeps a flapping webhook from holding the sensor tick for long: at most this many seconds between attempts.
MAX_BACKOFF_SECONDS = 5.0
ERROR_BODY_SHOWN = 300


class AlertSeverity(StrEnum):
    CRITICAL = "critical"
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True)
class Alert:
    """One thing someone should look at. ``partition`` is a key or a range written ``start...end``."""

    title: str
    error_message: str
    severity: AlertSeverity = AlertSeverity.ERROR
    run_id: str | None = None
    job_name: str | None = None
    asset_keys: tuple[str, ...] = ()
    partition: str | None = None
    backfill_id: str | None = None
    link: str | None = None
    action: str | None = None  # what the operator can do about it

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "severity": self.severity.value, "asset_keys": list(self.asset_keys)}


class AlertDeliveryError(RuntimeError):
    """An alert could not be delivered."""


def _shown_asset_keys(asset_keys: tuple[str, ...]) -> str:
    shown = ", ".join(asset_keys[:ASSET_KEYS_SHOWN])
    hidden = len(asset_keys) - ASSET_KEYS_SHOWN
    return f"{shown} (+{hidden} more)" if hidden > 0 else shown


def _facts(alert: Alert) -> list[tuple[str, str]]:
    """The labelled facts of an alert, in the order people read them; absent facts are left out."""
    facts = [
        ("Severity", alert.severity.value),
        ("Run", alert.run_id),
        ("Job", alert.job_name),
        ("Assets", _shown_asset_keys(alert.asset_keys) if alert.asset_keys else None),
        ("Partition", alert.partition),
        ("Backfill", alert.backfill_id),
        ("Link", alert.link),
    ]
    return [(label, value) for label, value in facts if value]


def alert_text(alert: Alert) -> str:
    """Plain-text rendering: the log file's ``text`` and the Slack notification's fallback."""
    lines = [f"[{alert.severity.value.upper()}] {alert.title}"]
    lines += [f"{label}: {value}" for label, value in _facts(alert)]
    lines += ["Error:", alert.error_message]
    if alert.action:
        lines += ["What to do:", alert.action]
    return "\n".join(lines)


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _mrkdwn_escape(text: str) -> str:
    # Slack reads &, < and > as control characters in mrkdwn.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(alert: Alert, channel: str | None = None) -> dict[str, Any]:
    """The incoming-webhook message: ``text`` for notifications, ``blocks`` for the message itself."""
    fields = []
    for label, value in _facts(alert):
        if label == "Link":
            continue
        shown = _mrkdwn_escape(value)
        if label == "Run" and alert.link:
            shown = f"<{alert.link}|{shown}>"
        elif label == "Job":  # job names like __ASSET_JOB would read as mrkdwn emphasis
            shown = f"`{shown}`"
        fields.append({"type": "mrkdwn", "text": _truncate(f"*{label}*\n{shown}", SLACK_FIELD_LIMIT)})
    # A code block must not be closed early by backticks inside the error.
    error = _mrkdwn_escape(alert.error_message).replace("```", "`\u200b``")
    error_block = _truncate(error, SLACK_SECTION_LIMIT - len("*Error*\n``````"))
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _truncate(alert.title, SLACK_HEADER_LIMIT)}},
        {"type": "section", "fields": fields[:10]},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*Error*\n```{error_block}```"}},
    ]
    if alert.action:
        action = _truncate(_mrkdwn_escape(alert.action), SLACK_SECTION_LIMIT - len("*What to do*\n"))
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*What to do*\n{action}"}})
    if alert.link:
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"<{alert.link}|Open the run in Dagster>"}]}
        )
    notification = _truncate(_mrkdwn_escape(alert_text(alert)), SLACK_SECTION_LIMIT)
    payload: dict[str, Any] = {"text": notification, "blocks": blocks}
    if channel:
        payload["channel"] = channel
    return payload


class AlertsResource(dg.ConfigurableResource):
    """Where alerts go. Sensors depend on this type; the deployment chooses the implementation."""

    def send(self, alert: Alert) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not deliver alerts; use LogFileAlerts or WebhookAlerts")


class LogFileAlerts(AlertsResource):
    """Appends one JSON line per alert to a local file: alerting for laptops and CI, readable with ``jq``."""

    path: str | None = Field(default=None, description="JSON-lines file; default <data dir>/alerts/alerts.jsonl")

    def alerts_file(self) -> Path:
        return Path(self.path) if self.path else data_dir() / "alerts" / "alerts.jsonl"

    def send(self, alert: Alert) -> None:
        target = self.alerts_file()
        target.parent.mkdir(parents=True, exist_ok=True)
        record = {"sent_at": datetime.now(UTC).isoformat(), **alert.to_dict(), "text": alert_text(alert)}
        # One write of one whole line, so concurrent senders do not interleave within a line.
        with target.open("a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")


class WebhookAlerts(AlertsResource):
    """POSTs a Slack incoming-webhook message, retrying 429, 5xx and connection errors with a short backoff.

    The URL is a secret: set it with ``dg.EnvVar``. Errors name the HTTP status, never the URL.
    """

    url: str = Field(description="incoming-webhook URL (secret); http or https")
    timeout_seconds: float = Field(default=10, description="timeout of each attempt")
    channel: str | None = Field(default=None, description="channel override, for webhooks that honour it")
    max_attempts: int = Field(default=3, description="attempts before giving up, the first one included")
    backoff_seconds: float = Field(default=1.0, description="wait after the first failed attempt; doubles each time")

    def send(self, alert: Alert) -> None:
        if urllib.parse.urlsplit(self.url).scheme not in ("http", "https"):
            raise AlertDeliveryError("the alert webhook URL must start with http:// or https://")
        body = json.dumps(slack_payload(alert, channel=self.channel)).encode()
        attempts = max(1, self.max_attempts)
        for attempt in range(1, attempts + 1):
            failure, retry_after = self._post_once(body)
            if failure is None:
                return
            if retry_after is None:
                raise AlertDeliveryError(failure)
            if attempt == attempts:
                raise AlertDeliveryError(f"{failure} (after {attempts} attempts)")
            backoff = self.backoff_seconds * 2 ** (attempt - 1)
            time.sleep(min(max(backoff, retry_after), MAX_BACKOFF_SECONDS))
        raise AssertionError("unreachable: the loop returns or raises")

    def _post_once(self, body: bytes) -> tuple[str | None, float | None]:
        """(None, None) when delivered; else what failed and, if worth retrying, the wait the server asked for."""
        request = urllib.request.Request(
            self.url, data=body, method="POST", headers={"Content-Type": "application/json; charset=utf-8"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                status = response.status
                answer = response.read()
        except urllib.error.HTTPError as error:
            status, answer = error.code, error.read()
            retry_after_header = error.headers.get("Retry-After") if error.headers else None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            reason = getattr(error, "reason", error)
            return f"could not reach the alert webhook: {type(reason).__name__}: {reason}", 0.0
        else:
            retry_after_header = None
        if 200 <= status < 300:
            return None, None
        failure = f"alert webhook answered HTTP {status}: {answer[:ERROR_BODY_SHOWN].decode(errors='replace')!r}"
        if status == 429 or status >= 500:
            return failure, _seconds(retry_after_header)
        return failure, None


def _seconds(retry_after: str | None) -> float:
    try:
        return float(retry_after) if retry_after else 0.0
    except ValueError:  # an HTTP date: not worth parsing for a bounded wait
        return 0.0
