"""Every table and figure of the report, built from a small fixture of metrics files.

The fixture is a complete run in the metrics format of `jobs.evaluate` (every method
row, OOD cells, ECE, soup geometry, k-of-m soups, ingredients varying in their learning
rate), written for one seed and for three; the tables' numbers are checked against it.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib import image

from sparse_soups import layout
from sparse_soups.cli import main
from sparse_soups.kernels.history import HistoryRow, write_history
from sparse_soups.registry import SOUP_METHODS
from sparse_soups.reporting import PARTS, part_files, write_report
from sparse_soups.reporting.curves import _phase_lines, load_histories
from sparse_soups.reporting.figures import PALETTE, colour
from sparse_soups.reporting.parts import HISTORY_PARTS

PHASES, M = 2, 3
CORRUPTIONS = ("gaussian_noise", "fog", "jpeg_compression")
LRS = (0.05, 0.1, 0.2)


# The SMS chains of the fixture run: the paper's two soups and two merging operators (a
# grid search and an optimized soup), in the registry's order.
CHAINS = ("uniform", "greedy", "learned", "ties")


def _models() -> dict[str, tuple[str, str | None, int, int | None]]:
    """Every model directory of the fixture run: (kind, soup method, phase, ingredient index)."""
    models: dict[str, tuple[str, str | None, int, int | None]] = {layout.DENSE: ("dense", None, 0, None)}
    for p in range(1, PHASES + 1):
        for chain in (layout.IMP, layout.IMP_BUDGET):
            models[layout.chain_model_dir(chain, p)] = ("ingredient", None, p, 0)
        models[f"imp_rewind/phase{p}/ingredient0"] = ("ingredient", None, p, 0)
        models[f"gmp/phase{p}"] = ("gmp", None, p, None)
        models[f"gmp_sms/phase{p}"] = ("soup", "gmp_sms", p, None)
        for chain in CHAINS:  # phase 1's ingredients are shared (one directory)
            models.update({layout.ingredient_dir(chain, p, i): ("ingredient", None, p, i) for i in range(M)})
            models[layout.chain_model_dir(chain, p)] = ("soup", chain, p, None)
        models[layout.soup_dir(layout.subset_soup(2), p)] = ("soup", "uniform_k2", p, None)
        ablation = layout.ablation_chain(2)  # SMS uniform with 2 of the M = 3 ingredients
        if p > 1:
            models.update(
                {layout.ingredient_dir(ablation, p, i): ("ingredient", None, p, i) for i in range(2)}
            )
        models[layout.chain_model_dir(ablation, p)] = ("soup", ablation, p, None)
        models[layout.lottery_pools_dir("interp", p)] = ("soup", None, p, None)
        models[layout.ensemble_dir(p)] = ("ensemble", None, p, None)
    models[layout.soup_dir(layout.SOUP_AT_END, PHASES)] = ("soup", "soup_at_end", PHASES, None)
    return models


def _record(experiment: str, seed: int, model_dir: str, rng: np.random.Generator) -> dict:
    kind, method, phase, index = _models()[model_dir]
    ood = {c: {str(s): float(rng.uniform(0.3, 0.8)) for s in range(1, 6)} for c in CORRUPTIONS}
    record = {
        "experiment": experiment, "seed": seed, "model_dir": model_dir, "kind": kind, "phase": phase,
        "target_sparsity": [0.0, 0.5, 0.75][phase], "sparsity": [0.0, 0.5, 0.75][phase] + 1e-4 * seed,
        "layer_sparsity": {"conv": 0.5}, "test_accuracy": float(rng.uniform(0.8, 0.9)),
        "validation_accuracy": float(rng.uniform(0.8, 0.9)), "checkpoint_sha256": "0" * 64,
        "ece": float(rng.uniform(0.01, 0.1)), "worst_class_accuracy": float(rng.uniform(0.5, 0.7)),
        "mce": float(rng.uniform(0.1, 0.3)), "budget_epochs": 3 if kind == "soup" else 1,
        "flops": 1000, "dense_flops": 2000, "speedup": 2.0,
        "ood": ood, "ood_accuracy": statistics.fmean(v for sev in ood.values() for v in sev.values()),
    }  # fmt: skip
    groups = {
        name: float(rng.uniform(0.4, 0.95)) for name in ("a, b", "a, not b", "not a, b", "not a, not b")
    }
    record |= {"group_accuracy": groups, "worst_group_accuracy": min(groups.values())}
    if method:
        record["method"] = method
    if method in CHAINS:  # what the soup step records of its merge
        record |= {"ties": {"chosen": {"density": 0.5}}, "learned": {"coefficients": [0.2, 0.3, 0.5]}}.get(
            method, {}
        )
    if kind == "soup":
        record["geometry"] = {"pairwise_l2": [[0, 1], [1, 0]], "mean_pairwise_l2": 1.0,
                              "pairwise_angle_deg": [[0, 5], [5, 0]], "mean_pairwise_angle_deg": 5.0,
                              "distance_to_soup": [0.5, 0.5], "mean_distance_to_soup": 0.5}  # fmt: skip
    if index is not None:
        lr = LRS[index] if "imp" not in model_dir else 0.1
        record["recipe"] = {"weight_decay": 5e-4, "lr": lr, "epochs": 1, "schedule": "llr", "seed_index": 0}
    return record


def write_fixture(root: Path, seeds: tuple[int, ...], experiment: str = "exp_a") -> list[Path]:
    """A finished run's metrics files under `root/results/{experiment}/seed{s}/`."""
    paths = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        for model_dir in _models():
            path = root / layout.run_dir(experiment, seed) / model_dir / layout.METRICS_FILE
            path.parent.mkdir(parents=True, exist_ok=True)
            record = _record(experiment, seed, model_dir, rng)
            path.write_text(json.dumps(record))
            if record["kind"] == "soup" and record.get("method") in CHAINS:  # the merge's timing
                path.with_name(layout.TIMING_FILE).write_text(
                    json.dumps({"merge_seconds": 0.5 + record["phase"]})
                )
            paths.append(path)
    return paths


