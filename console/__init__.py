"""The web console for finance staff and supervisors: approvals, reversals, settlement, stock, halls, reports, the log, health.

A front end like ``cli/`` and ``recharge_server/``: it holds no rule of the
card domain.  Each request opens one unit of work through
``cardmgmt.system.CardSystem`` (signed in by ``cardmgmt.console_sessions``),
calls the same services as the command line and renders their rows.

- ``web``: the request cycle (sessions, form tokens, security headers,
  errors as one line on the page), independent of Twisted;
  ``resource`` puts it on twisted.web; ``service`` wires the TLS listener;
- ``pages/``: one module per page (what it reads, what it may do), each
  with one template in ``templates/``;
- ``tables``: the rows a page shows and the one CSV writer for all of them;
- ``charts``: bar charts drawn on the server as SVG (no JavaScript);
- ``i18n``: every text the console shows, Mandarin first, English second.
"""

# test-case-name: tests.console.test_web
