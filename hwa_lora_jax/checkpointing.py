"""Checkpoints: periodic training state and standalone adapters, both with orbax.

Layout of a run's workdir:

    checkpoints/<step>/     full TrainState (orbax CheckpointManager)
    adapter/params/         the adapter pytree (LoRA and task head) alone
    adapter/adapter_config.json
                            what is needed to rebuild the model around it

Orbax finalizes each checkpoint by renaming a temporary folder, and the
adapter folder is swapped in by renames, so a killed run leaves either the
previous or the new checkpoint, never a partial one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any, Mapping

import jax
import orbax.checkpoint as ocp

ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_PARAMS_DIR = "params"


def write_json_atomic(path: str, payload: Any) -> None:
    """Write JSON to a temporary file in the same folder, then rename it over `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2, sort_keys=True, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


class TrainCheckpoints:
    """Periodic full-state checkpoints in `<workdir>/checkpoints`, the newest `max_to_keep` kept.

    In a multi-process run every process calls `save` and `restore_latest`
    (orbax synchronizes them, and process 0 finalizes each checkpoint).
    """

    def __init__(self, workdir: str, *, max_to_keep: int = 2):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any) -> None:
        """Save `state` at `step` and wait until it is on disk."""
        self._manager.save(step, args=ocp.args.StandardSave(state), force=True)
        self._manager.wait_until_finished()

    def restore_latest(self, template: Any) -> Any | None:
        """Restore the newest checkpoint into the structure of `template`, or return None."""
        step = self.latest_step()
        if step is None:
            return None
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        try:
            return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except (ValueError, KeyError) as err:
            reason = str(err).strip().splitlines()[0][:200]
            raise ValueError(
                f"The checkpoint at {self.directory}/{step} does not match this run's model, "
                f"mode or LoRA placement ({reason}). Use a new --workdir, or rerun with the "
                "config that wrote it."
            ) from None

    def close(self) -> None:
        self._manager.close()


def save_adapter(folder: str, adapter: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
    """Save an adapter pytree and its metadata as a standalone checkpoint folder.

    The new folder is written next to `folder` and renamed into place. The
    save involves only the calling process, so in a multi-process run one
    process calls it, with arrays that are on its own devices or on the host.
    """
    folder = os.path.abspath(folder)
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(dir=parent, prefix=".tmp-adapter-")
    this_process = jax.process_index()
    only_this_process = ocp.options.MultiprocessingOptions(
        primary_host=this_process, active_processes={this_process})
    try:
        checkpointer = ocp.StandardCheckpointer(multiprocessing_options=only_this_process)
        checkpointer.save(os.path.join(staging, ADAPTER_PARAMS_DIR), adapter)
        checkpointer.wait_until_finished()
        write_json_atomic(os.path.join(staging, ADAPTER_CONFIG_NAME), dict(metadata))
        previous = folder + ".previous"
        if os.path.exists(folder):
            shutil.rmtree(previous, ignore_errors=True)
            os.replace(folder, previous)
        os.replace(staging, folder)
        shutil.rmtree(previous, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_adapter_metadata(folder: str) -> dict[str, Any]:
    """Read `adapter_config.json` of an adapter folder."""
    path = os.path.join(folder, ADAPTER_CONFIG_NAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path} not found: {folder} is not an adapter folder. Pass the `adapter` folder "
            "that train.py writes into its workdir."
        )
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_adapter(folder: str, template: Any | None = None) -> tuple[Any, dict[str, Any]]:
    """Load an adapter pytree and its metadata.

    Args:
      folder: the adapter folder.
      template: a pytree with the expected structure; when given, a saved
        adapter of another structure (another model or placement) raises
        ValueError.

    Returns:
      `(adapter, metadata)`.
    """
    metadata = load_adapter_metadata(folder)
    path = os.path.join(os.path.abspath(folder), ADAPTER_PARAMS_DIR)
    checkpointer = ocp.StandardCheckpointer()
    if template is None:
        return checkpointer.restore(path), metadata
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    try:
        return checkpointer.restore(path, abstract), metadata
    except (ValueError, KeyError) as err:
        raise ValueError(
            f"The adapter in {folder} does not fit this model: it was trained for "
            f"{metadata.get('model', {}).get('checkpoint', '?')} with LoRA placement "
            f"{metadata.get('lora', {}).get('placement', '?')!r} ({err})."
        ) from err
