"""Faults and bad files: clear errors naming the file, nothing half-written left behind."""

from __future__ import annotations

import contextlib
import errno
import gzip
import json
import math
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from sparse_soups import cli, jobs, layout
from sparse_soups.config import DataSettings, Settings
from sparse_soups.kernels import checkpoints, files
from sparse_soups.kernels.checkpoints import Checkpoint, CheckpointError, NonFiniteError
from sparse_soups.kernels.data import DataError, DataNotFoundError, prepare_dataset
from sparse_soups.kernels.evaluation import collect_logits, model_predict
from sparse_soups.kernels.files import sha256
from sparse_soups.kernels.models import SmallCNN
from sparse_soups.kernels.ood_sets import read_corrupted
from sparse_soups.kernels.pruning import dense_masks
from sparse_soups.kernels.soups import MaskMismatchError, average_state_dicts
from sparse_soups.kernels.training import DivergenceError
from sparse_soups.reporting import load_metrics, write_report
from tests.conftest import make_idx_dataset, smoke_snakemake, worker_copy


def test_incomplete_data_root_names_the_missing_file(tmp_path: Path) -> None:
    root = make_idx_dataset(tmp_path / "idx", n_train=20, n_test=10)
    (root / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataNotFoundError, match=r"data.root .* lacks train-labels-idx1-ubyte"):
        prepare_dataset(DataSettings(root=str(root)), tmp_path / "out.pt")


def test_truncated_archive_names_the_file(tmp_path: Path) -> None:
    root = make_idx_dataset(tmp_path / "idx", n_train=20, n_test=10)
    archive = root / "t10k-images-idx3-ubyte.gz"
    archive.write_bytes(archive.read_bytes()[:100])
    with pytest.raises(DataError, match=f"cannot read {archive}"):
        prepare_dataset(DataSettings(root=str(root)), tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


def test_idx_file_with_a_wrong_header_names_the_directory(tmp_path: Path) -> None:
    root = make_idx_dataset(tmp_path / "idx", n_train=20, n_test=10)
    (root / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"not an idx file at all"))
    with pytest.raises(DataError, match=f"IDX files in {root} cannot be read"):
        prepare_dataset(DataSettings(root=str(root)), tmp_path / "out.pt")


def test_diverging_loss_stops_with_the_step_and_writes_nothing(
    tiny_settings: Settings, prepared_path: Path, tmp_path: Path
) -> None:
    settings = Settings.from_dict({**tiny_settings.to_dict(), "pretrain": {"lr": 1e12, "epochs": 2}})
    with pytest.raises(DivergenceError, match=r"loss is (nan|inf) at step \d+ of \d+"):
        jobs.pretrain(settings, prepared_path, seed=0, out=tmp_path / "model.pt")
    assert list(tmp_path.iterdir()) == []


def test_disk_full_mid_write_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "model.pt"
    model = SmallCNN(width=4)
    Checkpoint(model.state_dict(), dense_masks(model), {"phase": 0}).save(path)
    before = path.read_bytes()

    def write_half_then_fail(file: str, data: bytes) -> None:  # what a full disk does
        Path(file).write_bytes(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "_write_bytes", write_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        Checkpoint(model.state_dict(), dense_masks(model), {"phase": 1}).save(path)
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]


def test_soup_refuses_ingredients_of_another_architecture() -> None:
    narrow, wide = SmallCNN(width=4), SmallCNN(width=8)
    with pytest.raises(MaskMismatchError, match="ingredient 1 has a different architecture"):
        average_state_dicts(
            [narrow.state_dict(), wide.state_dict()], [dense_masks(narrow), dense_masks(wide)]
        )


def _evaluated_model(tiny_settings: Settings, prepared_path: Path, directory: Path) -> Path:
    model = SmallCNN(in_channels=1, num_classes=10, width=4)
    meta = {"experiment": "tiny", "seed": 0, "model_dir": layout.DENSE, "kind": "dense", "phase": 0}
    Checkpoint(model.state_dict(), dense_masks(model), meta).save(directory / layout.MODEL_FILE)
    jobs.evaluate(tiny_settings, prepared_path, directory / layout.MODEL_FILE, directory / "metrics.json")
    return directory / "metrics.json"


