"""``console``: run the web console for finance staff and supervisors."""

# test-case-name: tests.console.test_cli

import click

from cli import App, cli, pass_app


@cli.command("console")
@click.option("--port", required=True, type=click.IntRange(1, 65535), help="Port to listen on (HTTPS only).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback unless told otherwise).")
@pass_app
def console(app: App, port: int, host: str) -> None:
    """Run the web console (until stopped): approvals, stock, halls, the operation log, the servers' health.

    Listens with TLS only, with the installation's certificate from
    `cli.py keys tls` (browsers are given tls-ca.pem to trust).  Operators
    sign in in the browser with their own name and password; no operator is
    named here.

    Example: cli.py console --port 8443 --host 0.0.0.0
    """
    from console.service import run  # Twisted is only loaded by the servers

    run(app.settings, host, port)