def write_histories(root: Path, seeds: tuple[int, ...], experiment: str = "exp_a") -> list[Path]:
    """history.csv of every trained model of the fixture run: 3 epochs, the validation
    accuracy rising from a value that names the model's phase."""
    paths = []
    for seed in seeds:
        for model_dir in _models():
            if (layout.parse(model_dir) or ("",))[0] not in layout.TRAINED:
                continue
            phase = _models()[model_dir][2]
            rows = [
                HistoryRow(
                    float(e),
                    10 * e,
                    0.1,
                    2.0 - e / 3 if e else float("nan"),
                    0.5,
                    0.4 + 0.1 * e,
                    [0.0, 0.5, 0.75][phase],
                    e * 1.0,
                )
                for e in range(4)
            ]
            path = root / layout.run_dir(experiment, seed) / model_dir / layout.HISTORY_FILE
            write_history(rows, path)
            paths.append(path)
    return paths


def _value(paths: list[Path], model_dir: str, field: str = "test_accuracy") -> list[float]:
    return [json.loads(p.read_text())[field] for p in paths if p.parent.as_posix().endswith("/" + model_dir)]


@pytest.fixture(scope="module", params=[(0,), (0, 1, 2)], ids=["1seed", "3seeds"])
def report(request, tmp_path_factory) -> tuple[tuple[int, ...], list[Path], Path, dict[str, Path]]:
    seeds = request.param
    tmp_path = tmp_path_factory.mktemp(f"report{len(seeds)}")
    paths = write_fixture(tmp_path, seeds)
    out = tmp_path / "report"
    return seeds, paths, out, write_report(paths + write_histories(tmp_path, seeds), out)


def test_every_part_writes_exactly_its_declared_files(report) -> None:
    _, _, out, written = report
    declared = {name for part in PARTS for name in part_files(part)}
    assert set(written) == declared
    assert {p.name for p in out.iterdir()} == declared


