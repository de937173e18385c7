"""SIPp callers written in Python, step by step: the one import for tests that place a hand-built call.

Call scripts (``tests/calls/*.call``) are the testers' way to describe a
call; a test of the sandbox itself, or of one AGI script, often wants a call
built in code instead.  This module gathers what that takes: the scenario
builder of ``testkit.callscript`` (steps ``ExpectText``, ``Digits``,
``Pause``, ``ExpectBye``, ``HangUp``; ``call_scenario``) and the runner of
``testkit.replay`` (``run_sipp``, ``SippRun``), with ``free_udp_port`` from
``testkit.ports`` for a caller's own port::

    xml = call_scenario([ExpectText("^prompt=hello$"), Digits("12#"), ExpectText("^result=12$"), ExpectBye()])
    run = run_sipp(xml, sandbox.sip_port, tmp_path)
    assert run.ok, run.explain()

Regular expressions are POSIX extended ones (SIPp uses ``regcomp``),
matched against the message body.
"""

# test-case-name: tests.asterisk.test_sandbox

from testkit.callscript import Digits, ExpectBye, ExpectText, HangUp, Pause, Step, call_scenario
from testkit.ports import free_udp_port
from testkit.replay import SIPP, SippRun, run_sipp

__all__ = ["SIPP", "Digits", "ExpectBye", "ExpectText", "HangUp", "Pause", "SippRun", "Step", "call_scenario",
           "free_udp_port", "run_sipp"]
