"""reports/ is replaced whole: a write failure mid-way leaves every old output as it was (issue 26, case 12)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from kmx_eval import io
from kmx_eval.errors import KmxError
from kmx_eval.report import build, stats, tables

from report_fixtures import COMBINATIONS, DATASETS


def _results(frames, headline: str) -> build.Results:
    metrics = frames[0][frames[0]["seed"] == 0]
    agg = stats.aggregate_seeds(metrics)
    result_tables = tables.report_tables(agg, datasets=DATASETS, combinations=list(COMBINATIONS) + ["cnn"])
    empty = stats.paired_comparisons(frames[1].iloc[:0], [("B4", "B34")], n_resamples=10, confidence=0.9,
                                     seed=0)
    comparison = tables.comparison_table(empty, agg)
    return build.Results(agg=agg, tables=result_tables + [comparison], comparison=comparison,
                         numbers={ds: {"B4": {"accuracy": 0.5}} for ds in DATASETS},
                         sentences={ds: headline for ds in DATASETS}, claims={},
                         fidelity_metric="RelevanceMassAccuracy")


def _write(folder: Path, results: build.Results, page: str) -> None:
    build.write_report(folder, results=results, title="t", figure_files={"a.png": page.encode()}, page=page)


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_write_failure_leaves_the_old_report_untouched(tmp_path, frames, monkeypatch):
    reports = tmp_path / "reports"
    _write(reports, _results(frames, "old"), "<p>old</p>")
    before = _digest(reports)
    assert {"index.html", "summary.md", "metrics.json", "figures/a.png", "tables/accuracy.csv"} <= set(before)

    calls = []
    real = io.write_text

    def failing(path, text):  # the disk fills up after a few files, as a file-size limit makes it
        calls.append(path)
        if len(calls) == 5:
            raise KmxError(f"could not write {path}: no space left on device; nothing was left half-written")
        return real(path, text)

    monkeypatch.setattr(io, "write_text", failing)
    with pytest.raises(KmxError, match="no space left"):
        _write(reports, _results(frames, "new"), "<p>new</p>")
    assert _digest(reports) == before  # every old output, byte for byte; none of the new ones
    assert sorted(p.name for p in reports.iterdir()) == sorted(["figures", "index.html", "metrics.json",
                                                                "summary.md", "tables"])  # no staging left

    monkeypatch.setattr(io, "write_text", real)
    _write(reports, _results(frames, "new"), "<p>new</p>")
    assert (reports / "index.html").read_text() == "<p>new</p>" and "new" in (reports / "summary.md").read_text()
    assert sorted(p.name for p in reports.iterdir()) == sorted(["figures", "index.html", "metrics.json",
                                                                "summary.md", "tables"])