def test_main_table_cells_are_mean_and_std_over_seeds(report) -> None:
    seeds, paths, out, _ = report
    wide = pd.read_csv(out / "table.csv").set_index("method")
    soup = _value(paths, layout.chain_model_dir("uniform", 2))
    assert wide.loc["SMS uniform", "phase2_test_accuracy"] == pytest.approx(statistics.fmean(soup))
    std = wide.loc["SMS uniform", "phase2_test_accuracy_std"]
    if len(seeds) > 1:
        assert std == pytest.approx(statistics.stdev(soup))
    else:
        assert np.isnan(std)  # undefined with one seed: an empty cell, not 0
    assert wide.loc["SMS uniform", "seeds"] == len(seeds)
    # mean ingredient: the mean over the uniform chain's ingredients, then over seeds
    ingredients = [_value(paths, layout.ingredient_dir("uniform", 2, i)) for i in range(M)]
    per_seed = [statistics.fmean(column) for column in zip(*ingredients, strict=True)]
    assert wide.loc["Mean ingredient (SMS uniform)", "phase2_test_accuracy"] == pytest.approx(
        statistics.fmean(per_seed)
    )
    chains = []
    for method in CHAINS:  # the registry's order
        label = SOUP_METHODS.label(method)
        chains += [f"Best ingredient ({label})", f"Best ingredient by test (oracle) ({label})"]
        chains += [f"Mean ingredient ({label})", label]
        chains += ["Subset soup (first 2 of m, uniform chain)"] if method == "uniform" else []
    assert list(wide.index) == [
        "Dense", "IMP", "IMP (rewind)", "IMP (m x budget)", *chains,
        "SMS uniform (m = 2)", "GMP", "GMP + SMS", "Soup at end (IMP, last phase)",
        "Lottery Pools (interp)", "Prediction ensemble (not sparse)",
    ]  # fmt: skip
    assert np.isnan(wide.loc["Soup at end (IMP, last phase)", "phase1_test_accuracy"])


def _best(wide: pd.DataFrame, column: str, lowest: bool = False) -> str:
    eligible = wide.drop(index="Prediction ensemble (not sparse)")[column].dropna().round(4)
    return eligible.idxmin() if lowest else eligible.idxmax()


def test_best_per_column_is_bold_in_markdown_and_latex(report) -> None:
    seeds, _, out, _ = report
    wide = pd.read_csv(out / "table.csv").set_index("method")
    best = _best(wide, "phase2_test_accuracy")
    markdown = (out / "table.md").read_text()
    rows = [line.split("|") for line in markdown.splitlines() if line.startswith("| ")]
    bold_rows = [cells[1].strip() for cells in rows if "**" in cells[-2]]
    assert best in bold_rows
    assert f"{len(seeds)} seed(s)" in markdown and ("mean ± std" in markdown) == (len(seeds) > 1)
    latex = (out / "table.tex").read_text()
    for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}{lrrrr}"):
        assert rule in latex
    best_line = next(line for line in latex.splitlines() if line.startswith(best.replace("&", r"\&") + " &"))
    cell = f"{100 * wide.loc[best, 'phase2_test_accuracy']:.2f}"
    assert r"\bfseries " + cell in best_line
    assert r"Phase 1 (50.0\% sparse)" in latex and r"exp\_a" in latex  # escaped
    assert (r"$\pm$" in best_line) == (len(seeds) > 1)
    # ECE: the lowest is best
    ece = pd.read_csv(out / "ece.csv").set_index("method")
    lowest = _best(ece, "phase1_ece", lowest=True)
    ece_line = next(line for line in (out / "ece.md").read_text().splitlines() if f"| {lowest} " in line)
    assert ece_line.split("|")[4].strip().startswith("**")  # after the epochs/phase column


def test_ood_tables_match_the_fixture(report) -> None:
    _, paths, out, _ = report
    ood = pd.read_csv(out / "ood.csv").set_index("method")
    expected = statistics.fmean(_value(paths, layout.chain_model_dir("greedy", 1), "ood_accuracy"))
    assert ood.loc["SMS greedy", "phase1_ood_accuracy"] == pytest.approx(expected)
    corruptions = pd.read_csv(out / "ood_corruptions.csv").set_index("method")
    tables = _value(paths, layout.chain_model_dir("uniform", PHASES), "ood")
    fog = [statistics.fmean(t["fog"].values()) for t in tables]
    assert corruptions.loc["SMS uniform", "fog_ood_accuracy"] == pytest.approx(statistics.fmean(fog))
    assert "Dense" not in corruptions.index  # final phase only
    assert "gaussian noise" in (out / "ood_corruptions.md").read_text()


