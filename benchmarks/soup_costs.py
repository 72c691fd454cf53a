"""What souping costs next to retraining one ingredient, on the default setting.

Why: SMS claims its soups are nearly free compared with the m retrains that feed them.
This times, on the default run's phase-3 ingredients (90% sparse, m = 4) and on the
workflow's thread count (1):

- the pieces: `average_state_dicts` of the m ingredients, one `recalibrate_batchnorm`
  (on the settings' share of the training split), one validation evaluation;
- whole steps as a job runs them, minus process start (see job_overhead.json):
  `jobs.soup(method="uniform")`, `jobs.soup(method="greedy")` (m + m - 1 averages,
  recalibrations and validation passes), and `jobs.retrain` of one phase-3 ingredient
  of the uniform chain from its phase-2 soup (the unit souping is compared against).

Lottery Pools (interpolating ingredients of different masks) is not in the package, so
it is recorded as not available rather than measured.

    python benchmarks/soup_costs.py [--threads 1] [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import _common
import torch

from sparse_soups import jobs
from sparse_soups.kernels.checkpoints import Checkpoint
from sparse_soups.kernels.data import load_prepared
from sparse_soups.kernels.evaluation import accuracy
from sparse_soups.kernels.models import build_model
from sparse_soups.kernels.soups import average_state_dicts, recalibrate_batchnorm
from sparse_soups.kernels.training import make_reproducible, pick_device

RUN = "seed0"
PHASE = 3
CHAIN = "uniform"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads, as the workflow's jobs")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each whole step")
    parser.add_argument("--quick", action="store_true", help="1 repeat of each step")
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    make_reproducible(args.threads)
    device = pick_device(args.device)
    settings = _common.default_settings()
    m, batch = settings.soup.ingredients, settings.eval_batch_size
    run = _common.EXPERIMENT_DIR / RUN
    data = _common.EXPERIMENT_DIR / "data.pt"

    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        paths = [run / f"{CHAIN}/phase{PHASE}/ingredient{i}/model.pt" for i in range(m)]
        converted = [_common.current_checkpoint(path, scratch) for path in paths]
        ingredients = [path for path, _ in converted]
        parent, _ = _common.current_checkpoint(run / f"{CHAIN}/phase{PHASE - 1}/soup/model.pt", scratch)
        loaded = [Checkpoint.load(path) for path in ingredients]
        states, masks = [c.state_dict for c in loaded], [c.masks for c in loaded]

        dataset = load_prepared(data, settings.data, device)
        layout = torch.channels_last if settings.compute.channels_last else torch.contiguous_format
        model = build_model(settings.model, dataset.in_channels, dataset.num_classes)
        model = model.to(device, memory_format=layout)
        model.load_state_dict(average_state_dicts(states, masks))
        share = dataset.train.head(settings.soup.bn_recalibration_fraction)

        timings: dict[str, Any] = {
            "average_state_dicts": _common.repeat(partial(average_state_dicts, states, masks), 5 * repeats),
            "recalibrate_batchnorm": _common.repeat(
                partial(recalibrate_batchnorm, model, share, batch), 3 * repeats, device=device
            ),
            "validation_evaluation": _common.repeat(
                partial(accuracy, model, dataset.val, batch), 3 * repeats, device=device
            ),
        }
        for method in ("uniform", "greedy"):
            soup = partial(jobs.soup, settings, data, method, ingredients, scratch / f"{method}.pt", device)
            timings[f"soup_step_{method}"] = _common.repeat(soup, repeats, warmup=0, device=device)
        retrain = partial(
            jobs.retrain, settings, data, parent, CHAIN, PHASE, 0, 0, scratch / "retrain.pt", device
        )
        timings["retrain_one_ingredient"] = _common.repeat(retrain, repeats, warmup=0, device=device)

    retrain_s = timings["retrain_one_ingredient"]["median"]
    payload = {
        "benchmark": "soup_costs",
        "machine": _common.machine(device),
        "setting": {
            "ingredients": f"{RUN}/{CHAIN}/phase{PHASE}/ingredient0..{m - 1} (90% sparse)",
            "retrain": f"jobs.retrain from {RUN}/{CHAIN}/phase{PHASE - 1}/soup, "
            f"{settings.retrain.epochs} epochs of {len(dataset.train)} images",
            "bn_recalibration_images": len(share),
            "validation_images": len(dataset.val),
            "threads": args.threads,
            "compute": settings.compute.__dict__,
            "greedy_soup_work": f"{2 * m - 1} averages + recalibrations + validation passes",
            "checkpoints_converted_from_older_format": any(flag for _, flag in converted),
        },
        "method": "seconds; median of the repeats (pieces: more repeats after 1 warm-up); "
        "steps include loading data and checkpoints and writing the output, not process start",
        "seconds": timings,
        "relative_to_one_retrain": {
            name: round(t["median"] / retrain_s, 6)
            for name, t in timings.items()
            if name != "retrain_one_ingredient"
        },
        "soup_step_relative_to_the_phase_m_retrains": {
            method: round(timings[f"soup_step_{method}"]["median"] / (m * retrain_s), 4)
            for method in ("uniform", "greedy")
        },
        "lottery_pools": {"available": False, "note": "not implemented in sparse_soups; not measured"},
    }
    _common.write_result("soup_costs", payload, args.quick)
    for name, t in timings.items():
        print(f"  {name:24s} {t['median']:9.4f} s  ({t['median'] / retrain_s:.2e} of one retrain)")


if __name__ == "__main__":
    main()
