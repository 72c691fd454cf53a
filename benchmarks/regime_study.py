"""Which regime should the embedded default run? A small study of candidate regimes.

The default must ask the paper's question: where pruning costs accuracy, does averaging
beat IMP? A regime qualifies when (a) pretraining has converged (the dense training
loss has flattened, and IMP's first phase is not above dense by more than one seed
standard deviation), (b) the final sparsity costs IMP accuracy against dense, and (c)
three seeds fit the time budget. Each candidate runs the library's own steps (pretrain,
retrain, soup, evaluation with BatchNorm recalibration of every model) for the dense
model, the IMP chain and the SMS uniform chain, on real Fashion-MNIST, for two seeds,
two candidates at a time on the 2-core machine. Soups are measured only to describe the
regimes; the criteria above decide, not which method wins. With a linear decay of the LR to 0
the training loss keeps falling to the last epoch (annealing), so "flattened" is read
from the loss level and its drop over the last tenth of pretraining, side by side.

    python benchmarks/regime_study.py            # all candidates (about 25 minutes on 2 cores)
    python benchmarks/regime_study.py --quick    # one tiny candidate, one seed (a check)

Writes benchmarks/results/regime_study.{json,md} and regime_study.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

RESULTS = REPO / "benchmarks" / "results"
SEEDS = (0, 1)

# name: overrides of the experiment settings (everything else as in config/config.yaml)
CANDIDATES: dict[str, dict] = {
    "w32_6k_e20_to90_r4": {  # the first round's default: dense not converged
        "model": {"width": 32}, "data": {"train_subset": 6000}, "pretrain": {"epochs": 20},
        "prune": {"sparsity": 0.9}, "retrain": {"epochs": 4},
    },
    "w32_6k_e60_to90_r4": {
        "model": {"width": 32}, "data": {"train_subset": 6000}, "pretrain": {"epochs": 60},
        "prune": {"sparsity": 0.9}, "retrain": {"epochs": 4},
    },
    "w16_6k_e60_to95_r2": {
        "model": {"width": 16}, "data": {"train_subset": 6000}, "pretrain": {"epochs": 60},
        "prune": {"sparsity": 0.95}, "retrain": {"epochs": 2},
    },
    "w16_6k_e60_to98_r2": {
        "model": {"width": 16}, "data": {"train_subset": 6000}, "pretrain": {"epochs": 60},
        "prune": {"sparsity": 0.98}, "retrain": {"epochs": 2},
    },
    "w32_6k_e60_to97_r2": {
        "model": {"width": 32}, "data": {"train_subset": 6000}, "pretrain": {"epochs": 60},
        "prune": {"sparsity": 0.97}, "retrain": {"epochs": 2},
    },
    "w16_12k_e40_to95_r2": {
        "model": {"width": 16}, "data": {"train_subset": 12000}, "pretrain": {"epochs": 40},
        "prune": {"sparsity": 0.95}, "retrain": {"epochs": 2},
    },
}  # fmt: skip
QUICK = {
    "quick": {
        "model": {"width": 8}, "data": {"train_subset": 1000}, "pretrain": {"epochs": 2},
        "prune": {"sparsity": 0.8, "phases": 2}, "retrain": {"epochs": 1}, "soup": {"ingredients": 2},
    }
}  # fmt: skip


def _merge(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for key, value in overrides.items():
        out[key] = _merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return out


def _settings(name: str, overrides: dict):
    from sparse_soups.config import Settings

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    (experiment,) = config["experiments"].values()
    raw = _merge(experiment, overrides)
    raw["baselines"] = {"imp_budget": False, "soup_at_end": False, "ensemble": False,
                        "lottery_pools": "none", "gmp": "none", "gmp_sms": "none"}  # fmt: skip
    raw["ood"] = {"enabled": False}
    raw.pop("seeds", None)
    return Settings.from_dict({"name": name, **raw})


def _score(settings, dataset, path: Path) -> tuple[float, float]:
    """Test and validation accuracy after BatchNorm recalibration (as every model is scored)."""
    from sparse_soups.kernels.checkpoints import Checkpoint
    from sparse_soups.kernels.evaluation import accuracy
    from sparse_soups.kernels.models import build_model
    from sparse_soups.kernels.soups import recalibrate_batchnorm

    model = build_model(settings.model, dataset.in_channels, dataset.num_classes)
    model.load_state_dict(Checkpoint.load(path).state_dict)
    recalibrate_batchnorm(model, dataset.train.head(settings.soup.bn_recalibration_fraction), 1000)
    return accuracy(model, dataset.test, 1000), accuracy(model, dataset.val, 1000)


def run_candidate(name: str, overrides: dict, seed: int, data: Path) -> dict:
    """Dense, IMP chain and SMS uniform chain of one candidate and seed."""
    import torch

    from sparse_soups import jobs
    from sparse_soups.kernels.data import load_prepared
    from sparse_soups.kernels.training import make_reproducible
    from sparse_soups.methods import context

    make_reproducible(1)
    settings = _settings(name, overrides)
    dataset = load_prepared(data, settings.data)
    started, cpu = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        history: list = []
        original_train = context.train

        def recording_train(*args, **kwargs):
            result = original_train(*args, **kwargs)
            history.append(result.history)
            return result

        context.train = recording_train  # every method trains through the job context
        try:
            jobs.pretrain(settings, data, seed, root / "dense.pt")
            dense_curve = [r.train_loss for r in history[0] if r.step > 0]  # row 0: before training
            rows = {"dense": [_score(settings, dataset, root / "dense.pt")]}
            m, phases = settings.soup.ingredients, settings.prune.phases
            imp_parent = uniform_parent = root / "dense.pt"
            rows["imp"], rows["sms_uniform"], rows["mean_ingredient"] = [], [], []
            for phase in range(1, phases + 1):
                imp = root / f"imp{phase}.pt"
                lineage = "dense" if phase == 1 else "imp"
                jobs.retrain(settings, data, imp_parent, lineage, phase, 0, seed, imp)
                rows["imp"].append(_score(settings, dataset, imp))
                ingredients = [imp] if phase == 1 else []
                for index in range(len(ingredients), m):
                    path = root / f"uniform{phase}_{index}.pt"
                    lineage = "dense" if phase == 1 else "uniform"
                    jobs.retrain(settings, data, uniform_parent, lineage, phase, index, seed, path)
                    ingredients.append(path)
                scores = [_score(settings, dataset, p) for p in ingredients]
                rows["mean_ingredient"].append(tuple(statistics.mean(s[i] for s in scores) for i in (0, 1)))
                soup = root / f"soup{phase}.pt"
                jobs.soup(settings, data, "uniform", ingredients, soup)
                rows["sms_uniform"].append(_score(settings, dataset, soup))
                imp_parent, uniform_parent = imp, soup
        finally:
            context.train = original_train
    del torch
    return {
        "candidate": name, "seed": seed, "settings": dataclasses.asdict(settings),
        "dense_loss_curve": dense_curve,
        "test": {k: [s[0] for s in v] for k, v in rows.items()},
        "validation": {k: [s[1] for s in v] for k, v in rows.items()},
        "wall_s": time.perf_counter() - started, "cpu_s": time.process_time() - cpu,
    }  # fmt: skip


def _prepare(directory: Path) -> Path:
    from sparse_soups.kernels.data import prepare_dataset

    settings = _settings("prepare", {})
    out = directory / "data.pt"
    prepare_dataset(settings.data, out)
    return out


def summarise(runs: list[dict]) -> list[dict]:
    """Per candidate: the criteria's figures, mean (and std) over seeds."""
    table = []
    for name in dict.fromkeys(r["candidate"] for r in runs):
        mine = [r for r in runs if r["candidate"] == name]
        dense = [r["test"]["dense"][0] for r in mine]
        imp1 = [r["test"]["imp"][0] - r["test"]["dense"][0] for r in mine]
        final = {k: [r["test"][k][-1] for r in mine] for k in ("imp", "sms_uniform", "mean_ingredient")}
        curve = [statistics.mean(c) for c in zip(*(r["dense_loss_curve"] for r in mine), strict=True)]
        tail = max(1, len(curve) // 10)  # the last tenth of pretraining
        flattening = (curve[-tail - 1] - curve[-1]) / max(curve[-tail - 1], 1e-12)
        std = statistics.stdev(dense) if len(dense) > 1 else float("nan")
        settings = mine[0]["settings"]
        table.append({
            "candidate": name, "seeds": len(mine),
            "final_sparsity": settings["prune"]["sparsity"],
            "dense_test": statistics.mean(dense), "dense_std": std,
            "dense_final_loss": curve[-1], "loss_drop_last_tenth": flattening,
            "imp_phase1_minus_dense": statistics.mean(imp1),
            "imp_final_minus_dense": statistics.mean(final["imp"]) - statistics.mean(dense),
            "sms_final_minus_imp": statistics.mean(final["sms_uniform"]) - statistics.mean(final["imp"]),
            "mean_ingredient_final_minus_imp": statistics.mean(final["mean_ingredient"])
            - statistics.mean(final["imp"]),
            "cpu_s_per_seed": statistics.mean(r["cpu_s"] for r in mine),
            "imp_phase1_within_1std": statistics.mean(imp1) <= (std if std == std else 0.0),
            "sparsity_costs_imp": statistics.mean(final["imp"]) < statistics.mean(dense),
        })  # fmt: skip
    return table


def write_outputs(runs: list[dict], table: list[dict], out: Path, stem: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps({"runs": runs, "summary": table}, indent=1) + "\n")
    frame = pd.DataFrame(table)
    percent = ["dense_test", "dense_std", "imp_phase1_minus_dense", "imp_final_minus_dense",
               "sms_final_minus_imp", "mean_ingredient_final_minus_imp"]  # fmt: skip
    shown = frame.copy()
    shown[percent] = shown[percent] * 100
    (out / f"{stem}.md").write_text(shown.to_markdown(index=False, floatfmt=".3g") + "\n")
    figure, (curves, accuracy) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name in frame.candidate:
        mine = [r for r in runs if r["candidate"] == name]
        curve = [statistics.mean(c) for c in zip(*(r["dense_loss_curve"] for r in mine), strict=True)]
        curves.plot(range(1, len(curve) + 1), curve, label=name)
        sparsities = [1 - (1 - mine[0]["settings"]["prune"]["sparsity"]) ** (p / len(mine[0]["test"]["imp"]))
                      for p in range(1, len(mine[0]["test"]["imp"]) + 1)]  # fmt: skip
        for method, style in (("imp", "-o"), ("sms_uniform", "--s")):
            values = [100 * statistics.mean(v) for v in zip(*(r["test"][method] for r in mine), strict=True)]
            dense = 100 * statistics.mean(r["test"]["dense"][0] for r in mine)
            accuracy.plot([0, *sparsities], [dense, *values], style, label=f"{name} {method}", markersize=4)
    curves.set(xlabel="pretraining epoch", ylabel="mean training loss", yscale="log")
    curves.set_title("Dense training loss")
    accuracy.set(xlabel="sparsity", ylabel="test accuracy (%)", title="IMP (solid) and SMS uniform (dashed)")
    curves.legend(fontsize=7)
    accuracy.legend(fontsize=6, ncol=2)
    figure.tight_layout()
    figure.savefig(out / f"{stem}.png", dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one tiny candidate, one seed")
    parser.add_argument("--workers", type=int, default=2, help="candidates trained at once (1 thread each)")
    parser.add_argument("--only", nargs="*", help="run only these candidates")
    parser.add_argument("--summarise", action="store_true", help="rewrite the table and figure from the JSON")
    args = parser.parse_args(argv)
    if args.summarise:
        runs = json.loads((RESULTS / "regime_study.json").read_text())["runs"]
        write_outputs(runs, summarise(runs), RESULTS, "regime_study")
        print((RESULTS / "regime_study.md").read_text())
        return 0
    chosen = {k: v for k, v in CANDIDATES.items() if not args.only or k in args.only}
    candidates = QUICK if args.quick else chosen
    seeds = (0,) if args.quick else SEEDS
    with tempfile.TemporaryDirectory() as tmp:
        data = _prepare(Path(tmp))
        with ProcessPoolExecutor(args.workers) as pool:
            jobs = [(n, o, s) for n, o in candidates.items() for s in seeds]
            futures = [pool.submit(run_candidate, n, o, s, data) for n, o, s in jobs]
            runs = []
            for future in as_completed(futures):  # each run kept as it ends: a long study shows progress
                runs.append(future.result())
                partial = RESULTS / f"{'regime_study_quick' if args.quick else 'regime_study'}.partial.json"
                partial.parent.mkdir(parents=True, exist_ok=True)
                partial.write_text(json.dumps(runs, indent=1) + "\n")
                print(f"done: {runs[-1]['candidate']} seed {runs[-1]['seed']}", flush=True)
    runs.sort(key=lambda r: (list(candidates).index(r["candidate"]), r["seed"]))
    table = summarise(runs)
    stem = "regime_study_quick" if args.quick else "regime_study"
    write_outputs(runs, table, RESULTS, stem)
    print((RESULTS / f"{stem}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
