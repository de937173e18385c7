"""What a caller heard: the audio of a replayed call matched, frame by frame, against the hotline's rendered prompts.

``Sounds.load(prompts_dir)`` reads every prompt and number sound that
``voice_prompts.build`` renders (``<dir>/<lang>/<id>.wav``,
``<dir>/<lang>/digits/<n>.wav``); ``Listener`` takes one call's received
audio, a 20 ms RTP frame at a time, and reports each sound it recognises as
a ``Heard``: which sound, in which language, when it started and stopped,
how much of it was heard and how closely it matched.

Why frames and not a fingerprint: Asterisk plays a WAV file in frames of
160 samples from its first sample and sends each frame as one RTP packet,
so a prompt in the received stream starts on a packet boundary and each of
its frames is the file's frame after G.711 (a quantiser that keeps the
normalised correlation of a voiced frame above 0.99).  Matching frames by
normalised correlation is therefore exact enough to tell apart prompts that
begin with the same word ("Sorry, ...": both are followed until one stops
matching), cheap (one 160-sample dot product per live candidate per frame),
and needs no model.  A prompt interrupted by a key (barge-in) is heard as a
prefix of its file: ``Heard.coverage`` says how much.  A sound that starts
mid-frame (a recording edited by hand, a transcoding Asterisk) would not be
recognised; the hotline's prompts never do that.

Spoken numbers are heard as the ``digits/...`` sounds Asterisk's ``SAY
NUMBER`` / ``SAY DIGITS`` play; ``spoken_number`` reads a run of them back
as a value (Mandarin and English), so ``expect amount=5000`` is checked by
the number heard, not by a list of file names.
"""

# test-case-name: tests.testkit.test_hearing

from __future__ import annotations

import wave
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FRAME = 160  # samples in a 20 ms frame at 8 kHz: one RTP packet
RATE = 8000
VOICED_RMS = 200.0  # a frame quieter than this (of 32768) is silence
MATCH = 0.9  # normalised correlation above which a voiced frame is the reference's frame
START_MATCH = 0.95  # ... and for the first voiced frame of a sound, where a candidate starts
MAX_MISSES = 2  # frames in a row that may fail to match (a lost packet) before a candidate is dropped
DECISIVE_FRAMES = 8  # voiced frames matched before a sole candidate is announced (160 ms)


def _g711_tables() -> dict[int, np.ndarray]:
    codes = np.arange(256, dtype=np.int32)
    u = ~codes & 0xFF
    exp, mant = (u >> 4) & 7, u & 0x0F
    ulaw = (((mant << 3) + 0x84) << exp) - 0x84
    ulaw = np.where(u & 0x80, -ulaw, ulaw)
    a = codes ^ 0x55
    exp, mant = (a >> 4) & 7, a & 0x0F
    alaw = np.where(exp == 0, (mant << 4) + 8, ((mant << 4) + 0x108) << np.maximum(exp - 1, 0))
    alaw = np.where(a & 0x80, alaw, -alaw)
    return {0: ulaw.astype(np.float32), 8: alaw.astype(np.float32)}


G711 = _g711_tables()  # RTP payload type (0 PCMU, 8 PCMA) -> 256 linear samples


def decode(payload: bytes, payload_type: int) -> np.ndarray:
    """G.711 bytes (payload type 0 or 8) as float32 linear samples."""
    return G711[payload_type][np.frombuffer(payload, dtype=np.uint8)]


@dataclass(frozen=True)
class Sound:
    """One reference sound: its id (``enter-pin``, ``digits/5``), language, and samples in frames (float32, n x 160)."""

    id: str
    lang: str
    frames: np.ndarray
    voiced: np.ndarray  # bool per frame
    norms: np.ndarray  # per frame

    @property
    def key(self) -> int:
        """The index of the first voiced frame, whose samples are looked for to spot where this sound starts."""
        return int(np.argmax(self.voiced))

    @property
    def samples(self) -> np.ndarray:
        return self.frames.reshape(-1)

    @property
    def seconds(self) -> float:
        return len(self.frames) * FRAME / RATE


def _frames(samples: np.ndarray) -> np.ndarray:
    n = -(-len(samples) // FRAME)
    padded = np.zeros(n * FRAME, dtype=np.float32)
    padded[:len(samples)] = samples
    return padded.reshape(n, FRAME)


def read_wav(path: Path) -> np.ndarray:
    """An 8 kHz mono 16-bit WAV file's samples as float32; ``ValueError`` for any other shape."""
    with wave.open(str(path), "rb") as w:
        if w.getframerate() != RATE or w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise ValueError(f"{path}: not 8 kHz mono 16-bit")
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32)


