"""What the command line's tests share: running ``cli.py`` in-process, judging what it printed, and an installation.

Every command runs as an operator would type it: ``--db`` and ``--key-dir``
name the installation, ``-u`` the operator, and the password comes from
``CARDS_PASSWORD`` in the environment.  Each test gets a fresh installation
made through the CLI itself (``init``, ``operator request``, ``factory register``,
``hall add``) on SQLite and on PostgreSQL.

Exit codes under test: 0 done, 1 refused, 2 usage error, 3 discrepancies.
Every refusal is checked to be one ``Error:`` line with no traceback, and to
have changed nothing: stock by state, the batch list, the request list and
the whole operation log (every change writes an entry) are compared before
and after, and files a refused command would have written must not exist.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.commandline import Installation, add_operator, assert_ok, invoke, keygen, run_init
from testkit.install import PASSWORDS


@pytest.fixture(scope="session")
def sim_factory_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stand-in factory's key pair, made once by ``factory-sim keygen``."""
    return keygen(tmp_path_factory.mktemp("sim") / "factory")


@pytest.fixture(scope="session")
def other_factory_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second factory key pair, which no batch of ours is made for."""
    return keygen(tmp_path_factory.mktemp("sim") / "other-factory")


@pytest.fixture(scope="session")
def other_key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another installation's key directory, made by ``keys init``."""
    d = tmp_path_factory.mktemp("other-install") / "keys"
    stdout = assert_ok(invoke("--key-dir", d, "keys", "init"))
    assert f"keys created in {d}" in stdout
    assert (d / "master.key").stat().st_mode & 0o077 == 0
    return d


@pytest.fixture
def inst(database_url: str, key_dir: Path, tmp_path: Path, sim_factory_keys: Path) -> Iterator[Installation]:
    """A new installation set up through the CLI: alice and dave (admin), bob (finance), carol (auditor), F1, H01.

    alice and dave are the two first administrators; alice asks for bob and
    carol, dave approves.
    """
    workdir = tmp_path / "work"
    workdir.mkdir()
    i = Installation(database_url, key_dir, workdir, sim_factory_keys)
    stdout = assert_ok(run_init(database_url, key_dir, "alice", PASSWORDS["alice"], "dave"))
    assert stdout.startswith("installation ready; administrators alice and dave")
    for name, role in (("bob", "finance"), ("carol", "auditor")):
        add_operator(i, name, role)
    assert "factory F1 registered" in i.ok("factory", "register", "F1", "--public-key", sim_factory_keys / "factory.pub.pem")
    assert i.ok("hall", "add", "H01", "Lubei business hall") == "hall H01 added\n"
    yield i


