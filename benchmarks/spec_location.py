"""Loading a code location of 5,000 spec-defined datasets against the same 5,000 written as one ``@asset`` each.

Both locations are generated into a temporary folder from one dataset graph (``--datasets``, default 5,000, in
``--depth`` levels, default 10): level 0 reads source tables; every dataset of a later level reads one dataset of
the level before it (so the graph is as deep as its levels) and up to two more from any earlier level (fan-in), so
popular datasets feed many (fan-out). Each dataset is a daily-partitioned Spark SQL aggregation with a uniqueness
audit, some with a row rule too, on one of two compute profiles.

- **specs**: one YAML file per dataset, loaded by ONE ``LakeDatasetSpecs`` component (batch_platform.specs).
- **@asset**: a generated Python module with one ``@dg.asset`` per dataset carrying the same key, deps, partitions,
  description, owners, tags, kinds, metadata (the SQL) and check specs; its body would run the SQL.

Measured in the same run, each in a fresh interpreter, alternating which goes first, ``--repeat`` times:
- **import**: importing the location's module, which builds its ``Definitions`` (the @asset module runs its 5,000
  decorators; the specs module reads, checks and groups its 5,000 files), after ``dagster``, pyspark and the
  platform are imported (timed apart as *framework*);
- **build**: the asset graph resolved (``Definitions.get_repository_def()``);
- **validate**: wall time of ``dagster definitions validate -f <module>`` (a subprocess: its own interpreter start,
  imports, load and validation).
Then where the spec load's time goes: its phases timed one by one in-process, and cProfile's top entries.

Reproduce: ``.venv/bin/python -m benchmarks.spec_location`` (``--write-docs`` replaces its section of
docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import py_compile
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pyarrow as pa

from batch_platform.lake import LakeTable
from batch_platform.specs import SpecCatalog
from batch_platform.specs.checked import STORE_FOLDER

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DOCS = PROJECT_ROOT / "docs" / "benchmarks.md"
START, END = "<!-- spec_location:start -->", "<!-- spec_location:end -->"
SOURCES = 20
SCHEMA = pa.schema(
    [
        pa.field("business_date", pa.date32(), nullable=False),
        pa.field("id", pa.int64(), nullable=False),
        pa.field("amount", pa.decimal128(18, 2), nullable=False),
    ]
)
DAILY = dg.DailyPartitionsDefinition(start_date="2024-01-01")
SOURCE_TABLES = [LakeTable("src", f"t{i:02d}", SCHEMA, "business_date") for i in range(SOURCES)]
BENCH_CATALOG = SpecCatalog.of(SOURCE_TABLES, {"daily": DAILY})


@dataclass(frozen=True)
class Node:
    name: str
    level: int
    inputs: tuple[str, ...]  # table identifiers
    profile: str
    rule: bool


def dataset_graph(count: int, depth: int, seed: int = 20261206) -> list[Node]:
    rng = random.Random(seed)
    per_level = [count // depth + (1 if i < count % depth else 0) for i in range(depth)]
    levels: list[list[str]] = []
    nodes = []
    for level, size in enumerate(per_level):
        names = [f"d{level}_{i:04d}" for i in range(size)]
        for name in names:
            if level == 0:
                inputs = tuple(sorted({t.identifier for t in rng.sample(SOURCE_TABLES, rng.randint(1, 2))}))
            else:
                # Popular upstreams: a skewed pick makes some datasets feed dozens (fan-out).
                chosen = {f"bench.{levels[level - 1][int(rng.random() ** 2 * len(levels[level - 1]))]}"}
                for _ in range(rng.randint(0, 2)):
                    earlier = levels[rng.randrange(level)]
                    chosen.add(f"bench.{earlier[int(rng.random() ** 2 * len(earlier))]}")
                inputs = tuple(sorted(chosen))
            nodes.append(Node(name, level, inputs, rng.choice(["small", "medium"]), rng.random() < 0.5))
        levels.append(names)
    return nodes


def _input_name(identifier: str) -> str:
    return identifier.replace(".", "_")


def _sql(node: Node) -> str:
    selects = [f"    SELECT business_date, id, amount FROM {_input_name(i)}" for i in node.inputs]  # noqa: S608
    union = "\n    UNION ALL\n".join(selects)
    return (
        f"SELECT business_date, id, CAST(sum(amount) AS decimal(18,2)) AS amount\n"
        f"FROM (\n{union}\n) AS u\nGROUP BY business_date, id\n"
    )


def spec_yaml(node: Node) -> str:
    inputs = "\n".join(f"  {_input_name(i)}: {{table: {i}, window: this_partition}}" for i in node.inputs)
    rule = (
        "  rows_satisfy:\n"
        "    - {name: amount_not_negative, description: amounts are never negative, condition: 'amount >= 0'}\n"
        if node.rule
        else ""
    )
    return (
        f"table: bench.{node.name}\n"
        f"description: Amounts per id and day from {', '.join(node.inputs)}.\n"
        "owners: [team:bench]\n"
        "partitions: daily\n"
        "partition_column: business_date\n"
        "columns:\n  business_date: date not null\n  id: long not null\n  amount: decimal(18,2) not null\n"
        f"inputs:\n{inputs}\n"
        f"sql: |\n{textwrap.indent(_sql(node), '  ')}"
        f"compute: {node.profile}\n"
        f"audits:\n  unique: [business_date, id]\n{rule}"
    )


COMMON = """
import dagster as dg
from batch_platform.lake import IcebergLakeResource
from batch_platform.spark import SparkResource
from benchmarks.spec_location import BENCH_CATALOG, DAILY