def make_sound(sound_id: str, lang: str, samples: np.ndarray) -> Sound:
    frames = _frames(samples)
    norms = np.linalg.norm(frames, axis=1)
    return Sound(sound_id, lang, frames, norms / np.sqrt(FRAME) > VOICED_RMS, norms)


_FFT = 4 * FRAME  # room for two received frames correlated with a one-frame key at every lag


@dataclass
class Sounds:
    """Every reference sound, with the spectra of their first voiced frames for spotting where one starts."""

    sounds: list[Sound]
    keys: np.ndarray = field(init=False)  # n x (FFT/2+1): conjugate spectra of the key frames
    key_norms: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.sounds = [s for s in self.sounds if s.voiced.any()]
        keys = np.stack([s.frames[s.key] for s in self.sounds]) if self.sounds else np.zeros((0, FRAME))
        self.keys = np.conj(np.fft.rfft(keys, _FFT, axis=1))
        self.key_norms = np.linalg.norm(keys, axis=1).clip(1e-9)

    @classmethod
    def load(cls, prompts_dir: Path, langs: Iterable[str] | None = None) -> Sounds:
        """Every ``<lang>/**/*.wav`` under ``prompts_dir`` (as ``voice_prompts.build`` writes them)."""
        root = Path(prompts_dir)
        chosen = list(langs) if langs is not None else sorted(p.name for p in root.iterdir() if p.is_dir())
        sounds = []
        for lang in chosen:
            for path in sorted((root / lang).rglob("*.wav")):
                sound_id = path.relative_to(root / lang).with_suffix("").as_posix()
                sounds.append(make_sound(sound_id, lang, read_wav(path)))
        if not sounds:
            raise ValueError(f"no prompt sounds under {root}")
        return cls(sounds)

    def find(self, sound_id: str, lang: str) -> Sound:
        return next(s for s in self.sounds if s.id == sound_id and s.lang == lang)

    def spot(self, window: np.ndarray) -> list[tuple[int, int, float]]:
        """Where a key frame lies wholly within ``window`` (two frames): (sound index, lag in samples, correlation)."""
        spectrum = np.fft.rfft(window, _FFT)
        corr = np.fft.irfft(self.keys * spectrum, _FFT, axis=1)[:, :len(window) - FRAME + 1]
        energy = np.concatenate([[0.0], np.cumsum(window.astype(np.float64) ** 2)])
        local = np.sqrt(np.maximum(energy[FRAME:] - energy[:-FRAME], 0.0))  # each lag's window norm
        loud = local / np.sqrt(FRAME) > VOICED_RMS / 4  # a window of near silence matches nothing
        scores = np.where(loud[None, :], corr / (self.key_norms[:, None] * np.maximum(local, 1e-9)[None, :]), 0.0)
        best = np.argmax(scores, axis=1)
        top = scores[np.arange(len(best)), best]
        return [(int(i), int(best[i]), float(top[i])) for i in np.nonzero(top > START_MATCH)[0]]


@dataclass(frozen=True)
class Heard:
    """One sound recognised in a call: ``at``/``until`` are the times its first and last matched frames arrived."""

    id: str
    lang: str
    at: float
    until: float
    coverage: float  # the share of the sound's voiced frames that were heard (1.0: all of it)
    confidence: float  # mean normalised correlation over the voiced frames heard
    complete: bool  # heard to its end (not cut short by a key or a hang-up)
    rivals: tuple[str, ...] = ()  # other sounds that matched as much (a tie: the call cannot tell them apart)

    def describe(self) -> str:
        cut = "" if self.complete else f", cut at {self.coverage:.0%}"
        tie = f", indistinguishable from {', '.join(self.rivals)}" if self.rivals else ""
        return f"{self.id} ({self.lang}) at {self.at:.2f} s, match {self.confidence:.3f}{cut}{tie}"


@dataclass
class _Candidate:
    sound: Sound
    start: int  # global sample index of the sound's first sample
    first: int  # global frame index of the frame where its key was spotted
    voiced: int = 0  # voiced frames matched
    corr: float = 0.0  # their correlations, summed
    misses: int = 0  # in a row
    last: int = 0  # global frame index of the last matched frame
    announced: bool = False

    def segment(self, g: int) -> np.ndarray:
        """The sound's samples that fall in received frame ``g`` (zeros beyond its ends)."""
        samples = self.sound.samples
        lo = g * FRAME - self.start
        if lo >= 0 and lo + FRAME <= len(samples):
            return samples[lo:lo + FRAME]
        out = np.zeros(FRAME, dtype=np.float32)
        a, b = max(lo, 0), min(lo + FRAME, len(samples))
        if a < b:
            out[a - lo:b - lo] = samples[a:b]
        return out

    def over(self, g: int) -> bool:
        """Whether frame ``g`` holds the sound's last sample (it has been heard to its end)."""
        return (g + 1) * FRAME - self.start >= len(self.sound.samples) - FRAME // 2


