"""The check that every prompt the dialog can play exists: in the catalogue, and as a built file.

``catalogue_problems()`` compares ``ivr.dialog.PROMPTS`` with the catalogue
in every language; ``build_problems(dir)`` looks in a directory written by
``voice_prompts.build`` (or an Asterisk sounds directory) for each prompt
and number sound of every language built there, and checks each file is
8 kHz mono 16-bit WAV.  Each problem is one line; none means all is well::

    python -m voice_prompts.check [BUILD_DIR]
"""

# test-case-name: tests.voice_prompts.test_catalogue

import argparse
import sys
import wave
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from ivr.dialog import PROMPTS
from voice_prompts.catalogue import CATALOGUE, LANGS, NUMBER_SOUNDS

SAMPLE_RATE = 8000


def catalogue_problems(
    prompts: Iterable[str] = PROMPTS,
    catalogue: Mapping[str, Mapping[str, str]] = CATALOGUE,
    langs: Sequence[str] = LANGS,
) -> list[str]:
    """Prompts the dialog uses that have no text in some language."""
    problems = []
    for prompt in sorted(prompts):
        texts = catalogue.get(prompt)
        if texts is None:
            problems.append(f"prompt {prompt!r} is not in the catalogue")
            continue
        problems += [f"prompt {prompt!r} has no {lang} text" for lang in langs if not texts.get(lang, "").strip()]
    problems += [f"no number sounds for language {lang}" for lang in langs if not NUMBER_SOUNDS.get(lang)]
    return problems


def built_languages(build_dir: Path) -> list[str]:
    """The catalogue's languages that have a directory in ``build_dir``."""
    return [lang for lang in LANGS if (build_dir / lang).is_dir()]


def wav_problem(path: Path) -> str | None:
    """Why ``path`` is not a playable 8 kHz mono 16-bit WAV file, or ``None``."""
    if not path.is_file():
        return f"{path} is missing"
    try:
        with wave.open(str(path), "rb") as w:
            shape = (w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes())
    except (wave.Error, EOFError, OSError) as e:
        return f"{path} is not a WAV file ({e})"
    rate, channels, width, frames = shape
    if (rate, channels, width) != (SAMPLE_RATE, 1, 2):
        return f"{path} is {rate} Hz, {channels} channel(s), {8 * width}-bit; Asterisk needs 8000 Hz mono 16-bit"
    if frames == 0:
        return f"{path} holds no sound"
    return None


def build_problems(build_dir: str | Path, prompts: Iterable[str] = PROMPTS, langs: Sequence[str] | None = None) -> list[str]:
    """Prompt and number sound files missing or malformed in ``build_dir`` (every built language by default)."""
    root = Path(build_dir)
    if not root.is_dir():
        return [f"{root} is not a directory"]
    langs = list(langs) if langs is not None else built_languages(root)
    if not langs:
        return [f"{root} has no language directory ({', '.join(LANGS)})"]
    problems = []
    for lang in langs:
        names = sorted(prompts) + sorted(NUMBER_SOUNDS.get(lang, {}))
        problems += [p for p in (wav_problem(root / lang / f"{name}.wav") for name in names) if p]
    return problems


def check(build_dir: str | Path | None = None) -> list[str]:
    """The catalogue's problems, and the build directory's if one is given."""
    problems = catalogue_problems()
    if build_dir is not None:
        problems += build_problems(build_dir)
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m voice_prompts.check",
        description="Check that every prompt the dialog can play has words in every language and, "
        "given a build directory, a sound file in every language built there.",
    )
    parser.add_argument("build_dir", nargs="?", help="a directory written by python -m voice_prompts.build")
    args = parser.parse_args(argv)
    problems = check(args.build_dir)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s)", file=sys.stderr)
        return 1
    where = f" and in {args.build_dir}" if args.build_dir else ""
    print(f"ok: {len(PROMPTS)} prompts in the catalogue ({', '.join(LANGS)}){where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
