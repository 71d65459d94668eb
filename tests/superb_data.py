"""Tiny generated SUPERB datasets in the layouts s3prl 0.4.18's recipes read (REFERENCE.md s. 8).

Speech is synthesised with espeak-ng (different voices, speeds and pitches per speaker);
noise clips stand in for background noise. Used by the end-to-end upstream tests.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

KS_COMMANDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
KS_UNKNOWN = ["bed", "cat", "tree"]
VOICES = ["en+m1", "en+f2", "en+m3", "en+f4", "en+m5", "en+f1", "en+m7", "en+f3"]
ESPEAK_RATE = 22050


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


def speak(text: str, speaker: int, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """espeak-ng speech for one speaker (voice/speed/pitch vary with it), float32 at `sr`."""
    voice = VOICES[speaker % len(VOICES)]
    speed, pitch = 130 + 13 * (speaker % 5), 30 + 9 * (speaker % 6)
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text],
        check=True, capture_output=True,
    ).stdout
    data, rate = sf.read(io.BytesIO(wav), dtype="float32")
    rng = np.random.default_rng(seed)
    data = data + 0.003 * rng.standard_normal(data.size).astype(np.float32)
    if rate != sr:
        import torchaudio.functional as AF  # here only: s3prl's tests (the only users) bring torchaudio

        data = AF.resample(torch.from_numpy(data), rate, sr).numpy()
    return data.astype(np.float32)


def _fit(data: np.ndarray, samples: int) -> np.ndarray:
    """Crop or zero-pad (centred) to exactly `samples`."""
    if data.size >= samples:
        start = (data.size - samples) // 2
        return data[start : start + samples]
    out = np.zeros(samples, dtype=np.float32)
    start = (samples - data.size) // 2
    out[start : start + data.size] = data
    return out


def _write(path: Path, data: np.ndarray, sr: int = 16000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, sr, subtype="PCM_16")


def _ks_split(speaker_id: str) -> str:
    """The split s3prl's speech_commands recipe derives from the speaker hash."""
    percent = (int(hashlib.sha1(speaker_id.encode()).hexdigest(), 16) % 2**27) * (100.0 / (2**27 - 1))
    return "dev" if percent < 10 else "discarded" if percent < 20 else "train"


def _ks_speakers(train: int, dev: int) -> dict[str, list[str]]:
    chosen: dict[str, list[str]] = {"train": [], "dev": []}
    for n in range(10000):
        speaker = f"{n:08x}"
        split = _ks_split(speaker)
        if split in chosen and len(chosen[split]) < (train if split == "train" else dev):
            chosen[split].append(speaker)
        if len(chosen["train"]) == train and len(chosen["dev"]) == dev:
            return chosen
    raise RuntimeError("not enough speaker ids")


def make_speech_commands(root: Path, train_speakers: int = 4, dev_speakers: int = 1, test_per_class: int = 2):
    """Speech Commands v0.01 layout: returns (train_root, test_root).

    train_root/<word>/<speaker>_nohash_<n>.wav (1 s, 16 kHz) with speakers whose hash puts
    them in s3prl's train or dev split, plus train_root/_background_noise_/*.wav (3 s);
    test_root/<yes|no|...|_unknown_|_silence_>/*.wav.
    """
    train_root, test_root = root / "speech_commands_v0.01", root / "speech_commands_test_set_v0.01"
    speakers = _ks_speakers(train_speakers, dev_speakers)
    all_speakers = speakers["train"] + speakers["dev"]
    for s, speaker in enumerate(all_speakers):
        for w, word in enumerate(KS_COMMANDS + KS_UNKNOWN):
            wave = _fit(speak(word, s, seed=100 * s + w), 16000)
            _write(train_root / word / f"{speaker}_nohash_0.wav", wave)
    rng = np.random.default_rng(0)
    for colour in ("white", "pink"):
        noise = rng.standard_normal(48000).astype(np.float32)
        if colour == "pink":
            noise = np.cumsum(noise) * 0.02
            noise -= noise.mean()
        noise = 0.1 * noise / (np.abs(noise).max() + 1e-6)
        _write(train_root / "_background_noise_" / f"{colour}_noise.wav", noise)
    for k in range(test_per_class):
        speaker = len(all_speakers) + k
        for w, word in enumerate(KS_COMMANDS):
            _write(test_root / word / f"test{k}_nohash_0.wav", _fit(speak(word, speaker, seed=7 + w), 16000))
        _write(test_root / "_unknown_" / f"test{k}_nohash_0.wav", _fit(speak("house", speaker), 16000))
        silence = 0.01 * rng.standard_normal(16000).astype(np.float32)
        _write(test_root / "_silence_" / f"test{k}_nohash_0.wav", silence)
    return train_root, test_root


def make_voxceleb1(root: Path, speakers: int = 3, utterances: int = 4):
    """VoxCeleb1 identification layout: returns (file_path, iden_split.txt).

    file_path/{dev,test}/wav/id1000N/<video>/0000K.wav (16 kHz) and the split file with lines
    `<1 train|2 dev|3 test> id1000N/<video>/0000K.wav`.
    """
    file_path, lines = root / "VoxCeleb1", []
    sentences = ["the quick brown fox", "jumps over the lazy dog", "speech is sound", "hello there world",
                 "one two three four", "green apples fall"]
    for s in range(speakers):
        for u in range(utterances):
            rel = f"id{10001 + s}/video{u % 2}/{u + 1:05d}.wav"
            split = 1 if u < utterances - 2 else 2 if u == utterances - 2 else 3
            part = "test" if split == 3 else "dev"
            speech = speak(sentences[(s + u) % len(sentences)], s, seed=s * 10 + u)
            _write(file_path / part / "wav" / rel, speech)
            lines.append(f"{split} {rel}\n")
    split_file = root / "iden_split.txt"
    split_file.write_text("".join(lines))
    return file_path, split_file


def make_iemocap(root: Path, per_class: int = 4, sr: int = ESPEAK_RATE):
    """IEMOCAP layout for s3prl's emotion recipe: returns (root, meta_data dir).

    Clips are written at `sr` (22.05 kHz by default: the recipe resamples to 16 kHz itself);
    meta_data/Session1/{train,test}_meta_data.json list `{"path", "label", "speaker"}`.
    """
    data_root, meta = root / "IEMOCAP_full_release", root / "meta_data"
    labels = {"neu": 0, "hap": 1, "ang": 2, "sad": 3}
    words = {"neu": "the table is brown", "hap": "what a lovely day", "ang": "stop that right now",
             "sad": "i miss you so much"}
    splits: dict[str, list[dict]] = {"train": [], "test": []}
    for label, text in words.items():
        for k in range(per_class + 2):
            split = "train" if k < per_class else "test"
            rel = f"Session{1 if split == 'test' else 2}/sentences/wav/Ses_{label}/Ses_{label}_{k:03d}.wav"
            _write(data_root / rel, speak(text, k, sr=sr, seed=k), sr)
            splits[split].append({"path": rel, "label": label, "speaker": f"Ses0{k % 2}"})
    for split, items in splits.items():
        path = meta / "Session1" / f"{split}_meta_data.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"labels": labels, "meta_data": items}))
    return data_root, meta