class Listener:
    """Follows one call's audio frame by frame; ``heard`` grows as sounds are recognised (see the module docstring).

    A sound is spotted by its first voiced frame, at any lag within the last
    two received frames (Asterisk usually starts a file on a packet, but not
    after a file whose length is not whole packets), and then followed frame
    by frame at that lag.  Spotting is done only on voiced frames that no
    established candidate (``DECISIVE_FRAMES`` matched) explains, so a prompt
    costs one correlation per frame once recognised.

    ``on_sound(heard)`` is called as soon as a prompt is the only candidate
    left after ``DECISIVE_FRAMES`` voiced frames (or has been heard whole),
    which is how the audio-only replay learns, while the call goes on, that a
    prompt has begun.  ``heard`` is final only after ``finish()``.
    """

    def __init__(self, sounds: Sounds, on_sound=None) -> None:  # type: ignore[no-untyped-def]
        self.sounds = sounds
        self.on_sound = on_sound
        self.frame = 0  # frames received
        self.times: list[float] = []  # each frame's time
        self.previous = np.zeros(FRAME, dtype=np.float32)
        self.live: list[_Candidate] = []
        self.done: list[_Candidate] = []
        self.heard: list[Heard] = []

    def feed(self, samples: np.ndarray, at: float) -> None:
        """One received frame (160 samples; a short frame is padded) at ``at`` seconds."""
        if len(samples) != FRAME:
            samples = np.pad(samples[:FRAME], (0, max(0, FRAME - len(samples))))
        samples = samples.astype(np.float32, copy=False)
        g = self.frame
        self.frame += 1
        self.times.append(at)
        norm = float(np.linalg.norm(samples))
        rms = norm / np.sqrt(FRAME)
        explained = False
        still = []
        for c in self.live:
            ref = c.segment(g)
            ref_norm = float(np.linalg.norm(ref))
            ref_voiced = ref_norm / np.sqrt(FRAME) > VOICED_RMS
            corr = float(np.dot(samples, ref)) / (norm * ref_norm) if norm and ref_norm else 0.0
            # A voiced stretch of the sound must correlate; a quiet one is matched by quiet (the level may differ).
            ok = corr > MATCH if ref_voiced else (rms < 2 * VOICED_RMS or corr > MATCH)
            if ok:
                c.misses, c.last = 0, g
                explained = explained or (ref_voiced and c.voiced >= DECISIVE_FRAMES)
                if ref_voiced:
                    c.voiced += 1
                    c.corr += corr
            else:
                c.misses += 1
            if c.misses > MAX_MISSES or c.over(g):
                self.done.append(c)
            else:
                still.append(c)
        self.live = still
        if rms > VOICED_RMS / 4 and not explained and self.sounds.sounds:
            window = np.concatenate([self.previous, samples])
            for i, lag, score in self.sounds.spot(window):
                s = self.sounds.sounds[i]
                start = (g - 1) * FRAME + lag - s.key * FRAME
                if any(c.sound is s and abs(c.start - start) <= 2 for c in self.live + self.done):
                    continue
                c = _Candidate(s, start, g, voiced=1, corr=score, last=g)
                (self.done if c.over(g) else self.live).append(c)
        self.previous = samples
        self._announce()
        self._settle(final=False)

    def finish(self) -> list[Heard]:
        """End of the call: everything still followed is settled; the sounds heard, in order."""
        self.done.extend(self.live)
        self.live = []
        self._settle(final=True)
        return self.heard

    def _announce(self) -> None:
        if self.on_sound is None:
            return
        for c in self.live + self.done:
            if c.announced or c.sound.id.startswith("digits/"):
                continue
            rivals = [o for o in self.live if o is not c and abs(o.first - c.first) <= 3]
            whole = c.over(c.last) and c.misses == 0
            if (c.voiced >= DECISIVE_FRAMES and not rivals and c in self.live) or whole:
                c.announced = True
                self.on_sound(self._heard(c, ()))

    def _settle(self, final: bool) -> None:
        """Turn finished candidates into ``Heard`` sounds once no live candidate overlaps them.

        Two candidates overlap when they share more than a frame: a file whose
        length is not whole frames ends in the frame the next one starts in.
        """
        if not self.done:
            return
        first_live = min((c.first for c in self.live), default=None)
        ready = [c for c in self.done if final or first_live is None or c.last <= first_live]
        waiting = [c for c in self.done if c not in ready]
        while waiting:  # a finished candidate waits for any it overlaps that cannot be settled yet
            held = [c for c in ready if any(c.first < o.last and o.first < c.last for o in waiting)]
            if not held:
                break
            ready = [c for c in ready if c not in held]
            waiting += held
        if not ready:
            return
        self.done = [c for c in self.done if c not in ready]
        ready = [c for c in ready if c.voiced >= min(3, int(c.sound.voiced.sum()))]
        # The longest match wins, and of equal ones the sound heard to its end (三 is not the start of 三十);
        # whatever overlaps it was a shorter look-alike.
        ready.sort(key=lambda c: (-c.voiced, not c.over(c.last + MAX_MISSES), -c.corr))
        chosen: list[tuple[_Candidate, tuple[str, ...]]] = []
        for c in ready:
            if any(c.first < o.last and o.first < c.last for o, _ in chosen):
                continue
            whole = c.over(c.last + MAX_MISSES)
            ties = tuple(sorted({f"{o.sound.id} ({o.sound.lang})" for o in ready if o is not c and o.voiced == c.voiced
                                 and o.over(o.last + MAX_MISSES) == whole and abs(o.first - c.first) <= 3
                                 and o.sound.id != c.sound.id}))
            chosen.append((c, ties))
        self.heard.extend(self._heard(c, ties) for c, ties in chosen)
        self.heard.sort(key=lambda h: h.at)

    def _heard(self, c: _Candidate, rivals: tuple[str, ...]) -> Heard:
        total = int(c.sound.voiced.sum())
        complete = c.over(c.last + MAX_MISSES) and c.misses <= MAX_MISSES
        return Heard(c.sound.id, c.sound.lang, self.times[min(c.first, len(self.times) - 1)],
                     self.times[min(c.last, len(self.times) - 1)] + FRAME / RATE,
                     1.0 if complete else min(1.0, c.voiced / max(1, total)),
                     c.corr / max(1, c.voiced), complete, rivals)