def test_fairness_tables_match_the_fixture(report) -> None:
    _, paths, out, _ = report
    worst = pd.read_csv(out / "worst_group.csv").set_index("method")
    expected = statistics.fmean(_value(paths, layout.chain_model_dir("greedy", 1), "worst_group_accuracy"))
    assert worst.loc["SMS greedy", "phase1_worst_group_accuracy"] == pytest.approx(expected)
    groups = pd.read_csv(out / "group_accuracy.csv").set_index("method")
    ingredients = [
        _value(paths, layout.ingredient_dir("uniform", PHASES, i), "group_accuracy") for i in range(M)
    ]
    per_seed = [statistics.fmean(t["not a, b"] for t in seed) for seed in zip(*ingredients, strict=True)]
    assert groups.loc["Mean ingredient (SMS uniform)", "not a, b_accuracy"] == pytest.approx(
        statistics.fmean(per_seed)
    )
    soup = _value(paths, layout.chain_model_dir("uniform", PHASES), "worst_group_accuracy")
    assert groups.loc["SMS uniform", "worst group_accuracy"] == pytest.approx(statistics.fmean(soup))
    claims = pd.read_csv(out / "claims.csv")
    assert "worst-group accuracy" in set(claims.metric)


def test_ablation_tables(report) -> None:
    _, paths, out, _ = report
    subsets = pd.read_csv(out / "subset_soups.csv").set_index("model")
    assert list(subsets.index) == ["k = 1 (ingredient 0)", "k = 2", "k = 3 (SMS uniform)"]
    k2 = _value(paths, layout.soup_dir(layout.subset_soup(2), 2))
    assert subsets.loc["k = 2", "phase2_test_accuracy"] == pytest.approx(statistics.fmean(k2))
    first = _value(paths, layout.ingredient_dir("uniform", 1, 0))
    assert subsets.loc["k = 1 (ingredient 0)", "phase1_test_accuracy"] == pytest.approx(
        statistics.fmean(first)
    )
    # the ablation over m: real chains, m = 1 being IMP
    ablation = pd.read_csv(out / "ablation_m.csv").set_index("model")
    assert list(ablation.index) == ["m = 1 (IMP)", "m = 2", "m = 3 (SMS uniform)"]
    chain = _value(paths, layout.chain_model_dir(layout.ablation_chain(2), 2))
    assert ablation.loc["m = 2", "phase2_test_accuracy"] == pytest.approx(statistics.fmean(chain))
    imp = _value(paths, layout.chain_model_dir(layout.IMP, 2))
    assert ablation.loc["m = 1 (IMP)", "phase2_test_accuracy"] == pytest.approx(statistics.fmean(imp))
    vary = pd.read_csv(out / "ablation_vary.csv").set_index("model")
    label = "SMS greedy: ingredient 2 (lr = 0.2)"
    lr = _value(paths, layout.ingredient_dir("greedy", 2, 2))
    assert vary.loc[label, "phase2_test_accuracy"] == pytest.approx(statistics.fmean(lr))
    assert "SMS uniform: soup" in vary.index


def _pixels(path: Path) -> np.ndarray:
    return image.imread(path)


def test_every_figure_is_a_real_image(report) -> None:
    *_, written = report
    for name, path in written.items():
        if name.endswith(".png"):
            pixels = _pixels(path)
            assert pixels.shape[0] > 300 and pixels.shape[1] > 500, name
            assert pixels[..., :3].std() > 0.02, f"{name} is blank"
        elif name.endswith(".pdf"):
            assert path.read_bytes().startswith(b"%PDF"), name
            assert path.stat().st_size > 5_000, name


def test_a_method_keeps_its_colour_in_every_figure() -> None:
    assert colour("SMS uniform") == PALETTE["SMS uniform"]
    assert len(set(PALETTE.values())) == len(PALETTE)  # distinct colours
    two, three = (f"Subset soup (first {k} of m, uniform chain)" for k in (2, 3))
    assert colour(two) == colour(two) != colour(three) != colour("SMS uniform (m = 3)")