def test_metrics_record_the_checkpoint_checksum_and_loads_verify_it(
    tiny_settings: Settings, prepared_path: Path, tmp_path: Path
) -> None:
    metrics_path = _evaluated_model(tiny_settings, prepared_path, tmp_path)
    record = json.loads(metrics_path.read_text())
    assert record["checkpoint_sha256"] == sha256(tmp_path / layout.MODEL_FILE)
    assert load_metrics([metrics_path])[0]["test_accuracy"] == record["test_accuracy"]
    other = SmallCNN(in_channels=1, num_classes=10, width=4)  # the checkpoint is replaced
    Checkpoint(other.state_dict(), dense_masks(other), {}).save(tmp_path / layout.MODEL_FILE)
    with pytest.raises(ValueError, match=f"{metrics_path} describes another checkpoint"):
        load_metrics([metrics_path])


def test_metrics_file_with_missing_fields_is_named(
    tiny_settings: Settings, prepared_path: Path, tmp_path: Path
) -> None:
    metrics_path = _evaluated_model(tiny_settings, prepared_path, tmp_path)
    record = json.loads(metrics_path.read_text())
    del record["test_accuracy"], record["phase"]
    metrics_path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"lacks the fields \['phase', 'test_accuracy'\]"):
        load_metrics([metrics_path])
    metrics_path.write_text('{"truncated": ')
    with pytest.raises(ValueError, match=f"cannot read metrics file {metrics_path}"):
        load_metrics([metrics_path])


def test_same_seed_gives_bitwise_identical_models_and_metrics(
    tiny_settings: Settings, prepared_path: Path, tmp_path: Path
) -> None:
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name / layout.MODEL_FILE
        jobs.pretrain(tiny_settings, prepared_path, seed=5, out=out)
        metrics = jobs.evaluate(tiny_settings, prepared_path, out, tmp_path / name / "metrics.json")
        runs.append((Checkpoint.load(out), metrics))
    (first, first_metrics), (second, second_metrics) = runs
    assert all(torch.equal(v, second.state_dict[k]) for k, v in first.state_dict.items())
    assert first_metrics == second_metrics
    other = jobs.pretrain(tiny_settings, prepared_path, seed=6, out=tmp_path / "c.pt")
    assert not torch.equal(other.state_dict["classifier.weight"], first.state_dict["classifier.weight"])


# --- issue 14: non-finite values, damaged files, nothing computed lost -----------------


def _settings_file(settings: Settings, directory: Path) -> Path:
    path = directory / "settings.json"
    path.write_text(json.dumps(settings.to_dict()))
    return path


def _damage_checkpoint(path: Path, damage) -> None:
    """Rewrite a checkpoint's raw dict after `damage(raw)` (as a bad disk or hand would)."""
    raw = torch.load(path, weights_only=True)
    damage(raw)
    checkpoints.atomic_torch_save(raw, path)


def _put_nan(raw: dict) -> None:
    raw["sparse"]["classifier.weight"]["values"][3] = float("nan")


def test_nan_checkpoint_is_refused_naming_file_and_tensor_and_old_metrics_stay(
    tiny_settings: Settings, prepared_path: Path, tmp_path: Path, capsys
) -> None:
    metrics_path = _evaluated_model(tiny_settings, prepared_path, tmp_path)
    before, model = metrics_path.read_bytes(), tmp_path / layout.MODEL_FILE
    _damage_checkpoint(model, _put_nan)
    args = ["--settings", str(_settings_file(tiny_settings, tmp_path)), "--data", str(prepared_path)]
    status = cli.main(["evaluate", *args, "--checkpoint", str(model), "--out", str(metrics_path)])
    assert status == 1
    assert f"checkpoint {model}: 'classifier.weight' holds 1 NaN" in capsys.readouterr().err
    assert metrics_path.read_bytes() == before


def test_soup_with_a_nan_ingredient_is_refused_and_writes_nothing(
    tiny_settings: Settings, prepared_path: Path, tmp_path: Path, capsys
) -> None:
    ingredients = []
    for index in range(2):
        model = SmallCNN(in_channels=1, num_classes=10, width=4)
        path = tmp_path / f"ingredient{index}.pt"
        Checkpoint(model.state_dict(), dense_masks(model), {"phase": 1}).save(path)
        ingredients.append(str(path))
    _damage_checkpoint(Path(ingredients[1]), _put_nan)
    args = ["--settings", str(_settings_file(tiny_settings, tmp_path)), "--data", str(prepared_path)]
    out = tmp_path / "soup.pt"
    status = cli.main(["soup", *args, "--method", "uniform", "--out", str(out), *ingredients])
    assert status == 1
    assert f"checkpoint {ingredients[1]}: 'classifier.weight' holds 1 NaN" in capsys.readouterr().err
    assert not out.exists()


