"""Aggregate statistics, stratified bootstrap, probability of improvement, performance
profiles and the tables they go into, against hand-computed values."""

import numpy as np
import pandas as pd
import pytest

from research.analysis import stats
from research.analysis.profiles import plot_performance_profiles, tau_grid
from research.analysis.tables import (
    aggregate_table,
    improvement_table,
    latex_tabular,
    score_matrices,
    write_table,
)

col = lambda *values: np.asarray(values, np.float64)[:, None]  # one task, [R, 1]


def test_iqm_drops_a_quarter_of_the_scores_at_each_end():
    assert stats.iqm(col(1, 2, 3, 4, 5, 6, 7, 8)) == 4.5  # mean of 3, 4, 5, 6
    assert stats.iqm(col(1, 2, 3, 4, 5, 6, 7, 100)) == 4.5  # the outlier is cut
    assert stats.iqm(col(1, 2, 3, 4, 100)) == 3.0  # n = 5: floor(5/4) = 1 cut each end
    assert stats.iqm(col(1, 2, 3)) == 2.0  # n = 3: nothing cut
    assert stats.iqm(col(1, 2, 3, 4, 100, np.nan)) == 3.0  # NaN = missing, not a score
    # pooled over tasks: [1..8] in two columns
    assert stats.iqm(np.array([[1, 5], [2, 6], [3, 7], [4, 8.0]])) == 4.5
    # leading axes are batches: [2, R, T] -> [2]
    np.testing.assert_array_equal(
        stats.iqm(np.stack([col(1, 2, 3, 4, 5, 6, 7, 8), col(0, 0, 0, 0, 2, 2, 2, 2)])), [4.5, 1.0]
    )
    assert np.isnan(stats.iqm(col(np.nan, np.nan)))


def test_median_is_pooled_and_mean_weighs_tasks_equally():
    scores = np.array([[1, 10], [2, 20], [3, 30.0]])
    assert stats.median(scores) == 6.5  # pooled 1, 2, 3, 10, 20, 30
    assert stats.median(col(5, 1, 3)) == 3.0
    assert stats.mean(scores) == 11.0  # task means 2 and 20
    ragged = np.array([[1, 10], [3, np.nan]])
    assert stats.mean(ragged) == 6.0  # (2 + 10) / 2, not the pooled 14 / 3
    assert stats.median(ragged) == 3.0  # pooled 1, 3, 10


def test_optimality_gap_counts_scores_above_the_threshold_as_reaching_it():
    scores = col(100, 300, 500, 600)
    assert stats.optimality_gap(scores, 500.0) == 150.0  # 500 - mean(100, 300, 500, 500)
    assert stats.optimality_gap(scores, 1000.0) == 625.0  # 1000 - 375
    assert stats.optimality_gap(col(600, 700), 500.0) == 0.0


def test_probability_of_improvement_counts_ties_one_half():
    x, y = col(1, 2, 3), col(2, 2, 0)
    # x=1 beats 0 (1); x=2 ties 2, 2 and beats 0 (2); x=3 beats all (3): 6 of 9 pairs
    assert stats.probability_of_improvement(x, y) == pytest.approx(2 / 3)
    assert stats.probability_of_improvement(y, x) == pytest.approx(1 / 3)
    assert stats.probability_of_improvement(x, x) == 0.5
    # the mean over tasks: task 2 has every x above every y
    two = lambda a, b: np.concatenate([a, b], axis=1)
    assert stats.probability_of_improvement(
        two(x, col(5, 6, 7)), two(y, col(0, 1, 2))
    ) == pytest.approx((2 / 3 + 1) / 2)
    # NaNs are missing runs, and run counts may differ: 1 beats 0 (1); 2 ties three 2s and
    # beats 0 (2.5); 3 beats all four (4): 7.5 of 12 pairs
    assert stats.probability_of_improvement(col(1, 2, 3, np.nan), col(2, 2, 0, 2)) == pytest.approx(
        7.5 / 12
    )


def test_prob_greater_from_ranks_equals_counting_pairs():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, (50, 7)).astype(float)  # few values: many ties
    y = rng.integers(0, 4, (50, 5)).astype(float)
    pairs = (x[:, :, None] > y[:, None, :]).mean((1, 2)) + 0.5 * (
        x[:, :, None] == y[:, None, :]
    ).mean((1, 2))
    np.testing.assert_allclose(stats.prob_greater(x, y), pairs, rtol=1e-12)


