"""Checked specs: a folder's checks are stored beside it and reused only while nothing they depend on changed.

Every test loads real spec files; "nothing parsed" is shown by making the checker fail if it is called.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
from test_dataset_specs import CATALOG, DAILY, LOANS, MERCHANT_TOTALS, MERCHANT_TRENDS, _write_specs

from batch_platform.lake import LakeTable
from batch_platform.specs import SpecCatalog, SpecError, load_specs
from batch_platform.specs import checked as checked_store
from batch_platform.specs import load as spec_load

pytestmark = pytest.mark.unit


def _forbid_checking(monkeypatch: pytest.MonkeyPatch) -> None:
    def checked_again(*args: object, **kwargs: object) -> None:
        raise AssertionError("the specs were parsed and checked again")

    monkeypatch.setattr(spec_load, "check_specs", checked_again)


def _described(assets: list[dg.AssetSpec]) -> list[tuple[object, ...]]:
    return [
        (s.key, [(d.asset_key, d.partition_mapping) for d in s.deps], s.metadata, s.tags, s.owners, s.group_name)
        for s in assets
    ]


def test_an_unchanged_folder_loads_from_its_stored_checks_without_parsing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _write_specs(tmp_path / "specs", merchant_totals=MERCHANT_TOTALS, merchant_trends=MERCHANT_TRENDS)
    first = load_specs(folder, CATALOG)
    assert checked_store.store_path(folder).is_file()

    _forbid_checking(monkeypatch)
    again = load_specs(folder, CATALOG)

    assert _described([d.spec() for d in again]) == _described([d.spec() for d in first])
    assert [[c.name for c in d.check_specs] for d in again] == [[c.name for c in d.check_specs] for d in first]
    assert [(d.transform.template, d.transform.plain_sql) for d in again] == [  # type: ignore[attr-defined]
        (d.transform.template, d.transform.plain_sql)  # type: ignore[attr-defined]
        for d in first
    ]


def test_an_edited_spec_is_checked_again_and_its_mistake_reported(tmp_path: Path) -> None:
    folder = _write_specs(tmp_path / "specs", merchant_totals=MERCHANT_TOTALS)
    load_specs(folder, CATALOG)
    _write_specs(folder, merchant_totals=MERCHANT_TOTALS.replace("FROM loans", "FROM loans_typo"))

    with pytest.raises(SpecError) as raised:
        load_specs(folder, CATALOG)
    assert "merchant_totals.yaml" in str(raised.value) and "loans_typo" in str(raised.value)


def test_an_added_spec_is_checked_with_the_others(tmp_path: Path) -> None:
    folder = _write_specs(tmp_path / "specs", merchant_totals=MERCHANT_TOTALS)
    load_specs(folder, CATALOG)
    _write_specs(folder, merchant_trends=MERCHANT_TRENDS)

    keys = {d.asset_key for d in load_specs(folder, CATALOG)}
    assert keys == {dg.AssetKey(["reports", "merchant_totals"]), dg.AssetKey(["reports", "merchant_trends"])}


LOAN_COPY = """
table: reports.loan_copy
description: Every loan of the day, as lent.
partitions: daily
partition_column: business_date
columns:
  business_date: date not null
  loan_id: long not null
  merchant_id: long not null
  principal: decimal(18,2) not null
inputs:
  loans: {table: core.loans}
