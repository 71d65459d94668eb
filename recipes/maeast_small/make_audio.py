"""Generate the synthetic half of maeast-small's pretraining audio, reproducibly from a seed.

Four kinds of clip, 3-8 s each, 16 kHz mono FLAC:
  speech/     espeak-ng sentences: 30 voices x 10 variants, rates 90-320 wpm, pitch 0-99,
              English text, pseudo-words and digit strings; background noise and room reverb
  real/       the real Arabic keyword clips (--real) strung into phrases with gaps and noise
  sounds/     1-3 layered events on a noise bed: note sequences and chords with harmonics,
              steady/vibrato/AM/FM tones, chirps, coloured noise (white to violet, band-passed),
              impulses and click trains, drum-like hits
  mixtures/   speech (generated or real) over sounds at -5..20 dB SNR

Clip i depends only on (seed, i): the output is the same for any number of workers.

    python recipes/maeast_small/make_audio.py OUT_DIR --hours 3 --seed 0 \\
        --real ../shared/data/arabic-speech-commands-train/audio
"""

from __future__ import annotations

import argparse
import json
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf

from maeast_embed.audio import find_audio, load_audio
from maeast_embed.errors import MAEASTError
from probes.synthetic import espeak_ng

SR = 16000
KINDS = ("speech", "real", "sounds", "mixtures")
KIND_SHARES = (0.35, 0.15, 0.30, 0.20)
LANGUAGES = (
    "en", "en-us", "en-gb-scotland", "de", "fr", "es", "it", "pt", "nl", "sv", "da", "nb", "pl",
    "cs", "ru", "uk", "el", "tr", "fi", "hu", "ro", "hi", "bn", "ar", "fa", "sw", "id", "vi",
    "cmn", "ja",
)
VARIANTS = ("", "+m1", "+m2", "+m3", "+m4", "+f1", "+f2", "+f3", "+f4", "+croak")
WORDS = (
    "the a one two three four five six seven eight nine ten zero yes no up down left right on off "
    "stop go house tree bird cat dog water river mountain city light dark morning evening music "
    "sound voice window door table paper letter number market station train road bridge garden "
    "flower summer winter rain snow wind fire stone gold silver green blue red yellow happy quiet "
    "quickly slowly tomorrow yesterday always never because although between under over through "
    "remember believe understand consider suggest imagine develop measure listen whisper laugh "
    "shout sing dance carry open close begin finish follow return machine engine signal pattern "
    "question answer problem reason history science language family friend teacher doctor child "
    "people country village ocean island forest desert valley kitchen pocket basket blanket"
).split()
SYLLABLE_ONSETS = ("", "b", "d", "g", "k", "t", "p", "m", "n", "s", "sh", "l", "r", "v", "z", "ch", "tr")
SYLLABLE_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou", "ee", "oo")


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2)) + 1e-12)


