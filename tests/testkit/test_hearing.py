"""testkit.hearing: prompts recognised in G.711 audio built from the real rendered prompts (espeak-ng, sox), no Asterisk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from testkit.hearing import FRAME, G711, RATE, Sounds, decode, listen, read_wav, spoken_amount, spoken_number
from voice_prompts.build import build

PROMPTS = ["welcome", "enter-account", "enter-pin", "wrong-pin", "no-input", "invalid-choice", "confirm-account",
           "currency-yuan"]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prompts")
    build(out, prompts=PROMPTS)
    return out


@pytest.fixture(scope="module")
def sounds(rendered: Path) -> Sounds:
    return Sounds.load(rendered)


def ulaw(samples: np.ndarray) -> np.ndarray:
    """``samples`` through G.711 mu-law and back, as Asterisk's RTP carries them."""
    table = G711[0]
    order = np.argsort(table)
    idx = np.clip(np.searchsorted(table[order], samples), 1, 255)
    nearer = np.where(np.abs(table[order][idx - 1] - samples) < np.abs(table[order][idx] - samples), idx - 1, idx)
    return decode(order[nearer].astype(np.uint8).tobytes(), 0)


def wav(rendered: Path, lang: str, name: str, seconds: float | None = None) -> np.ndarray:
    samples = read_wav(rendered / lang / f"{name}.wav")
    if seconds is not None:
        samples = samples[:int(seconds * RATE) // FRAME * FRAME]
    return samples


def call(*parts: np.ndarray, gap: float = 0.2) -> np.ndarray:
    """Sounds one after another, each starting on a frame, ``gap`` seconds of silence between."""
    silence = np.zeros(int(gap * RATE) // FRAME * FRAME, dtype=np.float32)
    out = []
    for p in parts:
        out += [np.pad(p, (0, -len(p) % FRAME)), silence]
    return ulaw(np.concatenate(out))


def test_a_call_is_heard_prompt_by_prompt_with_cut_prompts_and_numbers(rendered: Path, sounds: Sounds) -> None:
    audio = call(wav(rendered, "zh", "welcome", 1.0), wav(rendered, "zh", "enter-account"),
                 wav(rendered, "zh", "digits/3"), wav(rendered, "zh", "digits/1"), wav(rendered, "zh", "confirm-account"))
    heard = listen(sounds, audio)
    assert [(h.id, h.lang) for h in heard] == [("welcome", "zh"), ("enter-account", "zh"), ("digits/3", "zh"),
                                               ("digits/1", "zh"), ("confirm-account", "zh")]
    assert not heard[0].complete and heard[0].coverage < 0.2
    assert all(h.complete and h.coverage == 1.0 for h in heard[1:])
    assert min(h.confidence for h in heard) > 0.99
    assert 1.2 <= heard[1].at < 1.4  # when its first voiced frame came (the file starts with a little silence)


def test_prompts_that_begin_alike_are_told_apart(rendered: Path, sounds: Sounds) -> None:
    # Four English prompts begin with "Sorry, ..."; each is followed until the others stop matching.
    names = ["wrong-pin", "no-input", "invalid-choice"]
    heard = listen(sounds, call(*(wav(rendered, "en", n) for n in names)))
    assert [h.id for h in heard] == names and all(h.lang == "en" and h.complete for h in heard)


def test_the_other_language_and_noise_are_not_taken_for_a_prompt(rendered: Path, sounds: Sounds) -> None:
    rng = np.random.default_rng(7)
    noise = rng.normal(0, 3000, RATE * 2).astype(np.float32)
    louder = wav(rendered, "zh", "enter-pin") * 0.5  # the same words at another level are still the same prompt
    heard = listen(sounds, call(noise, wav(rendered, "en", "enter-pin"), louder))
    assert [(h.id, h.lang) for h in heard] == [("enter-pin", "en"), ("enter-pin", "zh")]


def test_a_sound_that_starts_mid_frame_is_heard_at_its_lag(rendered: Path, sounds: Sounds) -> None:
    # Asterisk starts a file on a packet unless the file before it ended mid-packet: then it starts at a lag.
    for lag in (1, FRAME // 2, FRAME - 1):
        shifted = np.concatenate([wav(rendered, "zh", "digits/3")[:lag], wav(rendered, "zh", "enter-account")])
        heard = listen(sounds, call(shifted))
        assert [(h.id, h.complete) for h in heard][-1:] == [("enter-account", True)]


def test_a_sound_not_in_the_catalogue_is_not_heard_as_one(sounds: Sounds) -> None:
    rng = np.random.default_rng(3)
    tone = (8000 * np.sin(np.arange(RATE * 3) * 2 * np.pi * 440 / RATE)).astype(np.float32)
    assert listen(sounds, call(tone, rng.normal(0, 5000, RATE).astype(np.float32))) == []


def test_g711_tables_decode_silence_and_full_scale() -> None:
    assert decode(b"\xff\x7f", 0).tolist() == [0.0, 0.0]
    assert decode(b"\x80", 0)[0] == 32124.0 and decode(b"\x00", 0)[0] == -32124.0
    assert abs(decode(b"\xd5", 8)[0]) == 8.0


@pytest.mark.parametrize(("ids", "lang", "value"), [
    (["digits/5", "digits/thousand"], "zh", 5000),
    (["digits/20", "digits/5"], "zh", 25),
    (["digits/10", "digits/2"], "zh", 12),
    (["digits/1", "digits/hundred", "digits/0", "digits/5"], "zh", 105),
    (["digits/5", "digits/wan"], "zh", 50000),
    (["digits/10", "digits/2", "digits/wan", "digits/3", "digits/thousand"], "zh", 123000),
    (["digits/5", "digits/thousand"], "en", 5000),
    (["digits/1", "digits/hundred", "digits/20", "digits/thousand"], "en", 120000),
    (["digits/0"], "zh", 0),
    ([], "zh", None),
    (["welcome"], "zh", None),
])
def test_spoken_numbers(ids: list[str], lang: str, value: int | None) -> None:
    assert spoken_number(ids, lang) == value


def test_spoken_amounts() -> None:
    assert spoken_amount(["digits/5", "digits/thousand", "currency-yuan"], "zh") == 500000
    assert spoken_amount(["digits/10", "digits/2", "currency-yuan", "digits/3", "currency-jiao"], "zh") == 1230
    assert spoken_amount(["digits/12", "currency-yuan", "digits/30", "currency-fen"], "en") == 1230
    assert spoken_amount(["digits/5", "digits/thousand"], "zh") is None  # no unit: not an amount
