"""digests.json and the line `make repro` ends with: identical, differs inside, differs outside."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kmx_eval import digests, io

PLATFORM = {"cpu": "Intel Xeon", "cpu_capability": "AVX2", "numerics": "portable", "threads": 2,
            "device": "cpu", "torch": "2.14.1"}


def tiny_study(root: Path, *, rma: float = 0.42, weights: bytes = b"w0", cpu: str = "Intel Xeon") -> Path:
    """The files of a finished one-dataset study: weights, a metrics file, headlines, platform records."""
    (root / "models" / "tiny" / "seed0").mkdir(parents=True, exist_ok=True)
    (root / "models" / "tiny" / "seed0" / "backbone.safetensors").write_bytes(weights)
    (root / "data" / "tiny").mkdir(parents=True, exist_ok=True)
    (root / "data" / "tiny" / "train.arrow").write_bytes(b"images")
    (root / "params.yaml").write_text("seeds: [0]\n")
    io.write_json(root / "metrics" / "tiny" / "train.json", {"seed0": {"test_accuracy": 0.9}})
    io.write_json(root / "reports" / "metrics.json",
                  {"tiny": {"B4": {"RelevanceMassAccuracy": rma, "RelevanceMassAccuracy_low": 0.40,
                                   "RelevanceMassAccuracy_high": 0.45, "RelevanceMassAccuracy_chance": 0.1}}})
    for stage in ("train@tiny", "fit@tiny-B4"):
        io.write_json(root / "metrics" / "platform" / f"{stage}.json", {**PLATFORM, "cpu": cpu})
    (root / "reports" / "summary.md").write_text(f"made on {cpu}\n")  # a rendering: not digested
    return root


def test_digests_cover_outputs_but_not_platform_or_renderings(tmp_path):
    snap = digests.write(tiny_study(tmp_path))
    assert set(snap["outputs"]) == {"data/tiny/train.arrow", "models/tiny/seed0/backbone.safetensors",
                                    "metrics/tiny/train.json", "reports/metrics.json"}
    assert snap["headlines"] == {"tiny/B4/RelevanceMassAccuracy": [0.42, 0.40, 0.45]}
    assert snap["platforms"]["train@tiny"]["cpu"] == "Intel Xeon"
    assert json.loads((tmp_path / "digests.json").read_text()) == snap


def test_identical_rerun(tmp_path):
    digests.write(tiny_study(tmp_path))
    line = digests.compare(tmp_path).line()
    assert line.startswith("identical to the committed baseline: all 4 outputs")
    assert "same platform and numerics mode" in line


def test_portable_rerun_on_another_cpu_is_identical_and_says_where(tmp_path):
    digests.write(tiny_study(tmp_path))
    tiny_study(tmp_path, cpu="AMD EPYC")  # same bytes, other CPU in the records and renderings
    line = digests.compare(tmp_path).line()
    assert line.startswith("identical") and "cpu (Intel Xeon -> AMD EPYC)" in line


def test_differs_inside_the_intervals(tmp_path):
    digests.write(tiny_study(tmp_path))
    tiny_study(tmp_path, rma=0.43, weights=b"w1", cpu="AMD EPYC")
    result = digests.compare(tmp_path)
    assert result.differ == ["models/tiny/seed0/backbone.safetensors", "reports/metrics.json"]
    line = result.line()
    assert line.startswith("2 of 4 outputs differ from the committed baseline (models/tiny/seed0/")
    assert "every one of the 1 headline numbers stays inside its committed interval" in line
    assert line.endswith("this run differs in cpu (Intel Xeon -> AMD EPYC)")


def test_differs_outside_an_interval(tmp_path):
    digests.write(tiny_study(tmp_path))
    tiny_study(tmp_path, rma=0.364, weights=b"w1")
    io.write_json(tmp_path / "metrics" / "platform" / "train@tiny.json", {**PLATFORM, "numerics": "native"})
    line = digests.compare(tmp_path).line()
    assert "1 of 1 headline numbers fall outside their committed interval: " \
           "tiny/B4/RelevanceMassAccuracy 0.364 not in [0.400, 0.450]" in line
    assert "numerics (portable -> native)" in line


def test_cli_without_committed_digests_or_outputs(tmp_path, capsys):
    assert digests.main(["compare", "--root", str(tmp_path)]) == 0
    assert "make digests" in capsys.readouterr().out
    assert digests.main(["write", "--root", str(tmp_path)]) == 2
    assert "no study outputs" in capsys.readouterr().err


def test_a_number_without_an_interval_is_no_headline():
    metrics = {"folder": {"B4": {"accuracy": 0.9, "accuracy_low": 0.8, "accuracy_high": 0.95,
                                 "RelevanceMassAccuracy": None, "RelevanceMassAccuracy_low": None,
                                 "RelevanceMassAccuracy_high": None, "agreement": 0.9}}}
    assert digests.headlines(metrics) == {"folder/B4/accuracy": [0.9, 0.8, 0.95]}
