"""Open encoded audio with libsndfile first, else FFmpeg (PyAV), behind one small interface.

A `Decoder` hands out consecutive blocks of native-rate float32 samples [frames, channels]
and can seek to a sample. Positions count decoded samples from the start of the stream, so a
seek lands where reading from the start would have arrived (FFmpeg: through the stream's
timestamps, with a pre-roll that lets lossy decoders settle; where the container keeps no
sample-accurate timestamps, by decoding from the start).

Sources are paths, `EncodedAudio` (bytes in memory) or `FileRange` (a byte range of a larger
file, e.g. a tar member, read in place).

Headers are not trusted: a path must be a regular file (not a FIFO or device), and a stream
whose header declares a sample rate, channel count or length outside `MIN_SAMPLE_RATE` to
`MAX_SAMPLE_RATE`, `MAX_CHANNELS`, `MAX_SECONDS` is refused when it is opened, before any sample is allocated.
Reading all of a stream goes block by block (`block_frames`), never by the header's length.
"""

from __future__ import annotations

import io
import os
import stat
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO, Any

import numpy as np
import soundfile as sf

from ..errors import AudioError

MIN_SAMPLE_RATE = 1000  # below, a few bytes would resample to hours of 16 kHz audio
MAX_SAMPLE_RATE = 1_536_000  # 8 x 192 kHz
MAX_CHANNELS = 1024  # libsndfile's own limit
MAX_SECONDS = 7 * 24 * 3600  # a declared length beyond a week is a damaged or crafted header
MAX_BLOCK_VALUES = 1 << 22  # samples x channels decoded at once when reading a whole stream (16 MB)