sql: SELECT * FROM loans
compute: small
"""


def test_a_changed_catalog_table_invalidates_the_stored_checks(tmp_path: Path) -> None:
    # SELECT * outputs what the input table has: its output columns are checked against the catalog's schema.
    folder = _write_specs(tmp_path / "specs", loan_copy=LOAN_COPY)
    load_specs(folder, CATALOG)
    without_principal = pa.schema([f for f in LOANS.schema if f.name != "principal"])
    narrower = SpecCatalog.of([LakeTable("core", "loans", without_principal, "business_date")], {"daily": DAILY})

    with pytest.raises(SpecError) as raised:
        load_specs(folder, narrower)
    assert "loan_copy.yaml" in str(raised.value) and "principal" in str(raised.value)


def test_a_catalog_without_the_input_table_invalidates_the_stored_checks(tmp_path: Path) -> None:
    folder = _write_specs(tmp_path / "specs", merchant_totals=MERCHANT_TOTALS)
    load_specs(folder, CATALOG)

    with pytest.raises(SpecError, match=r"unknown table 'core\.loans'"):
        load_specs(folder, SpecCatalog.of([], {"daily": DAILY}))


def test_specs_with_problems_are_never_stored(tmp_path: Path) -> None:
    folder = _write_specs(
        tmp_path / "specs", merchant_totals=MERCHANT_TOTALS.replace("compute: medium", "compute: huge")
    )
    for _ in range(2):  # reported on every load, not only the first
        with pytest.raises(SpecError, match="unknown profile 'huge'"):
            load_specs(folder, CATALOG)
    assert not checked_store.store_path(folder).exists()


def test_a_corrupt_store_is_ignored_and_written_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _write_specs(tmp_path / "specs", merchant_totals=MERCHANT_TOTALS)
    load_specs(folder, CATALOG)
    checked_store.store_path(folder).write_bytes(b"not a pickle")

    assert [d.asset_key for d in load_specs(folder, CATALOG)] == [dg.AssetKey(["reports", "merchant_totals"])]
    _forbid_checking(monkeypatch)
    assert [d.asset_key for d in load_specs(folder, CATALOG)] == [dg.AssetKey(["reports", "merchant_totals"])]


def test_a_folder_where_no_store_can_be_written_still_loads(tmp_path: Path) -> None:
    folder = _write_specs(tmp_path / "specs", merchant_totals=MERCHANT_TOTALS)
    (folder / checked_store.STORE_FOLDER).write_text("a file where the store's folder would be")

    for _ in range(2):
        assert [d.asset_key for d in load_specs(folder, CATALOG)] == [dg.AssetKey(["reports", "merchant_totals"])]


def test_the_store_can_be_switched_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(checked_store.SWITCH, "off")
    folder = _write_specs(tmp_path / "specs", merchant_totals=MERCHANT_TOTALS)
    load_specs(folder, CATALOG)
    assert not checked_store.store_path(folder).exists()


def test_a_store_of_another_folder_is_not_taken_for_this_one(tmp_path: Path) -> None:
    # Same file names, different content: the key covers the bytes, not only the names.
    good = _write_specs(tmp_path / "a" / "specs", merchant_totals=MERCHANT_TOTALS)
    load_specs(good, CATALOG)
    bad = _write_specs(tmp_path / "b" / "specs", merchant_totals=MERCHANT_TOTALS.replace("principal > 0", "nope > 0"))
    (bad / checked_store.STORE_FOLDER).mkdir()
    checked_store.store_path(bad).write_bytes(checked_store.store_path(good).read_bytes())

    with pytest.raises(SpecError, match="nope"):
        load_specs(bad, CATALOG)


def test_the_specs_check_command_stores_the_checks_and_names_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from batch_platform.cli import main

    catalog = "test_dataset_specs:CATALOG"
    folder = _write_specs(tmp_path / "specs", merchant_totals=MERCHANT_TOTALS)
    assert main(["specs", "check", str(folder), "--catalog", catalog]) == 0
    assert "1 specs" in capsys.readouterr().out and checked_store.store_path(folder).is_file()
    _forbid_checking(monkeypatch)
    assert [d.asset_key for d in load_specs(folder, CATALOG)] == [dg.AssetKey(["reports", "merchant_totals"])]
    monkeypatch.undo()

    _write_specs(folder, merchant_trends=MERCHANT_TRENDS.replace("compute: medium", "compute: huge"))
    assert main(["specs", "check", str(folder), "--catalog", catalog]) == 1
    assert "specs/merchant_trends.yaml:18: compute: unknown profile 'huge'" in capsys.readouterr().err
