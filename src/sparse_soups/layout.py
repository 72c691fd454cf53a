"""Where every model of a run lives, relative to the run directory `results/{experiment}/seed{seed}`.

The workflow and the report both use these functions, so the directory tree is defined
once. A *chain* is one IMP sequence of phases: `imp` (one retrain per phase) or a soup
method (`uniform`, `greedy`: m retrains per phase, souped). Each model directory holds
`model.pt` and, after evaluation, `metrics.json`; a trained model also `history.csv`
(its training curve). TensorBoard events, when asked for, go to
`results/{experiment}/tensorboard/seed{seed}/{model dir}`, one run per trained model.

    dense/                            pretrained model (phase 0)
    dense/phase1/ingredient{i}/       phase-1 retrains: every SMS chain starts from the dense
                                      model, so they are shared (and IMP is ingredient 0
                                      when its recipe is ingredient 0's: see recipes.py)
    imp/phase1/ingredient0/           IMP's phase 1 when its recipe differs from ingredient 0's
    {chain}/phase{p}/ingredient{i}/   phase p >= 2 retrains of a chain
    {soup}/phase{p}/soup/             the soup of a phase's ingredients
    imp_budget/phase{p}/ingredient0/  IMP with m times the retrain epochs (own chain from phase 1)
    uniform_m{k}/phase{p}/...         the ablation over m: an SMS uniform chain of k ingredients
    soup_at_end/phase{P}/soup/        the last phase's IMP ingredients imp/phase{P}/ingredient{i}, averaged
    uniform_k{k}/phase{p}/soup/       subset soup: the first k of the uniform chain's m ingredients
    ensemble/phase{p}/                metrics only: mean-softmax ensemble of the SMS ingredients
    lottery_pools_{interp,avg}/phase{p}/  Lottery Pools over the IMP tickets, aimed at phase p
    gmp/phase{p}/                     gradual magnitude pruning aimed at phase p's sparsity
    gmp/phase{p}/dense_prefix/        GMP's state when pruning starts (GMP + SMS starts here)
    gmp_sms/phase{p}/round{r}/ingredient{i}/  GMP + SMS: copy i of round r
    gmp_sms/phase{p}/round{r}/soup/   its round average, re-pruned (rounds before the last)
    gmp_sms/phase{p}/                 the last round's average: GMP + SMS's result
    rewind/                           the dense run's state at the end of baselines.rewind_epoch
    imp_rewind/phase{p}/ingredient0/  IMP with weight rewinding (own chain from phase 1)
"""

from __future__ import annotations

import re
from pathlib import Path

from .config import LOTTERY_POOLS_VARIANTS, target_phases
from .registry import SOUP_METHODS

DENSE = "dense"
IMP = "imp"
IMP_BUDGET = "imp_budget"
SOUP_AT_END = "soup_at_end"
ENSEMBLE = "ensemble"
GMP = "gmp"
GMP_SMS = "gmp_sms"
IMP_REWIND = "imp_rewind"
REWIND = "rewind"
ABLATION_PREFIX = "uniform_m"
SUBSET_PREFIX = "uniform_k"
MODEL_FILE = "model.pt"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
TIMING_FILE = "timing.json"  # beside a soup: the seconds its merge took (not a metric)
TENSORBOARD = "tensorboard"
RUN = "results/{experiment}/seed{seed}"

# Every model directory of a run, as a template: the rules' outputs, the steps' records
# and the report all format these, so renaming one here moves it everywhere.
TREE = {
    "dense": DENSE,
    "rewind": REWIND,
    "ingredient": "{lineage}/phase{phase}/ingredient{index}",
    "soup": "{soup}/phase{phase}/soup",
    "ensemble": ENSEMBLE + "/phase{phase}",
    "lottery_pools": "lottery_pools_{variant}/phase{phase}",
    "gmp": GMP + "/phase{phase}",
    "gmp_prefix": GMP + "/phase{phase}/dense_prefix",
    "gmp_sms": GMP_SMS + "/phase{phase}",
    "gmp_sms_ingredient": GMP_SMS + "/phase{phase}/round{round}/ingredient{index}",
    "gmp_sms_round": GMP_SMS + "/phase{phase}/round{round}/soup",
}


