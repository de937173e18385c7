"""Tests for testkit.agent: the agent's phone scenarios are well-formed SIPp XML of the right shape.

The phone itself answers and rings in the e2e suite (``tests/e2e/test_hotline.py``, the transfer tests).
"""

import xml.etree.ElementTree as ET

from testkit.agent import scenario


def steps(xml: str) -> list[str]:
    root = ET.fromstring(xml.split("\n", 2)[2])  # past the XML declaration and the DOCTYPE
    out = []
    for el in root:
        if el.tag == "recv":
            out.append("recv " + (el.get("request") or el.get("response") or ""))
        elif el.tag == "send":
            out.append("send " + (el.text or "").strip().split("\n")[0].split(" ")[1])
    return out


def test_an_answering_agent_picks_up_and_waits_for_the_caller_to_hang_up() -> None:
    assert steps(scenario(answer=True)) == ["recv INVITE", "send 180", "send 200", "recv ACK", "recv BYE", "send 200"]
    assert "application/sdp" in scenario(answer=True)


def test_a_ringing_agent_never_picks_up_and_takes_the_cancel() -> None:
    assert steps(scenario(answer=False)) == ["recv INVITE", "send 180", "recv CANCEL", "send 200", "send 487",
                                             "recv ACK"]
