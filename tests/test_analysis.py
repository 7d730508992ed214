"""`dl-ray analyze`: the job kinds that train nothing, run through the real command on a real kind (gradient_flow)."""
from __future__ import annotations

import json

import yaml

from dl_ray.cli import main

SMALL = {"cells": ["rnn", "lstm"], "lengths": [1, 5], "hidden_size": 8, "seeds": 1, "batch_size": 4}


def analysis_job(tmp_path):
    job = tmp_path / "flow.yaml"
    job.write_text(yaml.safe_dump({"kind": "gradient_flow", "name": "flow", "analysis": SMALL,
                                   "storage": {"path": str(tmp_path / "runs")}}))
    return job


def test_an_analysis_writes_its_figures_and_pictures_and_refuses_another_spec_in_its_folder(capsys, tmp_path):
    job = analysis_job(tmp_path)
    assert main(["analyze", str(job)]) == 0
    run_dir = tmp_path / "runs" / "flow"
    figures = json.loads((run_dir / "summary.json").read_text())
    assert figures and all(isinstance(v, (int, float, str)) for v in figures.values())
    assert (run_dir / "spec.yaml").is_file() and list(run_dir.glob("*.png"))
    assert str(run_dir) in capsys.readouterr().out
    assert main(["analyze", str(job), "--set", "analysis.hidden_size=9"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds a run with a different spec (analysis.hidden_size)" in err


def test_a_bad_analysis_field_is_one_line_and_writes_nothing(capsys, tmp_path):
    for override, says in [("analysis.hidden_size=0", "analysis.hidden_size: Input should be greater than 0"),
                           ("analysis.cell=gru", "analysis.cell: unknown key (did you mean 'cells'?); allowed: cells, lengths"),
                           ("analysis=3", "analysis: expected a mapping of gradient_flow fields, got 3")]:
        assert main(["analyze", str(analysis_job(tmp_path)), "--set", override]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and says in err, err
    assert not (tmp_path / "runs").exists()
