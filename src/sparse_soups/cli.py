"""`sparse-soups SUBCOMMAND ...`: every workflow step from the command line.

The Snakemake rules call these subcommands; they work the same by hand, e.g.

    sparse-soups pretrain --settings results/fmnist_cnn/settings.json \\
        --data results/fmnist_cnn/data.pt --seed 0 --out /tmp/dense.pt
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import __version__, steps
from .checkpoints import CheckpointError
from .config import Settings, SettingsError
from .data import DataNotFoundError, prepare_dataset
from .training import DivergenceError, make_reproducible, pick_device


def _add_common(parser: argparse.ArgumentParser, data: bool = True) -> None:
    parser.add_argument("--settings", type=Path, required=True, help="resolved settings JSON")
    if data:
        parser.add_argument("--data", type=Path, required=True, help="prepared dataset file")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for this job")
    parser.add_argument("--device", default="auto", help="auto (GPU if present), cpu, cuda, cuda:N")
    parser.add_argument("--out", type=Path, required=True, help="file to write")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sparse-soups", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)

    prepare = commands.add_parser("prepare-data", help="find the raw data, split, save compactly")
    _add_common(prepare, data=False)

    pretrain = commands.add_parser("pretrain", help="train the dense model")
    _add_common(pretrain)
    pretrain.add_argument("--seed", type=int, required=True)

    retrain = commands.add_parser("retrain", help="prune a model for a phase and retrain it")
    _add_common(retrain)
    retrain.add_argument("--parent", type=Path, required=True, help="checkpoint to prune")
    retrain.add_argument("--lineage", required=True, help="chain directory of the ingredient")
    retrain.add_argument("--phase", type=int, required=True)
    retrain.add_argument("--index", type=int, required=True, help="ingredient index")
    retrain.add_argument("--seed", type=int, required=True)

    soup = commands.add_parser("soup", help="average ingredients and recalibrate BatchNorm")
    _add_common(soup)
    soup.add_argument("--method", required=True, help="uniform or greedy")
    soup.add_argument("--name", help="the soup's directory name (default: the method)")
    soup.add_argument("ingredients", type=Path, nargs="+")

    ensemble = commands.add_parser("ensemble", help="metrics of the mean-softmax ensemble of models")
    _add_common(ensemble)
    ensemble.add_argument("--ood", type=Path, help="corrupted test set directory (corrupt-test-set)")
    ensemble.add_argument("ingredients", type=Path, nargs="+")

    pools = commands.add_parser("lottery-pools", help="Lottery Pools over the tickets of an IMP chain")
    _add_common(pools)
    pools.add_argument("--phase", type=int, required=True, help="target phase")
    pools.add_argument("--variant", required=True, choices=["interp", "avg"])
    pools.add_argument("tickets", type=Path, nargs="+", help="the IMP models of phases 1..P, in order")

    gmp = commands.add_parser("gmp", help="gradual magnitude pruning from the dense model's initialization")
    _add_common(gmp)
    gmp.add_argument("--phase", type=int, required=True, help="the IMP phase whose sparsity it targets")
    gmp.add_argument("--seed", type=int, required=True)
    gmp.add_argument("--prefix-out", type=Path, required=True, help="its state when pruning starts")

    sms_copy = commands.add_parser("gmp-sms-ingredient", help="one copy of a GMP + SMS round")
    _add_common(sms_copy)
    sms_copy.add_argument("--parent", type=Path, required=True, help="the round's start model")
    sms_copy.add_argument("--phase", type=int, required=True)
    sms_copy.add_argument("--round", type=int, required=True, dest="round_index")
    sms_copy.add_argument("--index", type=int, required=True)
    sms_copy.add_argument("--seed", type=int, required=True)

    sms_average = commands.add_parser("gmp-sms-average", help="average a GMP + SMS round and re-prune it")
    _add_common(sms_average)
    sms_average.add_argument("--phase", type=int, required=True)
    sms_average.add_argument("--round", type=int, required=True, dest="round_index")
    sms_average.add_argument("ingredients", type=Path, nargs="+")

    rewind = commands.add_parser("rewind-point", help="the dense run's state at baselines.rewind_epoch")
    _add_common(rewind)
    rewind.add_argument("--seed", type=int, required=True)

    imp_rewind = commands.add_parser("imp-rewind", help="prune, rewind the survivors, retrain")
    _add_common(imp_rewind)
    imp_rewind.add_argument("--parent", type=Path, required=True, help="checkpoint to prune")
    imp_rewind.add_argument("--rewind", type=Path, required=True, help="the rewind point (rewind-point)")
    imp_rewind.add_argument("--phase", type=int, required=True)
    imp_rewind.add_argument("--seed", type=int, required=True)

    evaluate = commands.add_parser("evaluate", help="metrics of one checkpoint as JSON")
    _add_common(evaluate)
    evaluate.add_argument("--checkpoint", type=Path, required=True)
    evaluate.add_argument("--ood", type=Path, help="corrupted test set directory (corrupt-test-set)")

    corrupt = commands.add_parser("corrupt-test-set", help="write the OOD test set (.npy, CIFAR-10-C layout)")
    _add_common(corrupt)

    report = commands.add_parser("report", help="tables and figures of one experiment from its metrics files")
    report.add_argument("--out", type=Path, required=True, help="output directory")
    report.add_argument(
        "--part",
        action="append",
        dest="parts",
        help="main, ood, ablation_m or ablation_vary; repeatable (default: every part with data)",
    )
    report.add_argument("metrics", type=Path, nargs="+")
    return parser


def run(args: argparse.Namespace) -> None:
    if args.command == "report":
        from .reporting import write_report  # matplotlib and seaborn: only here

        write_report(args.metrics, args.out, args.parts)
        return
    settings = Settings.from_json(args.settings)
    make_reproducible(args.threads)
    device = pick_device(args.device)
    if args.command == "prepare-data":
        prepare_dataset(settings.data, args.out, min_train=settings.pretrain.batch_size)
    elif args.command == "pretrain":
        steps.pretrain(settings, args.data, args.seed, args.out, device)
    elif args.command == "retrain":
        steps.retrain(
            settings,
            args.data,
            args.parent,
            args.lineage,
            args.phase,
            args.index,
            args.seed,
            args.out,
            device,
        )
    elif args.command == "soup":
        steps.soup(settings, args.data, args.method, args.ingredients, args.out, device, args.name)
    elif args.command == "ensemble":
        steps.ensemble(settings, args.data, args.ingredients, args.out, device, args.ood)
    elif args.command == "lottery-pools":
        steps.lottery_pools(settings, args.data, args.phase, args.tickets, args.variant, args.out, device)
    elif args.command == "gmp":
        steps.gmp_train(settings, args.data, args.phase, args.seed, args.out, args.prefix_out, device)
    elif args.command == "gmp-sms-ingredient":
        steps.gmp_sms_ingredient(
            settings, args.data, args.parent, args.phase, args.round_index, args.index, args.seed,
            args.out, device,
        )  # fmt: skip
    elif args.command == "gmp-sms-average":
        steps.gmp_sms_average(
            settings, args.data, args.phase, args.round_index, args.ingredients, args.out, device
        )
    elif args.command == "rewind-point":
        steps.rewind_point(settings, args.data, args.seed, args.out, device)
    elif args.command == "imp-rewind":
        steps.imp_rewind(
            settings, args.data, args.parent, args.rewind, args.phase, args.seed, args.out, device
        )
    elif args.command == "evaluate":
        steps.evaluate(settings, args.data, args.checkpoint, args.out, device, args.ood)
    elif args.command == "corrupt-test-set":
        steps.corrupt_test_set(settings, args.data, args.out)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (
        SettingsError,
        CheckpointError,
        DataNotFoundError,
        OSError,  # a missing, unreadable or unwritable file, or a full disk
        DivergenceError,
        ValueError,
    ) as error:
        print(f"sparse-soups {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
