"""evaluate.py's library: deployments of trained adapters, reports, files, errors."""

import json
import os
import shutil
import subprocess
import sys

import jax
import pytest

from hwa_lora_jax import checkpointing, eval_lib, train_lib
from tests.test_training import tiny_config, write_sst2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two tiny SST-2 adapters on the same base model: hwa_lora and digital lora."""
    root = tmp_path_factory.mktemp("runs")
    glue_dir = str(root / "glue")
    write_sst2(os.path.join(glue_dir, "SST-2"))
    runs = {}
    for mode in ("hwa_lora", "lora"):
        config = tiny_config(glue_dir, num_steps=2, mode=mode)
        config.eval.analog = False
        train_lib.train_and_evaluate(config, str(root / mode))
        runs[mode] = str(root / mode / "adapter")
    return runs


@pytest.fixture(scope="module")
def swept(trained, tmp_path_factory):
    """A 2-trial x 2-time sweep of the hwa_lora adapter, written to a folder."""
    output_dir = tmp_path_factory.mktemp("sweep")
    deployment = eval_lib.load_deployment({"sst2": trained["hwa_lora"]})
    report = eval_lib.evaluate_deployment(deployment, drift_times=[0.0, 3600.0], num_trials=2,
                                          trials_per_batch=2, seed=0, batch_size=16,
                                          show_progress=False)
    eval_lib.write_outputs(report, str(output_dir))
    return report, output_dir


def test_report_files_and_schema(swept):
    report, tmp_path = swept
    with open(tmp_path / "sweep.json") as f:
        saved = json.load(f)
    entry = saved["tasks"]["sst2"]
    assert saved["drift_times"] == [0.0, 3600.0]
    assert len(entry["per_trial"]) == 2
    assert len(entry["per_trial"][0]) == 2
    assert len(entry["mean"]) == 2
    assert "accuracy" in entry["digital"]
    assert saved["resources"]["tiles"] == 13  # 2 layers x 6 + the pooler; digital head
    assert saved["compute_dtype"] == "float32"
    assert saved["devices"] == 1
    with open(tmp_path / "sweep.csv") as f:
        rows = f.read().splitlines()
    # header + digital (accuracy, main) + 2 trials x 2 times x 2 metrics
    assert len(rows) == 1 + 2 + 8
    assert os.path.getsize(tmp_path / "sweep.png") > 10_000
    table = eval_lib.format_table(report)
    assert "1 h" in table
    assert "+-" in table


def test_multi_task_on_changed_hardware(trained):
    deployment = eval_lib.load_deployment(
        {"hwa": trained["hwa_lora"], "digital": trained["lora"]},
        hardware_overrides="io.inp_bits=6,io.out_bits=6")
    assert deployment.hardware.io.inp_bits == 6
    assert deployment.trained_hardware["hwa"]["io"]["inp_bits"] == 8
    assert [task.name for task in deployment.tasks] == ["hwa", "digital"]
    assert deployment.resources["adapter_params_total"] == 2 * deployment.resources["adapters"]["hwa"]


@pytest.mark.parametrize("text,expected", [
    ("io.inp_bits=6,io.out_bits=6", {"io": {"inp_bits": 6, "out_bits": 6}}),
    ("pcm.drift_compensation=none", {"pcm": {"drift_compensation": "none"}}),
    ("", {}),
])
def test_parse_hardware_overrides(text, expected):
    assert eval_lib.parse_hardware_overrides(text) == expected


def test_bad_hardware_override():
    with pytest.raises(ValueError, match="SECTION.FIELD=VALUE"):
        eval_lib.parse_hardware_overrides("out_bits=6")


def test_missing_adapter_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        eval_lib.load_deployment({"sst2": str(tmp_path)})


def test_compare_needs_sweep_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="sweep.json"):
        eval_lib.compare([str(tmp_path)], str(tmp_path / "out.png"))


def test_notebook_runs_on_a_sweep(swept, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    report, output_dir = swept
    monkeypatch.setenv("HWA_SWEEP_FILES", f"{output_dir},{output_dir / 'sweep.json'}")
    notebook = nbformat.read(os.path.join(ROOT, "notebooks", "sweep_analysis.ipynb"), as_version=4)
    nbclient.NotebookClient(notebook, timeout=300, resources={"metadata": {"path": ROOT}}).execute()
    text = "".join(output.get("text", "") for cell in notebook.cells
                   for output in cell.get("outputs", []))
    assert eval_lib.format_table(report) in text
    mean_1h = report["tasks"]["sst2"]["mean"][1]["main"]
    assert f"{eval_lib.time_label(3600.0):>5}: {mean_1h:6.2f}" in text
    images = [output for cell in notebook.cells for output in cell.get("outputs", [])
              if "image/png" in output.get("data", {})]
    assert len(images) == 1


def test_adapters_of_different_base_models_are_rejected(trained, tmp_path):
    other = tmp_path / "adapter"
    shutil.copytree(trained["lora"], other)
    meta_path = other / checkpointing.ADAPTER_CONFIG_NAME
    meta = json.loads(meta_path.read_text())
    meta["model"]["folder"] = str(tmp_path / "another-model")
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="different base models"):
        eval_lib.load_deployment({"a": trained["hwa_lora"], "b": str(other)})


@pytest.mark.parametrize("flag,message", [
    ("--drift_times=0,-5", "times must be >= 0"),
    ("--drift_times=0,1h", "give seconds"),
    ("--trials=0", "--trials=0 is invalid"),
    ("--distributed=maybe", "value should be one of <auto|true|false>"),
])
def test_evaluate_script_rejects_bad_flags(trained, flag, message):
    workdir = os.path.dirname(trained["lora"])
    result = subprocess.run([sys.executable, os.path.join(ROOT, "evaluate.py"),
                             f"--workdir={workdir}", flag],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode != 0
    assert message in result.stderr + result.stdout


@pytest.mark.parametrize("value,expected", [
    ("auto", None),
    ("true", True),
    ("false", False),
    ("True", True),
    ("FALSE", False),
])
def test_distributed_flag_mapping(value, expected):
    assert eval_lib.distributed_enabled(value) is expected


def test_distributed_flag_rejects_other_values():
    with pytest.raises(ValueError, match="--distributed='yes' is invalid"):
        eval_lib.distributed_enabled("yes")


def test_outputs_written_on_process_zero_only(swept, tmp_path, monkeypatch):
    report, _ = swept
    assert eval_lib.write_outputs_on_main_process(report, str(tmp_path / "process0"))
    assert sorted(os.listdir(tmp_path / "process0")) == ["sweep.csv", "sweep.json", "sweep.png"]
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    assert not eval_lib.write_outputs_on_main_process(report, str(tmp_path / "process1"))
    assert not (tmp_path / "process1").exists()


def test_evaluate_script_distributed_false_bfloat16(trained, tmp_path):
    # A flag value passed on unmapped (the string 'false' is truthy) would start
    # jax.distributed, which fails here with no coordinator.
    workdir = os.path.dirname(trained["hwa_lora"])
    result = subprocess.run([sys.executable, os.path.join(ROOT, "evaluate.py"),
                             f"--workdir={workdir}", f"--output_dir={tmp_path}",
                             "--distributed=false", "--compute_dtype=bfloat16", "--trials=1",
                             "--drift_times=0", "--batch_size=16"],
                            check=False, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "digital" in result.stdout
    with open(tmp_path / "sweep.json") as f:
        assert json.load(f)["compute_dtype"] == "bfloat16"
    assert sorted(os.listdir(tmp_path)) == ["sweep.csv", "sweep.json", "sweep.png"]