def _fit(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Crop (random start) or zero-pad (random offset) to exactly n samples."""
    if x.size >= n:
        start = int(rng.integers(0, x.size - n + 1))
        return x[start : start + n]
    out = np.zeros(n, dtype=np.float64)
    start = int(rng.integers(0, n - x.size + 1))
    out[start : start + x.size] = x
    return out


def coloured_noise(n: int, rng: np.random.Generator, exponent: float | None = None) -> np.ndarray:
    """Noise with power spectrum ~ 1/f^exponent (0 white, 1 pink, 2 brown, -1 blue, -2 violet)."""
    if exponent is None:
        exponent = float(rng.choice([-2.0, -1.0, 0.0, 1.0, 2.0]) + rng.uniform(-0.3, 0.3))
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / SR)
    freqs[0] = freqs[1]
    spectrum *= freqs ** (-exponent / 2)
    if rng.random() < 0.4:  # band-pass
        low = rng.uniform(50, 3000)
        spectrum *= (freqs > low) & (freqs < low * rng.uniform(1.5, 8))
    x = np.fft.irfft(spectrum, n)
    return x / _rms(x)


def envelope(n: int, rng: np.random.Generator) -> np.ndarray:
    """Attack-decay-sustain-release envelope with random times."""
    attack = max(1, int(n * rng.uniform(0.005, 0.2)))
    release = max(1, int(n * rng.uniform(0.05, 0.5)))
    sustain = rng.uniform(0.3, 1.0)
    env = np.full(n, sustain)
    env[:attack] = np.linspace(0, 1, attack)
    env[attack : attack + release // 2] = np.linspace(1, sustain, len(env[attack : attack + release // 2]))
    env[-release:] *= np.linspace(1, 0, release)
    return env


def harmonic_tone(n: int, f0: float, rng: np.random.Generator, vibrato: bool = False) -> np.ndarray:
    t = np.arange(n) / SR
    phase = 2 * np.pi * f0 * t
    if vibrato:
        depth, rate = rng.uniform(0.002, 0.02), rng.uniform(3, 8)
        phase = 2 * np.pi * f0 * np.cumsum(1 + depth * np.sin(2 * np.pi * rate * t)) / SR
    decay = rng.uniform(0.3, 0.9)
    x = np.zeros(n)
    for k in range(1, int(rng.integers(1, 9)) + 1):
        if f0 * k < SR / 2 - 200:
            x += decay ** (k - 1) * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    return x


def note_sequence(n: int, rng: np.random.Generator) -> np.ndarray:
    """A melody (or chord progression) on a random scale with per-note envelopes."""
    root = rng.uniform(80, 600)
    scales = ([0, 2, 4, 5, 7, 9, 11], [0, 2, 3, 5, 7, 8, 10], [0, 2, 4, 7, 9])
    scale = np.array(scales[int(rng.integers(0, len(scales)))])
    x, pos = np.zeros(n), 0
    chords = rng.random() < 0.3
    while pos < n:
        length = int(SR * rng.uniform(0.08, 0.7))
        length = min(length, n - pos)
        degrees = rng.integers(0, 2 * len(scale), size=3 if chords else 1)
        note = np.zeros(length)
        for d in degrees:
            semis = scale[d % len(scale)] + 12 * (d // len(scale))
            note += harmonic_tone(length, root * 2 ** (semis / 12), rng)
        x[pos : pos + length] = note * envelope(length, rng)
        pos += length + int(SR * rng.uniform(0, 0.15))
    return x


def chirp(n: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / SR
    f0, f1 = np.exp(rng.uniform(np.log(60), np.log(7000), size=2))
    if rng.random() < 0.5:  # exponential sweep
        k = np.log(f1 / f0) / max(t[-1], 1e-3)
        phase = 2 * np.pi * f0 * (np.exp(k * t) - 1) / (k if abs(k) > 1e-9 else 1)
    else:
        phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * max(t[-1], 1e-3)))
    return np.sin(phase)


def modulated_tone(n: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / SR
    carrier = rng.uniform(100, 5000)
    if rng.random() < 0.5:  # AM
        depth, rate = rng.uniform(0.3, 1), rng.uniform(2, 40)
        return np.sin(2 * np.pi * carrier * t) * (1 + depth * np.sin(2 * np.pi * rate * t))
    index, rate = rng.uniform(0.5, 8), rng.uniform(1, 200)  # FM
    return np.sin(2 * np.pi * carrier * t + index * np.sin(2 * np.pi * rate * t))


def impulses(n: int, rng: np.random.Generator) -> np.ndarray:
    """Click trains (regular or jittered) or a few knocks, each through a random resonance."""
    x = np.zeros(n)
    if rng.random() < 0.5:
        period = int(SR / rng.uniform(2, 60))
        times = np.arange(int(rng.integers(0, period)), n, period)
        times = np.clip(times + rng.integers(-period // 8, period // 8 + 1, size=times.size), 0, n - 1)
    else:
        times = rng.integers(0, n, size=int(rng.integers(1, 12)))
    x[times] = rng.uniform(0.3, 1.0, size=times.size)
    length = int(SR * rng.uniform(0.002, 0.1))
    tt = np.arange(length) / SR
    ir = np.exp(-tt / rng.uniform(0.001, 0.03)) * np.sin(2 * np.pi * rng.uniform(100, 6000) * tt + 0.5)
    return np.convolve(x, ir)[:n]


def drum_hits(n: int, rng: np.random.Generator) -> np.ndarray:
    """Kick-, snare- and hat-like hits on a beat grid."""
    x = np.zeros(n)
    beat = int(SR * 60 / rng.uniform(70, 180) / 2)
    for start in range(0, n, beat):
        if rng.random() < 0.3:
            continue
        kind = rng.integers(0, 3)
        length = min(int(SR * rng.uniform(0.05, 0.4)), n - start)
        tt = np.arange(length) / SR
        if kind == 0:  # kick: falling sine
            f_end, f_drop = rng.uniform(40, 90), rng.uniform(50, 200)
            hit = np.sin(2 * np.pi * (f_end * tt + f_drop * (1 - np.exp(-tt * 30)) / 30))
        else:  # snare / hat: noise, high-passed for hats
            hit = rng.standard_normal(length)
            if kind == 2:
                hit = np.diff(hit, prepend=0.0)
        x[start : start + length] += hit * np.exp(-tt / rng.uniform(0.02, 0.15))
    return x


SOUND_MAKERS = (note_sequence, chirp, modulated_tone, impulses, drum_hits, coloured_noise, harmonic_tone)


def sound_event(n: int, rng: np.random.Generator) -> np.ndarray:
    maker = SOUND_MAKERS[int(rng.integers(0, len(SOUND_MAKERS)))]
    if maker is harmonic_tone:
        x = harmonic_tone(n, rng.uniform(60, 2000), rng, vibrato=bool(rng.random() < 0.5))
    else:
        x = maker(n, rng)
    length = int(n * rng.uniform(0.2, 1.0))  # events need not fill the clip
    x = _fit(x[:length] * envelope(length, rng), n, rng)
    return x / _rms(x)


def sounds(n: int, rng: np.random.Generator) -> np.ndarray:
    x = sum(sound_event(n, rng) * 10 ** (rng.uniform(-12, 0) / 20) for _ in range(int(rng.integers(1, 4))))
    return x + coloured_noise(n, rng) * 10 ** (rng.uniform(-40, -10) / 20)


def sentence(rng: np.random.Generator) -> str:
    words = []
    for _ in range(int(rng.integers(8, 30))):
        r = rng.random()
        if r < 0.65:
            words.append(str(rng.choice(WORDS)))
        elif r < 0.9:
            syllables = int(rng.integers(1, 4))
            words.append("".join(str(rng.choice(SYLLABLE_ONSETS)) + str(rng.choice(SYLLABLE_VOWELS))
                                 for _ in range(syllables)))
        else:
            words.append(" ".join(str(d) for d in rng.integers(0, 10, size=int(rng.integers(1, 5)))))
        if rng.random() < 0.1:
            words[-1] += str(rng.choice([",", ".", "?", "!"]))
    return " ".join(words)


def espeak(rng: np.random.Generator, n: int) -> np.ndarray:
    voice = str(rng.choice(LANGUAGES)) + str(rng.choice(VARIANTS))
    args = ["-v", voice, "-s", str(int(rng.integers(90, 320))), "-p", str(int(rng.integers(0, 100))),
            "-g", str(int(rng.integers(0, 12)))]
    try:
        wave = espeak_ng(sentence(rng), args)
    except MAEASTError:  # a voice this espeak-ng build lacks
        wave = espeak_ng(sentence(rng), ["-v", "en"])
    return _fit(wave.astype(np.float64), n, rng)


def real_phrase(rng: np.random.Generator, n: int, real: list[Path]) -> np.ndarray:
    parts, total = [], 0
    while total < n:
        clip = load_audio(real[int(rng.integers(0, len(real)))]).numpy().astype(np.float64)
        clip *= 10 ** (rng.uniform(-6, 6) / 20)
        gap = np.zeros(int(SR * rng.uniform(0.0, 0.4)))
        parts += [clip, gap]
        total += clip.size + gap.size
    return _fit(np.concatenate(parts), n, rng)


def reverb(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Convolve with an exponentially decaying noise tail (RT60 0.1-1.2 s), mixed wet/dry."""
    rt60 = rng.uniform(0.1, 1.2)
    tt = np.arange(int(SR * rt60)) / SR
    ir = rng.standard_normal(tt.size) * np.exp(-6.9 * tt / rt60)
    ir[0] = 1.0
    n = x.size + ir.size - 1
    size = 1 << (n - 1).bit_length()
    wet = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(ir, size), size)[: x.size]
    mix = rng.uniform(0.2, 0.8)
    return (1 - mix) * x / _rms(x) + mix * wet / _rms(wet)


