"""The database topology's command line over the session's running topology: status, help, a missing topology."""

import json
import subprocess
import sys

from testkit.pair import ROOT


def topology(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "testkit.topology", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def test_status_json_names_the_primary_and_its_synchronous_standby(db_topology):
    done = topology("db", "status", "--json", "--dir", str(db_topology.root))
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["healthy"] and status["url"] == db_topology.url()
    primary = status["primary"]
    answers = {n["name"]: n["answers"] for n in status["nodes"]}
    assert answers[primary] == "read-write"
    assert [a for name, a in answers.items() if name != primary] == ["read-only"]
    assert status["synchronous_standby_names"].startswith("ANY 1 (")


def test_status_in_words(db_topology):
    done = topology("db", "status", "--dir", str(db_topology.root))
    assert done.returncode == 0 and "healthy" in done.stdout and "NOT" not in done.stdout


def test_no_topology_is_one_line(tmp_path):
    done = topology("db", "status", "--dir", str(tmp_path / "none"))
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "no database topology in" in done.stderr


def test_help_has_an_example():
    for args in ([], ["db"], ["db", "start"], ["db", "status"], ["db", "stop"]):
        done = topology(*args, "--help")
        assert done.returncode == 0 and "Example: python -m testkit.topology" in done.stdout
