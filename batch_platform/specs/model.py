"""The spec file format: one YAML file per dataset, checked field by field by pydantic (unknown fields refused).

    table: reporting.merchant_performance          # namespace.name of the table the dataset writes
    description: Per merchant as of the business date ...
    owners: [team:lending-analytics]
    partitions: lending_business_days              # a name the domain's catalog defines; omit for a whole table
    partition_column: business_date                # a `date not null` column holding the partition key
    columns:                                       # name: type [not null]
      business_date: date not null
      merchant_id: long not null
      principal_originated: decimal(18,2) not null
    inputs:                                        # name the SQL uses: table it reads, window of partitions
      status: {table: core.loan_daily_status, window: this_partition}
    sql: |
      SELECT business_date, merchant_id, ... FROM status GROUP BY business_date, merchant_id
    compute: small                                 # a registered compute profile
    backfill: {max_partitions_per_run: 23}         # or {single_run: true}; omit for one run per partition
    freshness: {cron: "0 10 * * 1-5", lower_bound_hours: 10, timezone: America/New_York}
                                                   # or {fail_after_hours: 36, warn_after_hours: 24}
    audits:
      unique: [business_date, merchant_id]
      not_null: [merchant_id]
      rows_satisfy:
        - {name: positive, description: ..., condition: "principal_originated >= 0", blocking: true}

Windows: ``this_partition``, ``previous`` or ``previous:N``, ``up_to_this_partition``, ``whole_table``,
``pinned:ref=NAME`` or ``pinned:snapshot=ID`` (batch_platform.inputs).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from batch_platform.inputs import Window, pinned, previous, this_partition, up_to_this_partition, whole_table

WINDOWS = "this_partition, previous:N, up_to_this_partition, whole_table, pinned:ref=NAME, pinned:snapshot=ID"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_window(text: str) -> Window:
    """``previous:3`` -> previous(3); raises ValueError naming the windows there are."""
    kind, _, argument = text.strip().partition(":")
    try:
        if kind == "this_partition" and not argument:
            return this_partition()
        if kind == "previous":
            return previous(int(argument) if argument else 1)
        if kind == "up_to_this_partition" and not argument:
            return up_to_this_partition()
        if kind == "whole_table" and not argument:
            return whole_table()
        if kind == "pinned":
            key, _, value = argument.partition("=")
            if key == "ref" and value:
                return pinned(ref=value)
            if key == "snapshot" and value:
                return pinned(snapshot_id=int(value))
    except ValueError as e:
        raise ValueError(f"invalid window {text!r}: {e} (windows: {WINDOWS})") from e
    raise ValueError(f"unknown window {text!r} (windows: {WINDOWS})")


class InputSpec(Strict):
    table: str = Field(description="namespace.name of a lake table: the domain's, or one another spec writes")
    window: str = "this_partition"
    required: bool = False

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        parse_window(value)
        return value


class RowsSatisfySpec(Strict):
    name: str
    description: str
    condition: str = Field(description="a Spark SQL boolean expression over the output columns")
    blocking: bool = True


class AuditsSpec(Strict):
    unique: list[str] = Field(default_factory=list)
    not_null: list[str] = Field(default_factory=list)
    blocking: bool = True  # of unique and not_null
    rows_satisfy: list[RowsSatisfySpec] = Field(default_factory=list)


class FreshnessSpec(Strict):
    cron: str | None = None
    lower_bound_hours: float | None = None
    timezone: str = "UTC"
    fail_after_hours: float | None = None
    warn_after_hours: float | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> FreshnessSpec:
        cron = self.cron is not None and self.lower_bound_hours is not None
        window = self.fail_after_hours is not None
        if cron == window or (cron and self.warn_after_hours is not None):
            raise ValueError("give either cron and lower_bound_hours, or fail_after_hours (and warn_after_hours)")
        return self


class BackfillSpec(Strict):
    single_run: bool = False
    max_partitions_per_run: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_kind(self) -> BackfillSpec:
        if self.single_run == (self.max_partitions_per_run is not None):
            raise ValueError("give either single_run: true or max_partitions_per_run: N")
        return self


class DatasetSpec(Strict):
    table: str = Field(pattern=r"^[A-Za-z_]\w*\.[A-Za-z_]\w*$", description="namespace.name")
    description: str
    owners: list[str] = Field(default_factory=list)
    group: str | None = None
    partitions: str | None = None
    partition_column: str | None = None
    columns: dict[str, str] = Field(min_length=1)
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    sql: str
    compute: str = "small"
    backfill: BackfillSpec | None = None
    freshness: FreshnessSpec | None = None
    audits: AuditsSpec = Field(default_factory=AuditsSpec)