def test_old_metrics_without_ood_or_ece_still_give_every_declared_file(tmp_path: Path) -> None:
    paths = write_fixture(tmp_path, (0,))
    for path in paths:
        record = json.loads(path.read_text())
        for field in ("ece", "ood", "ood_accuracy", "recipe", "geometry"):
            record.pop(field, None)
        record["ood_accuracy"] = None
        path.write_text(json.dumps(record))
    out = tmp_path / "report"
    parts = [part for part in PARTS if part not in HISTORY_PARTS]
    written = write_report(paths, out, parts=parts)
    assert set(written) == {name for part in parts for name in part_files(part)}
    assert "No ECE" in (out / "ece.md").read_text()
    assert "No OOD accuracy" in (out / "ood.md").read_text()
    assert "differ only in their seed" in (out / "ablation_vary.md").read_text()
    assert pd.read_csv(out / "ood.csv").columns.tolist() == ["experiment", "note"]
    assert r"\toprule" in (out / "ood.tex").read_text()
    assert _pixels(out / "ood_heatmap.png")[..., :3].std() > 0.01  # says why it is empty
    assert pd.read_csv(out / "table.csv").shape[0] == 11 + 4 * len(CHAINS)  # 4 rows a chain


def test_default_parts_follow_the_data_and_bad_input_is_named(tmp_path: Path) -> None:
    paths = write_fixture(tmp_path, (0,))
    keep = [p for p in paths if "uniform_k2" not in p.as_posix() and "uniform_m2" not in p.as_posix()]
    written = write_report(keep, tmp_path / "r")
    assert "ablation_m.csv" not in written and "subset_soups.csv" not in written and "ood.csv" in written
    other = write_fixture(tmp_path / "b", (0,), experiment="exp_b")
    with pytest.raises(ValueError, match="one experiment"):
        write_report(paths + other, tmp_path / "r2")
    with pytest.raises(ValueError, match=r"unknown report parts \['tables'\]"):
        write_report(paths, tmp_path / "r3", parts=["tables"])


def test_cli_writes_one_part(tmp_path: Path, capsys) -> None:
    paths = write_fixture(tmp_path, (0, 1))
    out = tmp_path / "cli"
    assert main(["report", "--out", str(out), "--part", "ablation_m", *map(str, paths)]) == 0
    assert {p.name for p in out.iterdir()} == set(part_files("ablation_m"))
    assert main(["report", "--out", str(out), "--part", "bogus", *map(str, paths)]) == 1
    assert "unknown report parts" in capsys.readouterr().err


def test_budget_column_states_each_rows_epochs_per_phase(report) -> None:
    _, _, out, _ = report
    table = pd.read_csv(out / "table.csv").set_index("method")
    assert table.loc["SMS uniform", "budget_epochs"] == 3  # the fixture's soups sum 3 retrains
    assert table.loc["IMP", "budget_epochs"] == 1
    assert "epochs/phase" in (out / "table.md").read_text()


def _claims_results(differences: dict[str, list[float]]) -> pd.DataFrame:
    """Per-seed test accuracies: IMP at 0.80, every other row 0.80 + its difference (points)."""
    rows = []
    for seed in range(len(next(iter(differences.values())))):
        rows.append({"seed": seed, "method": "IMP", "test_accuracy": 0.80})
        for method, points in differences.items():
            rows.append({"seed": seed, "method": method, "test_accuracy": 0.80 + points[seed] / 100})
    frame = pd.DataFrame(rows).assign(experiment="exp", phase=1, sparsity=0.5, ood_accuracy=np.nan)
    return frame.assign(budget_epochs=np.where(frame.method == "IMP", 4.0, 16.0))


def test_claims_table_against_hand_computed_paired_intervals() -> None:
    """Differences (2, 2.5, 3): mean 2.5, sd 0.5, t(0.975, 2) = 4.302653 -> 2.5 +- 1.242069, better.
    Differences (1, -1, 0.5): mean 0.1667, sd 1.040833 -> [-2.418906, 2.752239], straddles 0."""
    from sparse_soups.reporting.claims import claims_table

    results = _claims_results({"SMS uniform": [2.0, 2.5, 3.0], "SMS greedy": [1.0, -1.0, 0.5]})
    claims = claims_table(results).set_index("claim")
    uniform = claims.loc["SMS uniform vs IMP"]
    assert uniform.seeds == 3 and uniform.difference == pytest.approx(2.5)
    assert (uniform.ci_low, uniform.ci_high) == pytest.approx((2.5 - 1.242069, 2.5 + 1.242069), abs=1e-5)
    assert uniform.verdict == "better" and uniform.interval == "paired t, 95%"
    assert (uniform.budget_method, uniform.budget_reference) == (16.0, 4.0)
    greedy = claims.loc["SMS greedy vs IMP"]
    assert greedy.difference == pytest.approx(1 / 6)
    assert (greedy.ci_low, greedy.ci_high) == pytest.approx((-2.418906, 2.752239), abs=1e-5)
    assert greedy.verdict == "not distinguishable"
    worse = claims_table(_claims_results({"SMS uniform": [-1.0, -1.2, -0.9]})).set_index("claim")
    assert worse.loc["SMS uniform vs IMP", "verdict"] == "worse"
    single = claims_table(_claims_results({"SMS uniform": [1.0]})).set_index("claim")
    assert single.loc["SMS uniform vs IMP", "verdict"] == "no interval (1 seed)"
    assert np.isnan(single.loc["SMS uniform vs IMP", "ci_low"])


