"""The :class:`Table` model of the report and its renderings (CSV, Markdown, LaTeX).

A :class:`Table` keeps three aligned views of the same numbers:

- ``numbers``: long form, one row per cell (``value, ci_low, ci_high, seed_sd, n_seeds, chance,
  higher_is_better, best, note``), written as ``{name}_long.csv``;
- ``cells``: the display strings ``"value [low, high]"`` (``"... ± sd"`` over several seeds), written
  as ``{name}.csv``, Markdown and LaTeX (booktabs) and shown in the HTML report;
- ``best``: where a cell holds the best value of its column within its dataset.

:func:`assemble` builds the display views from the long form; :func:`to_csv_frames`,
:func:`to_markdown` and :func:`to_latex` render a table for ``reports/tables/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from kmx_eval.report.numbers import MISSING, NOT_MEASURED, finite, fmt, format_cell

@dataclass
class Table:
    """One result table in three aligned views (see module docstring).

    Attributes
    ----------
    name : str
        File stem under ``reports/tables/`` and HTML id (``table-{name}``).
    title, caption : str
        Heading and explanation shown with the table (caption also in LaTeX).
    numbers : DataFrame
        Long form: ``index`` columns, ``column`` (the display column), ``value, ci_low, ci_high,
        seed_sd, n_seeds, chance, higher_is_better, best, note``.
    cells : DataFrame
        Display strings; a MultiIndex of the ``index`` columns, one column per display column.
    best : DataFrame
        Booleans aligned with ``cells``: the emphasised cells (best per column within a dataset;
        for comparisons, intervals that exclude zero).
    notes : DataFrame
        Strings aligned with ``cells``: why a value is missing.
    sort_keys : DataFrame
        Floats aligned with ``cells`` used to sort the HTML table (NaN last).
    """

    name: str
    title: str
    caption: str
    index: list[str]
    numbers: pd.DataFrame
    cells: pd.DataFrame
    best: pd.DataFrame
    notes: pd.DataFrame
    sort_keys: pd.DataFrame

    @property
    def empty(self) -> bool:
        return self.cells.empty

    def subset(self, dataset: str, **levels: Sequence[str]) -> "Table":
        """The rows of one dataset, optionally only those whose index ``level`` is in ``levels[level]``.

        Best marks are per dataset already, so they carry over unchanged.
        """
        keep = np.array(self.cells.index.get_level_values("dataset") == dataset, dtype=bool)
        numbers_keep = np.array(self.numbers["dataset"] == dataset, dtype=bool)
        for level, allowed in levels.items():
            keep &= np.asarray(self.cells.index.get_level_values(level).isin(list(allowed)))
            numbers_keep &= np.asarray(self.numbers[level].isin(list(allowed)))
        numbers = self.numbers[numbers_keep]
        return Table(self.name, self.title, self.caption, self.index, numbers, self.cells[keep],
                     self.best[keep], self.notes[keep], self.sort_keys[keep])

    def html_rows(self) -> dict:
        """Header and rows for the HTML template: each cell ``text``, ``sort``, ``best``, ``note``."""
        header = [{"text": name, "numeric": False} for name in self.index]
        header += [{"text": col, "numeric": True} for col in self.cells.columns]
        rows = []
        for i, key in enumerate(self.cells.index):
            key = key if isinstance(key, tuple) else (key,)
            cells = [{"text": str(k), "sort": None, "best": False, "note": "", "index": True} for k in key]
            for j, col in enumerate(self.cells.columns):
                s = self.sort_keys.iat[i, j]
                cells.append({"text": self.cells.iat[i, j],
                              "sort": None if not finite(s) else repr(float(s)),
                              "best": bool(self.best.iat[i, j]), "note": self.notes.iat[i, j],
                              "index": False})
            rows.append(cells)
        return {"header": header, "rows": rows}



def assemble(numbers: pd.DataFrame, *, name: str, title: str, caption: str, index: Sequence[str],
             columns: Sequence[str], text=None) -> Table:
    """Build the aligned display frames of a table from its long form."""
    keys = list(dict.fromkeys(tuple(r) for r in numbers[index].itertuples(index=False)))
    mi = pd.MultiIndex.from_tuples(keys, names=index) if keys else pd.MultiIndex.from_tuples([], names=index)
    cells = pd.DataFrame(NOT_MEASURED, index=mi, columns=columns, dtype=object)
    best = pd.DataFrame(False, index=mi, columns=columns)
    notes = pd.DataFrame("", index=mi, columns=columns, dtype=object)
    sort_keys = pd.DataFrame(np.nan, index=mi, columns=columns)
    for i, r in numbers.iterrows():
        key = tuple(r[k] for k in index)
        col = r["column"]
        if text is not None:
            cells.at[key, col] = text(r)
        elif r.get("is_chance", False):
            cells.at[key, col] = fmt(r["value"])
        else:
            cells.at[key, col] = format_cell(r["value"], r["ci_low"], r["ci_high"], seed_sd=r["seed_sd"])
        best.at[key, col] = bool(r["best"])
        notes.at[key, col] = r["note"] if isinstance(r["note"], str) else ""
        sort_keys.at[key, col] = r["value"]
    return Table(name, title, caption, list(index), numbers, cells, best, notes, sort_keys)



def to_markdown(table: Table) -> str:
    """GitHub Markdown of the table; best cells in bold, missing-value notes as footnotes."""
    def esc(s: str) -> str:
        return str(s).replace("|", "\\|")

    header = list(table.index) + list(table.cells.columns)
    lines = [f"**{esc(table.title)}**", "", "| " + " | ".join(esc(h) for h in header) + " |",
             "|" + "|".join([":--"] * len(table.index) + ["--:"] * len(table.cells.columns)) + "|"]
    notes: list[str] = []
    for i, key in enumerate(table.cells.index):
        key = key if isinstance(key, tuple) else (key,)
        out = [esc(k) for k in key]
        for j in range(table.cells.shape[1]):
            text = esc(table.cells.iat[i, j])
            if table.best.iat[i, j]:
                text = f"**{text}**"
            note = table.notes.iat[i, j]
            if text == MISSING and note:
                if note not in notes:
                    notes.append(note)
                text += f"<sup>{notes.index(note) + 1}</sup>"
            out.append(text)
        lines.append("| " + " | ".join(out) + " |")
    lines += ["", esc(table.caption)]
    lines += [f"<sup>{k + 1}</sup> {esc(n)}" for k, n in enumerate(notes)]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _latex_escape(text: str) -> str:
    out = "".join(_LATEX_SPECIAL.get(c, c) for c in str(text))
    return out.replace("±", r"$\pm$").replace("−", "$-$")


def to_latex(table: Table) -> str:
    """LaTeX (booktabs: ``\\toprule``, ``\\midrule``, ``\\bottomrule``) via pandas' Styler.

    Best cells are wrapped in ``\\textbf{}``; names are escaped (``margin\\_centred``).
    """
    cells = table.cells.map(_latex_escape)
    cells.index = pd.MultiIndex.from_tuples(
        [tuple(_latex_escape(k) for k in (key if isinstance(key, tuple) else (key,)))
         for key in table.cells.index], names=[_latex_escape(n) for n in table.index]) \
        if len(cells) else cells.index
    cells.columns = [_latex_escape(c) for c in cells.columns]
    styles = np.where(table.best.to_numpy(), "textbf:--rwrap;", "")
    styler = cells.style.apply(lambda _: styles, axis=None)
    return styler.to_latex(hrules=True, caption=_latex_escape(table.caption), label=f"tab:{table.name}",
                           position_float="centering", column_format="l" * len(table.index)
                           + "r" * len(cells.columns), multirow_align="t", clines=None)


def to_csv_frames(table: Table) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The display frame (``{name}.csv``) and the long numeric frame (``{name}_long.csv``)."""
    display = table.cells.reset_index()
    numbers = table.numbers.drop(columns=[c for c in ("is_chance",) if c in table.numbers.columns])
    return display, numbers

