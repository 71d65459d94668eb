"""Where a process stands in a launch: its shard of the files and its device, read from the
environments torchrun and SLURM set (no cluster machinery of our own)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..errors import ConfigError


def _pair(env: Mapping[str, str], index: str, count: str, first: str | None = None) -> tuple[int, int] | None:
    if index not in env or count not in env:
        return None
    try:
        i, n = int(env[index]) - int(env.get(first, 0) if first else 0), int(env[count])
    except ValueError as err:
        raise ConfigError(f"cannot read {index}={env[index]!r} / {count}={env[count]!r} as numbers") from err
    if n < 1 or not 0 <= i < n:
        raise ConfigError(f"{index}={env[index]} does not fit {count}={env[count]} (contiguous ids expected)")
    return i, n


def shard_from_environment(env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """(index, count) of this process: torchrun's RANK/WORLD_SIZE, else SLURM's
    SLURM_PROCID/SLURM_NTASKS; a SLURM job array (SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN of
    SLURM_ARRAY_TASK_COUNT) splits on top of either; (0, 1) when launched by neither."""
    env = os.environ if env is None else env
    array = _pair(env, "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN") or (0, 1)
    tasks = _pair(env, "RANK", "WORLD_SIZE") or _pair(env, "SLURM_PROCID", "SLURM_NTASKS") or (0, 1)
    return array[0] * tasks[1] + tasks[0], array[1] * tasks[1]


def local_rank(env: Mapping[str, str] | None = None) -> int | None:
    """This process's index on its node (torchrun LOCAL_RANK, SLURM_LOCALID), if launched so."""
    env = os.environ if env is None else env
    for name in ("LOCAL_RANK", "SLURM_LOCALID"):
        if name in env:
            try:
                return int(env[name])
            except ValueError as err:
                raise ConfigError(f"cannot read {name}={env[name]!r} as a number") from err
    return None


def process_device(device: str, cuda_available: bool, env: Mapping[str, str] | None = None) -> str:
    """'auto'/'cuda' -> 'cuda:LOCAL_RANK' for a process of a launch on a CUDA machine."""
    rank = local_rank(env)
    if rank is None or device not in ("auto", "cuda") or not cuda_available:
        return device
    return f"cuda:{rank}"
