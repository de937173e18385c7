"""The prompt catalogue against the dialog, and real renders with espeak-ng and sox.

The render tests need the ``espeak-ng`` and ``sox`` programs
(``apt-get install -y espeak-ng sox``).  They are never skipped: without
the programs they fail and say what to install.
"""

import shutil
import wave
from pathlib import Path

import pytest

from ivr.agi_channel import amount_parts
from ivr.dialog import PROMPTS
from ivr.fields import ACCOUNT_DIGITS, PIN_DIGITS
from voice_prompts import build, check
from voice_prompts.catalogue import CATALOGUE, LANGS, NUMBER_SOUNDS, text


@pytest.fixture
def tools() -> None:
    missing = build.missing_tools()
    if missing:
        pytest.fail(
            f"these tests render real prompts and need {' and '.join(missing)}: {build.INSTALL_HINT}", pytrace=False
        )


def wav_shape(path: Path) -> tuple[int, int, int, float]:
    with wave.open(str(path), "rb") as w:
        return w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes() / w.getframerate()


# --- the catalogue ----------------------------------------------------------------------


def test_every_dialog_prompt_has_words_in_every_language() -> None:
    assert check.catalogue_problems() == []
    for prompt in PROMPTS:
        for lang in LANGS:
            assert text(prompt, lang).strip()


def test_the_catalogue_holds_no_prompt_the_dialog_cannot_play() -> None:
    assert set(CATALOGUE) == set(PROMPTS)


def test_mandarin_comes_first() -> None:
    assert LANGS[0] == "zh"
    assert all(list(texts) == ["zh", "en"] for texts in CATALOGUE.values())


def test_catalogue_problems_names_what_is_missing() -> None:
    problems = check.catalogue_problems(
        prompts={"welcome", "not-there"}, catalogue={"welcome": {"zh": "您好", "en": " "}}
    )
    assert problems == ["prompt 'not-there' is not in the catalogue", "prompt 'welcome' has no en text"]


def test_only_what_is_true_is_promised_about_the_card() -> None:
    not_used = {"zh": "没有被使用", "en": "not been used"}
    for lang, words in not_used.items():
        # said before any commit was sent: the card is unused
        assert words in CATALOGUE["service-unavailable"][lang]
        assert words in CATALOGUE["recharge-cancelled"][lang]
        # said when a commit got no answer: never "not used"
        assert words not in CATALOGUE["result-unknown"][lang]
    assert "confirm" in CATALOGUE["result-unknown"]["en"] and "确认" in CATALOGUE["result-unknown"]["zh"]


def _spoken(n: int, lang: str) -> str:
    """A number under 20 as the prompts write it: 十, 十八; ten, eighteen."""
    if lang == "zh" and 10 < n < 20:
        return NUMBER_SOUNDS["zh"]["digits/10"] + NUMBER_SOUNDS["zh"][f"digits/{n - 10}"]
    return NUMBER_SOUNDS[lang][f"digits/{n}"]


@pytest.mark.parametrize(("digits", "ask", "refuse"), [
    (ACCOUNT_DIGITS, "enter-account", "invalid-account"),
    (PIN_DIGITS, "enter-pin", "invalid-pin"),
])
def test_the_lengths_the_caller_hears_are_the_lengths_the_dialog_counts(digits: int, ask: str, refuse: str) -> None:
    assert f"{_spoken(digits, 'zh')}位" in text(ask, "zh")
    assert f"{_spoken(digits, 'zh')}位数字" in text(refuse, "zh")
    assert f"{_spoken(digits, 'en')}-digit" in text(ask, "en")
    assert f"{_spoken(digits, 'en')} digits" in text(refuse, "en")


def test_the_welcome_offers_english_on_key_2() -> None:
    assert "English, press 2" in CATALOGUE["welcome"]["zh"]


def test_the_welcome_offers_an_agent_on_key_0() -> None:
    assert "按0" in CATALOGUE["welcome"]["zh"] and "press 0" in CATALOGUE["welcome"]["en"]


def test_number_sounds_are_those_asterisk_say_c_plays() -> None:
    zh, en = NUMBER_SOUNDS["zh"], NUMBER_SOUNDS["en"]
    # ast_say_number_full_zh: digits/0-9, the tens, hundred, thousand, wan, yi
    assert {f"digits/{n}" for n in range(10)} <= set(zh)
    assert {f"digits/{n}" for n in range(10, 100, 10)} <= set(zh)
    assert {"digits/hundred", "digits/thousand", "digits/wan", "digits/yi"} <= set(zh)
    assert (zh["digits/10"], zh["digits/hundred"], zh["digits/thousand"], zh["digits/wan"], zh["digits/yi"]) == (
        "十", "百", "千", "万", "亿"
    )
    # ast_say_number_full_en: digits/0-19, the tens, hundred, thousand, million
    assert {f"digits/{n}" for n in range(20)} | {f"digits/{n}" for n in range(20, 100, 10)} <= set(en)
    assert {"digits/hundred", "digits/thousand", "digits/million"} <= set(en)


