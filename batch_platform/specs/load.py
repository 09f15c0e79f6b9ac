"""Spec files -> LakeDatasets: parse, check against the catalog and each other, report every problem at once.

Two passes: first every file is parsed and its table declared (so specs may read each other's tables, in any file
order); then each spec's inputs, SQL, partitions, profile and audits are checked and it becomes a ``LakeDataset``
whose transform runs the SQL. Problems are collected across all files and raised together as one ``SpecError``.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import yaml
from pydantic import ValidationError
from pyspark.sql import DataFrame

from batch_platform.audit import Audit, not_null, rows_satisfy, unique
from batch_platform.compute import COMPUTE_PROFILES
from batch_platform.datasets import STEP_PARAMETER, LakeDataset, Step
from batch_platform.inputs import InputWindowError, LakeInput
from batch_platform.lake import LakeTable
from batch_platform.lake.spark_io import spark_schema
from batch_platform.specs import checked
from batch_platform.specs.catalog import SpecCatalog
from batch_platform.specs.checked import CheckedSpec
from batch_platform.specs.columns import ColumnTypeError, parse_column
from batch_platform.specs.errors import SpecError, SpecProblem, dotted, line_of
from batch_platform.specs.model import DatasetSpec, parse_window
from batch_platform.specs.sql import SqlSpecError, condition_columns, shape

SPEC_SUFFIXES = (".yaml", ".yml")
SPEC_FILE_METADATA = "batch_platform/spec_file"
# Parameters of SparkSession.sql, which receives the inputs as keyword arguments, and the transform's own.
RESERVED_INPUT_NAMES = ("args", "sqlQuery", "step")
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser when it is installed
_STR, _MAP, _SEQ = "tag:yaml.org,2002:str", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"


class _Repeated(Exception):
    """Not a plain document (an alias, a merge, a key that is no string or comes twice, another tag): the safe
    constructor builds it."""


class Loader(_SafeLoader):
    """The safe loader, constructing plain documents (string keys, no aliases, merges or duplicate keys) directly.

    PyYAML's constructor builds every node through generators and a per-tag dispatch, which took half of the YAML
    time of a 5,000-spec load; a spec is plain mappings, lists and strings. Every other scalar, and any document
    that is not plain, is constructed by the safe constructor as before, so the result is the same.
    """

    def construct_document(self, node: yaml.Node) -> Any:
        try:
            data = self._plain(node, set())
        except _Repeated:
            return super().construct_document(node)
        self.constructed_objects: dict[Any, Any] = {}  # as the safe constructor leaves them after a document
        self.recursive_objects: dict[Any, Any] = {}
        return data

    def _plain(self, node: yaml.Node, seen: set[int]) -> Any:
        tag = node.tag
        if isinstance(node, yaml.ScalarNode):
            return node.value if tag == _STR else self.construct_object(node, deep=True)
        if id(node) in seen:
            raise _Repeated
        seen.add(id(node))
        if tag == _SEQ and isinstance(node, yaml.SequenceNode):
            return [self._plain(item, seen) for item in node.value]
        if tag == _MAP and isinstance(node, yaml.MappingNode):
            mapping = {}
            for key, value in node.value:
                if key.tag != _STR or not isinstance(key, yaml.ScalarNode) or key.value in mapping:
                    raise _Repeated  # a merge, a non-string or a repeated key: the safe constructor decides
                mapping[key.value] = self._plain(value, seen)
            return mapping
        raise _Repeated


class _Problems:
    """Problems of one file; ``add`` records one and says whether the file is still sound."""

    def __init__(self, path: Path, shown: str) -> None:
        self.path, self.shown, self.found = path, shown, list[SpecProblem]()

    def add(self, location: tuple[Any, ...] | str, message: str) -> None:
        parts = tuple(location.split(".")) if isinstance(location, str) else location
        self.found.append(SpecProblem(self.shown, dotted(parts), message, line_of(self.path, parts)))


@dataclass(frozen=True)
class LoadedSpec:
    path: Path
    shown: str  # the file as messages name it
    spec: DatasetSpec
    table: LakeTable


def spec_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix in SPEC_SUFFIXES and p.is_file())


def _close(word: str, known: Iterable[str]) -> str:
    known = sorted(known)
    near = difflib.get_close_matches(word, known, n=3, cutoff=0.6)
    return (
        f"close matches: {', '.join(near)}"
        if near
        else f"known: {', '.join(known[:8])}" + (", ..." if len(known) > 8 else "")
    )


def _parse(text: str, shown: str, problems: _Problems) -> DatasetSpec | None:
    try:
        raw = yaml.load(text, Loader=Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problems.found.append(
            SpecProblem(shown, "", f"not valid YAML: {getattr(e, 'problem', e)}", mark.line + 1 if mark else None)
        )
        return None
    if not isinstance(raw, dict):
        problems.add((), "a spec is a YAML mapping of fields (table, columns, inputs, sql, ...)")
        return None
    try:
        return DatasetSpec.model_validate(raw)
    except ValidationError as e:
        for error in e.errors():
            location = tuple(p for p in error["loc"] if p not in ("function-after",))
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "unknown field"
            elif error["type"] == "missing":
                message = "required field missing"
            problems.add(location, message)
        return None


def _table(loaded: DatasetSpec, problems: _Problems) -> LakeTable | None:
    fields, sound = [], True
    for name, text in loaded.columns.items():
        try:
            type_, nullable = parse_column(text)
        except ColumnTypeError as e:
            problems.add(("columns", name), str(e))
            sound = False
            continue
        fields.append(pa.field(name, type_, nullable=nullable))
    column = loaded.partition_column
    if (loaded.partitions is None) != (column is None):
        problems.add(
            "partition_column" if column is None else "partitions", "partitions and partition_column go together"
        )
        return None
    if column is not None and column not in loaded.columns:
        problems.add("partition_column", f"{column!r} is not a declared column (columns: {', '.join(loaded.columns)})")
        return None
    if column is not None and sound and loaded.columns[column].split()[0].lower() != "date":
        problems.add(("columns", column), f"the partition column must be of type date, not {loaded.columns[column]!r}")
        return None
    if not sound:
        return None
    namespace, name = loaded.table.split(".")
    return LakeTable(namespace, name, pa.schema(fields), column, loaded.description)


# Spark's name of each Arrow type, converted once per type (a location of thousands of specs has a few types).
_SPARK_TYPE_NAMES: dict[pa.DataType, str] = {}


def _spark_type_name(type_: pa.DataType) -> str:
    name = _SPARK_TYPE_NAMES.get(type_)
    if name is None:
        name = spark_schema(pa.schema([pa.field("c", type_)])).fields[0].dataType.simpleString()
        _SPARK_TYPE_NAMES[type_] = name
    return name


def _input_columns(table: LakeTable) -> dict[str, str]:
    return {f.name: _spark_type_name(f.type) for f in table.schema}


class SqlTransform:
    """The transform of a spec: its SQL over the inputs, each bound to its name for this one query.

    A class with one signature for all (``LakeDataset`` inspects every transform's signature, which is measurable
    for thousands of closures)."""

    __signature__ = inspect.Signature(
        [
            inspect.Parameter(STEP_PARAMETER, inspect.Parameter.POSITIONAL_OR_KEYWORD),
            inspect.Parameter("inputs", inspect.Parameter.VAR_KEYWORD),
        ]
    )

    def __init__(self, template: str, plain_sql: str) -> None:
        self.template, self.plain_sql = template, plain_sql

    def __call__(self, step: Step, **inputs: DataFrame) -> DataFrame:
        return step.session.sql(self.template, None, **inputs) if inputs else step.session.sql(self.plain_sql)


def _check_audits(spec: DatasetSpec, columns: set[str], problems: _Problems) -> None:
    for kind in ("unique", "not_null"):
        unknown = [c for c in getattr(spec.audits, kind) if c not in columns]
        if unknown:
            problems.add(("audits", kind), f"{unknown} are not output columns")
    for position, rule in enumerate(spec.audits.rows_satisfy):
        where = ("audits", "rows_satisfy", position, "condition")
        try:
            unknown = [c for c in condition_columns(rule.condition) if c not in columns]
        except SqlSpecError as e:
            problems.add(where, str(e))
            continue
        if unknown:
            problems.add(where, f"names {unknown}, which are not output columns")


def _audits(spec: DatasetSpec) -> list[Audit]:
    audits: list[Audit] = []
    for kind, build in (("unique", unique), ("not_null", not_null)):
        wanted: list[str] = getattr(spec.audits, kind)
        if wanted:
            audits.append(build(*wanted, blocking=spec.audits.blocking))
    for rule in spec.audits.rows_satisfy:
        condition = rule.condition
        audits.append(
            rows_satisfy(rule.name, rule.description, lambda c=condition: _expr(c), blocking=rule.blocking)  # type: ignore[misc]
        )
    return audits


def _expr(condition: str) -> Any:
    from pyspark.sql import functions as F

    return F.expr(condition)


def _freshness(spec: DatasetSpec) -> dg.FreshnessPolicy | None:
    f = spec.freshness
    if f is None:
        return None
    if f.cron is not None and f.lower_bound_hours is not None:
        return dg.FreshnessPolicy.cron(
            f.cron, lower_bound_delta=timedelta(hours=f.lower_bound_hours), timezone=f.timezone
        )
    assert f.fail_after_hours is not None
    warn = timedelta(hours=f.warn_after_hours) if f.warn_after_hours is not None else None
    return dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=f.fail_after_hours), warn_window=warn)


def _backfill(spec: DatasetSpec) -> dg.BackfillPolicy | None:
    if spec.backfill is None:
        return None
    if spec.backfill.single_run:
        return dg.BackfillPolicy.single_run()
    return dg.BackfillPolicy.multi_run(max_partitions_per_run=spec.backfill.max_partitions_per_run or 1)


def _check(
    loaded: LoadedSpec, tables: Mapping[str, LakeTable], catalog: SpecCatalog, problems: _Problems
) -> CheckedSpec | None:
    """Every check of one spec against the catalog and the other specs' tables: what it reads, its SQL's shape,
    partitions, profile and audits."""
    spec, table = loaded.spec, loaded.table
    start = len(problems.found)
    partitions_def = None
    if spec.partitions is not None:
        partitions_def = catalog.partitions.get(spec.partitions)
        if partitions_def is None:
            problems.add(
                "partitions", f"unknown partitions {spec.partitions!r} ({_close(spec.partitions, catalog.partitions)})"
            )
    if spec.compute not in COMPUTE_PROFILES:
        problems.add("compute", f"unknown profile {spec.compute!r} (profiles: {', '.join(COMPUTE_PROFILES)})")
    inputs: list[LakeInput] = []
    for name, declared in spec.inputs.items():
        if not name.isidentifier() or name in RESERVED_INPUT_NAMES:
            problems.add(
                ("inputs", name),
                "an input name must be an identifier (the SQL reads it as a table), "
                f"and none of {', '.join(RESERVED_INPUT_NAMES)}",
            )
            continue
        source = tables.get(declared.table)
        if source is None:
            problems.add(
                ("inputs", name, "table"), f"unknown table {declared.table!r} ({_close(declared.table, tables)})"
            )
            continue
        reader = next((i.key for i in inputs if i.table == source), None)
        if reader is not None:
            # Dagster keeps one dependency (one partition mapping) per upstream asset.
            problems.add(
                ("inputs", name, "table"),
                f"{declared.table} is read by input {reader!r} already; one table is one input (widen its window)",
            )
            continue
        lake_input = LakeInput(source, parse_window(declared.window), name=name, required=declared.required)
        try:
            lake_input.validate(table, partitions_def)
        except InputWindowError as e:
            problems.add(("inputs", name, "window"), str(e).split(": ", 1)[-1])
            continue
        inputs.append(lake_input)
    try:
        sql = shape(spec.sql, {i.key: _input_columns(i.table) for i in inputs})
    except SqlSpecError as e:
        problems.add("sql", str(e))
        return None
    undeclared = [t for t in sql.tables if t not in spec.inputs]
    for name in undeclared:
        problems.add(
            "sql", f"names table {name!r} which is no declared input (inputs: {', '.join(spec.inputs) or 'none'})"
        )
    unread = [n for n in spec.inputs if n not in sql.tables]
    if unread:
        problems.add("inputs", f"{unread} are declared but the SQL reads no such table")
    output = list(sql.columns)
    if spec.partition_column is not None and spec.partition_column not in output:
        problems.add(
            "partition_column",
            f"{spec.partition_column!r} is not among the SQL's output columns ({', '.join(output)})",
        )
    missing = [c for c in spec.columns if c not in output and c != spec.partition_column]
    extra = [c for c in output if c not in spec.columns]
    duplicated = sorted({c for c in output if output.count(c) > 1})
    if missing:
        problems.add("sql", f"outputs no column {missing} of the declared columns")
    if extra:
        problems.add("sql", f"outputs {extra}, which are not declared columns (columns: {', '.join(spec.columns)})")
    if duplicated:
        problems.add("sql", f"outputs {duplicated} more than once")
    _check_audits(spec, set(spec.columns), problems)
    if len(problems.found) > start:
        return None
    return CheckedSpec(loaded.shown, spec, table, sql.template)


def _inputs(spec: DatasetSpec, tables: Mapping[str, LakeTable]) -> list[LakeInput]:
    return [
        LakeInput(tables[declared.table], parse_window(declared.window), name=name, required=declared.required)
        for name, declared in spec.inputs.items()
    ]


def build_dataset(checked: CheckedSpec, tables: Mapping[str, LakeTable], catalog: SpecCatalog) -> LakeDataset:
    """The dataset of a spec that passed its checks (just now, or when its checks were stored)."""
    spec, table = checked.spec, checked.table
    group = spec.group or (catalog.group_of(table) if catalog.group_of else None)
    return LakeDataset(
        table,
        SqlTransform(checked.template, spec.sql),
        inputs=_inputs(spec, tables),
        audits=_audits(spec),
        partitions_def=catalog.partitions[spec.partitions] if spec.partitions is not None else None,
        description=spec.description,
        compute=spec.compute,
        owners=spec.owners,
        group_name=group,
        backfill_policy=_backfill(spec),
        freshness_policy=_freshness(spec),
        tags=dict(catalog.tags),
        extra_metadata={
            SPEC_FILE_METADATA: checked.shown,
            "batch_platform/sql": dg.MetadataValue.md(f"```sql\n{spec.sql}\n```"),
        },
    )


def load_specs(folder: Path | str, catalog: SpecCatalog, *, shown_relative_to: Path | None = None) -> list[LakeDataset]:
    """Every spec under ``folder`` as a LakeDataset; a ``SpecError`` listing every problem if any spec is wrong.

    The checks of a folder without problems are stored beside it and reused while no file, catalog table or loader
    changed (``batch_platform.specs.checked``)."""
    folder = Path(folder)
    base = shown_relative_to or folder.parent
    files = [
        (path, str(path.relative_to(base)) if path.is_relative_to(base) else str(path), path.read_bytes())
        for path in spec_files(folder)
    ]
    store = checked.enabled()
    made_under = checked.key([(shown, data) for _, shown, data in files], catalog, list(COMPUTE_PROFILES))
    stored = checked.read(folder, made_under) if store else None
    passed = stored if stored is not None else check_specs(files, catalog)
    if store and stored is None:
        checked.write(folder, made_under, passed)
    tables = {**catalog.tables, **{c.spec.table: c.table for c in passed}}
    return [build_dataset(c, tables, catalog) for c in passed]


def check_specs(files: Sequence[tuple[Path, str, bytes]], catalog: SpecCatalog) -> list[CheckedSpec]:
    """Check every ``(path, shown, bytes)`` spec file; a ``SpecError`` listing every problem if any is wrong."""
    problems: list[SpecProblem] = []
    loaded: list[tuple[LoadedSpec, _Problems]] = []
    written: dict[str, str] = {}
    for path, shown, data in files:
        file_problems = _Problems(path, shown)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            file_problems.add((), f"not UTF-8 text ({e.reason} at byte {e.start})")
            problems.extend(file_problems.found)
            continue
        spec = _parse(text, shown, file_problems)
        table = _table(spec, file_problems) if spec is not None else None
        if spec is not None and spec.table in written:
            file_problems.add("table", f"{spec.table} is already written by {written[spec.table]}")
        elif spec is not None and table is not None:
            written[spec.table] = shown
            known = catalog.tables.get(spec.table)
            if known is not None and known.schema != table.schema:
                file_problems.add(
                    "columns", f"differ from the domain's declaration of {spec.table}: {_schema_diff(known, table)}"
                )
        problems.extend(file_problems.found)
        if spec is not None and table is not None and not file_problems.found:
            loaded.append((LoadedSpec(path, shown, spec, table), file_problems))
    tables = {**catalog.tables, **{item.spec.table: item.table for item, _ in loaded}}
    passed = []
    for item, file_problems in loaded:
        result = _check(item, tables, catalog, file_problems)
        problems.extend(file_problems.found)
        if result is not None:
            passed.append(result)
    if problems:
        raise SpecError(problems)
    return passed


def _schema_diff(known: LakeTable, spec: LakeTable) -> str:
    declared = {f.name: f for f in known.schema}
    written = {f.name: f for f in spec.schema}
    parts = [f"{n} missing" for n in declared if n not in written]
    parts += [f"{n} not declared there" for n in written if n not in declared]
    parts += [
        f"{n} is {_typed(written[n])} in the spec, {_typed(declared[n])} in the domain"
        for n in declared
        if n in written and declared[n] != written[n]
    ]
    if not parts and list(declared) != list(written):
        parts.append(f"column order differs ({', '.join(declared)})")
    return "; ".join(parts)


def _typed(f: pa.Field) -> str:
    return f"{f.type}{'' if f.nullable else ' not null'}"
