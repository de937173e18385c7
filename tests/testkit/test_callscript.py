"""Unit tests for testkit.callscript: the call-script format, binding values, and the SIPp scenarios it compiles.

No Asterisk and no SIPp: these read the scripts and the XML.  The scenarios
are run against the real Asterisk in ``tests/e2e`` and ``tests/asterisk``.
"""

import re
from pathlib import Path

import pytest

from testkit.callscript import (
    SCENARIO_LIMIT,
    ExpectText,
    Injection,
    Pause,
    ScriptError,
    compile_script,
    heard_text,
    load,
    parse,
    route_through,
)

CALLS = Path(__file__).resolve().parents[1] / "calls"

EXAMPLE = """\
# successful recharge
# (a second comment line is not part of the title)
call 95598 from 13800000001
expect prompt=welcome
send 1

expect prompt=enter-account
send ${ACCOUNT}#
expect holder=张*明
expect /amount=[0-9]+/
wait 500ms
expect bye
"""


def test_a_script_is_parsed_into_numbered_steps_with_their_lines() -> None:
    script = parse(EXAMPLE, name="example", path="example.call")
    assert (script.title, script.number, script.caller) == ("successful recharge", "95598", "13800000001")
    assert [(type(s).__name__, s.line) for s in script.steps] == [
        ("ExpectText", 4), ("Digits", 5), ("ExpectText", 7), ("Digits", 8), ("ExpectText", 9), ("ExpectText", 10),
        ("Pause", 11), ("ExpectBye", 12)]
    assert script.steps[0] == ExpectText("^prompt=welcome$", 4, "expect prompt=welcome")
    assert script.steps[4].regexp == r"^holder=张\*明$", "the whole text, literally"
    assert script.steps[5].regexp == "^(amount=[0-9]+)$", "a /regex/ must match the whole text too"
    assert script.steps[6] == Pause(500, 11, "wait 500ms")
    assert script.variables() == {"ACCOUNT"}


@pytest.mark.parametrize(("text", "line", "message"), [
    ("expect prompt=a\nsned 1\nexpect bye", 2, "unknown command 'sned'"),
    ("expect prompt=a\nsend 12a\nexpect bye", 2, "'a' is not a phone key"),
    ("expect prompt=a\nsend\nexpect bye", 2, "'send' needs keys"),
    ("expect /prompt=a\nexpect bye", 1, "closing slash"),
    ("expect prompt=a\nwait soon\nexpect bye", 2, "a duration like 500ms or 2s"),
    ("expect prompt=a\ncall 95598\nexpect bye", 2, "'call' must be the first command"),
    ("call 95598 to 1\nexpect bye", 1, "call NUMBER [from CALLER]"),
    ("expect bye\nexpect prompt=a", 2, "nothing can follow 'expect bye' (line 1)"),
    ("expect prompt=a\nsend 1", 2, "ends with 'expect bye'"),
    ("send ${PIN\nexpect bye", 1, "a variable is written ${NAME}"),
    ("hangup now", 1, "'hangup' takes nothing"),
    ("dtmf inband\nexpect bye", 1, "expected: dtmf info or dtmf rfc4733"),
    ("expect prompt=a\ndtmf info\nexpect bye", 2, "'dtmf' comes before the first step"),
    ("expect prompt=a\nsend 1 after soon\nexpect bye", 2, "expected a duration"),
])
def test_a_bad_script_gets_one_line_naming_the_line(text: str, line: int, message: str) -> None:
    with pytest.raises(ScriptError) as caught:
        parse(text, path="bad.call")
    assert caught.value.line == line
    assert str(caught.value).startswith(f"bad.call:{line}: ") and message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_variables_are_bound_at_replay_time_and_each_missing_one_is_named() -> None:
    script = parse(EXAMPLE, path="example.call")
    with pytest.raises(ScriptError, match=r"^example.call:8: \$\{ACCOUNT\} has no value \(give it with --var"):
        compile_script(script, {})
    with pytest.raises(ScriptError, match=r"example.call:8: \$\{ACCOUNT\} is sent as keys"):
        compile_script(script, {"ACCOUNT": "31000000O1"})
    expect_var = parse("expect digits=${ACCOUNT}.\nexpect bye")
    bound = compile_script(expect_var, {"ACCOUNT": "3100000001"})
    assert bound.steps[0].regexp == r"^digits=3100000001\.$", "a value is matched literally"


