"""Sharding over devices: the sweep and training on 4 devices match 1 device.

The 4-device runs happen in a subprocess (`tests/sharding_check.py`) started
with 4 host CPU devices, because a process fixes its device count when JAX
starts. This pytest process, with its one CPU device, runs the same sweep and
training as the reference while the subprocess runs.
"""

import json
import os
import subprocess
import sys
import types

import jax
import numpy as np
import pytest
from flax import traverse_util
from jax.sharding import PartitionSpec

from hwa_lora_jax import checkpointing, distributed, sweep, train_lib
from tests import sharding_check
from tests.test_training import write_sst2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Largest |difference| allowed between 1 and 4 devices, with every noise on and
# unquantized converters (`sharding_check.hardware`). Measured with jax 0.10.2
# on CPU: sweep logits 1.4e-6; training losses equal, gradient norms 6e-8, and
# adapter weights below 1e-6 but for one of 7506 at 1.0e-5 after 3 steps. Adam
# moves each weight by about the learning rate (1e-2) whatever its gradient's
# size, so a gradient that is a near-cancelling sum, with a large relative
# rounding error, moves its weight differently. ADAPTER_ATOL is 1% of that rate.
# NOTE: with 8-bit converters a rounding difference can move a value across an
# ADC level: sweep logits then differed by up to 0.04, adapters by 0.013.
SWEEP_ATOL = 1e-5
METRIC_ATOL = 1e-5
ADAPTER_ATOL = 1e-4


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory):
    sst2 = write_sst2(str(tmp_path_factory.mktemp("glue") / "SST-2"))
    return os.path.dirname(sst2)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, glue_dir):
    """Run `tests.sharding_check` on 4 CPU devices and the same sweep and training here, on 1.

    Returns the subprocess's output folder, the 1-device sweep logits and
    layouts, and the 1-device training workdir.
    """
    out_dir = tmp_path_factory.mktemp("four_devices")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "")
                        + " --xla_force_host_platform_device_count=4").strip()
    with subprocess.Popen([sys.executable, "-m", "tests.sharding_check", str(out_dir), glue_dir],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as process:
        assert len(jax.devices()) == 1
        setup, task = sharding_check.sweep_task()
        layouts = []
        logits = sharding_check.sweep_logits(setup, task, jax.devices(), 4, layouts)
        workdir = tmp_path_factory.mktemp("one_device")
        train_lib.train_and_evaluate(sharding_check.training_config(glue_dir), str(workdir))
        _, stderr = process.communicate(timeout=900)
    assert process.returncode == 0, stderr[-4000:]
    return {"out_dir": out_dir, "logits": logits, "layouts": layouts, "workdir": workdir}


@pytest.fixture(scope="module")
def sweep_logits(runs):
    with np.load(runs["out_dir"] / "sweep.npz") as data:
        logits = {name: data[name] for name in data.files}
    logits["one_device"] = runs["logits"]
    return logits


@pytest.fixture(scope="module")
def info(runs):
    with open(runs["out_dir"] / "info.json", encoding="utf-8") as f:
        info = json.load(f)
    info["layouts"]["one_device"] = runs["layouts"]
    return info


def test_subprocess_has_four_devices(info):
    assert info["device_count"] == 4
    assert info["threefry_partitionable"]


def test_sweep_by_trial_matches_one_device(sweep_logits):
    reference, split = sweep_logits["one_device"], sweep_logits["by_trial"]
    assert reference.shape == (4, 2, 16)
    assert split.shape == reference.shape
    np.testing.assert_allclose(split, reference, rtol=0, atol=SWEEP_ATOL)


def test_sweep_by_row_matches_one_device(sweep_logits):
    # Trial i's key does not depend on the trial count, so 2 trials are the first 2 of 4.
    reference, split = sweep_logits["one_device"][:2], sweep_logits["by_row"]
    assert split.shape == reference.shape
    np.testing.assert_allclose(split, reference, rtol=0, atol=SWEEP_ATOL)


def test_sweep_trials_differ(sweep_logits):
    # Guards the comparisons above against trials that all come out equal.
    reference = sweep_logits["one_device"]
    assert np.abs(reference[0] - reference[1]).max() > 100 * SWEEP_ATOL


def test_sweep_output_layouts(info):
    layouts = info["layouts"]
    # 4 trials with trials_per_batch=2: two calls of 2 on one device, one call
    # of 4 (rounded up) split by trial on four.
    assert layouts["one_device"] == ["SingleDeviceSharding", "SingleDeviceSharding"]
    assert layouts["by_trial"] == [str(PartitionSpec("data"))]
    assert layouts["by_row"] == [str(PartitionSpec(None, None, None, "data"))]


def _logged(workdir, field):
    with open(workdir / "metrics.jsonl", encoding="utf-8") as f:
        return [row[field] for row in map(json.loads, f) if field in row]


def test_training_matches_one_device(runs):
    workdirs = {"one": runs["workdir"], "four": runs["out_dir"] / "train"}
    for field in ("loss", "grad_norm"):
        reference = _logged(workdirs["one"], field)
        assert len(reference) == 3
        np.testing.assert_allclose(_logged(workdirs["four"], field), reference, rtol=0,
                                   atol=METRIC_ATOL, err_msg=field)

    reference, _ = checkpointing.load_adapter(str(workdirs["one"] / "adapter"))
    split, _ = checkpointing.load_adapter(str(workdirs["four"] / "adapter"))
    split = traverse_util.flatten_dict(split)
    for path, value in traverse_util.flatten_dict(reference).items():
        np.testing.assert_allclose(split[path], value, rtol=0, atol=ADAPTER_ATOL,
                                   err_msg=str(path))


def test_indivisible_batch_sizes_are_rejected(info):
    assert "batch_size=6 is not a multiple of the 4 devices" in info["bad_sweep_batch"]
    assert "train.batch_size=6 is not a multiple of the 4 devices" in info["bad_train_batch"]


def test_trials_per_call_rounding():
    four = types.SimpleNamespace(size=4)
    assert sweep.trials_per_call(10, 2, four) == 4
    assert sweep.trials_per_call(10, 8, four) == 8
    assert sweep.trials_per_call(3, 2, four) == 2  # fewer trials than devices: rows split
    assert sweep.trials_per_call(3, 8, four) == 3
    assert sweep.trials_per_call(10, 3, types.SimpleNamespace(size=1)) == 3


def test_detect_runtime_launch_variables():
    explicit = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "2",
                "JAX_PROCESS_ID": "1"}
    _, kwargs = distributed.detect_runtime(explicit)
    assert kwargs == {"coordinator_address": "10.0.0.1:1234", "num_processes": 2,
                      "process_id": 1}
    slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "node[1-2]", "SLURM_NTASKS": "2",
             "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}
    assert distributed.detect_runtime(slurm)[1] == {}
    assert distributed.detect_runtime({**slurm, "SLURM_NTASKS": "1"}) is None
    assert distributed.detect_runtime({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}) is None
    assert distributed.detect_runtime({}) is None


def test_maybe_initialize_without_launch():
    assert not distributed.maybe_initialize(None, environ={})
    assert not distributed.maybe_initialize(False, environ={"JAX_COORDINATOR_ADDRESS": "x:1",
                                                           "JAX_NUM_PROCESSES": "2",
                                                           "JAX_PROCESS_ID": "0"})
    assert jax.process_count() == 1


def test_one_device_mesh_places_nothing():
    mesh = distributed.data_mesh(jax.devices()[:1])
    batch = {"input_ids": np.ones((4, 3), np.int32)}
    assert distributed.shard_batch(batch, mesh)["input_ids"] is batch["input_ids"]
    assert distributed.place(batch, mesh) is batch
    assert distributed.process_rows(mesh, 4) == slice(0, 4)
