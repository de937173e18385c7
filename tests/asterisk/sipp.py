"""SIPp callers for the sandbox's own tests: a thin re-export of the product's call-script tooling.

The scenario builder (steps: ``ExpectText``, ``Digits``, ``Pause``,
``ExpectBye``, ``HangUp``; ``call_scenario``) lives in ``testkit.callscript``
and the runner (``run_sipp``, ``SippRun``, ``free_udp_port``) in
``testkit.replay``, where testers' call scripts use them too::

    xml = call_scenario([ExpectText("^prompt=hello$"), Digits("12#"), ExpectText("^result=12$"), ExpectBye()])
    run = run_sipp(xml, sandbox.sip_port, tmp_path)
    assert run.ok, run.explain()

Regular expressions are POSIX extended ones (SIPp uses ``regcomp``),
matched against the message body.
"""

from testkit.callscript import Digits, ExpectBye, ExpectText, HangUp, Pause, Step, call_scenario
from testkit.replay import SIPP, SippRun, free_udp_port, run_sipp

__all__ = ["SIPP", "Digits", "ExpectBye", "ExpectText", "HangUp", "Pause", "SippRun", "Step", "call_scenario",
           "free_udp_port", "run_sipp"]