RESOURCES = {{"lake": IcebergLakeResource(data_dir={data_dir!r}), "spark": SparkResource()}}
"""


def specs_module(folder: Path, data_dir: Path) -> str:
    return COMMON.format(data_dir=str(data_dir)) + textwrap.dedent(
        f"""
        from batch_platform.specs import LakeDatasetSpecs

        SPECS = LakeDatasetSpecs(path={str(folder)!r}, catalog="benchmarks.spec_location:BENCH_CATALOG", name="bench")
        # Built at import, as the @asset module is: `dagster definitions validate` calls a @dg.definitions function
        # twice (once to find the location's targets, once to load it), which would load every spec twice.
        defs = dg.Definitions(assets=SPECS.build_assets(), resources=RESOURCES)
        """
    )


# The column schema a team writes by hand for each table (Dagster's catalog shows it), as the specs derive it.
HAND_SCHEMA = (
    'dg.TableSchema(columns=[dg.TableColumn("business_date", "date32[day]", '
    'constraints=dg.TableColumnConstraints(nullable=False), tags={"partition": ""}), '
    'dg.TableColumn("id", "int64", constraints=dg.TableColumnConstraints(nullable=False)), '
    'dg.TableColumn("amount", "decimal128(18, 2)", constraints=dg.TableColumnConstraints(nullable=False))])'
)


def asset_module(nodes: list[Node], data_dir: Path) -> str:
    """One ``@dg.asset`` per dataset, written out the way a team writes them by hand: the same key, deps (this
    partition: Dagster's default mapping, as the specs' ``this_partition``), partitions, description, owners, group,
    kinds, tags, op tags, metadata (table, column schema, partition column, inputs, SQL) and check specs (name,
    description, blocking) as the spec location builds. Only the spec file's name is not there (it has none)."""
    lines = [
        COMMON.format(data_dir=str(data_dir)),
        "from batch_platform.compute import profile_tags",
        "",
        "def run_sql(context, sql, inputs):  # what each body would do; never called while loading",
        "    raise NotImplementedError",
        "",
    ]
    for node in nodes:
        key = ["bench", node.name]
        table = f"bench.{node.name}"
        deps = ", ".join(f"dg.AssetKey({i.split('.')!r})" for i in node.inputs)
        checks = [
            f'dg.AssetCheckSpec("unique_business_date_id", asset={key!r}, '
            'description="business_date, id identify a row", blocking=True)'
        ]
        if node.rule:
            checks.append(
                f'dg.AssetCheckSpec("amount_not_negative", asset={key!r}, '
                'description="amounts are never negative", blocking=True)'
            )
        inputs = {_input_name(i): f"{i}: this partition" for i in node.inputs}
        sql_md = f"```sql\n{_sql(node)}\n```"
        lines.append(
            textwrap.dedent(
                f"""
                @dg.asset(
                    key={key!r},
                    deps=[{deps}],
                    partitions_def=DAILY,
                    description={f"Amounts per id and day from {', '.join(node.inputs)}."!r},
                    owners=["team:bench"],
                    group_name="bench",
                    kinds={{"spark", "iceberg"}},
                    tags={{"batch-platform/compute-profile": {node.profile!r}}},
                    op_tags={{**profile_tags({node.profile!r}), "batch-platform/engine": "spark"}},
                    metadata={{
                        "iceberg/table": {table!r},
                        "dagster/table_name": {table!r},
                        "dagster/column_schema": {HAND_SCHEMA},
                        "iceberg/partition_column": "business_date",
                        "batch_platform/inputs": dg.MetadataValue.json({inputs!r}),
                        "batch_platform/sql": dg.MetadataValue.md({sql_md!r}),
                    }},
                    check_specs=[{", ".join(checks)}],
                    required_resource_keys={{"lake", "spark"}},
                )
                def {node.name}(context):
                    return run_sql(context, {_sql(node)!r}, {list(map(_input_name, node.inputs))!r})
                """
            )
        )
    lines.append("\nASSETS = [v for v in list(globals().values()) if isinstance(v, dg.AssetsDefinition)]")
    lines.append("defs = dg.Definitions(assets=ASSETS, resources=RESOURCES)\n")
    return "\n".join(lines)


