"""``serve``: run one recharge server of the hot-standby pair."""

# test-case-name: tests.cli.test_root, tests.e2e.test_hotline

import click

from cli import App, cli, pass_app


@cli.command()
@click.argument("name")
@click.option("--port", required=True, type=click.IntRange(1, 65535), help="Port of this server's HTTP API.")
@click.option("--peer", required=True, help="The other server's base URL, e.g. https://127.0.0.1:8442 (TLS only).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback unless told otherwise).")
@click.option("--ops-port", type=click.IntRange(1, 65535),
              help="Port of the operator's listener on 127.0.0.1: /metrics and the full /v1/health (plain HTTP).")
@click.option("--shared-port", is_flag=True,
              help="Share --port with this host's other server processes (SO_REUSEPORT), each run with a NAME of its own.")
@pass_app
def serve(app: App, name: str, port: int, peer: str, host: str, ops_port: int | None, shared_port: bool) -> None:
    """Run one recharge server of the hot-standby pair (until stopped).

    Listens with TLS only (the certificate from `cli.py keys tls`); channel
    clients are checked against `cli.py client list`, re-read every 2 s.

    The API's own /v1/health says only who and whether; metrics and the lease
    are on --ops-port, which listens on the loopback address alone.

    One server process uses about one core (Python's interpreter lock); on a
    host with more, run one per core on one port with --shared-port, each
    with its own name: the kernel spreads connections across them, and every
    process is a member of the pair for the jobs lease and the heartbeats.

    \b
    Example: cli.py serve A --port 8441 --peer https://127.0.0.1:8442 --ops-port 9441
    Two processes on host A, whose peer is host B:
      cli.py serve A1 --port 8441 --shared-port --peer https://10.0.0.12:8441
      cli.py serve A2 --port 8441 --shared-port --peer https://10.0.0.12:8441
    """
    from recharge_server.service import run  # Twisted is only loaded by the servers

    run(app.settings, name, port, peer, host=host, ops_port=ops_port, shared_port=shared_port)
