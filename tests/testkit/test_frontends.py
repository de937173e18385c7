"""``python -m testkit.frontends`` without a phone edge to show: one line and exit 1; the real start, status and stop
run in ``tests/e2e/test_front_ends.py``, where the sandbox roots are free."""

from pathlib import Path

import pytest

from testkit import frontends


@pytest.mark.parametrize("command", ["status", "stop"])
def test_nothing_started_is_one_line(command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert frontends.main(["--dir", str(tmp_path), command]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "run start first" in err


def test_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        frontends.main(["--help"])
    assert "Example: python -m testkit.frontends start" in capsys.readouterr().out


def test_the_second_root_is_beside_the_first() -> None:
    assert frontends.second_root(Path("/c/root-e2e")) == Path("/c/root-e2e-b")
