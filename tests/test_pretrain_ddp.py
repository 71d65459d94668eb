"""DistributedDataParallel on 2 CPU processes (gloo): ranks stay in lockstep."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp
from helpers import noise, tone, write_audio

from maeast_embed.checkpoint import read_checkpoint
from maeast_embed.pretrain import build_config, train


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world: int, port: int, data: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    cfg = build_config({
        "data": [data], "preset": "tiny-patch", "batch_size": 2, "max_steps": 4, "warmup_steps": 1,
        "num_workers": 0, "device": "cpu", "progress": False, "min_seconds": 1.0, "save_every": 2,
        "accum_steps": 2,
    })
    seen = {}

    def record(step, model):
        seen[step] = {k: v.clone() for k, v in model.state_dict().items()}

    train(cfg, Path(out) / "run", on_step=record)
    torch.save(seen[4], Path(out) / f"rank{rank}.pt")
    assert not torch.distributed.is_initialized()  # train() tears down the group it created


def test_two_process_gloo_keeps_parameters_identical(tmp_path):
    for i in range(10):
        make = tone if i % 2 else noise
        write_audio(tmp_path / "audio" / f"c{i}.wav", make(1.0 + 0.1 * i, seed=i))
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "audio"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    final = read_checkpoint(tmp_path / "run" / "final.pt")["model"]
    torch.manual_seed(1)
    from maeast_embed.model import MAEAST

    init = MAEAST(build_config({"preset": "tiny-patch"}).model).state_dict()
    params = {name for name, _ in MAEAST(build_config({"preset": "tiny-patch"}).model).named_parameters()}
    for key, value in ranks[0].items():
        if key in params:  # buffers (BatchNorm stats) are broadcast from rank 0 at each forward
            assert torch.equal(value, ranks[1][key]), key
        assert torch.equal(value, final[key]), key  # rank 0 writes the checkpoint
    assert not torch.equal(init["encoder.layers.0.fc1.weight"], ranks[0]["encoder.layers.0.fc1.weight"])
    states = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert states == ["state_00000002.pt", "state_00000004.pt"]
    rngs = torch.load(tmp_path / "run" / "checkpoints" / states[-1], weights_only=True)["rng"]
    assert len(rngs) == 2 and not torch.equal(rngs[0]["cpu"], rngs[1]["cpu"])  # per-rank dropout streams