def block_frames(channels: int) -> int:
    """Frames per block when reading a whole stream: a bounded number of values whatever the
    channel count."""
    return max(1024, MAX_BLOCK_VALUES // max(1, channels))


def check_format(name: str, sample_rate: int, channels: int, frames: int | None) -> None:
    """Refuse a header that declares an impossible or absurd format (AudioError)."""
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise AudioError(f"the header declares a sample rate of {sample_rate} Hz (readable: "
                         f"{MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz): {name}")
    if not 0 < channels <= MAX_CHANNELS:
        raise AudioError(f"the header declares {channels} channels (readable: 1 to {MAX_CHANNELS}): {name}")
    if frames is not None and not 0 <= frames <= MAX_SECONDS * sample_rate:
        raise AudioError(f"the header declares {frames} samples ({frames / sample_rate / 86400:.1f} days "
                         f"at {sample_rate} Hz; readable: up to {MAX_SECONDS // 86400} days): {name}")


@dataclass(frozen=True)
class EncodedAudio:
    """An encoded file held in memory; `name` (with its extension) is used in messages."""

    name: str
    data: bytes


@dataclass(frozen=True)
class FileRange:
    """An encoded file stored as bytes [offset, offset + size) of `path` (a tar member)."""

    path: str
    offset: int
    size: int
    name: str


Source = str | os.PathLike | EncodedAudio | FileRange


def source_name(source: Source) -> str:
    return source.name if isinstance(source, (EncodedAudio, FileRange)) else str(source)


class _RangeFile(io.RawIOBase):
    """Read-only, seekable view of bytes [offset, offset + size) of an open file."""

    def __init__(self, path: str, offset: int, size: int) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._offset, self._size, self._pos = offset, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        count = max(0, min(len(buffer), self._size - self._pos))
        if not count:
            return 0
        self._file.seek(self._offset + self._pos)
        got = self._file.readinto(memoryview(buffer)[:count])
        self._pos += got
        return got

    def close(self) -> None:
        self._file.close()
        super().close()


def _check_path(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError as err:
        raise AudioError(f"file not found: {path}") from err
    except (OSError, ValueError) as err:  # a link loop, a NUL in the name, ...
        raise AudioError(f"cannot open {path!r}: {getattr(err, 'strerror', None) or err}") from err
    if stat.S_ISDIR(mode):
        raise AudioError(f"is a directory, not an audio file: {path}")
    if not stat.S_ISREG(mode):
        raise AudioError(f"not a regular file (a FIFO, device or socket), not read: {path}")
    if not os.access(path, os.R_OK):
        raise AudioError(f"permission denied: {path}")
    if path.stat().st_size == 0:
        raise AudioError(f"empty file (0 bytes): {path}")


def _open_stream(source: EncodedAudio | FileRange) -> IO[bytes]:
    if isinstance(source, EncodedAudio):
        if not source.data:
            raise AudioError(f"empty file (0 bytes): {source.name}")
        return io.BytesIO(source.data)
    _check_path(Path(source.path))
    if source.size == 0:
        raise AudioError(f"empty file (0 bytes): {source.name}")
    if source.offset + source.size > os.path.getsize(source.path):
        raise AudioError(f"cut short: the container ends inside {source.name}")
    return _RangeFile(source.path, source.offset, source.size)


class Decoder(ABC):
    """Native-rate blocks of one audio stream; `frames` is the header's count (`frames_exact`
    False: an estimate from container metadata, or None when there is none)."""

    name: str
    backend: str
    sample_rate: int
    channels: int
    frames: int | None
    frames_exact: bool
    position: int = 0  # index of the next sample `read` returns

    @abstractmethod
    def read(self, frames: int) -> np.ndarray:
        """Up to `frames` samples ([n, channels] float32; all that is left when < 0); fewer
        only at the end of the stream."""

    @abstractmethod
    def seek(self, frame: int) -> None:
        """Make `read` continue at sample `frame` (at the end if the stream is shorter)."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Decoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Unreadable(AudioError):
    """FFmpeg cannot open the bytes as a container; `reason` is FFmpeg's."""

    def __init__(self, reason: str, name: str) -> None:
        self.reason = reason
        super().__init__(f"not a readable audio file ({reason}): {name}")


def _sf_reason(err: Exception) -> str:
    return (getattr(err, "error_string", None) or str(err)).rstrip(".")


class SndfileDecoder(Decoder):
    backend = "libsndfile"

    def __init__(self, handle: sf.SoundFile, name: str, stream: IO[bytes] | None = None) -> None:
        self._handle, self._stream, self.name = handle, stream, name
        self.sample_rate, self.channels = int(handle.samplerate), int(handle.channels)
        self.frames = int(handle.frames)
        check_format(name, self.sample_rate, self.channels, self.frames)
        self.frames_exact = handle.format != "MP3"  # mp3 lengths may be estimated from the bitrate
        self.position = 0

    def read(self, frames: int) -> np.ndarray:
        if frames < 0:  # all that is left, block by block: the header's length is not trusted
            blocks = [self.read(block_frames(self.channels))]
            while blocks[-1].shape[0]:
                blocks.append(self.read(block_frames(self.channels)))
            return np.concatenate(blocks)
        try:
            data = self._handle.read(frames, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as err:
            raise AudioError(f"decoding failed ({_sf_reason(err)}): {self.name}") from err
        self.position += data.shape[0]
        return data

    def seek(self, frame: int) -> None:
        frame = min(max(0, frame), self.frames)
        try:
            self._handle.seek(frame)
        except (sf.LibsndfileError, RuntimeError) as err:
            raise AudioError(f"seeking failed ({_sf_reason(err)}): {self.name}") from err
        self.position = frame

    def close(self) -> None:
        self._handle.close()
        if self._stream is not None:
            self._stream.close()


def _to_float(frame: Any, channels: int) -> np.ndarray:
    """An FFmpeg audio frame -> [samples, channels] float32 in [-1, 1] (libsndfile's scaling)."""
    array = frame.to_ndarray()
    array = array.T if frame.format.is_planar else array.reshape(-1, channels)
    kind = array.dtype
    if kind == np.float32:
        return array
    if kind == np.uint8:
        return (array.astype(np.float32) - 128.0) / 128.0
    if kind.kind == "i":
        return (array / float(2 ** (8 * kind.itemsize - 1))).astype(np.float32)
    return array.astype(np.float32)


# demuxers whose timestamps are stored per packet (seeking through them lands on a sample);
# elsewhere (raw ADTS/AC-3/AMR streams...) timestamps after a seek are guesses from bitrates
_STORED_TIMESTAMPS = ("mov", "mp4", "ogg", "flac", "wav", "aiff", "caf", "w64", "matroska", "asf")
_PREROLL_SECONDS = 0.2  # decoded and dropped before a seek target: lossy decoders settle
_COARSE_SEEK_AFTER = 30.0  # ms-timestamp containers: decode from the start before this


class PyAVDecoder(Decoder):
    backend = "ffmpeg"

    def __init__(self, target: str | IO[bytes], name: str, stream: IO[bytes] | None = None) -> None:
        """`target`: a path, or `stream` (a seekable file object FFmpeg reads through)."""
        import av

        self._av, self._target, self._file, self.name = av, target, stream, name
        self._container = None
        self._open()
        try:
            self._setup()
        except BaseException:
            self._container.close()
            raise

    def _setup(self) -> None:
        name, audio = self.name, self._stream
        if audio.codec_context is None:
            raise AudioError(f"the audio stream's codec cannot be decoded here: {name}")
        self.sample_rate = int(audio.codec_context.sample_rate or audio.rate or 0)
        self.channels = int(audio.codec_context.channels or 0)
        if self.sample_rate <= 0 or self.channels <= 0:
            raise AudioError(f"audio stream without a sample rate or channel count: {name}")
        self.frames, self.frames_exact = self._metadata_frames(), False
        check_format(name, self.sample_rate, self.channels, self.frames)
        self._time_base = audio.time_base or Fraction(1, self.sample_rate)
        fmt = self._container.format.name
        stored = any(part in _STORED_TIMESTAMPS for part in fmt.split(","))
        self._sample_accurate = stored and self._time_base * self.sample_rate <= 1
        self._coarse = stored and not self._sample_accurate
        self._origin: int | None = None  # timestamp (in samples) of the first decoded sample
        self._fill(1)  # decode the first frame now: a stream that does not decode fails here
        if self._pending:
            self._origin = self._first_pts
        if not self._pending:
            raise AudioError(f"no audio samples in file: {name}")

    # ------------------------------------------------------------------ container
    def _open(self) -> None:
        av = self._av
        if self._container is not None:
            self._container.close()
        if self._file is not None:
            self._file.seek(0)
        try:
            self._container = av.open(self._target, mode="r", metadata_errors="ignore")
        except av.FFmpegError as err:
            raise _Unreadable(_av_reason(err), self.name) from err
        streams = self._container.streams
        if not streams.audio:
            kinds = sorted({s.type for s in streams}) or ["no"]
            self._container.close()
            raise AudioError(
                f"no audio stream in the file (it holds {', '.join(kinds)} streams): {self.name}"
            )
        self._stream = streams.audio[0]
        self._frames_iter = self._decode()
        self._pending: list[np.ndarray] = []
        self._pending_len = 0
        self._first_pts: int | None = None
        self._eof = False
        self.position = 0

    def _metadata_frames(self) -> int | None:
        audio = self._stream
        if audio.duration and audio.time_base:
            return int(round(audio.duration * audio.time_base * self.sample_rate))
        if self._container.duration:
            return int(round(self._container.duration * self.sample_rate / 1_000_000))
        return None

    def _decode(self) -> Iterator[Any]:
        av = self._av
        try:
            for packet in self._container.demux(self._stream):
                yield from packet.decode()
        except av.FFmpegError as err:
            raise AudioError(f"decoding failed ({_av_reason(err)}): {self.name}") from err

    def _pts_samples(self, frame: Any) -> int | None:
        if frame.pts is None:
            return None
        return int(round(frame.pts * self._time_base * self.sample_rate))

    def _fill(self, frames: int) -> None:
        """Decode until `frames` samples are pending (or the stream ends; frames < 0: all)."""
        while not self._eof and (frames < 0 or self._pending_len < frames):
            frame = next(self._frames_iter, None)
            if frame is None:
                self._eof = True
                break
            if frame.sample_rate != self.sample_rate or frame.layout.nb_channels != self.channels:
                raise AudioError(
                    f"the sample rate or channel count changes inside the stream "
                    f"({self.sample_rate} Hz x {self.channels} -> {frame.sample_rate} Hz x "
                    f"{frame.layout.nb_channels}): {self.name}"
                )
            if self._first_pts is None:
                self._first_pts = self._pts_samples(frame)
            block = _to_float(frame, self.channels)
            if block.shape[0]:
                self._pending.append(block)
                self._pending_len += block.shape[0]

    def _take(self, frames: int) -> np.ndarray:
        self._fill(frames)
        if not self._pending:
            return np.zeros((0, self.channels), np.float32)
        data = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending)
        count = data.shape[0] if frames < 0 else min(frames, data.shape[0])
        rest = data[count:]
        self._pending = [rest] if rest.shape[0] else []
        self._pending_len = rest.shape[0]
        self.position += count
        return data[:count]

    def read(self, frames: int) -> np.ndarray:
        try:
            return np.ascontiguousarray(self._take(frames))
        except AudioError:
            raise
        except Exception as err:  # noqa: BLE001 - PyAV on damaged streams: a failure of this file
            raise AudioError(f"decoding failed ({type(err).__name__}: {err}): {self.name}") from err

    def _skip_to(self, frame: int) -> None:
        while self.position < frame:
            if not self._take(min(frame - self.position, 1 << 16)).shape[0]:
                return

    def seek(self, frame: int) -> None:
        try:
            self._seek(frame)
        except AudioError:
            raise
        except Exception as err:  # noqa: BLE001 - as in read
            raise AudioError(f"seeking failed ({type(err).__name__}: {err}): {self.name}") from err

    def _seek(self, frame: int) -> None:
        frame = max(0, frame)
        preroll = int(_PREROLL_SECONDS * self.sample_rate)
        if frame >= self.position and frame - self.position <= 4 * preroll:
            return self._skip_to(frame)  # close ahead: decoding there is cheapest
        seekable = self._origin is not None and frame > preroll and (
            self._sample_accurate or (self._coarse and frame > _COARSE_SEEK_AFTER * self.sample_rate)
        )
        if seekable and self._seek_timestamp(frame, preroll):
            return None
        self._open()  # from the start: always exact
        return self._skip_to(frame)

    def _seek_timestamp(self, frame: int, preroll: int) -> bool:
        """Seek before `frame - preroll` and decode up to `frame`; False if the container put
        us past it (or gave no timestamp), so the caller decodes from the start instead."""
        av = self._av
        target = (frame - preroll + self._origin) / self.sample_rate / self._time_base
        try:
            self._container.seek(int(target), stream=self._stream, backward=True)
        except av.FFmpegError:
            return False
        self._frames_iter = self._decode()
        self._pending, self._pending_len, self._eof = [], 0, False
        while True:
            frame_obj = next(self._frames_iter, None)
            if frame_obj is None:  # past the end
                self._eof, self.position = True, frame
                return True
            start = self._pts_samples(frame_obj)
            if start is None or start - self._origin > frame - preroll // 2:
                return False
            block = _to_float(frame_obj, self.channels)
            if block.shape[0]:
                break
        self._pending, self._pending_len = [block], block.shape[0]
        self.position = start - self._origin
        self._skip_to(frame)
        return True

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        if self._file is not None:
            self._file.close()


def _av_reason(err: Exception) -> str:
    return (getattr(err, "strerror", None) or str(err)).rstrip(".")


def open_decoder(source: Source) -> Decoder:
    """libsndfile if it recognises the bytes, else FFmpeg; AudioError says why neither can."""
    if isinstance(source, (EncodedAudio, FileRange)):
        name = source.name
        stream: IO[bytes] = _open_stream(source)
        target: Any = stream
    else:
        path = Path(source)
        _check_path(path)
        name, stream, target = str(source), None, str(path)
    try:
        handle = sf.SoundFile(target)
    except PermissionError as err:
        _close(stream)
        raise AudioError(f"permission denied: {name}") from err
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        sndfile_reason = _sf_reason(err)
    else:
        try:
            return SndfileDecoder(handle, name, stream)
        except BaseException:
            handle.close()
            _close(stream)
            raise
    try:
        return PyAVDecoder(target, name, stream)
    except _Unreadable as err:
        _close(stream)
        raise AudioError(
            f"not a readable audio file (libsndfile: {sndfile_reason}; FFmpeg: {err.reason}): {name}"
        ) from err
    except AudioError:
        _close(stream)
        raise
    except Exception as err:  # PyAV on damaged containers: a failure of this file, never a crash
        _close(stream)
        raise AudioError(f"not a readable audio file (FFmpeg: {type(err).__name__}: {err}): {name}") from err
    except BaseException:
        _close(stream)
        raise


def _close(stream: IO[bytes] | None) -> None:
    if stream is not None:
        stream.close()
