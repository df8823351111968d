"""Devices and processes: JAX's distributed runtime, the data mesh and array placement.

Training and the drift sweep run on a 1-D mesh whose axis `"data"` spans every
device of every process. The jitted functions see global arrays, so XLA's
SPMD partitioner splits the work and a result does not depend on how many
devices share it (up to float32 reduction order). In a multi-process run each
process places only the rows that its own devices hold
(`jax.make_array_from_process_local_data`); replicated values must be the
same on every process.

A one-device mesh is left alone: the placement helpers return their input
unchanged and the jitted steps carry no shardings, so single-device runs keep
jit's default placement.

NOTE: the tests cover one process with several devices (4 host CPU devices);
the multi-process path (several processes, orbax across them) has not been
run.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

logger = logging.getLogger(__name__)

# Name of the mesh axis that batches and sweep trials are split over.
DATA_AXIS = "data"

# Variables that name a coordinator, process count and process id, passed to
# `jax.distributed.initialize` as arguments. JAX itself reads only
# JAX_COORDINATOR_ADDRESS (jax 0.10); the others are launcher conventions.
_COORDINATOR_VARS = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS")
_NUM_PROCESSES_VARS = ("JAX_NUM_PROCESSES", "NUM_PROCESSES")
_PROCESS_ID_VARS = ("JAX_PROCESS_ID", "PROCESS_ID")
# Variables whose joint presence marks a cluster that `jax.distributed.initialize()`
# detects by itself (jax/_src/clusters, jax 0.10), with the variable that
# contains the process count (None: the first variable lists the hosts,
# comma-separated).
_CLUSTERS = (
    ("SLURM", ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
               "SLURM_LOCALID"), "SLURM_NTASKS"),
    ("Open MPI", ("OMPI_MCA_orte_hnp_uri", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"),
     "OMPI_COMM_WORLD_SIZE"),
    ("TPU pod", ("TPU_WORKER_HOSTNAMES",), None),
    ("TPU pod", ("TPU_PROCESS_ADDRESSES",), None),
)


def _first(environ: Mapping[str, str], names: Sequence[str]) -> str | None:
    return next((environ[name] for name in names if environ.get(name)), None)


def detect_runtime(environ: Mapping[str, str] = os.environ) -> tuple[str, dict] | None:
    """Find the environment variables of a multi-process launch.

    Args:
      environ: the environment to read.

    Returns:
      `(description, kwargs for jax.distributed.initialize)`, or None when
      the variables describe no launch of two or more processes. An explicit
      coordinator with a process count and id gives those three kwargs; a
      cluster that JAX detects by itself gives `{}`.
    """
    coordinator = _first(environ, _COORDINATOR_VARS)
    num_processes = _first(environ, _NUM_PROCESSES_VARS)
    process_id = _first(environ, _PROCESS_ID_VARS)
    if coordinator and num_processes and process_id:
        kwargs = {"coordinator_address": coordinator, "num_processes": int(num_processes),
                  "process_id": int(process_id)}
        return f"coordinator {coordinator}", kwargs
    for name, variables, count_var in _CLUSTERS:
        if not all(environ.get(variable) for variable in variables):
            continue
        if count_var is None:
            count = len(environ[variables[0]].split(","))
        else:
            count = int(environ[count_var])
        if count > 1:
            return f"{name} ({count} processes)", {}
    return None


def maybe_initialize(enabled: bool | None, environ: Mapping[str, str] = os.environ) -> bool:
    """Start JAX's distributed runtime for a multi-process run, if there is one.

    Call it before any other JAX call of the process.

    Args:
      enabled: True always calls `jax.distributed.initialize` (its own cluster
        detection fills what the environment leaves out); False never does;
        None does when `detect_runtime` finds a multi-process launch.
      environ: the environment to read.

    Returns:
      Whether the runtime is initialized on return.
    """
    if jax.distributed.is_initialized():
        return True
    if enabled is False:
        return False
    detected = detect_runtime(environ)
    if enabled is None and detected is None:
        return False
    description, kwargs = detected or ("JAX's cluster detection", {})
    logger.info("Initializing jax.distributed from %s", description)
    jax.distributed.initialize(**kwargs)
    logger.info("Process %d of %d, %d local devices, %d in all", jax.process_index(),
                jax.process_count(), jax.local_device_count(), jax.device_count())
    return True


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Return a 1-D mesh named `"data"` over `devices` (default: every device of every process)."""
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("data_mesh got an empty device list; pass at least one device.")
    if len(devices) > 1 and not jax.config.jax_threefry_partitionable:
        # With the flag off the draws still equal a one-device run; only their cost grows.
        logger.warning("jax_threefry_partitionable is False, so XLA cannot split jax.random "
                       "draws over the devices and may compute them in full on each; set "
                       "jax.config.update('jax_threefry_partitionable', True).")
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def is_main_process() -> bool:
    """Return whether this is process 0, the one that writes logs, metrics and files."""
    return jax.process_index() == 0


