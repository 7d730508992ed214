"""Job spec validation: good files load, every malformed spec or override exits 2 with one clear line."""
from __future__ import annotations

import itertools
import re

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dl_ray.cli import main
from dl_ray.spec import SpecError, load_spec, parse_spec
from tests.conftest import ROOT

BASE = {"name": "ok", "model": {"name": "mlp", "hidden": [16]}, "data": {"name": "digits"},
        "training": {"epochs": 1}, "tracking": {"wandb": "disabled"}}


SUPERVISED_JOBS = sorted(p for p in (ROOT / "jobs").glob("*.yaml")  # other kinds: their family's tests (test_style_transfer)
                         if yaml.safe_load(p.read_text()).get("kind", "supervised") == "supervised")


@pytest.mark.parametrize("job", SUPERVISED_JOBS, ids=lambda p: p.name)
def test_shipped_jobs_validate(job):
    spec = load_spec(job)
    assert spec.to_dict() == parse_spec(spec.to_dict()).to_dict()  # the saved spec round-trips


@pytest.mark.parametrize("sweep", sorted((ROOT / "jobs" / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_sweeps_validate(sweep):
    from dl_ray.tune.spec import load_sweep
    from dl_ray.tune.sweep import check

    if yaml.safe_load(sweep.read_text())["tune"].get("trial") == "evaluate":  # needs its trained run (test_seq2seq_train)
        with pytest.raises(SpecError, match=r"tune\.checkpoint: no checkpoint in /nonexistent/run \(expected"):
            load_sweep(sweep, ["tune.checkpoint=/nonexistent/run"])
        return
    check(load_sweep(sweep))


@pytest.mark.parametrize("job", sorted((ROOT / "jobs" / "rl").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_rl_jobs_validate(job):
    from dl_ray.rl.driver import check
    from dl_ray.rl.spec import load_rl_spec, parse_rl_spec

    spec = load_rl_spec(job)
    check(spec)
    assert spec.to_dict() == parse_rl_spec(spec.to_dict()).to_dict()


def laptop_overrides(job) -> list[str]:
    """The ``--set`` overrides a shipped RL job's header comment gives for a 2-core laptop (none: it fits as is)."""
    lines = [line for line in job.read_text().splitlines() if line.startswith("#")]
    start = next((i for i, line in enumerate(lines) if "On a 2-core laptop" in line), None)
    if start is None:
        return []
    said = [lines[start], *itertools.takewhile(lambda line: line.startswith("#   "), lines[start + 1:])]
    return re.findall(r"--set (\S+=\S+)", " ".join(said))


@pytest.mark.parametrize("job", sorted((ROOT / "jobs" / "rl").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_rl_jobs_run_on_a_2_core_laptop_as_their_header_says(job):
    from dl_ray.rl.driver import learner_gpus
    from dl_ray.rl.spec import load_rl_spec

    spec = load_rl_spec(job, laptop_overrides(job))
    if spec.kind == "dqn":
        assert learner_gpus(spec, {"CPU": 2.0}) == 0 and spec.actors.gpus_per_actor == 0


def test_overrides_are_typed_and_nested():
    spec = parse_spec(BASE)
    assert spec.training.batch_size == 64 and spec.storage.name is None
    raw = yaml.safe_load(yaml.safe_dump(BASE))
    from dl_ray.spec import apply_override

    for item in ["optimizer.lr=3e-4", "training.batch_size=full", "model.hidden=[8, 4]", "regularization.early_stopping.patience=3"]:
        apply_override(raw, item)
    spec = parse_spec(raw)
    assert spec.optimizer.lr == 3e-4 and spec.training.batch_size == "full"
    assert spec.model.hidden == [8, 4] and spec.regularization.early_stopping.patience == 3


@pytest.mark.parametrize(("change", "expected"), [
    ({"model": {"name": "mlpp"}}, "model.name: unknown model 'mlpp' (did you mean 'mlp'?); allowed: "),
    ({"data": {"name": "cifar"}}, "data.name: unknown dataset 'cifar'"),
    ({"optimizer": {"name": "adamw"}}, "optimizer.name: Input should be 'sgd', 'rmsprop' or 'adam'"),
    ({"training": {"epoch": 3}}, "training.epoch: unknown key (did you mean 'epochs'?); allowed: epochs,"),
    ({"model": {"name": "mlp", "activation": "gelu"}}, "model.activation: Input should be 'relu', 'leaky_relu', 'sigmoid' or 'tanh'"),
    ({"schedule": {"name": "step", "decay_rate": 2}}, "schedule: decay_rate must be < 1 for step decay"),
    ({"training": {"batch_size": 0}}, "batch_size must be >= 1 or 'full'"),
])
def test_errors_name_the_path_and_the_allowed_values(change, expected):
    with pytest.raises(SpecError) as err:
        parse_spec({**BASE, **change})
    assert expected in str(err.value)
    assert "\n" not in str(err.value)
    if "allowed: " in expected and "model.name" in expected:
        assert {"lenet5", "mlp"} <= set(str(err.value).split("allowed: ")[1].split(", "))


# ---- property: >= 50 malformed specs and overrides, all exit 2 with one line, none start anything

LEAVES = {  # dotted path -> values that must be refused
    "training.epochs": [0, -1, "ten", 2.5, [1]],
    "training.batch_size": [0, "half", -4, {"a": 1}],
    "training.precision": ["fp16", 16, "BF16"],
    "training.seed": ["x", [0]],
    "optimizer.lr": [0, -0.1, "fast", None],
    "optimizer.name": ["adamw", "SGD", 3],
    "optimizer.momentum": [1.0, -0.5, "high"],
    "schedule.name": ["linear", "", None],
    "schedule.decay_rate": [0, -1, "slow"],
    "regularization.dropout": [1.0, -0.1, "some"],
    "regularization.l2": [-1e-4, "lots"],
    "regularization.early_stopping.patience": [0, "never"],
    "regularization.early_stopping.metric": ["val/f1", "loss", 1],
    "regularization.augment.max_shift": [-1, 100, "a bit"],
    "model.name": ["resnet9000", "", 7, None],
    "model.activation": ["gelu", "ReLU", 0],
    "model.hidden": ["wide", [], [["x"]]],
    "data.name": ["imagenet", "", None],
    "data.val_fraction": [0, 0.9, "most"],
    "scaling.num_workers": [-1, "many", 1.5],
    "scaling.use_gpu": ["perhaps", [True]],
    "tracking.wandb": ["on", True, "cloud"],
    "storage.name": ["has space", "a/b", ""],
    "name": ["bad name!", ""],
}
BAD_OVERRIDES = ["training.epochs", "=3", ".x=1", "a..b=1", "training.epochs.deep=1", "name.x=2", "nosuch=1",
                 "training.nosuch=1", "model.nosuch=1", "optimizer=adam"]
identifier = st.from_regex(r"\A[a-z][a-z_]{2,12}\Z")


@st.composite
def malformed(draw):
    """(job dict, overrides): one or more guaranteed-bad changes to a valid job."""
    raw = yaml.safe_load(yaml.safe_dump(BASE))
    overrides = []
    kind = draw(st.sampled_from(["leaf", "leaf", "unknown_key", "override", "section_scalar"]))
    if kind == "leaf":
        path = draw(st.sampled_from(sorted(LEAVES)))
        overrides.append(f"{path}={yaml.safe_dump(draw(st.sampled_from(LEAVES[path])), default_flow_style=True).strip().removesuffix('...').strip()}")
    elif kind == "unknown_key":
        section = draw(st.sampled_from(["", "training.", "optimizer.", "model.", "data.", "regularization.augment."]))
        key = draw(identifier.filter(lambda k: k not in {"name", "epochs", "lr", "hidden", "description", "limit",
                                                          "activation", "momentum", "betas", "rho", "seed", "path"}))
        overrides.append(f"{section}{key}=1")
    elif kind == "override":
        overrides.append(draw(st.sampled_from(BAD_OVERRIDES)))
    else:
        raw[draw(st.sampled_from(["optimizer", "training", "schedule", "regularization"]))] = draw(st.sampled_from([3, "x", [1]]))
    return raw, overrides


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=malformed())
def test_malformed_specs_exit_2_with_one_line(case, tmp_path_factory, capsys):
    raw, overrides = case
    folder = tmp_path_factory.mktemp("bad")
    raw["storage"] = {"path": str(folder / "runs")}
    job = folder / "job.yaml"
    job.write_text(yaml.safe_dump(raw))
    args = ["train", str(job)] + [a for o in overrides for a in ("--set", o)]
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2, (overrides, err)
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert not (folder / "runs").exists()  # nothing was started or written


@pytest.mark.parametrize("text", ["model: [unclosed", "- just\n- a list", "model:\n  name: mlp\n bad: indent", "\x00\x01"])
def test_unparseable_files_exit_2(tmp_path, capsys, text):
    job = tmp_path / "job.yaml"
    job.write_text(text)
    assert main(["train", str(job)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_missing_file_and_missing_data_path_exit_2(tmp_path, capsys):
    assert main(["train", str(tmp_path / "nope.yaml")]) == 2
    assert "job file: no such file" in capsys.readouterr().err
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({**BASE, "model": {"name": "lenet5"}, "data": {"name": "mnist5k", "path": str(tmp_path / "x.csv")},
                                   "storage": {"path": str(tmp_path / "runs")}}))
    assert main(["train", str(job)]) == 2
    assert "data.path: no such file" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_model_that_does_not_fit_the_data_exits_2(tmp_path, capsys):
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({**BASE, "model": {"name": "lenet5"}, "data": {"name": "diabetes"}}))
    assert main(["train", str(job)]) == 2
    assert "model.name=lenet5 needs images" in capsys.readouterr().err


def test_dry_run_prints_the_resolved_spec(capsys):
    assert main(["train", str(ROOT / "jobs/mnist_lenet.yaml"), "--dry-run", "--set", "training.epochs=7"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["training"]["epochs"] == 7 and printed["model"]["name"] == "lenet5"


def test_list_shows_models_datasets_and_their_fields(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for word in ("lenet5", "mlp", "mnist5k", "digits", "diabetes", "breast_cancer"):
        assert word in out
    assert main(["list", "lenet5"]) == 0  # the fields of one model
    out = capsys.readouterr().out
    for word in ("activation", "channels"):
        assert word in out


def test_bad_data_and_unwritable_storage_exit_2(tmp_path, capsys):
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("\n".join(",".join(["nan"] * 784 + ["3"]) for _ in range(20)))
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({**BASE, "model": {"name": "lenet5"}, "data": {"name": "mnist5k", "path": str(bad_csv)}}))
    assert main(["train", str(job)]) == 2
    assert "missing or infinite feature values" in capsys.readouterr().err
    bad_csv.write_text("\n".join(",".join(["0"] * 784 + ["12"]) for _ in range(20)))
    assert main(["train", str(job)]) == 2
    assert "the last column must hold digit labels 0-9" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    job.write_text(yaml.safe_dump({**BASE, "storage": {"path": str(blocker)}}))
    assert main(["train", str(job)]) == 2
    assert "storage.path: cannot create the run folder" in capsys.readouterr().err


def test_a_jobs_address_in_ray_address_is_refused_before_anything_starts(tmp_path, capsys, monkeypatch):
    import ray

    if ray.is_initialized():
        pytest.skip("a Ray instance is already up in this process")
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({**BASE, "scaling": {"num_workers": 1}, "storage": {"path": str(tmp_path / "runs")}}))
    assert main(["train", str(job)]) == 2
    assert "is a Ray Jobs (dashboard) address: send the job with `dl-ray submit`" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "ok" / "spec.yaml").exists()


def test_augment_null_switches_a_jobs_augmentation_off():
    spec = load_spec(ROOT / "jobs/mnist_lenet.yaml", ["regularization.augment=null"])
    assert not spec.regularization.augment.enabled
    assert load_spec(ROOT / "jobs/mnist_lenet.yaml").regularization.augment.enabled  # the job's own: 2 px, 10 degrees


def test_a_shift_that_moves_a_small_image_out_of_view_is_refused_before_anything_is_written(tmp_path, capsys):
    # jobs/mnist_lenet.yaml's 2 px on 8x8 digits moved a quarter of each digit away (61 % instead of 97 % accuracy)
    code = main(["train", str(ROOT / "jobs/mnist_lenet.yaml"), "--set", "data.name=digits", "--set", "model={name: mlp}",
                 "--set", f"storage.path={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert ("regularization.augment.max_shift: 2 px would move a 8x8 image of data.name=digits by up to 25%; "
            "allowed: 0 to 1 px (1/8 of its side), or --set regularization.augment=null") in err
    assert not list(tmp_path.iterdir())
    assert main(["train", str(ROOT / "jobs/mnist_lenet.yaml"), "--set", "data.name=digits", "--set", "model={name: mlp}",
                 "--set", "regularization.augment.max_shift=1", "--set", f"storage.path={tmp_path}", "--dry-run"]) == 0


def test_another_model_name_drops_the_fields_the_new_model_lacks_with_one_notice(capsys):
    spec = load_spec(ROOT / "jobs" / "mnist_lenet.yaml", ["model.name=mlp"])
    assert capsys.readouterr().err == "note: model.name lenet5 -> mlp: dropped model.pooling (mlp has no such field)\n"
    assert spec.model.name == "mlp" and spec.model.activation == "relu"  # a field both models have is kept
    # a field given with --set is the user's: kept, and refused as usual
    assert main(["train", str(ROOT / "jobs" / "mnist_lenet.yaml"), "--set", "model.name=mlp", "--set", "model.pooling=avg",
                 "--dry-run"]) == 2
    assert "model.pooling: unknown key" in capsys.readouterr().err