# The templates of models that a training job makes (each with a history.csv).
TRAINED = ("dense", "rewind", "ingredient", "gmp", "gmp_sms_ingredient")


def soup_methods() -> tuple[str, ...]:
    """The registered soup methods (each an SMS chain of its own)."""
    return SOUP_METHODS.names()


def path(template: str, **fields: object) -> str:
    """A model directory: `TREE[template]` with its fields filled in."""
    return TREE[template].format(**fields)


class _Wildcards(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def pattern(template: str, file: str = MODEL_FILE, **fixed: object) -> str:
    """A rule's output: the run directory, the template with the `fixed` fields filled in
    and the others left as wildcards, and the file."""
    return f"{RUN}/{TREE[template].format_map(_Wildcards(fixed))}/{file}"


def wildcard_constraints() -> dict[str, str]:
    """What each wildcard of `pattern` may match, from the names spelled here and the
    registered soup methods, so no rule's output can be mistaken for another's."""
    methods = "|".join(soup_methods())
    chains = rf"{ABLATION_PREFIX}\d+"
    return {
        "seed": r"\d+", "phase": r"\d+", "index": r"\d+", "round": r"\d+",
        "lineage": "|".join([DENSE, IMP, IMP_BUDGET, methods, chains]),
        "soup": "|".join([methods, SOUP_AT_END, rf"{SUBSET_PREFIX}\d+", chains]),
        "variant": "|".join(LOTTERY_POOLS_VARIANTS),
    }  # fmt: skip


def parse(model_dir: str) -> tuple[str, dict[str, str]] | None:
    """(template, fields) of a model directory, None if it matches no template."""
    constraints = wildcard_constraints()
    for name, template in TREE.items():
        regex = re.sub(r"\{(\w+)\}", lambda m: f"(?P<{m[1]}>{constraints.get(m[1], r'[^/]+')})", template)
        if (match := re.fullmatch(regex, model_dir)) is not None:
            return name, match.groupdict()
    return None


def run_dir(experiment: str, seed: int) -> str:
    return RUN.format(experiment=experiment, seed=seed)


def history_path(checkpoint: Path) -> Path | None:
    """The training curve beside a checkpoint in the results tree: `history.csv` in its
    model directory (None for a checkpoint saved elsewhere: the step picks a name)."""
    return checkpoint.with_name(HISTORY_FILE) if checkpoint.name == MODEL_FILE else None


def histories_of(model_files: list[str]) -> list[str]:
    """The history.csv beside each model file (`{RUN}/{model dir}/model.pt`) that a
    training job made; the others (soups, Lottery Pools, GMP + SMS rounds) have none."""
    run = re.compile(r"results/[^/]+/seed\d+/(?P<model_dir>.+)/" + re.escape(MODEL_FILE))
    histories = []
    for path in model_files:
        match = run.fullmatch(path)
        template = (parse(match["model_dir"]) or (None,))[0] if match else None
        if template in TRAINED:
            histories.append(path.removesuffix(MODEL_FILE) + HISTORY_FILE)
    return histories


def tensorboard_dir(checkpoint: Path, model_dir: str) -> Path | None:
    """Where a training job writes its TensorBoard events: under the experiment's
    `tensorboard/`, so one `tensorboard --logdir results/` lists every run (None for a
    checkpoint outside the results tree)."""
    depth = len(model_dir.split("/"))
    if not model_dir or depth >= len(checkpoint.parents) or not checkpoint.parent.match(model_dir):
        return None
    run = checkpoint.parents[depth]
    return run.parent / TENSORBOARD / run.name / model_dir if re.fullmatch(r"seed\d+", run.name) else None


def keeps_swa(chain: str) -> bool:
    """Whether a chain's retrains average their late weights (SWAMP's particles)."""
    return chain in SOUP_METHODS and bool(SOUP_METHODS.info(chain).get("swa"))


def merges_updates(method: str) -> bool:
    """Whether a soup method merges updates relative to the phase's starting model."""
    return method in SOUP_METHODS and bool(SOUP_METHODS.info(method).get("base"))


def lineage(chain: str, phase: int, imp_shared: bool = True) -> str:
    """Directory that holds a chain's ingredients for a phase: shared in phase 1, except
    by imp_budget, whose retrains are longer, imp_rewind, which rewinds, chains whose
    retrains keep a weight average (swamp), and IMP when its recipe is not ingredient 0's
    (`imp_shared` False, see recipes.imp_shares_phase1)."""
    own = (IMP_BUDGET, IMP_REWIND) if imp_shared else (IMP, IMP_BUDGET, IMP_REWIND)
    return DENSE if phase == 1 and chain not in own and not keeps_swa(chain) else chain


def ingredient_dir(chain: str, phase: int, index: int, imp_shared: bool = True) -> str:
    return path("ingredient", lineage=lineage(chain, phase, imp_shared), phase=phase, index=index)


def chain_model_dir(chain: str, phase: int, imp_shared: bool = True) -> str:
    """The model a chain carries out of a phase: its soup, or IMP's single retrain."""
    if phase == 0:
        return DENSE
    if chain in (IMP, IMP_BUDGET, IMP_REWIND):
        return ingredient_dir(chain, phase, 0, imp_shared)
    return soup_dir(chain, phase)


def retrain_parent_dir(lineage_name: str, phase: int, imp_shared: bool = True) -> str:
    """The model that the retrains in `{lineage_name}/phase{phase}/` start from."""
    if phase == 1:
        return DENSE
    if lineage_name == DENSE:
        raise ValueError(f"only phase 1 retrains from the dense model, not phase {phase}")
    return chain_model_dir(lineage_name, phase - 1, imp_shared)


def subset_soup(k: int) -> str:
    return f"{SUBSET_PREFIX}{k}"


def subset_size(name: str) -> int | None:
    """k of a subset soup's name, None for any other name."""
    suffix = name.removeprefix(SUBSET_PREFIX)
    return int(suffix) if name.startswith(SUBSET_PREFIX) and suffix.isdigit() else None


def ablation_chain(k: int) -> str:
    """The SMS uniform chain with k ingredients per phase (the ablation over m)."""
    return f"{ABLATION_PREFIX}{k}"


def ablation_size(chain: str) -> int | None:
    """k of an ablation chain's name, None for any other name."""
    suffix = chain.removeprefix(ABLATION_PREFIX)
    return int(suffix) if chain.startswith(ABLATION_PREFIX) and suffix.isdigit() else None


def soup_dir(name: str, phase: int) -> str:
    return path("soup", soup=name, phase=phase)


def soup_recipe(name: str, phase: int, ingredients: int) -> tuple[str, list[str]]:
    """How the soup `name` is made: its averaging method and its ingredients' directories.

    `uniform`/`greedy` average their own chain's m ingredients, `uniform_m{k}` its own k;
    `soup_at_end` the m retrains of the IMP chain's phase; `uniform_k{k}` the first k of
    the uniform chain's.
    """
    if name in soup_methods():
        return name, [ingredient_dir(name, phase, i) for i in range(ingredients)]
    if (k := ablation_size(name)) is not None:
        return "uniform", [ingredient_dir(name, phase, i) for i in range(k)]
    if name == SOUP_AT_END:
        return "uniform", [ingredient_dir(IMP, phase, i) for i in range(ingredients)]
    if (k := subset_size(name)) is not None:
        return "uniform", [ingredient_dir("uniform", phase, i) for i in range(k)]
    raise ValueError(f"unknown soup '{name}'")


def soup_base(name: str, phase: int) -> str | None:
    """The model a soup's chain started the phase from, for the methods that merge updates
    relative to it (Model Stock, TIES, DARE); None for the others."""
    return chain_model_dir(name, phase - 1) if merges_updates(name) else None


def ensemble_chain(soup_methods: tuple[str, ...] | list[str]) -> str:
    """The chain whose ingredients the prediction ensemble combines: SMS uniform if run."""
    return "uniform" if "uniform" in soup_methods else soup_methods[0]


def lottery_pools_dir(variant: str, phase: int) -> str:
    return path("lottery_pools", variant=variant, phase=phase)


def ensemble_dir(phase: int) -> str:
    return path("ensemble", phase=phase)


def gmp_dir(phase: int) -> str:
    return path("gmp", phase=phase)


def gmp_prefix_dir(phase: int) -> str:
    return path("gmp_prefix", phase=phase)


def gmp_sms_dir(phase: int) -> str:
    return path("gmp_sms", phase=phase)


def gmp_sms_ingredient_dir(phase: int, round_index: int, index: int) -> str:
    return path("gmp_sms_ingredient", phase=phase, round=round_index, index=index)


def gmp_sms_round_dir(phase: int, round_index: int, rounds: int) -> str:
    """A round's average; the last round's is GMP + SMS's result."""
    return (
        gmp_sms_dir(phase) if round_index == rounds else path("gmp_sms_round", phase=phase, round=round_index)
    )


def gmp_sms_parent_dir(phase: int, round_index: int, rounds: int) -> str:
    """What the copies of a round start from: GMP's dense prefix, then the last average."""
    if round_index == 1:
        return gmp_prefix_dir(phase)
    return gmp_sms_round_dir(phase, round_index - 1, rounds)


def run_model_dirs(
    phases: int,
    soup_methods: tuple[str, ...] | list[str],
    ingredients: int,
    *,
    imp_budget: bool = False,
    soup_at_end: bool = False,
    subset_sizes: tuple[int, ...] | list[int] = (),
    ablation_m: tuple[int, ...] | list[int] = (),
    imp_shared: bool = True,
    lottery_pools: str = "none",
    gmp: str = "none",
    gmp_sms: str = "none",
    imp_rewind: bool = False,
) -> list[str]:
    """Every model directory of one run: the dense model, each chain's retrains and soups,
    and the baselines switched on."""
    dirs = [DENSE]
    chains = [*soup_methods, *(ablation_chain(k) for k in ablation_sizes(ablation_m, ingredients))]
    for phase in range(1, phases + 1):
        dirs.append(ingredient_dir(IMP, phase, 0, imp_shared))
        if imp_budget:
            dirs.append(ingredient_dir(IMP_BUDGET, phase, 0))
        if imp_rewind:
            dirs.append(ingredient_dir(IMP_REWIND, phase, 0))
        for chain in chains:
            dirs += [ingredient_dir(chain, phase, i) for i in range(ablation_size(chain) or ingredients)]
            dirs.append(chain_model_dir(chain, phase))
        if "uniform" in soup_methods:
            dirs += [soup_dir(subset_soup(k), phase) for k in subset_sizes if k < ingredients]
    if soup_at_end and phases > 1:  # with one phase it is SMS uniform's soup
        dirs.append(soup_dir(SOUP_AT_END, phases))
    if lottery_pools != "none" and phases > 1:
        targets = range(1, phases + 1) if lottery_pools == "all" else [phases]
        dirs += [lottery_pools_dir(v, p) for v in LOTTERY_POOLS_VARIANTS for p in targets]
    dirs += [gmp_dir(p) for p in target_phases(gmp, phases)]
    dirs += [gmp_sms_dir(p) for p in target_phases(gmp_sms, phases)]
    return list(dict.fromkeys(dirs))  # phase-1 ingredients are shared: keep each once


def ablation_sizes(ablation_m: tuple[int, ...] | list[int], ingredients: int) -> list[int]:
    """The k that get chains of their own: 1 is IMP and m is SMS uniform itself."""
    return sorted(k for k in ablation_m if 1 < k < ingredients)
