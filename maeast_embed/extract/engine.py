"""The file-level API: jobs through the embedder, short files batched across files, long ones
streamed; `embed_files` for in-memory results."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from ..errors import AudioError
from ..features import Embedder, Embedding, LayerSpec, select_layers
from ..frontend import FRAME_SHIFT
from .decoding import Decoded, decoded_stream, describe_error
from .jobs import Job
from .options import ExtractOptions
from .result import Result
from .streaming import embed_streamed


def embed_group(embedder: Embedder, group: list[Decoded], options: ExtractOptions) -> list[Result]:
    """Embed decoded files together (windows of all of them batched); on failure, one by one."""

    def run(items: list[Decoded]) -> list[Result]:
        embeddings = embedder.embed_waveforms(
            [d.wave for d in items],
            granularity=options.granularity,
            layer=options.layer,
            freq_pool=options.freq_pool,
            pool=options.pool,
        )
        return [
            Result(d.job, e.embedding, e.timestamps, e.duration, e.frames)
            for d, e in zip(items, embeddings, strict=True)
        ]

    try:
        return run(group)
    except Exception as err:  # noqa: BLE001 - find which file it was
        if len(group) == 1:
            return [Result(group[0].job, error=describe_error(err))]
    results = []
    for item in group:
        try:
            results.extend(run([item]))
        except Exception as err:  # noqa: BLE001
            results.append(Result(item.job, error=describe_error(err)))
    return results


def iter_results(
    embedder: Embedder, jobs: Sequence[Job], options: ExtractOptions, spool_dir: Path | None = None
) -> Iterator[Result]:
    """Embed jobs in order; short files batched across files, long ones streamed."""
    target = 2 * embedder.batch_size  # windows per engine call
    window_samples = embedder.chunk_steps * embedder.model.cfg.kernel_time * FRAME_SHIFT
    group: list[Decoded] = []
    windows = 0

    def flush() -> Iterator[Result]:
        nonlocal group, windows
        if group:
            yield from embed_group(embedder, group, options)
        group, windows = [], 0

    for decoded in decoded_stream(jobs, options, ahead=max(target, 2 * options.num_workers)):
        if decoded.error is not None:
            yield Result(decoded.job, error=decoded.error)
        elif decoded.wave is None:
            yield from flush()
            yield embed_streamed(embedder, decoded.job, options, spool_dir)
        else:
            group.append(decoded)
            windows += -(-decoded.wave.numel() // window_samples)
            if windows >= target:
                yield from flush()
    yield from flush()


def check_layer(embedder: Embedder, layer: LayerSpec) -> None:
    """Raise ConfigError now, not once per file, for a layer the model does not have."""
    select_layers([torch.zeros(1)] * embedder.model.cfg.encoder_layers, layer)


def embed_files(
    embedder: Embedder,
    paths: Sequence[str | os.PathLike],
    *,
    granularity: str = "frame",
    layer: LayerSpec = "last",
    freq_pool: str = "concat",
    pool: str = "mean",
    num_workers: int = 0,
) -> list[Embedding]:
    """In-memory embeddings of audio files, in order; long files are streamed in blocks.

    Raises AudioError naming the first file that cannot be used.
    """
    options = ExtractOptions(
        granularity=granularity, layer=layer, freq_pool=freq_pool, pool=pool, num_workers=num_workers
    )
    check_layer(embedder, options.layer)
    jobs = [Job(Path(p), Path(p).name) for p in paths]
    out = []
    for result in iter_results(embedder, jobs, options):
        if result.error is not None:
            raise AudioError(f"{result.job.name}: {result.error}")
        out.append(Embedding(result.embedding, result.timestamps, result.duration, result.frames))
    return out