def test_averaging_and_saving_refuse_non_finite_tensors(tmp_path: Path) -> None:
    model = SmallCNN(width=4)
    good = model.state_dict()
    bad = {**good, "classifier.bias": torch.full_like(good["classifier.bias"], float("inf"))}
    with pytest.raises(
        NonFiniteError, match=r"ingredient 1 holds NaN or infinite values in 'classifier\.bias'"
    ):
        average_state_dicts([good, bad], [dense_masks(model)] * 2)
    with pytest.raises(
        CheckpointError, match=re.escape(f"refusing to write {tmp_path / 'x.pt'}: 'classifier.bias'")
    ):
        Checkpoint(bad, dense_masks(model), {}).save(tmp_path / "x.pt")
    assert list(tmp_path.iterdir()) == []


def test_nan_outputs_and_nan_metrics_are_refused(dataset, tmp_path: Path) -> None:
    """Finite weights can still give NaN (a negative BatchNorm variance): evaluation stops."""
    model = SmallCNN(in_channels=1, num_classes=10, width=4)
    model.features[0][1].running_var.fill_(-1.0)
    with pytest.raises(NonFiniteError, match=r"outputs are NaN for \d+ of \d+ images"):
        collect_logits(model_predict(model), dataset.test, 100)
    with pytest.raises(ValueError, match=r"refusing to write .*m.json: 'ood.fog.1' is not a finite number"):
        files.write_json({"ood": {"fog": {"1": float("nan")}}}, tmp_path / "m.json")
    assert not (tmp_path / "m.json").exists()


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (lambda raw: raw["sparse"].__setitem__("classifier.weight", torch.zeros(3)),
         "sparse entry 'classifier.weight' is a Tensor, not a packed weight"),
        (lambda raw: raw.pop("meta"), "'meta' is missing, not a dict"),
        (lambda raw: raw.__setitem__("dense", [1, 2]), "'dense' is list, not a dict"),
        (lambda raw: raw["sparse"]["classifier.weight"].__setitem__("shape", "10x144"),
         "sparse entry 'classifier.weight' has shape '10x144'"),
    ],
    ids=["sparse-tensor", "no-meta", "dense-list", "shape-string"],
)  # fmt: skip
def test_damaged_checkpoint_structure_names_the_file(tmp_path: Path, damage, named: str) -> None:
    model, path = SmallCNN(width=4), tmp_path / "model.pt"
    Checkpoint(model.state_dict(), dense_masks(model), {"phase": 0}).save(path)
    _damage_checkpoint(path, damage)
    with pytest.raises(CheckpointError, match=re.escape(f"checkpoint {path} is damaged: {named}")):
        Checkpoint.load(path)
    assert path.exists()


METRICS_DAMAGE = [  # (what replaces the file, or a field's new value; what the error names)
    (b"\x89PNG\r\n\x1a\n\xff\xfe\x00", None, "cannot read metrics file"),
    (b"42", None, "holds a JSON int, not an object"),
    (b"null", None, "holds a JSON NoneType, not an object"),
    ("phase", "two", "'phase' is 'two', not a whole number >= 0"),
    ("test_accuracy", float("nan"), "'test_accuracy' is nan, not a number in [0, 1]"),
    ("test_accuracy", None, "'test_accuracy' is None, not a number in [0, 1]"),
    ("test_accuracy", "high", "'test_accuracy' is 'high', not a number in [0, 1]"),
    ("model_dir", "../../etc", "'model_dir' '../../etc' is not a directory inside the run"),
    ("seed", True, "'seed' is True, not a whole number >= 0"),
    ("ece", float("inf"), "'ece' is inf, not a finite number"),
    ("ood", {"fog": {"1": "x"}}, "'ood.fog.1' is 'x', not an accuracy in [0, 1]"),
]