def check_divisible(value: int, mesh: Mesh, name: str, fix: str) -> None:
    """Raise ValueError unless `value` (e.g. a batch size) splits evenly over the mesh.

    Args:
      value: the number of rows to split.
      mesh: the data mesh.
      name: the value's name in the message (a config field or argument).
      fix: what to do instead, appended to the message.
    """
    if value % mesh.size:
        raise ValueError(f"{name}={value} is not a multiple of the {mesh.size} devices of "
                         f"the data mesh, so it cannot be split evenly; {fix}")


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _place_leaf(x: Any, sharding: NamedSharding) -> jax.Array:
    if _is_key(x):
        data = _place_leaf(jax.random.key_data(x), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    value = np.asarray(x)
    return jax.make_array_from_process_local_data(sharding, value, value.shape)


def place(tree: Any, mesh: Mesh, spec: PartitionSpec = PartitionSpec()) -> Any:
    """Lay out every leaf of `tree` on `mesh` by `spec` (default: replicated).

    Every process must pass the same full values; each keeps the parts its
    devices hold. Works for PRNG key arrays too. On a one-device mesh the
    tree is returned unchanged.
    """
    if mesh.size == 1:
        return tree
    sharding = NamedSharding(mesh, spec)
    return jax.tree.map(lambda x: _place_leaf(x, sharding), tree)


def process_rows(mesh: Mesh, num_rows: int) -> slice:
    """Return the rows of a `num_rows`-row batch, split over `"data"`, that this process feeds.

    Raises:
      ValueError: the process's devices have rows that are not contiguous,
        which happens only for a mesh whose devices are not ordered by process.
    """
    sharding = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
    indices = sharding.addressable_devices_indices_map((num_rows,)).values()
    spans = sorted((index[0].indices(num_rows)[:2] for index in indices))
    start, stop = spans[0][0], spans[-1][1]
    if sum(end - begin for begin, end in spans) != stop - start:
        raise ValueError(f"Process {jax.process_index()} has rows {spans} of the batch, which "
                         "are not contiguous; build the mesh with data_mesh(), whose devices "
                         "are ordered by process.")
    return slice(start, stop)


def shard_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, Any]:
    """Split a global batch over `"data"` along its leading (row) axis.

    Each process reads only its own rows of `batch` and feeds them to its
    devices (`jax.make_array_from_process_local_data`). On a one-device mesh
    the batch is returned unchanged.

    Args:
      batch: arrays with the same leading dimension, the global batch size.
      mesh: the data mesh; the batch size must be a multiple of its size.
    """
    if mesh.size == 1:
        return dict(batch)
    sharding = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
    num_rows = len(next(iter(batch.values())))
    rows = process_rows(mesh, num_rows)
    return {name: jax.make_array_from_process_local_data(sharding, np.asarray(value)[rows],
                                                         np.shape(value))
            for name, value in batch.items()}


def fetch(tree: Any) -> Any:
    """Copy every leaf to host numpy on every process, gathering across processes.

    Every process must call it (it is a collective when arrays span processes).
    """
    return multihost_utils.process_allgather(tree, tiled=True)