def floor_module(nodes: list[Node], data_dir: Path) -> str:
    """The least any spec loader could do on this Dagster: the same 5,000 assets (keys, deps, metadata, tags, check
    specs) as ``AssetSpec``s in the same multi-assets, built in a loop from one Python literal of the graph, with no
    file read and nothing checked. What Dagster itself costs for this location, whatever defines it."""
    graph = [(n.name, n.level, n.inputs, n.profile, n.rule, _sql(n)) for n in nodes]
    return COMMON.format(data_dir=str(data_dir)) + textwrap.dedent(
        f"""
        from collections import defaultdict
        from batch_platform.compute import profile_tags

        GRAPH = {graph!r}
        SCHEMA = {HAND_SCHEMA}
        groups = defaultdict(list)
        for name, level, inputs, profile, rule, sql in GRAPH:
            key = dg.AssetKey(["bench", name])
            checks = [dg.AssetCheckSpec("unique_business_date_id", asset=key,
                                        description="business_date, id identify a row", blocking=True)]
            if rule:
                checks.append(dg.AssetCheckSpec("amount_not_negative", asset=key,
                                                description="amounts are never negative", blocking=True))
            spec = dg.AssetSpec(
                key=key,
                deps=[dg.AssetKey(i.split(".")) for i in inputs],
                partitions_def=DAILY,
                description="Amounts per id and day from " + ", ".join(inputs) + ".",
                owners=["team:bench"],
                group_name="bench",
                kinds={{"spark", "iceberg"}},
                tags={{"batch-platform/compute-profile": profile}},
                metadata={{
                    "iceberg/table": "bench." + name,
                    "dagster/table_name": "bench." + name,
                    "dagster/column_schema": SCHEMA,
                    "iceberg/partition_column": "business_date",
                    "batch_platform/inputs": dg.MetadataValue.json(
                        {{i.replace(".", "_"): i + ": this partition" for i in inputs}}
                    ),
                    "batch_platform/sql": dg.MetadataValue.md("```sql\\n" + sql + "\\n```"),
                }},
                skippable=True,
            )
            groups[(profile, level)].append((spec, checks))


        def multi(name, members, profile):
            @dg.multi_asset(
                name=name,
                specs=[spec for spec, _ in members],
                check_specs=[check for _, checks in members for check in checks],
                can_subset=True,
                op_tags={{**profile_tags(profile), "batch-platform/engine": "spark"}},
                required_resource_keys={{"lake", "spark"}},
            )
            def _assets(context):
                raise NotImplementedError

            return _assets


        defs = dg.Definitions(
            assets=[multi(f"bench_{{n}}", m, key[0]) for n, (key, m) in enumerate(sorted(groups.items()))],
            resources=RESOURCES,
        )
        """
    )