def listen(sounds: Sounds, samples: np.ndarray, start: float = 0.0) -> list[Heard]:
    """Everything recognised in ``samples`` (a whole call's audio, frame-aligned), for tests and benchmarks."""
    listener = Listener(sounds)
    frames = _frames(samples)
    for i, frame in enumerate(frames):
        listener.feed(frame, start + i * FRAME / RATE)
    return listener.finish()


# --- numbers, read back from the sounds that say them ----------------------------------------------

UNITS = {"currency-yuan": 100, "currency-jiao": 10, "currency-fen": 1}
_MULTIPLIERS = {"digits/hundred": 100, "digits/thousand": 1000}


def spoken_number(ids: Sequence[str], lang: str = "zh") -> int | None:
    """The value that a run of ``digits/...`` sounds says (``SAY NUMBER`` in Mandarin or English); None if it says none.

    Mandarin: 五 千 = 5000, 二十 五 = 25, 一 百 零 五 = 105, 五 万 = 50000;
    English: five thousand, twenty five, one hundred five.
    """
    total, section, current, seen = 0, 0, 0, False
    for sid in ids:
        name = sid.removeprefix("digits/")
        if name.isdigit():
            current += int(name)
        elif sid == "digits/hundred" or (sid == "digits/thousand" and lang == "zh"):
            section += max(current, 1) * _MULTIPLIERS[sid]  # 百 and 千 take the digit before them
            current = 0
        elif sid == "digits/thousand":
            total += max(section + current, 1) * 1000  # "one hundred twenty thousand"
            section = current = 0
        elif sid == "digits/wan":
            total += (section + current) * 10_000
            section = current = 0
        elif sid == "digits/yi":
            total = (total + section + current) * 100_000_000
            section = current = 0
        elif sid == "digits/million":
            total += (section + current) * 1_000_000
            section = current = 0
        else:
            return None
        seen = True
    return total + section + current if seen else None


def spoken_amount(ids: Sequence[str], lang: str = "zh") -> int | None:
    """Fen said by number sounds each followed by a unit (``currency-yuan``/``-jiao``/``-fen``), or None."""
    fen, run = 0, []
    for sid in ids:
        if sid in UNITS:
            n = spoken_number(run, lang)
            if n is None:
                return None
            fen += n * UNITS[sid]
            run = []
        else:
            run.append(sid)
    return fen if not run and ids else None