def test_the_scenario_waits_only_for_the_last_expect_before_each_action() -> None:
    compiled = compile_script(parse(EXAMPLE), {"ACCOUNT": "3100000001"})
    assert compiled.sync_steps == {1, 3}, "welcome before 'send 1', enter-account before the account"
    xml = compiled.xml
    assert xml.count("INFO [next_url] SIP/2.0") == 1 + 11, "one INFO per key, to the Contact of whoever answered"
    assert 'recv response="200" rrs="true"' in xml and "ACK [next_url] SIP/2.0" in xml
    assert re.findall(r"Signal=(\S+)", xml) == list("1" + "3100000001#")
    assert 'regexp="^prompt=welcome$"' in xml and 'regexp="^prompt=enter-account$"' in xml
    assert xml.count("<pause") == 12, "300 ms before each key; the wait before an expect compiles to nothing"
    assert xml.count('milliseconds="300"') == 12
    assert "<recv request=\"BYE\" optional=\"true\" next=\"b8\"/>" in xml, "expect bye answers the hotline's BYE"
    for var in set(re.findall(r'assign_to="([^"]+)"', xml)):
        assert len(re.findall(rf"\[\${re.escape(var)}\]|test=\"{re.escape(var)}\"", xml)) >= 1, f"{var} is used"


def test_a_wait_holds_back_the_next_send_and_a_hangup_ends_the_call() -> None:
    xml = compile_script(parse("expect prompt=a\nwait 2s\nsend #\nwait 1.5s\nhangup"), {}).xml
    assert re.findall(r'<pause milliseconds="(\d+)"/>', xml) == ["2000", "300", "1500"]
    assert "BYE [next_url]" in xml and "4 wait" in xml and "5 hangup" in xml


def test_a_hangup_right_after_an_expect_uses_every_variable_it_sets() -> None:
    xml = compile_script(parse("expect prompt=welcome\nhangup"), {}).xml
    assert 'assign_to="f"' in xml and "[$f]" in xml, "SIPp refuses a variable set and never used"


def test_per_call_values_come_from_an_injection_file_one_field_per_key() -> None:
    script = parse("call 95598 from ${CALLER}\nexpect prompt=enter-pin\nsend ${PIN}#\nexpect bye")
    injection = Injection(("CALLER", "PIN"), (("13800000001", "123"), ("13800000002", "456")))
    compiled = compile_script(script, {}, injection)
    # Each value whole, then (when all rows have it the same length) each of its characters.
    assert compiled.injection_csv == ("SEQUENTIAL\n13800000001;1;3;8;0;0;0;0;0;0;0;1;123;1;2;3;\n"
                                      "13800000002;1;3;8;0;0;0;0;0;0;0;2;456;4;5;6;\n")
    assert "From: <sip:[field0]@" in compiled.xml
    assert re.findall(r"Signal=(\S+)", compiled.xml) == ["[field13]", "[field14]", "[field15]", "#"]
    with pytest.raises(ScriptError, match=r":2: \$\{PIN\} comes from the injection file and cannot be used in expect"):
        compile_script(parse("expect prompt=enter-pin\nexpect digits=${PIN}\nexpect bye"), {}, injection)
    uneven = Injection(("PIN",), (("12",), ("345",)))
    with pytest.raises(ScriptError, match="every injected value needs the same length"):
        compile_script(parse("expect a=b\nsend ${PIN}\nexpect bye"), {}, uneven)


