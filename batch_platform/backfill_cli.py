"""`batch-platform backfill`: one Dagster asset backfill over a date range, submitted to the webserver and followed.

Dagster's CLI has no asset backfill (``dagster job backfill`` ignores BackfillPolicy), so this command resolves an
asset selection against this code location, works out each asset's partition keys in [--from, --to] from its own
partitions definition, submits ONE asset backfill through the webserver's GraphQL API (the daemon then launches its
runs, honouring each asset's BackfillPolicy) and polls it until it ends.

Exit codes: 0 the backfill succeeded (or was submitted, with --no-wait), 1 it failed, was canceled or could not be
launched, 2 bad input, 3 the webserver could not be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as clock
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

import dagster as dg
import yaml

WEBSERVER_URL_ENV = "DAGSTER_WEBSERVER_URL"
DEFAULT_WEBSERVER_URL = "http://127.0.0.1:3000"

EXIT_SUCCESS = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_UNREACHABLE = 3

# The line that announces the submitted backfill; scripts (and the tests) read the id from it.
BACKFILL_ID_PREFIX = "backfill id: "

# BulkActionStatus values (dagster_graphql schema) that end a backfill, and the ones that mean it succeeded.
TERMINAL_STATUSES = frozenset({"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"})
SUCCESS_STATUSES = frozenset({"COMPLETED", "COMPLETED_SUCCESS"})
RUN_IN_PROGRESS_STATUSES = frozenset({"QUEUED", "NOT_STARTED", "MANAGED", "STARTING", "STARTED", "SUSPENDED"})
RUN_FAILED_STATUSES = frozenset({"FAILURE", "CANCELING", "CANCELED"})

# Dagster refuses longer titles or these characters (dagster._core.definitions.utils.is_valid_title_and_reason).
MAX_TITLE_LENGTH = 100
INVALID_TITLE_CHARACTERS = re.compile(r'[%*"]')

LAUNCH_BACKFILL_MUTATION = """
mutation LaunchAssetBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
    ... on PythonError { className stack }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { stepKey invalidOutputName }
  }
}
"""

BACKFILL_PROGRESS_QUERY = """
query AssetBackfillProgress($backfillId: String!) {
  partitionBackfillOrError(backfillId: $backfillId) {
    __typename
    ... on PartitionBackfill {
      id
      status
      numCancelable
      error { message className stack }
      runs { runId status }
      assetBackfillData {
        assetBackfillStatuses {
          __typename
          ... on AssetPartitionsStatusCounts {
            assetKey { path }
            numPartitionsTargeted
            numPartitionsInProgress
            numPartitionsMaterialized
            numPartitionsFailed
          }
          ... on UnpartitionedAssetStatus { assetKey { path } inProgress materialized failed }
        }
      }
    }
    ... on Error { message }
    ... on PythonError { className stack }
  }
}
"""


class BackfillInputError(Exception):
    """The command's input cannot make a backfill: exit code 2."""


class WebserverUnreachable(Exception):
    """No HTTP answer from the webserver: exit code 3."""

    def __init__(self, url: str, reason: object) -> None:
        super().__init__(f"cannot reach the Dagster webserver at {url}: {reason}")
        self.url = url


class GraphQLFailure(Exception):
    """The webserver answered with a GraphQL error; the message is Dagster's, verbatim."""


@dataclass(frozen=True)
class AssetPartitions:
    """The contiguous run of one asset's partition keys that the backfill targets."""

    asset_key: dg.AssetKey
    partition_keys: tuple[str, ...]

    def graphql_input(self) -> dict[str, Any]:
        return {
            "assetKey": {"path": list(self.asset_key.path)},
            "partitions": {"range": {"start": self.partition_keys[0], "end": self.partition_keys[-1]}},
        }


@dataclass(frozen=True)
class BackfillPlan:
    """What one asset backfill will target, resolved locally before anything is submitted."""

    selection: str
    first_day: date
    last_day: date
    downstream: bool
    assets: tuple[AssetPartitions, ...]

    @property
    def num_asset_partitions(self) -> int:
        return sum(len(a.partition_keys) for a in self.assets)

    def partitions_by_assets(self) -> list[dict[str, Any]]:
        return [a.graphql_input() for a in self.assets]

    def description(self) -> str:
        downstream = " and everything downstream" if self.downstream else ""
        return f"batch-platform backfill of {self.selection}{downstream}, {self.first_day} to {self.last_day}"


