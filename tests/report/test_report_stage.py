"""The report stage end to end on a synthetic workspace, checked in a parser and in headless Chromium.

One build (module fixture) of 2 datasets x (B4, B34, B234, cnn) x 2 seeds serves every check:
(a) the page in a real browser: every figure decodes, no network request, sorting works, a
non-blank screenshot; (b) every dataset x combination of params is in the tables; (c) the numbers
in the HTML, the CSV tables and metrics.json agree; and stale outputs of removed entries are ignored.
"""

from __future__ import annotations

import html as html_lib
import json
import math
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stage_loader import load_stage_module
from report_fixtures import COMBINATIONS, DATASETS, PARAMS, load_params, write_workspace

from kmx_eval.report.numbers import fmt

CNN = "cnn"
TABLES = ("accuracy", "prototype_fidelity", "localisation", "faithfulness", "concept_fidelity",
          "comparisons")
INDEX = {"comparisons": ["dataset", "comparison", "method", "metric"]}




@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("workspace")
    write_workspace(root)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        load_stage_module("report").build(load_params())
    finally:
        os.chdir(cwd)
    return root


class _Tables(HTMLParser):
    """Collect every <table id=...>: header texts and rows of (text, class) cells; count <img>."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, dict] = {}
        self.images = 0
        self._table = None
        self._cell = None
        self._section = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images += 1
        elif tag == "table":
            self._table = self.tables.setdefault(attrs.get("id", f"anon{len(self.tables)}"),
                                                 {"header": [], "rows": []})
        elif tag in ("thead", "tbody") and self._table is not None:
            self._section = tag
        elif tag == "tr" and self._table is not None and self._section == "tbody":
            self._table["rows"].append([])
        elif tag in ("th", "td") and self._table is not None:
            self._cell = {"text": "", "class": attrs.get("class") or "", "title": attrs.get("title") or ""}

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data

    def handle_endtag(self, tag):
        if tag in ("th", "td") and self._cell is not None:
            self._cell["text"] = self._cell["text"].strip()
            if self._section == "thead":
                self._table["header"].append(self._cell["text"])
            else:
                self._table["rows"][-1].append(self._cell)
            self._cell = None
        elif tag == "table":
            self._table = None


def _parse(html: str) -> _Tables:
    parser = _Tables()
    parser.feed(html)
    return parser


@pytest.fixture(scope="module")
def page(built) -> _Tables:
    return _parse((built / "reports" / "index.html").read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------- files and HTML
def test_outputs_exist_and_are_self_contained(built, page):
    reports = built / "reports"
    html = (reports / "index.html").read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html, re.I)
    assert "http://" not in html and "https://" not in html
    assert page.images > 0 and html.count("data:image/png;base64,") == page.images
    for ds in DATASETS:
        for stem in (f"tradeoff_{ds}", f"prototype_fidelity_{ds}", f"gallery_{ds}", f"curves_{ds}",
                     *(f"prototypes_{ds}_{c}" for c in COMBINATIONS)):
            for ext in ("png", "svg"):
                assert (reports / "figures" / f"{stem}.{ext}").stat().st_size > 1000, stem
    for name in TABLES:
        for suffix in (".csv", "_long.csv", ".md", ".tex"):
            assert (reports / "tables" / f"{name}{suffix}").exists()
    # The generated sentences, as the HTML shows them, for results folders that quote them.
    sentences = (reports / "summary.md").read_text(encoding="utf-8")
    for ds in DATASETS:
        assert f"## {ds}" in sentences
        headline = sentences.split(f"## {ds}\n\n", 1)[1].split("\n", 1)[0]
        assert headline.startswith(f"On {ds}, ") and headline in html_lib.unescape(html)
    # Sections in the order the report promises.
    order = [html.index(f'<section id="{s}">') for s in
             ("summary", "tradeoff", "prototypes", "galleries", "curves", "comparisons-section", "tables", "params")]
    assert order == sorted(order)
    # The paired comparisons: a forest plot in the trade-off section, the tables further down (issue 22).
    assert (reports / "figures" / "comparisons_shapes.png").stat().st_size > 1000
    assert html.index('id="forest-shapes"') < html.index('<section id="prototypes">')
    assert html.index('<section id="comparisons-section">') < html.index('id="comparisons-shapes"')
    assert "# recorded by evaluate for shapes/B4, shapes/B34" in html  # evaluate's settings.json
    assert "map_scaling: per-sample positive part" in html
    for package in ("torch", "torchvision", "quantus", "captum", "scikit-learn", "numpy", "datasets", "dvc"):
        assert f"<dt>{package}</dt>" in html


def test_every_dataset_and_combination_appears_in_the_tables(built, page):
    html = (built / "reports" / "index.html").read_text(encoding="utf-8")
    acc = page.tables["table-accuracy"]
    ds_col, comb_col = acc["header"].index("dataset"), acc["header"].index("combination")
    present = {(r[ds_col]["text"], r[comb_col]["text"]) for r in acc["rows"]}
    expected = {(d, c) for d in PARAMS["datasets"] for c in PARAMS["combinations"] + [CNN]}
    assert expected <= present
    for ds in PARAMS["datasets"]:
        key = page.tables[f"key-{ds}"]
        assert key["header"][1:] == PARAMS["combinations"] + [CNN]
        loc = page.tables["table-localisation"]
        combos = {r[1]["text"] for r in loc["rows"] if r[0]["text"] == ds}
        assert combos == set(PARAMS["combinations"]) | {CNN}
        # Each dataset of params has its own sections (nothing is hard-coded per dataset).
        for section in ("headline", "tradeoff", "prototypes", "gallery", "curves"):
            assert f'id="{section}-{ds}"' in html


def test_stale_outputs_of_removed_entries_are_ignored(built, page):
    html = (built / "reports" / "index.html").read_text(encoding="utf-8")
    assert "B1234" not in html  # a combination no longer in params
    agg = pd.read_csv(built / "reports" / "tables" / "aggregated.csv")
    assert set(agg["combination"]) == set(COMBINATIONS) | {CNN}
    assert agg["n_seeds"].max() == len(PARAMS["seeds"])  # seed 7's rows were dropped
    assert "seeds 0, 1</p>" in html


def _cell(table: dict, index: dict, column: str) -> dict:
    header = table["header"]
    rows = [r for r in table["rows"] if all(r[header.index(k)]["text"] == str(v) for k, v in index.items())]
    assert len(rows) == 1, (index, len(rows))
    return rows[0][header.index(column)]


def test_html_csv_and_metrics_json_agree(built, page):
    tables_dir = built / "reports" / "tables"
    checked = 0
    for name in TABLES:
        index = INDEX.get(name, ["dataset", "combination", "method"])
        long = pd.read_csv(tables_dir / f"{name}_long.csv", keep_default_na=False, na_values=[""])
        display = pd.read_csv(tables_dir / f"{name}.csv", dtype=str, keep_default_na=False)
        html_table = page.tables[f"table-{name}"]
        assert len(html_table["rows"]) == len(display)
        for _, r in long.iterrows():
            key = {k: r[k] for k in index}
            cell = _cell(html_table, key, r["column"])
            shown = display.loc[np.all([display[k] == str(v) for k, v in key.items()], axis=0),
                                r["column"]].iloc[0]
            assert cell["text"] == shown  # HTML cell == display CSV cell
            if r["column"] in ("favours", "pairs", "endpoint"):
                continue
            value = r["value"]
            if isinstance(value, float) and math.isnan(value):
                assert cell["text"] == "n/a"
                continue
            assert cell["text"].split(" ")[0] == fmt(value)  # == long CSV number
            if not (math.isnan(r["ci_low"]) or math.isnan(r["ci_high"])):
                assert f"[{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]" in cell["text"]
            assert ("best" in cell["class"].split()) == bool(r["best"])
            checked += 1
    assert checked > 200

    numbers = json.loads((built / "reports" / "metrics.json").read_text())
    assert set(numbers) == set(PARAMS["datasets"])
    assert len(numbers["shapes"]["B4"]) == 8 and len(numbers["shapes"][CNN]) == 3  # DVC's key numbers only
    acc_long = pd.read_csv(tables_dir / "accuracy_long.csv")
    for ds, combos in numbers.items():
        assert set(combos) == set(PARAMS["combinations"]) | {CNN}
        for comb, values in combos.items():
            for key, value in values.items():
                if key.endswith(("_low", "_high")):
                    continue
                cell = _cell(page.tables[f"key-{ds}"], {"number": key}, comb)
                assert cell["text"].split(" ")[0] == fmt(value)  # null -> "n/a"
            if comb != CNN:
                row = acc_long[(acc_long["dataset"] == ds) & (acc_long["combination"] == comb)
                               & (acc_long["method"] == "kmeans") & (acc_long["column"] == "accuracy")]
                assert row["value"].iloc[0] == values["accuracy"]  # the same float, not just close
    # The headline's numbers are the same values, formatted the same way.
    html = (built / "reports" / "index.html").read_text(encoding="utf-8")
    shapes = numbers["shapes"]
    best = max(COMBINATIONS, key=lambda c: shapes[c]["RelevanceMassAccuracy"])
    assert best == "B234"
    sentence = re.search(r'id="headline-shapes">([^<]*)<', html).group(1)
    assert sentence.startswith("On shapes, B234 localises best (RelevanceMassAccuracy of the margin map "
                               f"{fmt(shapes['B234']['RelevanceMassAccuracy'])} ")
    assert f"vs {fmt(shapes['B4']['RelevanceMassAccuracy'])} for B4" in sentence
    assert f"{fmt(100 * shapes['B234']['accuracy'])}% vs {fmt(100 * shapes['B4']['accuracy'])}%" in sentence
    assert "cannot be measured (not applicable: dataset has no masks)" in html
    # The prototype section's sentence: canonical linear separation 2.0 against class means 0.8.
    assert "shapes: the claim that linear prototypes do not represent the data holds for every linear " \
           "head" in html
    assert "fc (canonical reading)" in html and "the B4 probe (canonical reading)" in html


def test_cli_stops_with_one_line_when_an_evaluation_is_missing(tmp_path, capsys):
    import yaml

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS, sort_keys=False))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        status = load_stage_module("report").main(["--params", "params.yaml"])
    finally:
        os.chdir(cwd)
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert len(err.splitlines()) == 1 and "metrics/shapes/B4/evaluate/metrics.csv does not exist" in err
    assert not (tmp_path / "reports").exists()


# ---------------------------------------------------------------------------------- the browser
def _chromium() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if path is None:
        pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium; `make chromium`)")
    return path


def _browse(url: str, profile: Path, *extra: str) -> str:
    """Run headless Chromium on ``url`` with networking cut off; return the dumped DOM."""
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
           "--hide-scrollbars", f"--user-data-dir={profile}", "--host-resolver-rules=MAP * ~NOTFOUND",
           *extra, "--dump-dom", url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def page_requests(netlog: Path) -> list[str]:
    """URLs the page asked for, from a Chromium net log.

    Requests of the browser itself (component updates, time sync) have the initiator
    ``"not an origin"``; everything the document loads carries its origin (``"null"`` for file://).
    """
    log = json.loads(netlog.read_text())
    names = {v: k for k, v in log["constants"]["logEventTypes"].items()}
    return [e["params"]["url"] for e in log["events"]
            if names.get(e["type"]) == "URL_REQUEST_START_JOB" and "url" in e.get("params", {})
            and e["params"].get("initiator") != "not an origin"]


def test_report_in_headless_chromium(built, page, tmp_path):
    index = built / "reports" / "index.html"
    shot, netlog = tmp_path / "report.png", tmp_path / "net.json"
    dom = _browse(index.as_uri(), tmp_path / "profile", f"--screenshot={shot}", f"--log-net-log={netlog}",
                  "--window-size=1280,3000")
    # Every embedded figure decoded (the page's load handler counts naturalWidth > 0).
    total = int(re.search(r'data-images-total="(\d+)"', dom).group(1))
    loaded = int(re.search(r'data-images-loaded="(\d+)"', dom).group(1))
    assert total == page.images > 0
    assert loaded == total
    # No network request by the page: only file: and data: URLs, if any are logged at all.
    assert [u for u in page_requests(netlog) if not u.startswith(("file:", "data:"))] == []
    # A non-blank screenshot that shows the styled header.
    from PIL import Image

    img = Image.open(shot).convert("RGB")
    assert img.size == (1280, 3000)
    pixels = np.asarray(img)
    assert pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100
    assert tuple(pixels[10, 10]) == (0x17, 0x32, 0x4D)  # header background from the inline CSS
    print(f"screenshot: {shot}")

    # The net-log check can fail: a page with an external image is caught.
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><img src="https://example.invalid/x.png"></body></html>')
    _browse(bad.as_uri(), tmp_path / "profile2", f"--log-net-log={tmp_path / 'bad.json'}")
    assert "https://example.invalid/x.png" in page_requests(tmp_path / "bad.json")


def test_tables_sort_on_header_click(built, tmp_path):
    html = (built / "reports" / "index.html").read_text(encoding="utf-8")
    probe = """<script>window.addEventListener('load', function () {
      var t = document.getElementById('table-accuracy');
      t.querySelectorAll('thead th')[3].click();
      var v = Array.prototype.map.call(t.tBodies[0].rows, function (r) { return r.cells[3].getAttribute('data-sort') || ''; });
      document.body.setAttribute('data-sorted', v.join(','));
      t.querySelectorAll('thead th')[3].click();
      document.body.setAttribute('data-sorted-desc', Array.prototype.map.call(t.tBodies[0].rows, function (r) { return r.cells[3].getAttribute('data-sort') || ''; }).join(','));
    });</script></body>"""
    copy = tmp_path / "sorted.html"
    copy.write_text(html.replace("</body>", probe), encoding="utf-8")
    dom = _browse(copy.as_uri(), tmp_path / "profile")
    asc = [float(v) for v in re.search(r'data-sorted="([^"]*)"', dom).group(1).split(",") if v]
    desc = [float(v) for v in re.search(r'data-sorted-desc="([^"]*)"', dom).group(1).split(",") if v]
    assert len(asc) > 10 and asc == sorted(asc)
    assert desc == sorted(desc, reverse=True)
