"""Render the prompt catalogue to the sound files Asterisk plays: espeak-ng speaks, sox makes telephone audio.

``build(out_dir)`` writes, for each language, ``out_dir/<lang>/<prompt id>.wav``
for every prompt of the catalogue and ``out_dir/<lang>/digits/<name>.wav``
for the number sounds Asterisk's ``SAY DIGITS`` / ``SAY NUMBER`` need.  The
layout is that of Asterisk's sounds directory, so ``out_dir`` can be used as
one (or copied into one).  Every file is 8 kHz, mono, 16-bit signed PCM in a
WAV container, which Asterisk's ``format_wav`` plays without transcoding
effort on a telephone channel.

Mandarin is spoken with espeak-ng's ``cmn`` voice (Latin letters in it come
out as English, which the bilingual welcome relies on), English with ``en``.
These are synthetic voices: good enough to run and test the hotline; a
deployment may replace the files with studio recordings under the same names.

Needs the ``espeak-ng`` and ``sox`` programs (``apt-get install -y espeak-ng sox``)::

    python -m voice_prompts.build OUT_DIR [--lang zh] [--lang en] [--jobs N]
"""

# test-case-name: tests.voice_prompts.test_catalogue

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from voice_prompts.catalogue import CATALOGUE, LANGS, NUMBER_SOUNDS

VOICES = {"zh": "cmn", "en": "en"}
TOOLS = ("espeak-ng", "sox")
SAMPLE_RATE = 8000
INSTALL_HINT = "apt-get install -y espeak-ng sox"
TOOL_TIMEOUT = 60  # seconds for one prompt; a prompt takes well under one


class BuildError(Exception):
    """The prompts could not be built; the message is one line."""


class ToolsMissing(BuildError):
    """espeak-ng or sox is not installed."""


def missing_tools() -> list[str]:
    """The programs of ``TOOLS`` that are not on ``PATH``."""
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def require_tools() -> None:
    """Raise ``ToolsMissing`` with the install command if espeak-ng or sox is missing."""
    missing = missing_tools()
    if missing:
        raise ToolsMissing(f"building voice prompts needs {' and '.join(missing)}, which is not installed: {INSTALL_HINT}")


def render(text: str, voice: str, out: Path) -> None:
    """Speak ``text`` with espeak-ng ``voice`` into ``out`` as 8 kHz mono 16-bit WAV.

    The file appears under its final name only when complete.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="prompt-") as tmp:
        raw = Path(tmp) / "espeak.wav"
        part = Path(tmp) / "8k.wav"
        _run(["espeak-ng", "-v", voice, "-w", str(raw), "--stdin"], text.encode("utf-8"), out)
        if not raw.is_file() or raw.stat().st_size <= 44:
            raise BuildError(f"espeak-ng produced no sound for {out}")
        _run(
            ["sox", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", "-e", "signed-integer",
             "-t", "wav", str(part), "norm", "-3"],
            None, out,
        )
        shutil.move(str(part), str(out))


def _run(cmd: list[str], stdin: bytes | None, out: Path) -> None:
    try:
        done = subprocess.run(cmd, input=stdin, capture_output=True, timeout=TOOL_TIMEOUT, check=False)
    except FileNotFoundError:
        raise ToolsMissing(f"{cmd[0]} is not installed: {INSTALL_HINT}") from None
    except subprocess.TimeoutExpired:
        raise BuildError(f"{cmd[0]} took more than {TOOL_TIMEOUT} s for {out}") from None
    if done.returncode != 0:
        err = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise BuildError(f"{cmd[0]} failed for {out}: {err[-1] if err else f'exit status {done.returncode}'}")


def sounds(lang: str, prompts: Iterable[str] | None = None, numbers: bool = True) -> dict[str, str]:
    """What to render for ``lang``: file name (without ``.wav``) → text."""
    if lang not in VOICES:
        raise BuildError(f"no voice for language {lang!r}; known: {', '.join(VOICES)}")
    ids = list(CATALOGUE) if prompts is None else list(prompts)
    unknown = [p for p in ids if p not in CATALOGUE]
    if unknown:
        raise BuildError(f"not in the prompt catalogue: {', '.join(unknown)}")
    wanted = {p: CATALOGUE[p][lang] for p in ids}
    if numbers:
        wanted.update(NUMBER_SOUNDS[lang])
    return wanted


def build(
    out_dir: str | os.PathLike[str],
    langs: Sequence[str] = LANGS,
    *,
    prompts: Iterable[str] | None = None,
    numbers: bool = True,
    jobs: int | None = None,
) -> list[Path]:
    """Render prompts (all, or ``prompts``) and, unless ``numbers`` is false, the number sounds.

    Returns the files written, sorted.  Raises ``ToolsMissing`` when
    espeak-ng or sox is not installed, ``BuildError`` for anything else.
    """
    require_tools()
    root = Path(out_dir)
    chosen = list(prompts) if prompts is not None else None
    work = [
        (text, VOICES[lang], root / lang / f"{name}.wav")
        for lang in langs
        for name, text in sounds(lang, chosen, numbers).items()
    ]
    workers = jobs or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # list() re-raises the first failure here.
        list(pool.map(lambda job: render(*job), work))
    return sorted(path for _, _, path in work)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m voice_prompts.build",
        description="Render the hotline's voice prompts and number sounds to 8 kHz WAV files for Asterisk.",
        epilog=f"Needs espeak-ng and sox ({INSTALL_HINT}).  Example: python -m voice_prompts.build build/sounds",
    )
    parser.add_argument("out_dir", help="directory to write <lang>/<prompt>.wav and <lang>/digits/*.wav into")
    parser.add_argument("--lang", action="append", choices=sorted(VOICES), help="language to build (repeatable; default: all)")
    parser.add_argument("--jobs", type=int, default=None, help="renders to run at once (default: CPUs, at most 8)")
    args = parser.parse_args(argv)
    langs = tuple(args.lang) if args.lang else LANGS
    try:
        written = build(args.out_dir, langs, jobs=args.jobs)
    except BuildError as e:
        print(f"voice_prompts.build: {e}", file=sys.stderr)
        return 1
    print(f"wrote {len(written)} sound files under {args.out_dir} ({', '.join(langs)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