@pytest.mark.parametrize(("field", "value", "named"), METRICS_DAMAGE, ids=[d[2][:24] for d in METRICS_DAMAGE])
def test_damaged_metrics_file_is_named_and_the_last_report_stays(
    tiny_settings: Settings, prepared_path: Path, tmp_path: Path, capsys, field, value, named: str
) -> None:
    metrics_path = _evaluated_model(tiny_settings, prepared_path, tmp_path)
    out = tmp_path / "report"
    assert cli.main(["report", "--out", str(out), str(metrics_path)]) == 0
    report = {path.name: path.read_bytes() for path in out.iterdir()}
    if isinstance(field, bytes):
        metrics_path.write_bytes(field)
    else:
        record = json.loads(metrics_path.read_text())
        metrics_path.write_text(json.dumps({**record, field: value}))  # NaN and inf as JSON allows
    assert cli.main(["report", "--out", str(out), str(metrics_path)]) == 1
    error = capsys.readouterr().err
    assert str(metrics_path) in error and named in error, error
    assert {path.name: path.read_bytes() for path in out.iterdir()} == report
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".report")) == []


def test_two_metrics_files_of_one_model_are_refused(
    tiny_settings: Settings, prepared_path: Path, tmp_path: Path
) -> None:
    first = _evaluated_model(tiny_settings, prepared_path, tmp_path)
    second = tmp_path / "copy" / "metrics.json"
    second.parent.mkdir()
    second.write_bytes(first.read_bytes())
    with pytest.raises(ValueError, match=f"metrics files {first} and {second} both describe"):
        load_metrics([first, second])


def test_report_written_twice_is_byte_identical_html_included(
    tiny_settings: Settings, prepared_path: Path, tmp_path: Path
) -> None:
    metrics_path = _evaluated_model(tiny_settings, prepared_path, tmp_path)
    first = write_report([metrics_path], tmp_path / "a")
    second = write_report([metrics_path], tmp_path / "b")
    assert any(name.endswith(".html") for name in first)
    assert {n: p.read_bytes() for n, p in first.items()} == {n: p.read_bytes() for n, p in second.items()}


@pytest.mark.parametrize(
    ("fraction", "named"),
    [(1e-6, "data.validation_fraction: 1e-06 of 600 training images leaves no validation image"),
     (0.999999, "data.validation_fraction: 0.999999 leaves 0 of 600 training images, fewer than one batch")],
)  # fmt: skip
def test_prepare_data_refuses_splits_the_experiment_cannot_use(
    tiny_settings: Settings, tmp_path: Path, capsys, fraction: float, named: str
) -> None:
    data = {**tiny_settings.to_dict()["data"], "validation_fraction": fraction}
    settings = Settings.from_dict({**tiny_settings.to_dict(), "data": data})
    out = tmp_path / "data.pt"
    settings_path = _settings_file(settings, tmp_path)
    status = cli.main(["prepare-data", "--settings", str(settings_path), "--out", str(out)])
    assert status == 1
    assert named in capsys.readouterr().err
    assert not out.exists()