def test_probability_of_improvement_ci():
    point, low, high = stats.probability_of_improvement_ci(col(5, 6, 7), col(0, 1, 2))
    assert (point, low, high) == (1.0, 1.0, 1.0)  # every resample has x above y
    point, low, high = stats.probability_of_improvement_ci(col(3, 3), col(3, 3, 3))
    assert (point, low, high) == (0.5, 0.5, 0.5)  # all ties
    rng = np.random.default_rng(1)
    x, y = rng.normal(0.5, 1, (20, 2)), rng.normal(0, 1, (20, 2))
    point, low, high = stats.probability_of_improvement_ci(x, y)
    assert 0 <= low < point < high <= 1
    assert stats.probability_of_improvement_ci(x, y) == (point, low, high)  # seeded


def test_performance_profile_is_the_fraction_above_tau_averaged_over_tasks():
    np.testing.assert_array_equal(
        stats.performance_profile(col(1, 2, 3, 4), [0, 2, 2.5, 4]), [1.0, 0.5, 0.5, 0.0]
    )  # strictly above tau
    # task 1: none above 5 or 15; task 2: both above 5, one above 15
    np.testing.assert_array_equal(
        stats.performance_profile(np.array([[1, 10], [2, 20.0]]), [5, 15]), [0.5, 0.25]
    )
    np.testing.assert_array_equal(stats.performance_profile(col(1, np.nan, 3), [2]), [0.5])
    # a task without scores is left out of the average
    np.testing.assert_array_equal(
        stats.performance_profile(np.array([[1, np.nan], [3, np.nan]]), [2]), [0.5]
    )
    # batched [B, R, T] with NaNs and ties against the definition, tau by tau
    x = np.random.default_rng(0).integers(0, 5, (3, 7, 4)).astype(float)
    x[0, 1, 2] = np.nan
    taus = np.array([-1, 0, 0.5, 1, 2, 2, 3, 4, 5])
    direct = np.stack([(x > t).sum(-2) / (~np.isnan(x)).sum(-2) for t in taus], -1).mean(-2)
    np.testing.assert_allclose(stats.performance_profile(x, taus), direct, rtol=1e-12)
    with pytest.raises(ValueError, match="ascending"):
        stats.performance_profile(x, [2, 1])


def test_stratified_bootstrap_resamples_within_each_stratum():
    # each stratum is constant (0 in one, 10 in the other): every stratified resample has
    # four of each, so the mean and the IQM are 5 in all of them and the CI collapses
    scores = np.array([[0.0, 10.0]] * 4)
    for statistic in (stats.mean, stats.iqm):
        assert stats.stratified_bootstrap_ci(scores, statistic) == (5.0, 5.0, 5.0)
    # the same 8 scores as one stratum: resamples mix them freely, the CI is wide
    point, low, high = stats.stratified_bootstrap_ci(scores.reshape(-1, 1), stats.mean)
    assert point == 5.0 and low <= 2.5 and high >= 7.5
    # a resample's column t holds values of column t only, and as many as it has
    scores = np.array([[1, 10, 100], [2, 20, np.nan], [3, 30, np.nan]])
    draws = stats.stratified_resamples(scores, 200, np.random.default_rng(0))
    assert draws.shape == (200, 3, 3)
    assert set(np.unique(draws[:, :, 0])) <= {1, 2, 3}
    assert set(np.unique(draws[:, :, 1])) <= {10, 20, 30}
    np.testing.assert_array_equal(draws[:, 0, 2], 100)
    assert np.isnan(draws[:, 1:, 2]).all()


def test_stratified_bootstrap_ci_of_vector_statistics_in_batches(monkeypatch):
    rng = np.random.default_rng(2)
    scores = rng.normal(size=(10, 3))
    point, low, high = stats.stratified_bootstrap_ci(scores, lambda x: stats.aggregates(x, 1.0))
    assert point.shape == low.shape == high.shape == (4,)
    np.testing.assert_array_equal(
        point,
        [
            stats.iqm(scores),
            stats.mean(scores),
            stats.median(scores),
            stats.optimality_gap(scores, 1.0),
        ],
    )
    assert (low <= point).all() and (point <= high).all() and (low < high).all()
    # resamples in small batches (bounded memory) draw the same numbers
    x, y = scores[:, :2], scores[:, 1:] + 0.1
    improvement = stats.probability_of_improvement_ci(x, y)
    monkeypatch.setattr(stats, "_BATCH_SCORES", 30 * 7)  # batches of 7 resamples
    again = stats.stratified_bootstrap_ci(scores, lambda x: stats.aggregates(x, 1.0))
    np.testing.assert_array_equal(again[1], low)
    np.testing.assert_array_equal(again[2], high)
    assert stats.probability_of_improvement_ci(x, y) == improvement


def test_bootstrap_mean_ci_is_unchanged_for_its_callers():
    mean, low, high = stats.bootstrap_mean_ci(np.array([[1.0, 4.0], [3.0, np.nan]]))
    np.testing.assert_array_equal(mean, [2.0, 4.0])
    assert 1.0 <= low[0] <= 2.0 <= high[0] <= 3.0
    assert low[1] == high[1] == 4.0  # one sample: the interval is the point


