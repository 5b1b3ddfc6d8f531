"""The audit log's hash chain detects a row edited, deleted or inserted behind the code's back."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import issue_args, jpki, registry_rows

pytestmark = pytest.mark.engines


def _issue_some(data_dir: Path, tmp_path: Path) -> None:
    for index in range(2):
        assert jpki(data_dir, *issue_args(f"r-{index}", tmp_path / f"o{index}")).code == 0


def test_untouched_chain_verifies(data_dir: Path, tmp_path: Path) -> None:
    _issue_some(data_dir, tmp_path)
    result = jpki(data_dir, "audit", "verify")
    assert result.code == 0
    assert result.json["ok"] is True and result.json["rows"] >= 6


def test_edited_row_is_named(data_dir: Path, tmp_path: Path) -> None:
    _issue_some(data_dir, tmp_path)
    registry_rows(data_dir, "UPDATE audit_log SET actor = 'mallory' WHERE id = 4")
    result = jpki(data_dir, "audit", "verify")
    assert result.code == 1
    assert result.json["first_broken_row"] == 4
    assert "altered" in result.json["problem"]


def test_deleted_row_is_named(data_dir: Path, tmp_path: Path) -> None:
    _issue_some(data_dir, tmp_path)
    registry_rows(data_dir, "DELETE FROM audit_log WHERE id = 3")
    result = jpki(data_dir, "audit", "verify")
    assert result.code == 1 and result.json["first_broken_row"] == 3


def test_audit_rows_never_carry_the_four_facts(data_dir: Path, tmp_path: Path) -> None:
    _issue_some(data_dir, tmp_path)
    text = " ".join(str(row) for row in registry_rows(data_dir, "SELECT * FROM audit_log"))
    for fact in ("山田", "太郎", "1980-04-02", "東京都新宿区西新宿"):
        assert fact not in text