PROBE = r"""
import json, sys, time, importlib
t0 = time.perf_counter()
import dagster as dg, pyspark.sql, batch_platform.datasets, batch_platform.specs, benchmarks.spec_location
t1 = time.perf_counter()
module = importlib.import_module(sys.argv[1])
t2 = time.perf_counter()
defs = module.defs() if callable(module.defs) else module.defs
repo = defs.get_repository_def()
assets = len(repo.asset_graph.get_all_asset_keys())
t3 = time.perf_counter()
print(json.dumps({"framework": t1 - t0, "import": t2 - t1, "build": t3 - t2, "assets": assets}))
"""


def precompile(path: Path) -> float:
    """Compile a location module to its .pyc once, before the runs, and return the seconds it took.

    Every run then reads the bytecode, as a deployed image with compiled modules does; without it (this machine
    sets PYTHONDONTWRITEBYTECODE) every start of the @asset location would compile its large module again, which
    would count against the @asset side.
    """
    start = time.perf_counter()
    py_compile.compile(str(path), doraise=True)
    return time.perf_counter() - start


def check_specs(folder: Path) -> float:
    """``batch-platform specs check`` on the spec folder, as an image build runs it: the checks stored beside the
    specs (batch_platform.specs.checked). Returns the seconds it took."""
    start = time.perf_counter()
    subprocess.run(
        [
            str(Path(sys.executable).parent / "batch-platform"),
            "specs",
            "check",
            str(folder / "specs"),
            "--catalog",
            "benchmarks.spec_location:BENCH_CATALOG",
        ],
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        cwd=PROJECT_ROOT,
        capture_output=True,
        check=True,
    )
    return time.perf_counter() - start


def forget_checks(folder: Path) -> None:
    shutil.rmtree(folder / "specs" / STORE_FOLDER, ignore_errors=True)


def probe(folder: Path, module: str, before: Callable[[], None] = lambda: None) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(PROJECT_ROOT)])}
    before()
    out = subprocess.run(
        [sys.executable, "-c", PROBE, module], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    before()
    start = time.perf_counter()
    validated = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-f", str(folder / f"{module}.py")],
        env={**env, "DAGSTER_HOME": str(folder / "dagster_home")},
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
    )
    if validated.returncode != 0:
        raise RuntimeError(f"{module}: dagster definitions validate failed:\n{validated.stdout}\n{validated.stderr}")
    result["validate"] = time.perf_counter() - start
    return result


