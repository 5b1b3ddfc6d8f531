"""Bad input: a one-line error naming the field, a non-zero exit, and nothing written."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.helpers import issue_args, jpki


def _counts(data_dir: Path) -> tuple[int, int, int, int]:
    with sqlite3.connect(data_dir / "registry.db") as conn:
        return tuple(  # type: ignore[return-value]
            conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in ("residents", "certificates", "pairs", "audit_log"))


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"municipality_code": "99999"}, "municipality_code"),
        ({"municipality_code": "1310"}, "municipality_code"),
        ({"dob": "2023-02-30"}, "dob"),
        ({"dob": "1990/01/01"}, "dob"),
        ({"dob": "2999-01-01"}, "dob"),
        ({"sign_pin": "12345"}, "sign_pin"),
        ({"sign_pin": "abc-12345"}, "sign_pin"),
        ({"auth_pin": "12a4"}, "auth_pin"),
        ({"auth_pin": "12345"}, "auth_pin"),
        ({"name": "山田太郎"}, "name"),
        ({"name": "髙橋 一郎"}, "name"),
        ({"name": "山田 太\x07郎"}, "name"),
        ({"address": "〒160-0023 東京都新宿区西新宿"}, "address"),
        ({"address": "大阪府大阪市北区"}, "address"),  # not the municipality's prefecture
        ({"name": "髙橋 一郎", "name_alt": "高橋 一"}, "name_alt"),
        ({"name": "髙橋 一郎", "name_alt": "𠮷橋 一郎"}, "name_alt"),
        ({"resident_id": "bad id!"}, "resident_id"),
    ],
)
def test_invalid_values_name_the_field_and_write_nothing(
        data_dir: Path, tmp_path: Path, overrides: dict[str, str], field: str) -> None:
    before = _counts(data_dir)
    resident_id = overrides.pop("resident_id", "r-bad")
    result = jpki(data_dir, *issue_args(resident_id, tmp_path / "out", **overrides))
    assert result.code == 2, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and f"error: {field}:" in lines[0], result.err
    assert _counts(data_dir) == before
    assert not any((tmp_path / "out").glob("*.p12")) if (tmp_path / "out").exists() else True


def test_out_of_repertoire_character_is_named(data_dir: Path, tmp_path: Path) -> None:
    result = jpki(data_dir, *issue_args("r-1", tmp_path / "o", name="髙橋 一郎"))
    assert "U+9AD9" in result.err and "--name-alt" in result.err


def test_invalid_sex_is_refused_by_the_parser(data_dir: Path, tmp_path: Path) -> None:
    result = jpki(data_dir, *issue_args("r-1", tmp_path / "o", sex="x"))
    assert result.code == 2
    assert "--sex" in result.err
    assert _counts(data_dir)[0] == 0


def test_duplicate_resident_with_different_facts(data_dir: Path, tmp_path: Path) -> None:
    assert jpki(data_dir, *issue_args("r-dup", tmp_path / "a")).code == 0
    before = _counts(data_dir)
    result = jpki(data_dir, *issue_args("r-dup", tmp_path / "b", dob="1981-04-02"))
    assert result.code == 4
    assert "error: resident_id:" in result.err
    assert _counts(data_dir) == before
    # same facts while the pair is live: renew, not issue
    again = jpki(data_dir, *issue_args("r-dup", tmp_path / "c"))
    assert again.code == 4 and "jpki renew" in again.err
    assert _counts(data_dir) == before


def test_config_errors_name_the_file_and_key(data_dir: Path, tmp_path: Path) -> None:
    from jpki.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nport = "eighty"\n')
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["init", "--config", str(bad), "--data-dir", str(data_dir)])
    assert code == 78
    assert f"{bad}: server.port:" in err.getvalue()

    typo = tmp_path / "typo.toml"
    typo.write_text("[server]\nprot = 1\n")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["init", "--config", str(typo), "--data-dir", str(data_dir)])
    assert code == 78 and "server.prot" in err.getvalue()

    broken = tmp_path / "broken.toml"
    broken.write_text("[server\n")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["init", "--config", str(broken), "--data-dir", str(data_dir)])
    assert code == 78 and "not valid TOML" in err.getvalue()


def test_show_reports_record_and_unknown_serial(data_dir: Path, tmp_path: Path) -> None:
    issued = jpki(data_dir, *issue_args("r-show", tmp_path / "o")).json
    serial = issued["signature"]["serial"]
    shown = jpki(data_dir, "show", "0x" + serial.upper()).json
    assert shown["serial"] == serial
    assert shown["kind"] == "signature"
    assert shown["status"] == "good"
    assert shown["reason"] is None and shown["revoked_at"] is None
    assert shown["counterpart"] == issued["authentication"]["serial"]
    missing = jpki(data_dir, "show", "abcdef")
    assert missing.code == 3 and "serial" in missing.err
    assert jpki(data_dir, "show", "not-hex").code == 2


def test_municipalities_import(data_dir: Path, tmp_path: Path) -> None:
    csv = tmp_path / "m.csv"
    csv.write_text("code,prefecture,name,prefecture_roman,name_roman\n"
                   "01202,北海道,函館市,Hokkaido,Hakodate-shi\n", encoding="utf-8")
    result = jpki(data_dir, "municipalities", "import", str(csv))
    assert result.code == 0 and result.json["imported"] == 1
    assert result.json["total"] == 70
    issued = jpki(data_dir, *issue_args("r-hako", tmp_path / "o", municipality_code="01202",
                                       address="北海道函館市新川町4番1号"))
    assert issued.code == 0, issued.err
    bad = tmp_path / "bad.csv"
    bad.write_text("code,prefecture,name,prefecture_roman,name_roman\n"
                   "1202,北海道,函館市,Hokkaido,Hakodate-shi\n", encoding="utf-8")
    refused = jpki(data_dir, "municipalities", "import", str(bad))
    assert refused.code == 2 and "bad.csv:2" in refused.err
