"""Asterisk configuration for the hotline: dialplan, PJSIP, modules.

The ``*.conf`` files beside this module are the deployment's configuration,
with ``@NAME@`` placeholders that ``testkit.sandbox.render_config`` fills in
for the test sandbox (a deployment puts its own values; see ``README.md``).
"""
