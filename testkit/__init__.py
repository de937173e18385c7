"""The testers' and the test suite's kit: what tests, benchmarks and the demo share, imported by no product code.

Calls and Asterisk: ``callscript`` and ``replay`` are the call-script format
and its replay through SIPp (the engine behind ``cli.py replay``); ``sipp``
gathers what a hand-built SIPp caller needs; ``sandbox`` builds and runs the
real Asterisk in a Debian sid root; ``hotline`` puts the whole hotline
together (installation, cards, server pair, Asterisk with prompts).

Installations: ``databases`` makes and drops throwaway card and marketing
databases; ``keys`` makes a key directory once and copies it;
``factory`` is the stand-in factory's keys, production and PINs;
``install`` holds the test operators, their settings and a PostgreSQL
installation; ``pair`` runs ``cli.py serve A/B`` as processes; ``lifecycle``
walks cards through their life; ``marketing`` is the stand-in marketing
system as tests use it.

Plumbing: ``ports`` hands out free ports; ``live_api`` puts a recharge API
on a live reactor for HTTP tests.

The recharge servers, the AGI and the card domain never import this package
(``tests/testkit/test_imports.py`` holds them to it); only ``cli.py``'s
tester commands do, and only when they run.  Nothing here imports from
``tests/``; the conftest files there only give these helpers pytest's
lifetimes.
"""

# test-case-name: tests.testkit.test_imports