@dataclass(frozen=True)
class BackfillProgress:
    """One poll of a backfill: its status, partitions summed over its assets, and its runs."""

    backfill_id: str
    status: str
    partitions_targeted: int
    partitions_materialized: int
    partitions_failed: int
    partitions_in_progress: int
    runs_succeeded: int
    runs_failed: int
    runs_in_progress: int
    error: str | None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.status in SUCCESS_STATUSES

    @property
    def runs(self) -> int:
        return self.runs_succeeded + self.runs_failed + self.runs_in_progress

    def summary(self) -> str:
        return (
            f"{self.status}: partitions {self.partitions_materialized}/{self.partitions_targeted} materialized, "
            f"{self.partitions_failed} failed, {self.partitions_in_progress} in progress; "
            f"runs {self.runs_succeeded} succeeded, {self.runs_failed} failed, {self.runs_in_progress} in progress"
        )


def _day_start(day: date, timezone: str) -> datetime:
    return datetime.combine(day, clock.min, tzinfo=ZoneInfo(timezone))


def _partition_day(partitions_def: dg.TimeWindowPartitionsDefinition, key: str) -> date:
    return partitions_def.time_window_for_partition_key(key).start.date()


def partition_keys_between(
    asset_key: dg.AssetKey, partitions_def: dg.PartitionsDefinition | None, first_day: date, last_day: date
) -> tuple[str, ...]:
    """The asset's partition keys whose window starts in [first_day, last_day], from its own partitions definition
    (so a business-day asset skips weekends); refuses dates outside the asset's partitions."""
    name = asset_key.to_user_string()
    if partitions_def is None:
        raise BackfillInputError(f"{name} is not partitioned: a date-range backfill cannot target it")
    if not isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
        raise BackfillInputError(
            f"{name} is partitioned by {partitions_def}, not by date: --from/--to cannot select its partitions"
        )
    first_window = partitions_def.get_first_partition_window()
    last_window = partitions_def.get_last_partition_window()
    if first_window is None or last_window is None:
        raise BackfillInputError(f"{name} has no partitions yet")
    first_partition, last_partition = first_window.start.date(), last_window.start.date()
    if first_day < first_partition or last_day > last_partition:
        raise BackfillInputError(
            f"{first_day}..{last_day} is outside the partitions of {name}: "
            f"its first partition is {first_partition}, its last {last_partition}"
        )
    window = dg.TimeWindow(
        _day_start(first_day, partitions_def.timezone),
        _day_start(last_day + timedelta(days=1), partitions_def.timezone),
    )
    # The window holding first_day may start before it (a Saturday lies in Friday's business-day window).
    keys = tuple(
        key
        for key in partitions_def.get_partition_keys_in_time_window(window)
        if first_day <= _partition_day(partitions_def, key) <= last_day
    )
    if not keys:
        raise BackfillInputError(f"{name} has no partition between {first_day} and {last_day}")
    return keys


def plan_backfill(
    defs: dg.Definitions, selection: str, first_day: date, last_day: date, *, downstream: bool = False
) -> BackfillPlan:
    """Resolve ``selection`` (Dagster's asset selection syntax) against ``defs`` and each selected asset's
    partition keys in [first_day, last_day]; raises BackfillInputError when that makes no valid backfill."""
    if first_day > last_day:
        raise BackfillInputError(f"--from {first_day} is after --to {last_day}")
    graph = defs.resolve_asset_graph()
    try:
        parsed = dg.AssetSelection.from_string(selection)
        if downstream:
            parsed = parsed.downstream()
        keys = set(parsed.resolve(graph))
    except dg.DagsterError as error:
        raise BackfillInputError(f"invalid asset selection {selection!r}: {error}") from error
    if not keys:
        raise BackfillInputError(f"asset selection {selection!r} matches no asset of this code location")
    for key in list(keys):
        # Assets of a multi-asset that cannot be subset are materialized together: target them together.
        keys |= set(graph.get(key).execution_set_asset_keys)
    not_materializable = sorted(k.to_user_string() for k in keys if not graph.get(k).is_materializable)
    if not_materializable:
        raise BackfillInputError(f"not materializable, so not backfillable: {', '.join(not_materializable)}")
    assets = tuple(
        AssetPartitions(key, partition_keys_between(key, graph.get(key).partitions_def, first_day, last_day))
        for key in sorted(keys, key=lambda k: k.to_user_string())
    )
    return BackfillPlan(selection, first_day, last_day, downstream, assets)


def webserver_url(configured: str | None = None) -> str:
    """--url, else $DAGSTER_WEBSERVER_URL (read now, not at import), else the local default."""
    return (configured or os.environ.get(WEBSERVER_URL_ENV) or DEFAULT_WEBSERVER_URL).rstrip("/")


def backfill_ui_url(base_url: str, backfill_id: str) -> str:
    return f"{base_url.rstrip('/')}/runs/b/{backfill_id}"


def _python_error_text(error: Mapping[str, Any]) -> str:
    name = error.get("className") or error.get("__typename") or "PythonError"
    return f"{name}: {error.get('message', '')}".rstrip() + "\n" + "".join(error.get("stack") or [])


