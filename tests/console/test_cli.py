"""``cli.py console``: its help names an example, and a start that cannot serve is one line, never a traceback."""

from cardmgmt import tls
from testkit.commandline import assert_ok, assert_one_line_error, invoke


def test_help_has_an_example():
    out = assert_ok(invoke("console", "--help"))
    assert "Example: cli.py console --port 8443" in out and "--host" in out


def test_an_installation_without_its_certificate_is_refused_in_one_line(system):
    s = system.settings
    (s.key_dir / tls.SERVER_CERT).unlink()
    result = invoke("--db", s.database_url, "--key-dir", s.key_dir, "console", "--port", "1")
    assert_one_line_error(result, "cli.py keys tls")
