"""Encoded test media written with PyAV (no ffmpeg binary): AAC, Opus, Vorbis, WMA, video."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1"}


def encode(
    path: Path,
    data: np.ndarray,
    rate: int,
    codec: str,
    *,
    container: str | None = None,
    bit_rate: int | None = None,
    video: bool = False,
    audio: bool = True,
    faststart: bool = False,
    options: dict[str, str] | None = None,
) -> Path:
    """Write `data` ([frames] or [frames, channels] float in [-1, 1]) with an FFmpeg encoder
    (`options`: the encoder's, e.g. {"aac_pns": "0"}); `video` adds a small mpeg4 video stream
    (first in the file), `audio=False` leaves only it."""
    data = np.asarray(data, dtype=np.float32)
    data = data[:, None] if data.ndim == 1 else data
    layout = LAYOUTS[data.shape[1]]
    path.parent.mkdir(parents=True, exist_ok=True)
    muxer = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", format=container, options=muxer) as out:
        picture = None
        if video:
            picture = out.add_stream("mpeg4", rate=25)
            picture.width, picture.height, picture.pix_fmt = 64, 48, "yuv420p"
        if audio:
            extra = {"strict": "experimental"} if codec == "vorbis" else {}
            stream = out.add_stream(codec, rate=rate, layout=layout, options={**extra, **(options or {})})
            if bit_rate or codec.startswith("wmav"):  # the WMA encoders need one
                stream.bit_rate = bit_rate or 64000
            fmt = av.AudioFormat(stream.codec_context.format.name)
            for pos in range(0, data.shape[0], 1024):
                chunk = data[pos : pos + 1024]
                planes = np.ascontiguousarray(chunk.T if fmt.is_planar else chunk.reshape(1, -1))
                if fmt.name.startswith("s16"):
                    planes = np.round(planes * 32767).astype(np.int16)
                elif fmt.name.startswith("s32"):
                    planes = np.round(planes * (2**31 - 1)).astype(np.int32)
                frame = av.AudioFrame.from_ndarray(planes, format=fmt.name, layout=layout)
                frame.sample_rate, frame.pts = rate, pos
                out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
        if picture is not None:
            for i in range(10):
                image = np.full((48, 64, 3), i * 20, np.uint8)
                out.mux(picture.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            out.mux(picture.encode(None))
    return path