def with_background(x: np.ndarray, rng: np.random.Generator, snr_db: tuple[float, float]) -> np.ndarray:
    return x / _rms(x) + coloured_noise(x.size, rng) * 10 ** (-rng.uniform(*snr_db) / 20)


def make_clip(kind: str, rng: np.random.Generator, real: list[Path]) -> np.ndarray:
    n = int(SR * rng.uniform(3.0, 8.0))
    if kind == "speech":
        x = espeak(rng, n)
        if rng.random() < 0.3:
            x = reverb(x, rng)
        if rng.random() < 0.6:
            x = with_background(x, rng, (5, 40))
    elif kind == "real":
        x = with_background(real_phrase(rng, n, real), rng, (10, 50))
    elif kind == "sounds":
        x = sounds(n, rng)
        if rng.random() < 0.3:
            x = reverb(x, rng)
    else:
        voice = espeak(rng, n) if rng.random() < 0.6 or not real else real_phrase(rng, n, real)
        background = sounds(n, rng)
        x = voice / _rms(voice) + background / _rms(background) * 10 ** (-rng.uniform(-5, 20) / 20)
    x = x / _rms(x) * 10 ** (rng.uniform(-38, -15) / 20)  # level between -38 and -15 dBFS RMS
    return np.clip(x, -1, 1).astype(np.float32)


