"""The phone edge's command line (``python -m testkit.topology phones``) without a phone edge to show: one line, exit 1.

The real start, status and stop run in ``tests/e2e/test_front_ends.py``, where the sandbox roots are free.
"""

from pathlib import Path

import pytest

from testkit import frontends, topology


@pytest.mark.parametrize("part,action", [("phones", "status"), ("phones", "stop"), ("all", "status"), ("all", "stop")])
def test_nothing_started_is_one_line(part: str, action: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert topology.main([part, action, "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ("run start first" in err or "start one with `all start`" in err)


def test_every_part_and_action_has_help_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["phones"], ["phones", "start"], ["all"], ["all", "start"], ["all", "status"]):
        with pytest.raises(SystemExit):
            topology.main([*args, "--help"])
        assert "Example: python -m testkit.topology" in capsys.readouterr().out


def test_the_second_root_is_beside_the_first() -> None:
    assert frontends.second_root(Path("/c/root-e2e")) == Path("/c/root-e2e-b")