def test_score_matrices_split_settings_and_strata():
    runs = pd.DataFrame(
        {
            "run": range(8),
            "seed": [0, 1] * 4,
            "lr": [0.1, 0.1, 0.2, 0.2] * 2,
            "env.length": [0.5] * 4 + [1.0] * 4,
        }
    )
    values = np.arange(8.0)
    (a, sa), (b, sb) = score_matrices(runs, values, ["lr"], ["env.length"])
    assert (a, b) == ("lr=0.1", "lr=0.2")
    np.testing.assert_array_equal(sa, [[0, 4], [1, 5]])  # columns: length 0.5, 1.0
    np.testing.assert_array_equal(sb, [[2, 6], [3, 7]])
    ((label, scores),) = score_matrices(runs, values, [], [])
    assert label == "all runs" and scores.shape == (8, 1)


def test_aggregate_table_values_and_default_threshold():
    matrices = [("a", col(1, 2, 3, 4, 5, 6, 7, 8)), ("b", col(2, 2, 2, 2))]
    table = aggregate_table(matrices, threshold=5.0)
    a = table.iloc[0]
    assert (a.setting, a.runs, a.strata, a.threshold) == ("a", 8, 1, 5.0)
    assert (a.iqm, a["mean"], a["median"]) == (4.5, 4.5, 4.5)
    assert a.optimality_gap == 5 - (1 + 2 + 3 + 4 + 5 * 4) / 8
    assert a.iqm_ci_low < 4.5 < a.iqm_ci_high
    b = table.iloc[1]  # constant scores: every CI is the point
    assert (b.iqm, b.iqm_ci_low, b.iqm_ci_high, b.optimality_gap) == (2.0, 2.0, 2.0, 3.0)
    # no threshold: the best score of any setting (8): the gap is to the best run
    assert aggregate_table(matrices).iloc[1].optimality_gap == 6.0


def test_improvement_table_all_pairs_or_against_the_first():
    three = [("a", col(5, 6, 7)), ("b", col(0, 1, 2)), ("c", col(0, 1, 2))]
    table = improvement_table(three)
    assert list(zip(table.x, table.y)) == [("a", "b"), ("a", "c"), ("b", "c")]
    np.testing.assert_array_equal(table.p_improvement, [1.0, 1.0, 0.5])
    many = [(f"s{i}", col(i, i + 1)) for i in range(9)]
    table = improvement_table(many)
    assert len(table) == 8 and set(table.x) == {"s0"}
    assert table.p_improvement.iloc[0] == 0.125  # s0 = (0, 1) vs s1 = (1, 2): 1 tie of 4 pairs


def test_tables_as_csv_markdown_and_latex(tmp_path):
    table = pd.DataFrame(
        {
            "setting": ["lr=0.001, a_b & c"],
            "runs": [8],
            "iqm": [4.5],
            "iqm_ci_low": [3.0],
            "iqm_ci_high": [6.25],
            "gap": [np.nan],
        }
    )
    paths = write_table(tmp_path / "aggregates", table)
    assert [p.name for p in paths] == ["aggregates.csv", "aggregates.md", "aggregates.tex"]
    assert not list(tmp_path.glob(".*"))  # no temporary files left
    pd.testing.assert_frame_equal(pd.read_csv(paths[0]), table)
    assert (tmp_path / "aggregates.md").read_text() == (
        "| setting           |   runs | iqm           |   gap |\n"
        "|:------------------|-------:|:--------------|------:|\n"
        "| lr=0.001, a_b & c |      8 | 4.5 [3, 6.25] |   nan |\n"
    )
    assert (tmp_path / "aggregates.tex").read_text() == (
        "\\begin{tabular}{lrlr}\n"
        "\\toprule\n"
        "setting & runs & iqm & gap \\\\\n"
        "\\midrule\n"
        "lr=0.001, a\\_b \\& c & 8 & 4.5 [3, 6.25] & n/a \\\\\n"
        "\\bottomrule\n"
        "\\end{tabular}\n"
    )
    # a row starting with "[" would be read as \\'s optional argument
    assert "\\\\\n{}[x] & 1" in latex_tabular(pd.DataFrame({"a": ["z", "[x]"], "b": [0, 1]}))


def test_performance_profile_figure(tmp_path):
    matrices = [("a", col(1, 2, 3, 4)), ("b", col(2, 3, 4, 5))]
    np.testing.assert_array_equal(tau_grid(matrices, num=5), [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(tau_grid([("c", col(7, 7))], num=3), [6.5, 7, 7.5])
    path = plot_performance_profiles(matrices, tmp_path / "performance_profile.png")
    assert path.stat().st_size > 10_000