def clip_kind(seed: int, index: int) -> str:
    return str(np.random.default_rng([seed, index, 0]).choice(KINDS, p=KIND_SHARES))


def write_clip(job: tuple[int, int, str, list[Path]]) -> tuple[str, float]:
    seed, index, out_dir, real = job
    kind = clip_kind(seed, index)
    if kind == "real" and not real:
        kind = "speech"
    rng = np.random.default_rng([seed, index, 1])
    path = Path(out_dir) / kind / f"{index:06d}.flac"
    if not path.is_file():
        wave = make_clip(kind, rng, real)
        tmp = path.with_suffix(".tmp.flac")
        sf.write(tmp, wave, SR, subtype="PCM_16")
        tmp.replace(path)
    return kind, sf.info(path).duration


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--hours", type=float, default=3.0, help="approximate total duration to generate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--real", type=Path, help="folder of real speech clips (real/ and mixtures/)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if shutil.which("espeak-ng") is None:
        parser.error("espeak-ng is required (apt-get install espeak-ng)")
    real = find_audio(args.real) if args.real else []
    for kind in KINDS:
        (args.out_dir / kind).mkdir(parents=True, exist_ok=True)
    count = int(np.ceil(args.hours * 3600 / 5.5))  # clips average 5.5 s
    jobs = [(args.seed, i, str(args.out_dir), real) for i in range(count)]
    totals = dict.fromkeys(KINDS, 0.0)
    with ProcessPoolExecutor(args.workers) as pool:
        for kind, seconds in pool.map(write_clip, jobs, chunksize=8):
            totals[kind] += seconds
    summary = {
        "seed": args.seed, "clips": count, "hours": {k: round(v / 3600, 3) for k, v in totals.items()},
        "total_hours": round(sum(totals.values()) / 3600, 3), "real_source": str(args.real),
    }
    (args.out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
