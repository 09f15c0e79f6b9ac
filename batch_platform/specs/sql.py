"""What a spec's Spark SQL reads and outputs, found at load with sqlglot (no Spark needed), and the run-time
template that binds each input name to its DataFrame.

The SQL names its inputs as tables (``FROM status``). At run time each name becomes a ``{name}`` placeholder of
``SparkSession.sql(template, **frames)``, which registers every DataFrame as a temporary view under a fresh name for
the one query and drops it afterwards: two steps in one session never see each other's views.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

DIALECT = "spark"


class SqlSpecError(ValueError):
    pass


@dataclass(frozen=True)
class SqlShape:
    tables: tuple[str, ...]  # the tables the query reads, CTE names excluded, in order of appearance
    columns: tuple[str, ...]  # its output columns, in order
    template: str  # the SQL with each input table as a ``{name}`` placeholder (other braces doubled)


def parse(sql: str) -> exp.Query:
    try:
        statements = [s for s in sqlglot.parse(sql, dialect=DIALECT) if s is not None]
    except SqlglotError as e:
        raise SqlSpecError(f"does not parse as Spark SQL: {str(e).splitlines()[0]}") from e
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        raise SqlSpecError("must be exactly one SELECT query")
    return statements[0]


def _read_tables(query: exp.Query) -> list[exp.Table]:
    ctes = {cte.alias_or_name for cte in query.find_all(exp.CTE)}
    return [t for t in query.find_all(exp.Table) if t.db or t.catalog or t.name not in ctes]


def _output_columns(query: exp.Query, schema: Mapping[str, Mapping[str, str]]) -> list[str]:
    if any(isinstance(s, exp.Star) or (isinstance(s, exp.Column) and s.is_star) for s in query.selects):
        # Expand * from the inputs' declared columns; only when that fails is the output unknown.
        try:
            from sqlglot.optimizer.qualify import qualify

            qualified = qualify(query.copy(), schema=dict(schema), dialect=DIALECT, validate_qualify_columns=False)
        except SqlglotError as e:
            raise SqlSpecError(f"the output columns of SELECT * cannot be determined ({e}); name the columns") from e
        if not isinstance(qualified, exp.Query):
            raise SqlSpecError("the output columns of SELECT * cannot be determined; name the columns")
        query = qualified
        if any(isinstance(s, exp.Star) or (isinstance(s, exp.Column) and s.is_star) for s in query.selects):
            raise SqlSpecError("the output columns of SELECT * cannot be determined; name the columns")
    columns = []
    for position, select in enumerate(query.selects, start=1):
        # Spark names an unaliased expression after its text (``count(1)``): a spec must say what it means.
        name = select.alias if isinstance(select, exp.Alias) else select.name if isinstance(select, exp.Column) else ""
        if not name or name == "*":
            raise SqlSpecError(f"output column {position} ({select.sql(dialect=DIALECT)}) has no name; alias it")
        columns.append(name)
    return columns


def template(sql: str, tables: Sequence[exp.Table]) -> str:
    """The SQL with every input table reference replaced by ``{name}`` and every other brace doubled."""
    spans = sorted((t.this.meta["start"], t.this.meta["end"], t.name) for t in tables)
    out, position = [], 0
    for start, end, name in spans:
        out.append(sql[position:start].replace("{", "{{").replace("}", "}}"))
        out.append("{" + name + "}")
        position = end + 1
    out.append(sql[position:].replace("{", "{{").replace("}", "}}"))
    return "".join(out)


def shape(sql: str, inputs: Mapping[str, Mapping[str, str]]) -> SqlShape:
    """The tables read and columns output by ``sql``; ``inputs`` maps each input name to its columns' types."""
    query = parse(sql)
    tables = _read_tables(query)
    names = [".".join(p for p in (t.catalog, t.db, t.name) if p) for t in tables]
    readable = [t for t in tables if not (t.db or t.catalog) and t.name in inputs]
    if any("start" not in t.this.meta for t in readable):
        raise SqlSpecError("cannot locate the input names in the SQL text")
    columns = _output_columns(query, {n: inputs[n] for n in dict.fromkeys(names) if n in inputs})
    return SqlShape(tuple(dict.fromkeys(names)), tuple(columns), template(sql, readable))


def condition_columns(condition: str) -> list[str]:
    """The columns a Spark SQL boolean expression names (for an audit's ``rows_satisfy`` condition)."""
    try:
        parsed = sqlglot.parse_one(condition, dialect=DIALECT, into=exp.Condition)
    except SqlglotError as e:
        raise SqlSpecError(f"does not parse as a Spark SQL expression: {str(e).splitlines()[0]}") from e
    return list(dict.fromkeys(c.name for c in parsed.find_all(exp.Column)))