def _graphql_errors_text(errors: Sequence[Mapping[str, Any]]) -> str:
    return "\n".join(str(e.get("message", e)) for e in errors)


class DagsterWebserverClient:
    """The two GraphQL operations the command needs, over stdlib HTTP, with variables (never built query text)."""

    def __init__(self, url: str, timeout_seconds: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_seconds = timeout_seconds

    def execute(self, query: str, variables: Mapping[str, Any]) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": dict(variables)}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                payload = json.loads(response.read())
        except urllib.error.HTTPError as error:
            # GraphQL validation errors come back as HTTP 4xx with the errors in the body.
            text = error.read().decode(errors="replace")
            try:
                errors = json.loads(text).get("errors") or []
            except ValueError:
                errors = []
            raise GraphQLFailure(
                _graphql_errors_text(errors) or f"HTTP {error.code} from {self.url}/graphql: {text}"
            ) from error
        except (urllib.error.URLError, OSError) as error:
            raise WebserverUnreachable(self.url, getattr(error, "reason", error)) from error
        if payload.get("errors"):
            raise GraphQLFailure(_graphql_errors_text(payload["errors"]))
        data: dict[str, Any] = payload["data"]
        return data

    def launch_backfill(
        self,
        plan: BackfillPlan,
        *,
        title: str | None = None,
        tags: Mapping[str, str] | None = None,
        run_config: Mapping[str, Any] | None = None,
    ) -> str:
        params: dict[str, Any] = {
            "partitionsByAssets": plan.partitions_by_assets(),
            "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()],
            "description": plan.description(),
        }
        if title:
            params["title"] = title
        if run_config:
            params["runConfigData"] = dict(run_config)
        result = self.execute(LAUNCH_BACKFILL_MUTATION, {"backfillParams": params})["launchPartitionBackfill"]
        kind = result["__typename"]
        if kind == "LaunchBackfillSuccess":
            return str(result["backfillId"])
        if kind == "PythonError":
            raise GraphQLFailure(_python_error_text(result))
        if kind == "RunConfigValidationInvalid":
            raise GraphQLFailure(f"{kind}: " + "; ".join(e["message"] for e in result["errors"]))
        details = {k: v for k, v in result.items() if k != "__typename"}
        raise GraphQLFailure(f"{kind}: {details.get('message', details)}")

    def backfill_progress(self, backfill_id: str) -> BackfillProgress:
        result = self.execute(BACKFILL_PROGRESS_QUERY, {"backfillId": backfill_id})["partitionBackfillOrError"]
        kind = result["__typename"]
        if kind == "PythonError":
            raise GraphQLFailure(_python_error_text(result))
        if kind != "PartitionBackfill":
            raise GraphQLFailure(f"{kind}: {result.get('message', result)}")
        counts = {"targeted": 0, "materialized": 0, "failed": 0, "in_progress": 0}
        for status in (result.get("assetBackfillData") or {}).get("assetBackfillStatuses", []):
            if status["__typename"] == "AssetPartitionsStatusCounts":
                counts["targeted"] += status["numPartitionsTargeted"]
                counts["materialized"] += status["numPartitionsMaterialized"]
                counts["failed"] += status["numPartitionsFailed"]
                counts["in_progress"] += status["numPartitionsInProgress"]
            else:  # an unpartitioned asset counts as one
                counts["targeted"] += 1
                counts["materialized"] += int(status["materialized"])
                counts["failed"] += int(status["failed"])
                counts["in_progress"] += int(status["inProgress"])
        run_statuses = [run["status"] for run in result["runs"]]
        error = result.get("error")
        return BackfillProgress(
            backfill_id=backfill_id,
            status=result["status"],
            partitions_targeted=counts["targeted"],
            partitions_materialized=counts["materialized"],
            partitions_failed=counts["failed"],
            partitions_in_progress=counts["in_progress"],
            runs_succeeded=sum(s == "SUCCESS" for s in run_statuses),
            runs_failed=sum(s in RUN_FAILED_STATUSES for s in run_statuses),
            runs_in_progress=sum(s in RUN_IN_PROGRESS_STATUSES for s in run_statuses),
            error=_python_error_text(error) if error else None,
        )


def follow_backfill(
    client: DagsterWebserverClient,
    backfill_id: str,
    *,
    poll_seconds: float,
    out: TextIO,
    unreachable_grace_seconds: float = 120.0,
    sleep: Callable[[float], None] = time.sleep,
) -> BackfillProgress:
    """Poll until the backfill ends, printing a line whenever its progress changes. A webserver that stops answering
    is retried for ``unreachable_grace_seconds`` (a restart) before WebserverUnreachable is raised."""
    last_line = None
    unreachable_since: float | None = None
    while True:
        try:
            progress = client.backfill_progress(backfill_id)
        except WebserverUnreachable:
            now = time.monotonic()
            unreachable_since = unreachable_since or now
            if now - unreachable_since > unreachable_grace_seconds:
                raise
            sleep(poll_seconds)
            continue
        unreachable_since = None
        line = progress.summary()
        if line != last_line:
            print(f"[{datetime.now():%H:%M:%S}] {line}", file=out, flush=True)
            last_line = line
        if progress.is_terminal:
            return progress
        sleep(poll_seconds)


def _tag(text: str) -> tuple[str, str]:
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"a tag is key=value, got {text!r}")
    return key, value


