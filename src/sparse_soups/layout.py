"""Where every model of a run lives, relative to the run directory `results/{experiment}/seed{seed}`.

The workflow and the report both use these functions, so the directory tree is defined
once. A *chain* is one IMP sequence of phases: `imp` (one retrain per phase) or a soup
method (`uniform`, `greedy`: m retrains per phase, souped). Each model directory holds
`model.pt` and, after evaluation, `metrics.json`.

    dense/                            pretrained model (phase 0)
    dense/phase1/ingredient{i}/       phase-1 retrains: every chain starts from the dense
                                      model, so they are shared (IMP is ingredient 0)
    {chain}/phase{p}/ingredient{i}/   phase p >= 2 retrains of a chain
    {soup}/phase{p}/soup/             the soup of a phase's ingredients
"""

from __future__ import annotations

DENSE = "dense"
IMP = "imp"
SOUP_METHODS = ("uniform", "greedy")
MODEL_FILE = "model.pt"
METRICS_FILE = "metrics.json"


def run_dir(experiment: str, seed: int) -> str:
    return f"results/{experiment}/seed{seed}"


def lineage(chain: str, phase: int) -> str:
    """Directory that holds a chain's ingredients for a phase (shared in phase 1)."""
    return DENSE if phase == 1 else chain


def ingredient_dir(chain: str, phase: int, index: int) -> str:
    return f"{lineage(chain, phase)}/phase{phase}/ingredient{index}"


def chain_model_dir(chain: str, phase: int) -> str:
    """The model a chain carries out of a phase: its soup, or IMP's single retrain."""
    if phase == 0:
        return DENSE
    if chain == IMP:
        return ingredient_dir(IMP, phase, 0)
    return f"{chain}/phase{phase}/soup"


def retrain_parent_dir(lineage_name: str, phase: int) -> str:
    """The model that the retrains in `{lineage_name}/phase{phase}/` start from."""
    if phase == 1:
        if lineage_name != DENSE:
            raise ValueError(f"phase-1 ingredients live under '{DENSE}/', not '{lineage_name}/'")
        return DENSE
    if lineage_name == DENSE:
        raise ValueError(f"only phase 1 retrains from the dense model, not phase {phase}")
    return chain_model_dir(lineage_name, phase - 1)


def run_model_dirs(phases: int, soup_methods: tuple[str, ...] | list[str], ingredients: int) -> list[str]:
    """Every model directory of one run: the dense model, each chain's retrains and soups."""
    dirs = [DENSE]
    for phase in range(1, phases + 1):
        dirs.append(ingredient_dir(IMP, phase, 0))
        for method in soup_methods:
            dirs += [ingredient_dir(method, phase, i) for i in range(ingredients)]
            dirs.append(chain_model_dir(method, phase))
    return list(dict.fromkeys(dirs))  # phase-1 ingredients are shared: keep each once
