"""WMT16 German-English through the workflow: the plain-text files prepared into token ids and
a tokenizer, the Transformer's FLOPs counted with its attention projections, bad files and
settings named before anything trains, and the whole DAG through Snakemake with BLEU."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from sparse_soups.config import DataSettings
from sparse_soups.kernels.data import DataNotFoundError, load_prepared, prepare_dataset
from sparse_soups.kernels.metrics import theoretical_flops
from sparse_soups.kernels.models import get_model
from sparse_soups.kernels.tasks import Translation
from sparse_soups.kernels.translation import EOS, PAD
from sparse_soups.validation import config_problems
from tests.conftest import REPO, make_wmt16_dataset, run_smoke_config

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


@pytest.fixture(scope="module")
def wmt16_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_wmt16_dataset(tmp_path_factory.mktemp("wmt16"))


def test_prepared_data_holds_ids_references_and_its_tokenizer(wmt16_root: Path, tmp_path: Path) -> None:
    settings = DataSettings(dataset="wmt16_de_en", root=str(wmt16_root), vocab_size=300, max_length=64)
    prepared = prepare_dataset(settings, tmp_path / "data.pt")
    assert prepared["train_images"].shape == (400, 64) and prepared["test_labels"].shape == (40, 64)
    references = (wmt16_root / "newstest2016.en").read_text(encoding="utf-8").splitlines()
    assert prepared["test_references"] == references
    dataset = load_prepared(tmp_path / "data.pt", settings)
    assert isinstance(dataset.task, Translation) and dataset.num_classes == prepared["num_classes"] <= 300
    decoded = dataset.task.tokenizer.decode(dataset.test.labels[0].tolist(), skip_special_tokens=True)
    assert decoded == references[0]
    assert int(dataset.test.labels[0][(dataset.test.labels[0] != PAD).sum() - 1]) == EOS
    german = (wmt16_root / "train.de").read_text(encoding="utf-8").splitlines()
    decode = dataset.task.tokenizer.decode
    sources = [decode(row.tolist(), skip_special_tokens=True) for row in dataset.train.images]
    assert set(sources) == set(german) and sources != german  # every training pair, shuffled


def test_flops_count_every_projection_of_the_transformer() -> None:
    width, vocab, source, target = 32, 300, 7, 5
    model = get_model("transformer", 1, vocab, width=width, depth=1, dropout=0.0)
    example = (torch.full((1, source), 5), torch.full((1, target), 6))
    # encoder: attention in (3) and out (1) projections, feed-forward 2 x 4; decoder: self
    # attention 3 + 1, cross attention query 1, keys and values 2 (over the source), out 1,
    # feed-forward 8; the output layer; per token, each in width^2 multiply-adds.
    expected = (
        12 * source * width**2 + 14 * target * width**2 + 2 * source * width**2 + target * width * vocab
    )
    assert theoretical_flops(model, (source,), sparse=False, example=example) == expected
    with torch.no_grad():
        model.output.weight[: vocab // 2] = 0
    sparse = theoretical_flops(model, (source,), sparse=True, example=example)
    assert sparse == expected - target * width * (vocab // 2)


def _problems(experiment: dict) -> list[str]:
    return config_problems({"experiments": {"t": experiment}}, SCHEMA)


def test_bad_files_and_settings_are_named(wmt16_root: Path, tmp_path: Path) -> None:
    good = {
        "data": {"dataset": "wmt16_de_en", "root": str(wmt16_root)}, "model": {"name": "transformer"},
        "ood": {"enabled": False}, "baselines": {"ensemble": False}, "pretrain": {"batch_size": 32},
    }  # fmt: skip
    assert _problems(good) == []
    (problem,) = _problems({**good, "baselines": {"ensemble": True}})
    assert "experiments.t.baselines.ensemble" in problem
    (problem,) = _problems({**good, "ood": {"enabled": True}})
    assert "experiments.t.ood.enabled" in problem
    (problem,) = _problems({**good, "model": {"name": "cnn"}})
    assert "experiments.t.model.name: cnn is a classification model" in problem and "transformer" in problem
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "train.de").write_text("Hallo.\n")
    problems = _problems({**good, "data": {"dataset": "wmt16_de_en", "root": str(empty)}})
    assert sorted(p.rsplit(" ", 1)[1] for p in problems if " lacks " in p) == [
        "newstest2015.de", "newstest2015.en", "newstest2016.de", "newstest2016.en", "train.en",
    ]  # fmt: skip
    (empty / "train.en").write_text("Hello.\nWorld.\n")
    settings = DataSettings(dataset="wmt16_de_en", root=str(empty))
    with pytest.raises(DataNotFoundError, match="newstest2015"):
        prepare_dataset(settings, tmp_path / "data.pt")


def test_smoke_wmt16_runs_end_to_end_with_bleu_tables(wmt16_root: Path, tmp_path: Path) -> None:
    report = run_smoke_config("smoke_wmt16", wmt16_root, tmp_path)
    table = pd.read_csv(report / "table.csv").set_index("method")
    for row in ("Dense", "IMP", "IMP (m x budget)", "SMS uniform", "Mean ingredient (SMS uniform)"):
        phase = "phase0" if row == "Dense" else "phase2"
        assert 0 <= table.loc[row, f"{phase}_test_bleu"] <= 1, row
    assert "Test BLEU," in (report / "table.md").read_text()
    assert "BLEU" in set(pd.read_csv(report / "claims.csv").metric)
    soup = tmp_path / "results/smoke_wmt16/seed0/uniform/phase2/soup"
    metrics = json.loads((soup / "metrics.json").read_text())
    assert "tok:13a" in metrics["bleu_signature"] and metrics["test_perplexity"] > 1
    assert metrics["sparsity"] == pytest.approx(0.5, abs=0.01)
    dense = json.loads((tmp_path / "results/smoke_wmt16/seed0/dense/metrics.json").read_text())
    assert dense["test_bleu"] > 0.05  # it learned something of the word-by-word mapping
