"""The self-contained HTML report (``reports/index.html``), rendered with jinja2.

One file that opens offline and forever: figures are embedded as base64 PNG ``data:`` URIs, styles
and the small table-sorting script are inline, and nothing refers to an external URL (no CDN, font
or script). The page is assembled from the same frames as the CSV tables and ``metrics.json``
(:mod:`kmx_eval.report.numbers` formats every number), so the HTML never disagrees with them.

Sections, in order: summary, trade-off (with the paired comparisons as a forest plot), prototype
fidelity, explanation galleries, faithfulness curves, the paired comparisons tables, full tables
(sortable) with the metric settings, params and versions.
"""

from __future__ import annotations

import base64
import importlib.metadata
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import jinja2

from kmx_eval.report.numbers import NOT_MEASURED, fmt, format_cell
from kmx_eval.report.table import Table

TEMPLATE = "report.html.j2"
TEMPLATES = Path(__file__).parent / "templates"
#: Packages whose versions the report lists (``importlib.metadata`` distribution names).
VERSION_PACKAGES = ("kmx_eval", "torch", "torchvision", "quantus", "captum", "scikit-learn", "numpy",
                    "pandas", "datasets", "dvc", "matplotlib", "seaborn")


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for an ``<img src>``: the image travels inside the HTML."""
    if not png.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError("png_data_uri: the bytes are not a PNG file")
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def package_versions(packages: Sequence[str] = VERSION_PACKAGES) -> dict[str, str]:
    """Installed version of each distribution (``"not installed"`` when absent)."""
    out = {}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


@dataclass
class Figure:
    """An embedded figure: its PNG data URI, alt text and caption."""

    uri: str
    alt: str
    caption: str = ""

    @classmethod
    def from_png(cls, png: bytes, alt: str, caption: str = "") -> "Figure":
        return cls(png_data_uri(png), alt, caption)


@dataclass
class DatasetSection:
    """Everything the report shows about one dataset."""

    name: str
    headline: str
    key_numbers: Mapping[str, Mapping[str, float]]
    tradeoff: Figure | None = None
    prototype_table: Table | None = None
    #: One generated sentence: does "linear prototypes do not represent the data" hold, each linear head
    #: against the class means of its space (kmx_eval.report.summary.prototype_claim)?
    prototype_claim: str = ""
    prototype_figure: Figure | None = None
    prototype_galleries: list[tuple[str, Figure]] = field(default_factory=list)
    explanation_gallery: Figure | None = None
    gallery_note: str = ""
    curves: Figure | None = None
    comparisons: Table | None = None
    #: The paired comparisons as a forest plot (kmx_eval.report.forest), shown before the tables.
    forest: Figure | None = None

    def key_table(self) -> dict:
        """The key-numbers table: one row per number, one column per combination.

        A key ``k`` with companions ``k_low`` and ``k_high`` becomes one row of ``value [low, high]``
        cells; every number is :func:`fmt` of the very value written to ``metrics.json``.
        """
        keys: list[str] = []
        for numbers in self.key_numbers.values():
            keys += [k for k in numbers if k not in keys]
        bounds = {k for k in keys for base in keys
                  if k in (f"{base}_low", f"{base}_high") and base != k}
        rows = []
        for k in (k for k in keys if k not in bounds):
            cells = [{"text": k, "sort": None, "index": True}]
            for numbers in self.key_numbers.values():
                v = numbers.get(k)
                text = (format_cell(_float(v), _float(numbers.get(f"{k}_low")),
                                    _float(numbers.get(f"{k}_high"))) if k in numbers else NOT_MEASURED)
                cells.append({"text": text, "sort": _sort(v), "index": False})
            rows.append(cells)
        return {"header": ["number"] + list(self.key_numbers), "rows": rows}


def _float(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def _sort(x) -> str | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return repr(x) if x == x and abs(x) != float("inf") else None


@dataclass
class ReportContext:
    """All inputs of the template (built by ``stages/report.py`` from files)."""

    title: str
    overview: list[dict[str, Any]]
    combinations: list[str]
    seeds: list[int]
    fidelity_metric: str
    explainer: str
    sections: list[DatasetSection]
    tables: list[Table]
    settings_text: str
    params_text: str
    versions: Mapping[str, str]
    device: str
    runs: list[dict[str, Any]] = field(default_factory=list)
    #: Where the numbers were made: :func:`kmx_eval.numerics.summarise` of the stages' platform records.
    platform: str = ""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", str(text)).strip("-")


def environment() -> jinja2.Environment:
    """The jinja2 environment: autoescaping on, strict undefined variables, templates of this package."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                             autoescape=jinja2.select_autoescape(["html", "j2"], default=True),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    env.filters["slug"] = _slug
    env.filters["fmt"] = fmt
    return env


def render_report(context: ReportContext) -> str:
    """Render ``reports/index.html`` and check that it is self-contained.

    Raises
    ------
    ValueError
        When the rendered page refers to any external URL (``src``/``href``/``url()`` with a scheme
        other than ``data:`` or a same-page ``#anchor``): the report must open offline.
    """
    html = environment().get_template(TEMPLATE).render(ctx=context)
    external = external_references(html)
    if external:
        raise ValueError(f"the report would fetch external resources: {', '.join(external[:3])}")
    return html


_REF = re.compile(r"""(?:\b(?:src|href|action|poster|data)\s*=\s*["']?|url\(\s*["']?)([^"')\s>]+)""",
                  re.IGNORECASE)


def external_references(html: str) -> list[str]:
    """Every ``src``/``href``/``url()`` target that is neither a ``data:`` URI nor a ``#`` anchor."""
    return [ref for ref in _REF.findall(html)
            if not ref.startswith(("data:", "#"))]
