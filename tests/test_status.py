"""`sparse-soups status`: what a study has done so far, read from the files present."""

from __future__ import annotations

import shutil
from pathlib import Path

from sparse_soups import cli
from sparse_soups.status import format_status, study_status


def _row(table, experiment: str, method: str, phase: int):
    rows = table[(table.experiment == experiment) & (table.method == method) & (table.phase == phase)]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def test_status_counts_the_files_a_run_has_and_lacks(smoke_run, tmp_path: Path) -> None:
    directory, _ = smoke_run
    finished = study_status(directory / "results")
    assert set(finished.experiment) == {"smoke", "smoke_uniform"}
    assert (finished.trained == finished.models).all() and (finished.evaluated == finished.expected).all()
    ingredients = _row(finished, "smoke", "uniform ingredients", 2)
    assert (ingredients.seeds, ingredients.models, ingredients.expected) == (2, 6, 6)  # 3 per seed
    assert _row(finished, "smoke", "ensemble", 1).models == 0  # metrics only
    # A run under way: one seed's soup not evaluated yet, an ingredient not trained yet.
    results = tmp_path / "results"
    shutil.copytree(directory / "results", results)
    (results / "smoke/seed1/uniform/phase2/soup/metrics.json").unlink()
    (results / "smoke/seed0/uniform/phase2/ingredient1/model.pt").unlink()
    partial = study_status(results)
    assert _row(partial, "smoke", "uniform", 2).evaluated == 1
    assert _row(partial, "smoke", "uniform ingredients", 2).trained == 5
    text = format_status(partial)
    assert (
        "5/6" in text
        and f"{len(partial) and int(partial.trained.sum() + partial.evaluated.sum())} of" in text
    )


def test_status_names_a_missing_or_empty_results_directory(tmp_path: Path, capsys) -> None:
    assert cli.main(["status", str(tmp_path / "nowhere")]) == 1
    assert "nowhere is not a directory" in capsys.readouterr().err
    assert cli.main(["status", str(tmp_path)]) == 1
    assert "no experiment" in capsys.readouterr().err
