"""Aggregate tables across settings (IQM, mean, median, optimality gap, probability of
improvement, all with stratified-bootstrap CIs) and writing a table as CSV, markdown and
LaTeX at once."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from research import results
from research.analysis.curves import ci_cells, ci_markdown, groups
from research.analysis.stats import (
    AGGREGATES,
    aggregates,
    probability_of_improvement_ci,
    stratified_bootstrap_ci,
)

# Probability of improvement for every pair of settings up to this many settings; beyond,
# each setting against the first only (the table would grow quadratically).
ALL_PAIRS_UP_TO = 8


def score_matrices(
    runs: pd.DataFrame, values: np.ndarray, settings: Sequence[str], strata: Sequence[str]
) -> list[tuple[str, np.ndarray]]:
    """(label, scores [R, T]) per setting of the `settings` columns of the runs table:
    the per-run `values` [runs] of its runs, one column per setting of the `strata`
    columns (e.g. env variants; one column if none), NaN-padded where a stratum has
    fewer runs. Strata keep their order of first appearance in the table."""
    values = np.asarray(values, np.float64)
    out = []
    for label, index in groups(runs, settings):
        columns = [values[i] for _, i in groups(runs[runs["run"].isin(index)], strata)]
        scores = np.full((max(len(c) for c in columns), len(columns)), np.nan)
        for task, column in enumerate(columns):
            scores[: len(column), task] = column
        out.append((label, scores))
    return out


def aggregate_table(
    matrices: Sequence[tuple[str, np.ndarray]],
    threshold: float | None = None,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Per setting (label, scores [R, T]): runs with a score, strata, and each of
    AGGREGATES with its stratified-bootstrap CI as `<name>`, `<name>_ci_low`,
    `<name>_ci_high`; the optimality gap is to `threshold` (None: the best score of any
    setting), which is a column too."""
    if threshold is None:
        scores = np.concatenate([np.ravel(m) for _, m in matrices])
        threshold = float(np.nanmax(scores)) if np.isfinite(scores).any() else np.nan
    rows = []
    for label, scores in matrices:
        point, low, high = stratified_bootstrap_ci(
            scores, lambda x: aggregates(x, threshold), confidence
        )
        row = {"setting": label, "runs": int((~np.isnan(scores)).sum()), "strata": scores.shape[1]}
        for k, name in enumerate(AGGREGATES):
            row.update(
                {
                    name: float(point[k]),
                    f"{name}_ci_low": float(low[k]),
                    f"{name}_ci_high": float(high[k]),
                }
            )
        rows.append({**row, "threshold": float(threshold)})
    return pd.DataFrame(rows)


def improvement_table(
    matrices: Sequence[tuple[str, np.ndarray]], confidence: float = 0.95
) -> pd.DataFrame:
    """P(x > y) with its CI (columns x, y, p_improvement, _ci_low, _ci_high) for every pair
    of settings, or every setting against the first beyond ALL_PAIRS_UP_TO settings."""
    count = len(matrices)
    pairs = (
        itertools.combinations(range(count), 2)
        if count <= ALL_PAIRS_UP_TO
        else ((0, j) for j in range(1, count))
    )
    rows = []
    for i, j in pairs:
        point, low, high = probability_of_improvement_ci(matrices[i][1], matrices[j][1], confidence)
        rows.append(
            {
                "x": matrices[i][0],
                "y": matrices[j][0],
                "p_improvement": point,
                "p_improvement_ci_low": low,
                "p_improvement_ci_high": high,
            }
        )
    return pd.DataFrame(
        rows, columns=["x", "y", "p_improvement", "p_improvement_ci_low", "p_improvement_ci_high"]
    )


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    """`text` with LaTeX's special characters escaped, to be typeset literally."""
    return "".join(_LATEX_SPECIAL.get(c, c) for c in text)


def latex_tabular(table: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A booktabs `tabular` of the table (needs \\usepackage{booktabs}): numeric columns
    right-aligned, floats as `floatfmt`, NaN as n/a, every cell escaped."""

    def cell(value) -> str:
        if isinstance(value, (float, np.floating)):
            return "n/a" if np.isnan(value) else format(value, floatfmt)
        return str(value)

    align = "".join("r" if pd.api.types.is_numeric_dtype(table[c]) else "l" for c in table.columns)
    # A row may not start with "[": LaTeX would read it as the optional argument of \\.
    row = lambda cells: (
        " & ".join(["{}" + c if c.startswith("[") else c for c in cells[:1]] + cells[1:]) + r" \\"
    )
    lines = [
        rf"\begin{{tabular}}{{{align}}}",
        r"\toprule",
        row([latex_escape(str(c)) for c in table.columns]),
        r"\midrule",
    ]
    lines += [
        row([latex_escape(cell(v)) for v in values]) for values in table.itertuples(index=False)
    ]
    return "\n".join([*lines, r"\bottomrule", r"\end{tabular}"]) + "\n"


def write_table(stem: str | Path, table: pd.DataFrame) -> list[Path]:
    """<stem>.csv (every number, CI bounds as columns), <stem>.md and <stem>.tex (each
    value with a CI as one "x [low, high]" cell), each file written atomically."""
    stem = Path(stem)
    path = lambda suffix: stem.with_name(stem.name + suffix)
    return [
        results.write_csv(path(".csv"), table),
        results.write_text(path(".md"), ci_markdown(table) + "\n"),
        results.write_text(path(".tex"), latex_tabular(ci_cells(table))),
    ]
