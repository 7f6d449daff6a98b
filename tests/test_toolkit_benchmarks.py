"""The toolkit's benchmark scripts run end to end in their --smoke mode (tiny untrained models, two clips): their
tables come from benchmarks/export.py and benchmarks/merge.py run outside the tests (docs/results.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from unified.model.quantization import torchao_missing

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torchao_missing() is not None, reason=str(torchao_missing()))
def test_export_benchmark_smoke(capsys):
    rows = _script("export").main(["--smoke"])
    assert [r["variant"] for r in rows] == ["saved (fp32 on load)", "int8 linears, bf16"]
    assert rows[1]["size_mb"] < rows[0]["size_mb"] and "| int8 linears, bf16 |" in capsys.readouterr().out


def test_merge_benchmark_smoke(capsys):
    rows = _script("merge").main(["--smoke"])
    assert len(rows) == 3 and all(0.0 <= r["mean"] <= 1.0 for r in rows)
    assert "| ties (density 0.5) |" in capsys.readouterr().out