def test_claims_table_is_written_in_every_format(report) -> None:
    seeds, _, out, _ = report
    claims = pd.read_csv(out / "claims.csv")
    assert {"SMS uniform vs IMP", "SMS uniform vs IMP (m x budget)", "SMS uniform vs best ingredient",
            "SMS uniform vs mean ingredient", "GMP + SMS vs GMP"} <= set(claims.claim)  # fmt: skip
    assert set(claims.metric) == {"accuracy", "OOD accuracy", "worst-group accuracy"}
    assert (claims.seeds == len(seeds)).all()
    markdown = (out / "claims.md").read_text()
    assert "paired t" in markdown and "verdict" in markdown
    assert r"\toprule" in (out / "claims.tex").read_text()
    assert 'id="T_claims' in (out / "claims.html").read_text()


def test_training_curves_overlay_each_phases_ingredients_with_imp_and_its_budget(tmp_path: Path) -> None:
    histories = load_histories(write_histories(tmp_path, (0, 1)))
    assert set(histories.experiment) == {"exp_a"} and set(histories.seed) == {0, 1}
    assert (histories.model_dir == layout.DENSE).sum() == 2 * 4  # two seeds, four rows each
    first = histories[histories.seed == 0]
    picked = {label: set(rows.model_dir) for label, rows in _phase_lines(first, 1)}
    assert picked == {
        **{f"SMS ingredient {i}": {f"dense/phase1/ingredient{i}"} for i in range(M)},
        "IMP": {"dense/phase1/ingredient0"},  # IMP shares ingredient 0's retrain
        "IMP (m x budget)": {"imp_budget/phase1/ingredient0"},
    }
    picked = {label: set(rows.model_dir) for label, rows in _phase_lines(first, 2)}
    assert picked == {
        **{f"SMS ingredient {i}": {f"uniform/phase2/ingredient{i}"} for i in range(M)},
        "IMP": {"imp/phase2/ingredient0"},
        "IMP (m x budget)": {"imp_budget/phase2/ingredient0"},
    }


def test_curve_parts_need_history_files(tmp_path: Path) -> None:
    paths = write_fixture(tmp_path, (0,))
    with pytest.raises(ValueError, match=r"report part 'training' needs history\.csv files"):
        write_report(paths, tmp_path / "report", parts=["training"])
    histories = write_histories(tmp_path, (0,))
    written = write_report(histories, tmp_path / "curves")  # the parts the files have data for
    assert set(written) == {name for part in HISTORY_PARTS for name in part_files(part)}
    with pytest.raises(ValueError, match="not under results"):
        load_histories([tmp_path / "history.csv"])


def test_the_merging_table_gives_each_soup_method_s_choices_and_seconds(report) -> None:
    seeds, _, out, _ = report
    merging = pd.read_csv(out / "merging.csv", keep_default_na=False).set_index(["method", "phase"])
    labels = [SOUP_METHODS.label(method) for method in CHAINS]
    assert set(merging.index) == {(label, p) for label in labels for p in range(1, PHASES + 1)}
    assert merging.loc[("SMS TIES", 2), "chosen"] == f"density 0.5 ({len(seeds)} of {len(seeds)})"
    assert merging.loc[("SMS learned", 1), "coefficients"] == "0.20, 0.30, 0.50"
    assert merging.loc[("SMS uniform", 2), "merge_seconds"] == pytest.approx(2.5)
    assert (merging.seeds == len(seeds)).all()
