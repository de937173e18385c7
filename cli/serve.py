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
@pass_app
def serve(app: App, name: str, port: int, peer: str, host: str, ops_port: int | None) -> None:
    """Run one recharge server of the hot-standby pair (until stopped).

    Listens with TLS only (the certificate from `cli.py keys tls`); channel
    clients are checked against `cli.py client list`, re-read every 2 s.

    The API's own /v1/health says only who and whether; metrics and the lease
    are on --ops-port, which listens on the loopback address alone.

    Example: cli.py serve A --port 8441 --peer https://127.0.0.1:8442 --ops-port 9441
    """
    from recharge_server.service import run  # Twisted is only loaded by the servers

    run(app.settings, name, port, peer, host=host, ops_port=ops_port)