def phases(folder: Path) -> tuple[list[tuple[str, float]], str]:
    """The spec load's phases, timed apart in this process (the collector paused as the component pauses it), and
    cProfile's top entries of a whole load from stored checks."""
    import yaml

    from batch_platform.specs import load_specs, spec_assets
    from batch_platform.specs.component import collector_paused
    from batch_platform.specs.load import Loader, spec_files
    from batch_platform.specs.model import DatasetSpec
    from batch_platform.specs.sql import shape

    files = spec_files(folder / "specs")
    timed: list[tuple[str, float]] = []
    forget_checks(folder)
    with collector_paused():
        t = time.perf_counter()
        raw = [yaml.load(p.read_text(), Loader=Loader) for p in files]
        timed.append(("first load: read + parse YAML (libyaml)", time.perf_counter() - t))
        t = time.perf_counter()
        specs = [DatasetSpec.model_validate(r) for r in raw]
        timed.append(("first load: pydantic model validation", time.perf_counter() - t))
        columns = {"business_date": "date", "id": "bigint", "amount": "decimal(18,2)"}
        t = time.perf_counter()
        for s in specs:
            shape(s.sql, {name: columns for name in s.inputs})
        timed.append(("first load: sqlglot: parse SQL, tables read, output columns", time.perf_counter() - t))
        t = time.perf_counter()
        load_specs(folder / "specs", BENCH_CATALOG)
        timed.append(("first load: load_specs in all (the three above, checks, LakeDatasets, store)", _since(t)))
        t = time.perf_counter()
        datasets = load_specs(folder / "specs", BENCH_CATALOG)
        timed.append(("load_specs from stored checks (read + hash files, unpickle, LakeDatasets)", _since(t)))
        t = time.perf_counter()
        assets = spec_assets("bench", datasets)
        timed.append((f"spec_assets: {len(assets)} multi-assets", time.perf_counter() - t))
    t = time.perf_counter()
    dg.Definitions(assets=assets, resources=_resources(folder)).get_repository_def()
    timed.append(("Definitions + asset graph", time.perf_counter() - t))
    profiler = cProfile.Profile()
    profiler.enable()
    with collector_paused():
        assets = spec_assets("bench", load_specs(folder / "specs", BENCH_CATALOG))
    dg.Definitions(assets=assets, resources=_resources(folder)).get_repository_def()
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(12)
    return timed, text.getvalue()


def _since(start: float) -> float:
    return time.perf_counter() - start


def _resources(folder: Path) -> dict[str, object]:
    from batch_platform.lake import IcebergLakeResource
    from batch_platform.spark import SparkResource

    return {"lake": IcebergLakeResource(data_dir=str(folder / "lake")), "spark": SparkResource()}


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=5000)
    parser.add_argument("--depth", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)

    nodes = dataset_graph(args.datasets, args.depth)
    with tempfile.TemporaryDirectory(prefix="spec_location_") as tmp:
        folder = Path(tmp)
        (folder / "specs").mkdir()
        (folder / "dagster_home").mkdir()
        for node in nodes:
            (folder / "specs" / f"{node.name}.yaml").write_text(spec_yaml(node))
        (folder / "bench_specs_location.py").write_text(specs_module(folder / "specs", folder / "lake"))
        (folder / "bench_asset_location.py").write_text(asset_module(nodes, folder / "lake"))
        (folder / "bench_floor_location.py").write_text(floor_module(nodes, folder / "lake"))
        variants = {
            "specs": "bench_specs_location",
            "specs, first load": "bench_specs_location",
            "@asset": "bench_asset_location",
            "Dagster floor": "bench_floor_location",
        }
        compiled = {variant: precompile(folder / f"{module}.py") for variant, module in variants.items()}
        compiled["specs"] += check_specs(folder)
        runs: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
        for repeat in range(args.repeat):
            order = list(variants) if repeat % 2 == 0 else list(reversed(variants))
            for variant in order:
                if variant == "specs, first load":
                    # As after an edit: no stored checks, for the probe and again for `validate` (both write it).
                    runs[variant].append(probe(folder, variants[variant], before=lambda: forget_checks(folder)))
                else:
                    if variant == "specs":
                        check_specs(folder)
                    runs[variant].append(probe(folder, variants[variant]))
                print(variant, runs[variant][-1], flush=True)
        timed, profile = phases(folder)
    section = render(args, nodes, runs, compiled, timed, profile)
    print(section)
    if args.write_docs:
        from benchmarks.markdown import update_section

        update_section(DOCS, section, START, END)
    return 0


