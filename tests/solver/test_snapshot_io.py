"""Snapshot format v1: round trips, atomic writes, errors that name file, line and column."""
import shutil
from pathlib import Path

import pytest

from defirisk.errors import InputError
from defirisk.snapshot import load_snapshot, write_snapshot

CASE = Path(__file__).resolve().parents[2] / "fixtures" / "cases" / "two_protocol_cliff"


def copy_case(tmp_path) -> Path:
    d = tmp_path / "case"
    shutil.copytree(CASE, d)
    return d


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_round_trip(tmp_path, fmt):
    s = load_snapshot(CASE)
    out = write_snapshot(s, tmp_path / "out", positions_format=fmt)
    assert (out / f"positions.{fmt}").exists()
    t = load_snapshot(out)
    assert t.positions.frame.equals(s.positions.frame)
    assert t.assets == s.assets and t.markets == s.markets
    assert dict(t.venues) == dict(s.venues)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp dirs left behind


def test_overwrite_is_complete(tmp_path):
    s = load_snapshot(CASE)
    write_snapshot(s, tmp_path / "out", positions_format="parquet")
    write_snapshot(s, tmp_path / "out", positions_format="csv")
    assert not (tmp_path / "out" / "positions.parquet").exists()
    assert len(load_snapshot(tmp_path / "out").positions) == len(s.positions)


def test_snapshot_is_immutable():
    s = load_snapshot(CASE)
    f = s.positions.frame
    f.loc[0, "amount"] = -5
    assert load_snapshot(CASE).positions.frame.equals(s.positions.frame)
    with pytest.raises(AttributeError):
        s.positions.x = 1
    with pytest.raises(ValueError):
        s.positions.column("amount")[0] = 1.0


@pytest.mark.parametrize("file,old,new,match", [
    ("positions.csv", "WETH,collateral,100", "WETH,collateral,-100", r"positions.csv line 2, column amount"),
    ("positions.csv", "WETH,collateral,100", "WETH,collateral,abc", r"positions.csv line 2, column amount"),
    ("positions.csv", "a11ce,USDC,debt", "a11ce,DOGE,debt", r"positions.csv line 3, column asset: 'DOGE'"),
    ("positions.csv", "aave-v3,main,0x00000000000000000000000000000000000a11ce,WETH", "aave-v9,main,0x00000000000000000000000000000000000a11ce,WETH", r"line 2, column protocol: unknown protocol 'aave-v9'"),
    ("positions.csv", "WETH,collateral,100", "WETH,lent,100", r"line 2, column side"),
    ("assets.csv", "WETH,0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2,18,3000.0", "WETH,0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2,18,nan", r"assets.csv line 4, column price_usd"),
    ("markets.json", '"protocol": "morpho-blue"', '"protocol": "euler"', r"markets.json entry 1, field protocol: unknown protocol 'euler'"),
    ("venues.json", '"base_reserve": 100.0', '"base_reserve": -1', r"venues.json: venue 0 of WBTC \(constant_product\): field base_reserve"),
    ("manifest.json", "defirisk-snapshot/1", "defirisk-snapshot/9", r"manifest.json: field format"),
])
def test_bad_input_names_file_line_column(tmp_path, file, old, new, match):
    d = copy_case(tmp_path)
    p = d / file
    text = p.read_text()
    assert old in text
    p.write_text(text.replace(old, new, 1))
    with pytest.raises(InputError, match=match):
        load_snapshot(d)


def test_both_position_files_is_an_error(tmp_path):
    d = copy_case(tmp_path)
    load_snapshot(d).positions.frame.to_parquet(d / "positions.parquet")
    with pytest.raises(InputError, match="both positions.csv and positions.parquet"):
        load_snapshot(d)


def test_unknown_market_in_positions(tmp_path):
    d = copy_case(tmp_path)
    p = d / "positions.csv"
    p.write_text(p.read_text().replace("morpho-blue,WETH/USDC-86,0x0000000000000000000000000000000000000b0b,WETH", "morpho-blue,nope,0x0000000000000000000000000000000000000b0b,WETH"))
    with pytest.raises(InputError, match="market morpho-blue/nope not in markets.json"):
        load_snapshot(d)


def test_write_refuses_to_replace_a_foreign_directory_or_file(tmp_path):
    snap = load_snapshot(CASE)
    victim = tmp_path / "home"
    victim.mkdir()
    (victim / "important.txt").write_text("keep me")
    with pytest.raises(InputError, match="not a defirisk snapshot directory"):
        write_snapshot(snap, victim)
    assert (victim / "important.txt").read_text() == "keep me"
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        write_snapshot(snap, afile)
    assert afile.read_text() == "x"
    # Empty directories and earlier snapshots are replaced, with normal permissions.
    empty = tmp_path / "empty"
    empty.mkdir()
    write_snapshot(snap, empty)
    write_snapshot(snap, empty)
    assert (empty / "manifest.json").is_file() and (empty.stat().st_mode & 0o755) == 0o755
