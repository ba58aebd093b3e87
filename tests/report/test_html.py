"""HTML helpers: data URIs, the self-containment check, versions, the key-numbers table."""

from __future__ import annotations

import math

import pytest

from kmx_eval.report import html


def test_png_data_uri_embeds_only_png():
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 8
    assert html.png_data_uri(png) == "data:image/png;base64,iVBORw0KGgoAAAAAAAAAAA=="
    with pytest.raises(ValueError, match="not a PNG"):
        html.png_data_uri(b"<svg/>")


def test_external_references_are_found():
    page = ('<img src="data:image/png;base64,AA"><a href="#tables">x</a>'
            '<script src="https://cdn.example/x.js"></script><link href="style.css">'
            '<div style="background: url(//fonts.example/f.woff)">')
    assert html.external_references(page) == ["https://cdn.example/x.js", "style.css", "//fonts.example/f.woff"]


def test_render_refuses_a_page_that_would_fetch(monkeypatch):
    ctx = html.ReportContext(title="t", overview=[], combinations=["B4"], seeds=[0], fidelity_metric="M",
                             explainer="margin", sections=[], tables=[], settings_text="",
                             params_text="", versions={}, device="cpu")
    page = html.render_report(ctx)
    assert page.startswith("<!DOCTYPE html>") and html.external_references(page) == []
    bad = html.Figure(uri="https://example.org/x.png", alt="x")
    ctx.sections = [html.DatasetSection(name="d", headline="h", key_numbers={}, tradeoff=bad)]
    with pytest.raises(ValueError, match="external resources: https://example.org/x.png"):
        html.render_report(ctx)


def test_versions():
    versions = html.package_versions(("numpy", "no-such-distribution-kmx"))
    assert versions["numpy"][0].isdigit() and versions["no-such-distribution-kmx"] == "not installed"


def test_key_table_merges_interval_keys_into_one_cell():
    section = html.DatasetSection(name="d", headline="", key_numbers={
        "B4": {"accuracy": 0.95, "accuracy_low": 0.9, "accuracy_high": 0.97, "M": math.nan},
        "cnn": {"accuracy": 0.971, "M_cam": 0.2}})
    table = section.key_table()
    assert table["header"] == ["number", "B4", "cnn"]
    rows = {r[0]["text"]: [c["text"] for c in r[1:]] for r in table["rows"]}
    assert rows == {"accuracy": ["0.95 [0.9, 0.97]", "0.971"], "M": ["n/a", "–"], "M_cam": ["–", "0.2"]}


def test_the_interval_note_says_whether_seeds_are_resampled():
    def page(seeds):
        return html.render_report(html.ReportContext(
            title="t", overview=[], combinations=["B4"], seeds=seeds, fidelity_metric="M", explainer="margin",
            sections=[], tables=[], settings_text="", params_text="", versions={}, device="cpu"))

    one, three = page([0]), page([0, 1, 2])
    assert "one training seed, so\nthey do not cover the spread between trainings" in one
    assert "each resample draws the\n3 training seeds with replacement" in three and "one training seed" not in three
