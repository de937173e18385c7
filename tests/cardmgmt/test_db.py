"""Multi-host card database URLs: libpq's form made SQLAlchemy's, the hosts read back, and one-line failures."""

import pytest

from cardmgmt.db import Database, connection_problem, database_hosts, normalise_url
from cardmgmt.errors import SchemaError
from testkit.ports import free_tcp_port

LIBPQ = "postgresql://postgres@127.0.0.1:6001,127.0.0.1:6002/cards?target_session_attrs=read-write&sslmode=prefer"


def test_libpq_multi_host_form_becomes_host_parameters():
    assert normalise_url(LIBPQ) == ("postgresql+psycopg://postgres@/cards?host=127.0.0.1:6001&host=127.0.0.1:6002"
                                    "&target_session_attrs=read-write&sslmode=prefer")


def test_password_and_no_query_are_kept():
    assert normalise_url("postgres://u:p@h1:1,h2:2/db") == "postgresql+psycopg://u:p@/db?host=h1:1&host=h2:2"


@pytest.mark.parametrize("url", ["sqlite:///x.db", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"])
def test_single_host_urls_are_unchanged(url):
    assert normalise_url(url) == url


def test_hosts_in_the_order_tried():
    assert database_hosts(LIBPQ) == ["127.0.0.1:6001", "127.0.0.1:6002"]
    assert database_hosts(normalise_url(LIBPQ)) == ["127.0.0.1:6001", "127.0.0.1:6002"]
    assert database_hosts("postgresql://postgres@db1/cards") == ["db1:5432"]


def test_no_host_answering_is_one_line_naming_them():
    a, b = free_tcp_port(), free_tcp_port()
    db = Database(f"postgresql://postgres@127.0.0.1:{a},127.0.0.1:{b}/cards?target_session_attrs=read-write")
    with pytest.raises(SchemaError) as e:
        db.check_schema()
    db.dispose()
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(f"no writable database host among 127.0.0.1:{a}, 127.0.0.1:{b}: ")


def test_a_single_database_keeps_its_message():
    assert connection_problem("postgresql://postgres@h/cards", OSError("refused")) == "cannot open the database: refused"
