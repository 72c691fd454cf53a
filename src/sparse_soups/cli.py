"""`sparse-soups COMMAND ...`: every workflow step from the command line.

The Snakemake rules call these commands; they work the same by hand, e.g.

    sparse-soups pretrain --settings results/fmnist_cnn/settings.json \\
        --data results/fmnist_cnn/data.pt --seed 0 --out /tmp/dense.pt

`COMMANDS` is the table: each command names its job (`jobs.py`) and its own arguments;
the options every command shares are added once, and the parsed arguments are forwarded
to the job by keyword.
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__, jobs
from .config import LOTTERY_POOLS_VARIANTS, SettingsError
from .export import FORMATS as EXPORT_FORMATS
from .export import export
from .kernels import stopwatch
from .kernels.checkpoints import CheckpointError
from .kernels.data import DataNotFoundError
from .kernels.training import DivergenceError, make_reproducible, pick_device
from .registry import load_plugins
from .stages import read_settings, with_logging

log = logging.getLogger(__name__)


def arg(*flags: str, **options: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
    return flags, options


PHASE, SEED = arg("--phase", type=int, required=True), arg("--seed", type=int, required=True)
ROUND = arg("--round", type=int, required=True, dest="round_index")
INDEX = arg("--index", type=int, required=True, help="ingredient index")
PARENT = arg("--parent", type=Path, required=True, help="checkpoint to start from")
OOD = arg("--ood", type=Path, dest="ood_dir", help="corrupted test set directory (corrupt-test-set)")
INGREDIENTS = arg("ingredients", type=Path, nargs="+")
LOGGING = arg(
    "--logging", type=Path, help="settings of the logging stage: validation, TensorBoard (default: defaults)"
)


@dataclass(frozen=True)
class Command:
    job: Callable[..., Any]  # a function of `jobs`
    help: str
    args: tuple = ()
    data: bool = True  # whether it reads the prepared dataset
    device: bool = True  # whether it computes on the device


# fmt: off
COMMANDS: dict[str, Command] = {
    "prepare-data": Command(
        jobs.prepare_data, "find the raw data, split, save compactly", data=False, device=False
    ),
    "pretrain": Command(jobs.pretrain, "train the dense model", (SEED, LOGGING)),
    "retrain": Command(
        jobs.retrain,
        "prune a model for a phase and retrain it",
        (
            PARENT,
            arg("--lineage", required=True, help="chain directory of the ingredient"),
            PHASE,
            INDEX,
            SEED,
            LOGGING,
        ),
    ),
    "soup": Command(
        jobs.soup,
        "average ingredients and recalibrate BatchNorm",
        (
            arg("--method", required=True, help="a soup method (registry.SOUP_METHODS)"),
            arg("--name", help="the soup's name in the run (default: the method)"),
            arg("--base", type=Path, help="the model the phase started from (model_stock, ties, dare)"),
            INGREDIENTS,
        ),
    ),
    "ensemble": Command(jobs.ensemble, "metrics of the mean-softmax ensemble of models", (OOD, INGREDIENTS)),
    "lottery-pools": Command(
        jobs.lottery_pools,
        "Lottery Pools over the tickets of an IMP chain",
        (
            arg("--phase", type=int, required=True, dest="target_phase", help="target phase"),
            arg("--variant", required=True, choices=LOTTERY_POOLS_VARIANTS),
            arg("tickets", type=Path, nargs="+", help="the IMP models of phases 1..P, in order"),
        ),
    ),
    "gmp": Command(
        jobs.gmp_train,
        "gradual magnitude pruning from the dense model's initialization",
        (
            arg("--phase", type=int, required=True, help="the IMP phase whose sparsity it targets"),
            SEED,
            arg("--prefix-out", type=Path, required=True, help="its state when pruning starts"),
            LOGGING,
        ),
    ),
    "gmp-sms-ingredient": Command(
        jobs.gmp_sms_ingredient, "one copy of a GMP + SMS round", (PARENT, PHASE, ROUND, INDEX, SEED, LOGGING)
    ),
    "gmp-sms-average": Command(
        jobs.gmp_sms_average, "average a GMP + SMS round and re-prune it", (PHASE, ROUND, INGREDIENTS)
    ),
    "rewind-point": Command(
        jobs.rewind_point, "the dense run's state at baselines.rewind_epoch", (SEED, LOGGING)
    ),
    "imp-rewind": Command(
        jobs.imp_rewind,
        "prune, rewind the survivors, retrain",
        (
            PARENT,
            arg("--rewind", type=Path, required=True, help="the rewind point (rewind-point)"),
            PHASE,
            SEED,
            LOGGING,
        ),
    ),
    "evaluate": Command(
        jobs.evaluate,
        "metrics of one checkpoint as JSON",
        (arg("--checkpoint", type=Path, required=True, dest="checkpoint_path"), OOD),
    ),
    "corrupt-test-set": Command(
        jobs.corrupt_test_set, "write the OOD test set (.npy, CIFAR-10-C layout)", device=False
    ),
}
# fmt: on
COMMON = ("settings", "threads", "device", "command", "logging")  # every command's; the rest go to its job
PARTS_HELP = (
    "main, ood, ablation_m, subset_soups, ablation_vary, training or training_gmp; repeatable "
    "(default: the parts with data)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sparse-soups", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        sub = commands.add_parser(name, help=command.help)
        sub.add_argument("--settings", type=Path, required=True, help="resolved settings JSON")
        if command.data:
            sub.add_argument("--data", type=Path, required=True, help="prepared dataset file")
        sub.add_argument("--threads", type=int, default=1, help="torch threads for this job")
        sub.add_argument("--device", default="auto", help="auto (GPU if present), cpu, cuda, cuda:N")
        sub.add_argument("--out", type=Path, required=True, help="file to write")
        for flags, options in command.args:
            sub.add_argument(*flags, **options)
    report = commands.add_parser(
        "report", help="tables and figures of one experiment from its metrics.json and history.csv files"
    )
    report.add_argument("--out", type=Path, required=True, help="output directory")
    report.add_argument("--part", action="append", dest="parts", help=PARTS_HELP)
    report.add_argument("files", type=Path, nargs="+", help="metrics.json and/or history.csv files")
    add_export(commands)
    status = commands.add_parser("status", help="models trained and evaluated per method and phase, so far")
    status.add_argument("results", type=Path, nargs="?", default=Path("results"), help="default: results")
    return parser


def add_export(commands: Any) -> None:
    """`export`: no --settings or --data needed, as a checkpoint's run lies around it."""
    sub = commands.add_parser("export", help="a checkpoint as a plain state dict with masks and metadata")
    sub.add_argument("checkpoint", type=Path, help="a model.pt of a run")
    sub.add_argument("--format", choices=EXPORT_FORMATS, default="safetensors", dest="file_format")
    sub.add_argument("--out", type=Path, required=True, help="file to write (safetensors: masks beside it)")
    sub.add_argument("--settings", type=Path, help="the run's settings (default: found from the checkpoint)")


