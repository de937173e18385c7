"""The SIP dispatcher's configuration: ``kamailio.cfg``, rendered by ``testkit.dispatcher`` (``@NAME@`` placeholders)."""