def render(
    args: argparse.Namespace,
    nodes: list[Node],
    runs: dict[str, list[dict[str, float]]],
    compiled: dict[str, float],
    timed: list[tuple[str, float]],
    profile: str,
) -> str:
    fan_in = [len(n.inputs) for n in nodes]
    fan_out: dict[str, int] = {}
    for n in nodes:
        for i in n.inputs:
            fan_out[i] = fan_out.get(i, 0) + 1
    rows = []
    for variant, results in runs.items():
        total = [r["import"] + r["build"] for r in results]
        rows.append(
            f"| {variant} | {results[0]['assets']:,.0f} | {_median([r['framework'] for r in results])} | "
            f"{_median([r['import'] for r in results])} | {_median([r['build'] for r in results])} | "
            f"{_median(total)} | {_median([r['validate'] for r in results])} | {compiled[variant]:.2f} |"
        )

    def ratios(variant: str) -> str:
        pairs = list(zip(runs[variant], runs["@asset"], strict=True))
        load = [(s["import"] + s["build"]) / (a["import"] + a["build"]) for s, a in pairs]
        validate = [s["validate"] / a["validate"] for s, a in pairs]
        return (
            f"load {', '.join(f'{r:.2f}' for r in load)} (median {statistics.median(load):.2f}); "
            f"`dagster definitions validate` {', '.join(f'{r:.2f}' for r in validate)} "
            f"(median {statistics.median(validate):.2f})"
        )

    phase_rows = "\n".join(f"| {name} | {seconds:.2f} |" for name, seconds in timed)
    reproduce = (
        f".venv/bin/python -m benchmarks.spec_location --datasets {args.datasets} --depth {args.depth} "
        f"--repeat {args.repeat} --write-docs"
    )
    # Paths shortened to the package (no path of the measuring machine in the docs).
    profile = profile.replace(f"{PROJECT_ROOT}/", "")
    profile = re.sub(r"\S*/site-packages/", "", re.sub(r"\S*/lib/python3\.\d+/(?!site-packages)", "", profile))
    profile_lines = "\n".join(line for line in profile.splitlines() if line.strip())
    return f"""{START}
## Spec location: {args.datasets:,} spec-defined datasets against {args.datasets:,} `@asset` functions

Generated by `benchmarks/spec_location.py`; re-running it with `--write-docs` replaces this section.

Reproduce: `{reproduce}`

Measured {datetime.now(UTC):%Y-%m-%d} on {platform.machine()}, {os.cpu_count()} cores, Python
{platform.python_version()}, dagster {dg.__version__}. The graph: {len(nodes):,} daily-partitioned datasets in
{args.depth} levels; fan-in 1-3 (mean {statistics.mean(fan_in):.2f}), fan-out up to {max(fan_out.values())} (a
dataset read by that many others); {SOURCES} source tables under level 0. All locations are generated from the same
graph; each run is a fresh interpreter, their order alternates, {args.repeat} repeats, median (min-max) in seconds.
*framework* (importing dagster, pyspark and the platform, from bytecode compiled at install) is the same for all
and is not in *load*; *load* = import + build; *validate* is the wall time of `dagster definitions validate -f` (its
own interpreter, imports, load and checks). *compile* is what a build does once, before the runs, as an image build
does: compiling the location module to bytecode (every run reads its .pyc; this machine sets
PYTHONDONTWRITEBYTECODE, so without one the module is compiled at every start) and, for *specs*, `batch-platform
specs check`, which stores the folder's checks beside it (batch_platform/specs/checked.py). *specs, first load* has
no stored checks: every run parses and checks all files, as the first start after an edit does.

| location | assets | framework s | import s | build s | load s | validate s | compile s |
|---|---:|---:|---:|---:|---:|---:|---:|
{chr(10).join(rows)}

Specs / @asset, per repeat (target: at most 0.5):
- specs (checks stored, as the image stores them): {ratios("specs")}
- specs, first load (nothing stored: the first start after an edit): {ratios("specs, first load")}
- Dagster floor (the same assets from a Python literal, nothing read or checked): {ratios("Dagster floor")}

### Where the spec load's time goes (one in-process load, phases timed apart)

| phase | s |
|---|---:|
{phase_rows}

cProfile of one whole spec load from stored checks (load_specs + spec_assets + Definitions + asset graph), top
entries by own time:

```
{profile_lines}
```
{END}"""


if __name__ == "__main__":
    raise SystemExit(main())