def test_a_script_too_long_for_sipp_is_refused_before_sipp_sees_it() -> None:
    keys = "1" * (SCENARIO_LIMIT // 300)
    with pytest.raises(ScriptError, match="more than SIPp reads"):
        compile_script(parse(f"expect a=b\nsend {keys}\nexpect bye"), {})


def test_a_key_can_be_pressed_a_set_time_into_a_prompt_and_keys_can_go_as_rfc4733() -> None:
    script = parse("call 95598\ndtmf rfc4733\nexpect prompt=welcome\nsend 12 after 1.5s\nexpect bye")
    assert script.dtmf == "rfc4733" and parse("expect bye").dtmf == "info"
    xml = compile_script(script, {}).xml
    assert re.findall(r'<pause milliseconds="(\d+)"/>', xml) == ["1500", "300"], "the first key 1.5 s after the prompt"


def test_audio_only_scenarios_wait_only_on_prompts_and_audible_texts_are_known() -> None:
    script = parse("expect prompt=welcome\nexpect result=lang-zh\nsend 1\nexpect prompt=enter-account\n"
                   "expect /prompt=.*/\nexpect digits=${A}\nsend 2\nexpect bye")
    assert compile_script(script, {"A": "31"}).sync_steps == {2, 6}
    audio = compile_script(script, {"A": "31"}, audible_only=True)
    assert audio.sync_steps == {1, 4} and audio.audible_only
    assert [heard_text(s) for s in audio.steps if isinstance(s, ExpectText)] == [
        "prompt=welcome", "", "prompt=enter-account", "", "digits=31"]


def test_a_scenario_routed_through_the_media_agent_names_it_and_offers_rfc4733() -> None:
    compiled = compile_script(parse("expect prompt=a\nhangup"), {}, audio="/x.pcap")
    xml = route_through(compiled.xml, ("127.0.0.1", 5000), ("127.0.0.1", 6000))
    assert "[local_port]" not in xml and "Contact: <sip:13800138000@127.0.0.1:5000>" in xml
    assert "c=IN IP4 127.0.0.1\n" in xml and "m=audio 6000 RTP/AVP 0 101\n" in xml
    assert "a=rtpmap:101 telephone-event/8000" in xml and "PCMA" not in xml and "play_pcap_audio" not in xml
    assert '<pause milliseconds="1000"/>\n  <send retrans="500">\n<![CDATA[\nBYE ' in xml


def test_every_library_script_compiles() -> None:
    for path in sorted(CALLS.glob("*.call")) + sorted((CALLS / "audio").glob("*.call")):
        script = load(path)
        assert script.title, f"{path.name} says what it is for in its first line"
        compiled = compile_script(script, {name: "1" * 18 for name in script.variables()})
        assert len(compiled.xml.encode()) < SCENARIO_LIMIT




def test_the_call_line_is_named_when_its_values_are_wrong() -> None:
    script = parse("# a caller\n\ncall 95598 from ${CALLER}\nexpect prompt=welcome\nexpect bye", path="c.call")
    assert script.call_line == 3
    with pytest.raises(ScriptError, match=r"^c.call:3: \$\{CALLER\} has no value"):
        compile_script(script, {})
    with pytest.raises(ScriptError, match=r"^c.call:3: the caller '1 2' may hold only"):
        compile_script(script, {"CALLER": "1 2"})
    assert compile_script(script, {"CALLER": "13800000001"}).script.caller == "13800000001"


def test_a_missing_or_unreadable_script_is_one_line() -> None:
    with pytest.raises(ScriptError, match=r"nowhere.call: cannot read the script: No such file or directory$"):
        load(CALLS / "nowhere.call")
    with pytest.raises(ScriptError, match=r"cannot read the script: Is a directory$"):
        load(CALLS)


def test_a_value_with_a_line_break_is_refused_without_showing_it() -> None:
    with pytest.raises(ScriptError) as caught:
        compile_script(parse("expect a=b\nsend ${PIN}\nexpect bye"), {"PIN": "12\n34"})
    assert "holds a line break" in str(caught.value) and "12" not in str(caught.value)


@pytest.mark.parametrize(
    "text",
    [
        "call 95598 from 13800000001\nexpect prompt=welcome\nexpect bye",  # nothing sent: no BYE is watched for
        EXAMPLE,
        *(p.read_text(encoding="utf-8") for p in sorted(CALLS.glob("*.call"))),
    ],
)
def test_every_variable_a_scenario_uses_is_set_in_it(text):
    """SIPp refuses to load a scenario that uses a ``$variable`` nothing assigns."""
    script = parse(text)
    names = {m.group(1) for m in re.finditer(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", text)}
    xml = compile_script(script, {name: "1" for name in names}).xml
    used = set(re.findall(r"\[\$([a-z])\]", xml))
    assigned = set(re.findall(r'assign_to="([a-z])"', xml))
    assert used <= assigned, f"used but never set: {sorted(used - assigned)}"
