"""The testers' and the test suite's kit: what tests, benchmarks and the demo share, imported by no product code.

``callscript`` and ``replay`` are the call-script format and its replay
through SIPp (the engine behind ``cli.py replay``); ``sandbox`` builds and
runs the real Asterisk in a Debian sid root; ``live_api`` puts a recharge API
on a live reactor for HTTP tests.  The recharge servers, the AGI and the card
domain never import this package; only ``cli.py``'s tester commands do, and
only when they run.
"""
