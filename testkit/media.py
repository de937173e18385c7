"""The caller's ear and keypad during a replay: a SIP relay between SIPp and Asterisk that owns each call's RTP.

SIPp can send media but not record it, and it keys only by SIP INFO or by
replaying a pcap.  So when a replay checks audio (``testkit.replay``), SIPp
talks to a ``MediaAgent`` in the replaying process instead of to Asterisk,
and the agent passes every SIP datagram on, both ways, unchanged, except:

- the INVITE's SDP names the agent's RTP socket (the scenario is written so
  by ``route_through``), so Asterisk sends the call's audio here; the agent
  learns Asterisk's RTP address from the 200's SDP, sends the caller's
  side (G.711 silence every 20 ms, which also ends Asterisk's ``Answer()``
  wait for the first frame) and feeds each received frame to a
  ``testkit.hearing.Listener``;
- with ``dtmf="rfc4733"`` a key the scenario sends as INFO is answered here
  and sent to Asterisk as RFC 4733 telephone-events on the RTP stream
  instead (160 ms, three end packets), the way a phone or a trunk keys;
- with ``texts=False`` (audio-only) Asterisk's MESSAGEs are answered here and
  dropped, and the agent sends SIPp a MESSAGE ``prompt=ID`` itself as soon as
  it recognises a prompt, so the same scenario waits on what was heard
  rather than on what the dialog wrote (resent at 0.5, 1, 2, 4 s until SIPp
  answers, as Asterisk does, because SIPp ignores a request it is not
  waiting for).

Why a relay and not SIPp's own media port: Asterisk latches its RTP onto
wherever the caller's RTP comes from (``rtp_symmetric``), so whoever sends
the caller's audio must be whoever records; and SIPp's RTP is sent from a
raw socket at its own media port.  Owning both directions in one socket
keeps the recording correct against any Asterisk.  One agent serves one
SIPp run (any number of concurrent calls), on one thread.
"""

# test-case-name: tests.testkit.test_replay, tests.e2e.test_audio

from __future__ import annotations

import os
import re
import selectors
import socket
import struct
import threading
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from testkit.hearing import FRAME, Heard, Listener, Sounds, decode

TICK = 0.02  # one RTP packet of the caller's side every 20 ms
SILENCE_ULAW = b"\xff" * FRAME
DTMF_EVENTS = {**{str(d): d for d in range(10)}, "*": 10, "#": 11}
DTMF_MS = 160
EARLY_PACKETS = 50  # RTP packets kept from an address before its call's 200 is seen (one second)
RESEND = (0.5, 1.0, 2.0, 4.0, 4.0, 4.0)  # seconds between copies of an injected MESSAGE


@dataclass
class Key:
    """A key the caller pressed: which, when (epoch s), and how it went (``info`` or ``rfc4733``)."""

    key: str
    at: float
    how: str


@dataclass
class CallMedia:
    """One call as the agent saw it."""

    call_id: str
    invited: float
    answered: float | None = None  # the 200 to the INVITE passed through
    remote: tuple[str, int] | None = None  # Asterisk's RTP address for this call
    event_pt: int | None = None  # telephone-event payload type Asterisk offered
    listener: Listener | None = None
    keys: list[Key] = field(default_factory=list)
    texts: list[tuple[float, str]] = field(default_factory=list)  # MESSAGE bodies from Asterisk
    injected: list[tuple[float, str]] = field(default_factory=list)  # MESSAGEs the agent sent SIPp (audio-only)
    first_audio: float | None = None
    frames: int = 0
    caller_from: str = ""  # the INVITE's From (SIPp's side)
    callee_to: str = ""  # the 200's To (Asterisk's side, with its tag)
    seq: int = 0
    ts: int = 0
    ssrc: int = 0
    dtmf: list[tuple[str, float]] = field(default_factory=list)  # keys waiting to go as RFC 4733, with when asked
    event: tuple[int, int, int] | None = None  # (event code, start timestamp, packets sent) of the key being sent
    bye: bool = False
    heard: list[Heard] = field(default_factory=list)
    audio: list[np.ndarray] = field(default_factory=list)  # every frame received, in order (see ``save``)

    def save(self, path: Path) -> Path:
        """What the caller heard, as an 8 kHz mono 16-bit WAV file (frames back to back, gaps left out)."""
        samples = np.concatenate(self.audio) if self.audio else np.zeros(0, dtype=np.float32)
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(np.clip(samples, -32768, 32767).astype("<i2").tobytes())
        return path


