"""Asterisk configuration for the hotline, and the real-Asterisk sandbox that tests run calls against.

The ``*.conf`` files beside this module are the deployment's configuration,
with ``@NAME@`` placeholders that ``sandbox.render_config`` fills in;
``sandbox.py`` builds a Debian sid root holding Asterisk and runs it under
``chroot`` (see ``README.md``).
"""