def run(args: argparse.Namespace) -> Any:
    if args.command == "export":
        return export(args.checkpoint, args.out, args.file_format, args.settings)
    if args.command == "status":
        from .status import format_status, study_status

        print(format_status(study_status(args.results)))
        return None
    if args.command == "report":
        from .reporting import write_report  # matplotlib and seaborn: only here

        with stopwatch.arithmetic("reporting"):
            written = write_report(args.files, args.out, args.parts)
        _log_cpu_time()
        return written
    settings = read_settings(args.settings)
    if LOGGING in COMMANDS[args.command].args:  # a training job
        settings = with_logging(settings, args.logging)
    make_reproducible(args.threads)
    command = COMMANDS[args.command]
    options = {key: value for key, value in vars(args).items() if key not in COMMON}
    if command.device:
        options["device"] = pick_device(args.device)
        log.info("device %s, %d thread(s)", options["device"], args.threads)
    result = command.job(settings, **options)
    _log_cpu_time()
    return result


def _log_cpu_time() -> None:
    """The job's CPU seconds, split into arithmetic and the rest, its wall time and peak
    memory: the job's benchmark, valid in the warm worker too (benchmarks/default_run.py
    reads this line from every job's log)."""
    arithmetic = stopwatch.totals()
    total = time.process_time()
    log.info(
        "cpu %.2f s: %s, other %.2f s; wall %.2f s, max RSS %d MB", total,
        ", ".join(f"{kind} {seconds:.2f} s" for kind, seconds in arithmetic.items()),
        total - sum(arithmetic.values()), time.perf_counter() - _started,
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
    )  # fmt: skip


_started = time.perf_counter()


def main(argv: list[str] | None = None) -> int:
    global _started
    _started = time.perf_counter()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    load_plugins()
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