def _parse(data: bytes) -> tuple[str, dict[str, str], str]:
    text = data.decode("utf-8", "replace")
    gap = re.search(r"\r?\n\r?\n", text)
    head, body = (text[:gap.start()], text[gap.end():]) if gap else (text, "")
    lines = re.split(r"\r?\n", head)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), value.strip())
    return lines[0], headers, body


def _response(headers: dict[str, str], raw: bytes) -> bytes:
    """A 200 OK to the request ``raw`` (all its Via lines kept)."""
    text = raw.decode("utf-8", "replace")
    vias = [m.group(0) for m in re.finditer(r"^(?:Via|v):[^\r\n]*", text, re.M | re.I)]
    lines = ["SIP/2.0 200 OK", *vias, f"From: {headers.get('from', '')}", f"To: {headers.get('to', '')}",
             f"Call-ID: {headers.get('call-id', '')}", f"CSeq: {headers.get('cseq', '')}", "Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


class MediaAgent:
    """Relays SIP between SIPp and the Asterisk at ``asterisk`` and owns every call's RTP (see the module docstring)."""

    def __init__(self, asterisk: tuple[str, int], sounds: Sounds | None, *, ip: str = "127.0.0.1",
                 dtmf: str = "info", texts: bool = True) -> None:
        if dtmf not in ("info", "rfc4733"):
            raise ValueError(f"unknown DTMF mode {dtmf!r}")
        self.asterisk = (socket.gethostbyname(asterisk[0]), asterisk[1])
        self.sounds, self.dtmf, self.texts = sounds, dtmf, texts
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind((ip, 0))
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.rtp.bind((ip, 0))
        self.ip = ip
        self.sipp: tuple[str, int] | None = None
        # Where each call's requests towards the caller came from: Asterisk itself when a SIP proxy in front of
        # it (the dispatcher) stays out of the dialog; the caller's answers to them go back there.
        self._far: dict[str, tuple[str, int]] = {}
        self.calls: dict[str, CallMedia] = {}
        self._by_rtp: dict[tuple[str, int], CallMedia] = {}
        self._early: dict[tuple[str, int], list[tuple[bytes, float]]] = {}  # RTP from an address not known yet
        self._pending: dict[int, tuple[bytes, float, int]] = {}  # injected MESSAGEs: cseq -> (datagram, next send, copies)
        self._inject_cseq = 1000
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="media-agent", daemon=True)
        self.cpu_seconds = 0.0

    @property
    def sip_address(self) -> tuple[str, int]:
        return self.sip.getsockname()

    @property
    def rtp_address(self) -> tuple[str, int]:
        return self.rtp.getsockname()

    def start(self) -> MediaAgent:
        self._thread.start()
        return self

    def stop(self) -> dict[str, CallMedia]:
        """Stop relaying; settle what each call heard; the calls by Call-ID."""
        self._stop.set()
        self._thread.join(10)
        for call in self.calls.values():
            if call.listener is not None:
                call.heard = call.listener.finish()
        self.sip.close()
        self.rtp.close()
        return self.calls

    def __enter__(self) -> MediaAgent:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if not self._stop.is_set():
            self.stop()

    # --- the loop --------------------------------------------------------------------------------

    def _run(self) -> None:
        cpu0 = time.thread_time()
        sel = selectors.DefaultSelector()
        sel.register(self.sip, selectors.EVENT_READ, self._on_sip)
        sel.register(self.rtp, selectors.EVENT_READ, self._on_rtp)
        next_tick = time.monotonic()
        try:
            while not self._stop.is_set():
                ready = sel.select(max(0.0, next_tick - time.monotonic()))
                for key, _ in sorted(ready, key=lambda r: r[0].fileobj is not self.sip):  # SIP first: a 200 before its RTP
                    handler: Callable[[], None] = key.data
                    handler()
                now = time.monotonic()
                if now >= next_tick:
                    self._tick()
                    next_tick += TICK
                    if now - next_tick > 0.2:  # fell far behind (a stalled machine): do not burst
                        next_tick = now + TICK
                    self._resend(time.time())
        finally:
            sel.close()
            self.cpu_seconds = time.thread_time() - cpu0

    def _on_sip(self) -> None:
        try:
            data, addr = self.sip.recvfrom(65535)
        except OSError:
            return
        now = time.time()
        first, headers, body = _parse(data)
        call_id = headers.get("call-id", headers.get("i", ""))
        if addr == self.sipp or (self.sipp is None and addr != self.asterisk):
            self.sipp = addr
            self._from_sipp(data, first, headers, body, call_id, now)
        else:  # the far side: Asterisk, or the proxy in front of it
            if not first.startswith("SIP/2.0"):
                self._far[call_id] = addr
            self._from_asterisk(data, first, headers, body, call_id, now)

    def _from_sipp(self, data: bytes, first: str, headers: dict[str, str], body: str, call_id: str, now: float) -> None:
        method = first.split(" ", 1)[0]
        if method == "SIP/2.0":  # a response: to Asterisk, unless it answers a MESSAGE the agent sent
            cseq = headers.get("cseq", "").split()
            if not self.texts and len(cseq) == 2 and cseq[1] == "MESSAGE":
                if cseq[0].isdigit():
                    self._pending.pop(int(cseq[0]), None)
                return
            self.sip.sendto(data, self._far.get(call_id, self.asterisk))
            return
        if method == "INVITE" and call_id not in self.calls:
            self.calls[call_id] = CallMedia(call_id, now, caller_from=headers.get("from", ""),
                                            ssrc=int.from_bytes(os.urandom(4), "big"))
        call = self.calls.get(call_id)
        if method == "INFO" and call is not None:
            m = re.search(r"Signal=\s*([0-9*#])", body)
            if m and self.dtmf == "rfc4733":
                call.dtmf.append((m.group(1), now))
                self.sip.sendto(_response(headers, data), self.sipp)  # type: ignore[arg-type]
                return
            if m:
                call.keys.append(Key(m.group(1), now, "info"))
        self.sip.sendto(data, self.asterisk)

    def _from_asterisk(self, data: bytes, first: str, headers: dict[str, str], body: str, call_id: str,
                       now: float) -> None:
        call = self.calls.get(call_id)
        method = first.split(" ", 1)[0]
        if method == "SIP/2.0" and call is not None and headers.get("cseq", "").endswith("INVITE") \
                and first.startswith("SIP/2.0 200") and call.answered is None:
            call.answered = now
            call.callee_to = headers.get("to", "")
            self._media(call, body)
        elif method == "MESSAGE" and call is not None:
            call.texts.append((now, body.strip().split("\n", 1)[0].strip()))
            if not self.texts:
                self.sip.sendto(_response(headers, data), self._far.get(call_id, self.asterisk))
                return
        elif method == "BYE" and call is not None:
            call.bye = True
        if self.sipp is not None:
            self.sip.sendto(data, self.sipp)

    def _media(self, call: CallMedia, sdp: str) -> None:
        host = re.search(r"^c=IN IP4 (\S+)", sdp, re.M)
        port = re.search(r"^m=audio (\d+)", sdp, re.M)
        event = re.search(r"^a=rtpmap:(\d+) telephone-event/8000", sdp, re.M | re.I)
        if not host or not port:
            return
        call.remote = (host.group(1), int(port.group(1)))
        call.event_pt = int(event.group(1)) if event else None
        self._by_rtp[call.remote] = call
        if self.sounds is not None:
            call.listener = Listener(self.sounds, on_sound=(lambda h, c=call: self._inject(c, h)) if not self.texts
                                     else None)
        for data, at in self._early.pop(call.remote, []):
            self._feed(call, data, at)

    # --- RTP ----------------------------------------------------------------------------------------

    def _on_rtp(self) -> None:
        try:
            data, addr = self.rtp.recvfrom(2048)
        except OSError:
            return
        call = self._by_rtp.get(addr)
        if call is None:  # Asterisk's RTP can overtake the 200 that says where it comes from: keep it a moment
            early = self._early.setdefault(addr, [])
            if len(early) < EARLY_PACKETS:
                early.append((data, time.time()))
            return
        self._feed(call, data, time.time())

    def _feed(self, call: CallMedia, data: bytes, now: float) -> None:
        if len(data) < 12:
            return
        pt = data[1] & 0x7F
        if pt not in (0, 8):
            return
        start = 12 + 4 * (data[0] & 0x0F)
        if data[0] & 0x10 and len(data) >= start + 4:  # a header extension
            start += 4 + 4 * struct.unpack("!H", data[start + 2:start + 4])[0]
        if call.first_audio is None:
            call.first_audio = now
        call.frames += 1
        samples = decode(data[start:], pt)
        for i in range(0, max(1, len(samples)), FRAME):
            frame = samples[i:i + FRAME]
            if len(frame) < FRAME:  # a short packet (Asterisk joins one file's end to the next one's start)
                frame = np.pad(frame, (0, FRAME - len(frame)))
            call.audio.append(frame)
            if call.listener is not None:
                call.listener.feed(frame, now)

    def _tick(self) -> None:
        for call in self.calls.values():
            if call.remote is None or call.bye:
                continue
            marker, payload, pt, ts = 0, SILENCE_ULAW, 0, call.ts
            if call.event is None and call.dtmf and call.event_pt is not None:
                key, _ = call.dtmf.pop(0)
                call.event = (DTMF_EVENTS[key], call.ts, 0)
                call.keys.append(Key(key, time.time(), "rfc4733"))
                marker = 1
            if call.event is not None:
                code, start, sent = call.event
                packets = DTMF_MS // 20
                end = sent >= packets - 1
                duration = min(sent + 1, packets) * FRAME
                payload = struct.pack("!BBH", code, (0x80 if end else 0) | 10, duration)
                pt, ts = call.event_pt, start  # type: ignore[assignment]
                sent += 1
                call.event = None if sent >= packets + 2 else (code, start, sent)  # the end packet three times
            call.seq = (call.seq + 1) & 0xFFFF
            header = struct.pack("!BBHII", 0x80, (marker << 7) | pt, call.seq, ts & 0xFFFFFFFF, call.ssrc)
            try:
                self.rtp.sendto(header + payload, call.remote)
            except OSError:
                pass
            call.ts += FRAME

    # --- audio-only: telling SIPp what was heard ----------------------------------------------------

    def _inject(self, call: CallMedia, heard: Heard) -> None:
        if self.sipp is None or call.bye:
            return
        body = f"prompt={heard.id}"
        self._inject_cseq += 1
        cseq = self._inject_cseq
        ip, port = self.sip_address
        lines = [
            f"MESSAGE sip:replay@{self.sipp[0]}:{self.sipp[1]} SIP/2.0",
            f"Via: SIP/2.0/UDP {ip}:{port};branch=z9hG4bKheard{cseq}",
            f"From: {call.callee_to}",
            f"To: {call.caller_from}",
            f"Call-ID: {call.call_id}",
            f"CSeq: {cseq} MESSAGE",
            "Max-Forwards: 70",
            "Content-Type: text/plain",
            f"Content-Length: {len(body)}",
            "",
            body,
        ]
        datagram = "\r\n".join(lines).encode()
        now = time.time()
        call.injected.append((now, body))
        self._pending[cseq] = (datagram, now + RESEND[0], 0)
        self.sip.sendto(datagram, self.sipp)

    def _resend(self, now: float) -> None:
        for cseq, (datagram, due, copies) in list(self._pending.items()):
            if now < due:
                continue
            if copies + 1 >= len(RESEND) or self.sipp is None:
                del self._pending[cseq]
                continue
            self._pending[cseq] = (datagram, now + RESEND[copies + 1], copies + 1)
            self.sip.sendto(datagram, self.sipp)