def test_damaged_ood_file_is_named(tmp_path: Path) -> None:
    np.save(tmp_path / "labels.npy", np.zeros(10, dtype=np.int64))
    np.save(tmp_path / "fog.npy", np.zeros((10, 8, 8, 1), dtype=np.uint8))
    data = (tmp_path / "fog.npy").read_bytes()
    (tmp_path / "fog.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"{tmp_path / 'fog.npy'} is not a readable .npy array"):
        read_corrupted(tmp_path, "fog", 1)


# --- fault drills on a copy of the smoke run, through real Snakemake --------------------


@pytest.fixture(scope="module")
def drill(smoke_run, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the finished smoke run, Snakemake's metadata included, to damage."""
    return worker_copy(tmp_path_factory, smoke_run[0], "drill")


def _results(directory: Path) -> dict[str, bytes]:
    """Every computed file (logs and timings aside, which a rerun rewrites)."""
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted((directory / "results").rglob("*"))
        if path.is_file() and not {"logs", "benchmarks"} & set(path.parts) and path.name != layout.TIMING_FILE
    }


@contextlib.contextmanager
def _damaged(directory: Path, damage: dict[str, Callable[[Path], None]]) -> Iterator[None]:
    """Damage files (relative paths) for the drill, then put back their bytes and times."""
    saved = {name: ((directory / name).read_bytes(), (directory / name).stat()) for name in damage}
    try:
        for name, how in damage.items():
            how(directory / name)
        yield
    finally:
        for name, (data, stat) in saved.items():
            (directory / name).write_bytes(data)
            os.utime(directory / name, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def _not_json(path: Path) -> None:
    path.write_bytes(b"\x00\x01 not json")


def test_failed_report_keeps_the_last_good_report(drill: Path) -> None:
    bad = "results/smoke/seed1/greedy/phase2/soup/metrics.json"
    before = _results(drill)
    with _damaged(drill, {bad: _not_json}):
        run = smoke_snakemake(drill, "results/smoke/report/table.html")  # the main part's job
        after = _results(drill)
    assert run.returncode != 0
    log = (drill / "results/smoke/logs/report_main.log").read_text()
    assert f"cannot read metrics file {bad}" in log and "Traceback" not in log
    assert "Restored previous version of results/smoke/report/" in run.stdout + run.stderr
    del before[bad], after[bad]
    assert after == before  # all of the last report, every other result


def test_nan_and_truncated_soups_stop_their_jobs_and_lose_nothing(drill: Path) -> None:
    """The issue's drill: one NaN in a soup, another soup truncated. Every job reading them
    fails naming the file (and tensor); the metrics and retrains they made before stay."""
    nan, truncated = (
        "results/smoke/seed0/uniform/phase2/soup/model.pt",
        "results/smoke/seed0/greedy/phase1/soup/model.pt",
    )

    def put_nan(path: Path) -> None:
        _damage_checkpoint(
            path, lambda raw: next(iter(raw["sparse"].values()))["values"].__setitem__(0, math.nan)
        )

    def truncate(path: Path) -> None:
        path.write_bytes(path.read_bytes()[:500])

    before = _results(drill)
    with _damaged(drill, {nan: put_nan, truncated: truncate}):
        run = smoke_snakemake(drill)
        after = _results(drill)
    assert run.returncode != 0
    logs = drill / "results/smoke/seed0/logs"
    assert f"checkpoint {nan}: '" in (logs / "evaluate/uniform/phase2/soup.log").read_text()
    assert "holds 1 NaN or infinite value(s)" in (logs / "evaluate/uniform/phase2/soup.log").read_text()
    for retrain in range(3):  # the four files the issue saw deleted: these and the metrics
        assert (
            f"checkpoint {truncated} cannot be read"
            in (logs / f"retrain_greedy_phase2_ingredient{retrain}.log").read_text()
        )
    for name in (nan, truncated):
        del before[name], after[name]
    assert after == before


def test_missing_results_are_rebuilt_by_a_plain_run(drill: Path) -> None:
    """A model deleted by hand, even one nothing else describes (a soup-at-end retrain),
    is planned again by a plain `snakemake`, instead of "Nothing to be done"."""
    intermediate = layout.soup_recipe(layout.SOUP_AT_END, 2, 3)[1][1]  # an IMP retrain of phase 2
    gone = [f"results/smoke/seed1/{intermediate}/model.pt", "results/smoke/seed0/dense/model.pt"]
    with _damaged(drill, {name: Path.unlink for name in gone}):
        dry = smoke_snakemake(drill, "-n")
    assert dry.returncode == 0, dry.stderr[-2000:]
    for name in gone:
        assert f"Missing output files: {name}" in dry.stdout + dry.stderr, name


def test_the_workflows_report_is_reproduced_byte_for_byte(smoke_run, tmp_path: Path) -> None:
    """Written again in another process, every report file is identical, HTML included."""
    directory = smoke_run[0]
    metrics = sorted((directory / "results/smoke").rglob(layout.METRICS_FILE))
    again = write_report(metrics, tmp_path)
    shown = directory / "results/smoke/report"
    common = [name for name in again if (shown / name).exists()]
    assert [name for name in common if name.endswith(".html")], common
    assert {n: again[n].read_bytes() for n in common} == {n: (shown / n).read_bytes() for n in common}


def test_every_output_but_the_ood_set_is_restored_if_its_job_fails(smoke_run) -> None:
    """Every rule flags its outputs `update` (a rule added later too): Snakemake backs
    them up instead of deleting them, and restores them when the job fails."""
    files = [
        name.strip()
        for line in smoke_run[1].splitlines()
        if line.strip().startswith("output:")
        for name in line.strip().removeprefix("output:").split(",")
    ]
    plain = [name for name in files if not name.endswith(" (update)") and not name.endswith("/ood")]
    assert len(files) > 100 and plain == []