def _title(text: str) -> str:
    if len(text) > MAX_TITLE_LENGTH or INVALID_TITLE_CHARACTERS.search(text):
        raise argparse.ArgumentTypeError(f'a title has at most {MAX_TITLE_LENGTH} characters and none of % * "')
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batch-platform backfill",
        description="Submit ONE Dagster asset backfill over a date range to the webserver and follow it to its end.",
        epilog="Exit codes: 0 succeeded, 1 failed/canceled/not launched, 2 bad input, 3 webserver unreachable.",
    )
    parser.add_argument(
        "selection", help="Dagster asset selection, e.g. 'group:<domain>_raw', 'key:\"raw/*\"', 'key:core/loans+'"
    )
    parser.add_argument("--from", dest="first_day", type=date.fromisoformat, required=True, help="first day, ISO")
    parser.add_argument("--to", dest="last_day", type=date.fromisoformat, required=True, help="last day, ISO")
    parser.add_argument("--downstream", action="store_true", help="also backfill everything downstream")
    parser.add_argument("--url", help=f"webserver URL (default ${WEBSERVER_URL_ENV}, else {DEFAULT_WEBSERVER_URL})")
    parser.add_argument("--title", type=_title, help="title shown in the UI")
    parser.add_argument("--tag", type=_tag, action="append", default=[], metavar="KEY=VALUE", help="backfill tag")
    parser.add_argument(
        "--run-config",
        type=_run_config,
        metavar="PATH",
        help="YAML run config applied to every run of the backfill (e.g. the executor)",
    )
    parser.add_argument("--no-wait", action="store_true", help="exit once the backfill is submitted")
    parser.add_argument("--poll-seconds", type=float, default=10.0, help="seconds between progress polls")
    return parser


def _run_config(path: str) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise argparse.ArgumentTypeError(f"cannot read run config {path}: {error}") from error
    if not isinstance(loaded, dict):
        raise argparse.ArgumentTypeError(f"run config {path} is not a mapping")
    return loaded


def run(args: argparse.Namespace, defs: dg.Definitions, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """The command on parsed arguments and loaded definitions; returns the exit code."""
    # Looked up per call, not bound at import, so a redirected stdout (tests, wrappers) is honoured.
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        plan = plan_backfill(defs, args.selection, args.first_day, args.last_day, downstream=args.downstream)
    except BackfillInputError as error:
        print(f"batch-platform backfill: {error}", file=err)
        return EXIT_BAD_INPUT
    print(
        f"backfill of {len(plan.assets)} assets, {plan.num_asset_partitions} asset partitions "
        f"({plan.first_day} to {plan.last_day}):",
        file=out,
    )
    for asset in plan.assets:
        keys = asset.partition_keys
        print(f"  {asset.asset_key.to_user_string()}: {len(keys)} partitions, {keys[0]}..{keys[-1]}", file=out)
    client = DagsterWebserverClient(webserver_url(args.url))
    try:
        backfill_id = client.launch_backfill(plan, title=args.title, tags=dict(args.tag), run_config=args.run_config)
        print(f"{BACKFILL_ID_PREFIX}{backfill_id}", file=out)
        print(f"backfill url: {backfill_ui_url(client.url, backfill_id)}", file=out, flush=True)
        if args.no_wait:
            return EXIT_SUCCESS
        progress = follow_backfill(client, backfill_id, poll_seconds=args.poll_seconds, out=out)
    except WebserverUnreachable as error:
        print(f"batch-platform backfill: {error}", file=err)
        return EXIT_UNREACHABLE
    except GraphQLFailure as error:
        print(f"batch-platform backfill: the webserver refused: {error}", file=err)
        return EXIT_FAILED
    if progress.error:
        print(progress.error, file=err)
    outcome = "succeeded" if progress.succeeded else "did not succeed"
    print(f"backfill {backfill_id} {outcome}: {progress.summary()}", file=out, flush=True)
    return EXIT_SUCCESS if progress.succeeded else EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``batch-platform backfill``: loads this code location's definitions, then runs the command."""
    args = build_parser().parse_args(argv)
    from batch_platform.domain import load_platform  # the composition root, loaded only when run

    return run(args, load_platform().build_definitions())


if __name__ == "__main__":
    sys.exit(main())