def test_amounts_are_said_with_units_in_the_catalogue() -> None:
    assert amount_parts(5000, "zh") == [("number", 50), ("play", "currency-yuan")]
    assert amount_parts(1234, "zh") == [
        ("number", 12), ("play", "currency-yuan"), ("number", 3), ("play", "currency-jiao"),
        ("number", 4), ("play", "currency-fen"),
    ]
    assert amount_parts(5, "zh") == [("number", 5), ("play", "currency-fen")]
    assert amount_parts(1234, "en") == [("number", 12), ("play", "currency-yuan"), ("number", 34), ("play", "currency-fen")]
    assert amount_parts(0, "en") == [("number", 0), ("play", "currency-yuan")]
    for lang in LANGS:
        for fen in (0, 5, 50, 1234, 10000):
            for kind, value in amount_parts(fen, lang):
                assert kind == "number" or value in PROMPTS
    with pytest.raises(ValueError):
        amount_parts(-1, "zh")


# --- building ---------------------------------------------------------------------------


def test_a_few_prompts_render_to_8khz_mono_16bit_wav(tools: None, tmp_path: Path) -> None:
    written = build.build(tmp_path, prompts=["welcome", "result-unknown", "currency-yuan"], numbers=False)
    assert len(written) == 6
    for lang in LANGS:
        for prompt in ("welcome", "result-unknown", "currency-yuan"):
            path = tmp_path / lang / f"{prompt}.wav"
            assert path in written
            rate, channels, width, seconds = wav_shape(path)
            assert (rate, channels, width) == (8000, 1, 2)
            assert seconds > 0.2
    # the welcome is a sentence, the unit a syllable
    assert wav_shape(tmp_path / "zh" / "welcome.wav")[3] > 2 * wav_shape(tmp_path / "zh" / "currency-yuan.wav")[3]


def test_number_sounds_render_where_asterisk_looks_for_them(tools: None, tmp_path: Path) -> None:
    written = build.build(tmp_path, langs=("zh",), prompts=[])
    assert len(written) == len(NUMBER_SOUNDS["zh"])
    for name in ("digits/0", "digits/10", "digits/90", "digits/hundred", "digits/wan", "digits/yi"):
        assert wav_shape(tmp_path / "zh" / f"{name}.wav")[:3] == (8000, 1, 2)
    assert not (tmp_path / "en").exists()


def test_a_full_build_passes_the_check(tools: None, tmp_path: Path) -> None:
    assert check.build_problems(tmp_path) == [f"{tmp_path} has no language directory (zh, en)"]
    assert build.main([str(tmp_path)]) == 0
    assert check.build_problems(tmp_path) == []
    assert check.main([str(tmp_path)]) == 0
    (tmp_path / "en" / "goodbye.wav").unlink()
    (tmp_path / "zh" / "digits" / "wan.wav").write_bytes(b"RIFF")
    problems = check.build_problems(tmp_path)
    assert len(problems) == 2
    assert any(p.endswith("en/goodbye.wav is missing") for p in problems)
    assert any("zh/digits/wan.wav is not a WAV file" in p for p in problems)
    assert check.main([str(tmp_path)]) == 1


def test_the_check_refuses_audio_asterisk_cannot_use(tools: None, tmp_path: Path) -> None:
    build.build(tmp_path, langs=("en",), prompts=["goodbye"], numbers=False)
    path = tmp_path / "en" / "goodbye.wav"
    with wave.open(str(path), "rb") as w:
        frames = w.readframes(w.getnframes())
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(22050)
        w.writeframes(frames)
    assert "Asterisk needs 8000 Hz mono 16-bit" in (check.wav_problem(path) or "")


def test_unknown_prompts_and_languages_are_refused(tools: None, tmp_path: Path) -> None:
    with pytest.raises(build.BuildError, match="not in the prompt catalogue: nope"):
        build.build(tmp_path, prompts=["nope"])
    with pytest.raises(build.BuildError, match="no voice for language 'fr'"):
        build.build(tmp_path, langs=("fr",))


def test_missing_tools_are_one_clear_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert build.main([str(tmp_path / "out")]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert "espeak-ng and sox" in err and "apt-get install -y espeak-ng sox" in err
    assert not (tmp_path / "out").exists()
