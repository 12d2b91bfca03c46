"""The devnet cache key covers the devnet package's Python sources: editing the code that builds a
chain must not load a state built by the old code."""
from __future__ import annotations

import shutil
from pathlib import Path

from defirisk.devnet.build import DEVNET_PACKAGE, cache_key, sources_fingerprint
from defirisk.devnet.scenario import load_scenario

SMALL = Path(__file__).resolve().parents[2] / "fixtures" / "scenarios" / "small.yaml"


def _copy_package(tmp_path: Path) -> Path:
    dst = tmp_path / "devnet"
    shutil.copytree(DEVNET_PACKAGE, dst, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def test_copy_of_the_package_has_the_same_key(tmp_path):
    scn = load_scenario(SMALL)
    copy = _copy_package(tmp_path)
    assert sources_fingerprint(copy) == sources_fingerprint()
    assert cache_key(scn, package_dir=copy) == cache_key(scn)


def test_changed_source_changes_the_key(tmp_path):
    scn = load_scenario(SMALL)
    copy = _copy_package(tmp_path)
    before = cache_key(scn, package_dir=copy)
    target = copy / "population.py"
    assert target.is_file()
    target.write_text(target.read_text() + "\n# an edit that changes nothing at run time still rebuilds\n")
    assert cache_key(scn, package_dir=copy) != before


def test_new_source_file_changes_the_key(tmp_path):
    scn = load_scenario(SMALL)
    copy = _copy_package(tmp_path)
    before = cache_key(scn, package_dir=copy)
    (copy / "extra.py").write_text("X = 1\n")
    assert cache_key(scn, package_dir=copy) != before


def test_bytecode_caches_do_not_change_the_key(tmp_path):
    scn = load_scenario(SMALL)
    copy = _copy_package(tmp_path)
    before = cache_key(scn, package_dir=copy)
    (copy / "__pycache__").mkdir(exist_ok=True)
    (copy / "__pycache__" / "stale.cpython-311.py").write_text("junk\n")
    assert cache_key(scn, package_dir=copy) == before
