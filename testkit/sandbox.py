"""A real Asterisk for the tests and the demo: a Debian sid root built with debootstrap, run under ``chroot``.

Debian 12 has no ``asterisk`` package; sid has (22.x).  ``Sandbox.build``
makes a minimal sid root holding Asterisk and Python once (about a minute and
550 MB, reused while its stamp matches ``BUILD_RECIPE``), installs pyst2 into
it, and installs the host tools it needs (``debootstrap``, SIPp, and
espeak-ng and sox for the prompts) when they are missing.  ``Sandbox.start``
writes this folder's configuration files into the root (filled in with the
SIP port), copies the project's AGI code in (so each start runs the latest
code), installs the AGI entry script and starts
``chroot ROOT /usr/sbin/asterisk -g -f -n`` (``-n``: no colours in its
console log); it returns once Asterisk answers on its control socket and
lists the ``tester`` endpoint.  The host shares its network with the chroot:
SIPp on the host reaches Asterisk on 127.0.0.1, and AGI code in the chroot
reaches the recharge servers on the host's loopback.

``start_hotline`` brings up the whole hotline on a sandbox, for the command
line's ``start``, the end-to-end tests, their benchmark and ``make demo``
alike: it starts Asterisk (waiting, if asked, while another process runs the
root), installs the prompts that ``voice_prompts.build`` renders in every
language and points the AGI at a server pair::

    root = e2e_root(os.environ)                 # ~/.cache/recharge-asterisk/root-e2e
    sandbox = start_hotline(Sandbox(root, free_sip_port()), build_prompts(workdir / "prompts"),
                            [("127.0.0.1", 8441), ("127.0.0.1", 8442)], api_key, wait=SANDBOX_WAIT, ca_cert=ca_cert)
    ...                                         # SIPp or ``cli.py replay`` on sandbox.sip_port
    sandbox.stop()

The whole-hotline runs use their own root, the default one's sibling
``<root>-e2e`` (``e2e_root``), so that they and ``tests/asterisk`` never
fight over one Asterisk: each root runs one Asterisk at a time.

Inside the root::

    /etc/asterisk/*.conf                  rendered from asterisk_conf/*.conf at each start
    /etc/asterisk.dist/                   the package's own sample configuration, kept for reference
    /etc/recharge/agi.conf                the AGI's configuration (``write_agi_config``)
    /opt/recharge-py/                     pyst2 and six (``pip install --target``)
    /opt/recharge-app/{ivr,voice_prompts} the project's AGI code, copied at each start
    /usr/share/asterisk/agi-bin/          recharge.agi (the entry script) and test scripts
    /usr/share/asterisk/sounds/<lang>/    prompts (``install_sounds``, ``install_prompts``)
    /var/log/asterisk/messages.log        what the tests read back (emptied at each start)

Command line (``python -m testkit.sandbox --help``)::

    python -m testkit.sandbox build          # once; later runs reuse the root
    python -m testkit.sandbox start --sip-port 5160 [--server HOST:PORT --server HOST:PORT --api-key-file KEY]
    python -m testkit.sandbox status
    python -m testkit.sandbox stop
    python -m testkit.sandbox path           # the root, for scripts

The root defaults to ``~/.cache/recharge-asterisk/root``; ``--root`` or
``ASTERISK_SANDBOX_DIR`` moves it (read by ``resolve_root`` only).
``start`` renders the prompts afresh (about a second; ``--prompts DIR``
keeps them in DIR and renders only what is missing there) and installs them.
Everything here needs root: debootstrap, chroot and apt-get do.
"""

# test-case-name: tests.asterisk.test_sandbox, tests.e2e.test_hotline

from __future__ import annotations

import argparse
import configparser
import fcntl
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from testkit.ports import LOOPBACK, free_tcp_port, free_udp_port
from voice_prompts.build import BuildError, sounds
from voice_prompts.build import build as render_prompts
from voice_prompts.catalogue import LANGS

PROJECT_DIR = Path(__file__).resolve().parent.parent
CONF_DIR = PROJECT_DIR / "asterisk_conf"

SUITE = "sid"
PACKAGES = ("asterisk", "asterisk-modules", "python3")
PYTHON_PACKAGES = ("pyst2==0.5.1", "six")
# The build is reused while its stamp holds exactly this line; change anything
# that goes into the root and the next build() starts again from nothing.
BUILD_RECIPE = f"recharge-asterisk-sandbox 1; {SUITE}; {','.join(PACKAGES)}; {','.join(PYTHON_PACKAGES)}"

# Host tools: the binary looked for, and the Debian package that brings it.  espeak-ng and
# sox render the prompts that start installs.
HOST_TOOLS = {"debootstrap": "debootstrap", "sipp": "sip-tester", "espeak-ng": "espeak-ng", "sox": "sox"}

# The per-call package the AGI runs (standard library only), copied in at each start.
APP_PACKAGES = ("ivr",)

# Paths inside the chroot.
CHROOT_PY_DIR = "/opt/recharge-py"
CHROOT_APP_DIR = "/opt/recharge-app"
CHROOT_AGI_DIR = "/usr/share/asterisk/agi-bin"
CHROOT_SOUNDS_DIR = "/usr/share/asterisk/sounds"
CHROOT_AGI_CONFIG = "/etc/recharge/agi.conf"
CHROOT_API_KEY = "/etc/recharge/api.key"
CHROOT_CA_CERT = "/etc/recharge/tls-ca.pem"
FASTAGI_PID = "/run/recharge-fastagi.pid"
ENTRY_SCRIPT = "recharge.agi"
ENTRY_MODULE = "ivr.agi_main"
FASTAGI_MODULE = "ivr.fastagi"
AGI_MODES = ("fastagi", "process")  # the dialplan's global HOTLINE_AGI

DEFAULT_ROOT = Path("~/.cache/recharge-asterisk/root")
DEFAULT_SIP_PORT = 5160  # not 5060, so that a real PBX on the same machine is left alone
RTP_PORTS = (40000, 40399)  # 200 calls' worth of RTP/RTCP pairs
SECOND_RTP_PORTS = (40400, 40799)  # a second Asterisk's, on the same machine (testkit.frontends)
TEST_ENDPOINT = "tester"
# The SIP dispatcher's own loopback address (testkit.dispatcher): calls from it land on the "dispatcher" endpoint.
DISPATCHER_ADDR = "127.0.0.2"
BUILD_LOCK_WAIT = 900.0  # seconds: long enough for another process's build to finish
SANDBOX_WAIT = 900.0  # seconds the whole-hotline runs wait while another process runs their root

# Asterisk and its AGI children get this environment, not the caller's: a
# virtualenv's PATH or PYTHONPATH from the host means nothing inside the root.
CHROOT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb"}

_PLACEHOLDER = re.compile(r"@([A-Z][A-Z0-9_]*)@")
_SIMPLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class SandboxError(Exception):
    """The sandbox could not be built, started, stopped or talked to; the message says why in one line or a few."""


class SandboxBusy(SandboxError):
    """Another process is building or running this root (its lock is held)."""


def resolve_root(option: str | None, environ: Mapping[str, str]) -> Path:
    """The sandbox root: ``option`` if given, else ``ASTERISK_SANDBOX_DIR``, else ``~/.cache/recharge-asterisk/root``.

    The one place that reads the environment; entry points (this module's
    ``main``, a test fixture) call it and pass the path on.
    """
    chosen = option or environ.get("ASTERISK_SANDBOX_DIR") or str(DEFAULT_ROOT)
    return Path(chosen).expanduser().absolute()


def e2e_root(environ: Mapping[str, str]) -> Path:
    """The root the whole-hotline runs use (e2e tests, benchmark, demo): the default root's sibling ``<name>-e2e``."""
    base = resolve_root(None, environ)
    return base.with_name(base.name + "-e2e")


def free_sip_port() -> int:
    """A free UDP port on 127.0.0.1 outside the RTP ranges, where Asterisk's RTP would fight the SIP transport for it."""
    port = free_udp_port()
    while RTP_PORTS[0] <= port <= SECOND_RTP_PORTS[1]:
        port = free_udp_port()
    return port


def parse_server(text: str) -> tuple[str, int]:
    """``HOST:PORT`` as ``(host, port)``; ``SandboxError`` naming the bad value otherwise."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SandboxError(f"--server {text!r}: expected HOST:PORT")
    return host, int(port)


def resolve_inside(root: Path, inside: str) -> Path:
    """``root`` joined with ``inside``, each symbolic link on the way resolved relative to ``root``, never beyond it."""
    pending = [p for p in inside.split("/") if p]
    resolved: list[str] = []
    hops = 0
    while pending:
        part = pending.pop(0)
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        if candidate.is_symlink():
            hops += 1
            if hops > 40:
                raise SandboxError(f"too many symbolic links under {root} resolving {inside}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            pending[:0] = [p for p in target.split("/") if p]
        else:
            resolved.append(part)
    return root.joinpath(*resolved)


def render_config(text: str, values: Mapping[str, str | int]) -> str:
    """``text`` with each ``@NAME@`` replaced by ``values[NAME]``; an unknown name is an error, not a blank."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise SandboxError(f"configuration placeholder @{name}@ has no value")
        return str(values[name])

    return _PLACEHOLDER.sub(one, text)


def entry_script(module: str = ENTRY_MODULE, config: str = CHROOT_AGI_CONFIG) -> str:
    """The AGI entry script: runs ``python3 -m MODULE --config CONFIG ARGS...`` under the chroot's Python.

    A shell ``exec`` and no Python of its own, so a call costs one interpreter
    start; the arguments that the dialplan gives ``AGI(recharge.agi,...)``
    follow ``--config``.
    """
    return (
        "#!/bin/sh\n"
        "# Written by testkit/sandbox.py: the hotline's AGI entry.  Asterisk runs it once per call,\n"
        "# with the AGI session on stdin/stdout; the code and pyst2 live under /opt in this root.\n"
        f"PYTHONPATH={CHROOT_APP_DIR}:{CHROOT_PY_DIR}\n"
        "export PYTHONPATH\n"
        f'exec /usr/bin/python3 -m {module} --config {config} "$@"\n'
    )


def render_agi_config(servers: Sequence[tuple[str, int]], api_key_file: str | None, extra: Mapping[str, Mapping[str, str]] | None = None,
                      *, ca_file: str | None = None, client: str | None = None) -> str:
    """The text of ``/etc/recharge/agi.conf`` (INI, read with the standard library's ``configparser``).

    ``[servers]`` lists the recharge servers in order of preference
    (``primary``, ``standby``, then ``server3``...), each as ``host:port``;
    ``[client]`` names this host's channel client (``client``), its key's
    file (``api_key_file``) and the installation's CA certificate
    (``ca_file``).  ``extra`` adds sections or keys (timeouts, the dialog's
    language) unchanged.
    """
    parser = configparser.ConfigParser(interpolation=None)
    names = ["primary", "standby"] + [f"server{i}" for i in range(3, len(servers) + 1)]
    parser["servers"] = {name: f"{host}:{port}" for name, (host, port) in zip(names, servers, strict=False)}
    parser["client"] = {k: v for k, v in (("client", client), ("api_key_file", api_key_file), ("ca_file", ca_file)) if v}
    for section, values in (extra or {}).items():
        if not parser.has_section(section):
            parser.add_section(section)
        for key, value in values.items():
            parser.set(section, key, value)
    out = io.StringIO()
    out.write("# Written by testkit/sandbox.py for the hotline's AGI script.\n")
    parser.write(out)
    return out.getvalue()


def run(cmd: Sequence[str | os.PathLike[str]], *, what: str, log: Path | None = None, timeout: float | None = None,
        env: Mapping[str, str] | None = None) -> str:
    """Run ``cmd``; its output (also appended to ``log``), or ``SandboxError`` naming ``what`` failed with the output's tail."""
    try:
        done = subprocess.run([str(c) for c in cmd], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, errors="replace", timeout=timeout,
                              env=dict(env) if env is not None else None, check=False)
    except FileNotFoundError as e:
        raise SandboxError(f"{what}: {e.filename} is not installed") from None
    except subprocess.TimeoutExpired:
        raise SandboxError(f"{what}: no answer within {timeout} s") from None
    if log is not None:
        with log.open("a", encoding="utf-8") as f:
            f.write(f"$ {' '.join(str(c) for c in cmd)}\n{done.stdout}\n")
    if done.returncode != 0:
        tail = "\n".join(done.stdout.strip().splitlines()[-15:])
        raise SandboxError(f"{what} failed (exit {done.returncode}):\n{tail}")
    return done.stdout


def ensure_host_tools(tools: Mapping[str, str] = HOST_TOOLS) -> list[str]:
    """``apt-get install`` the packages of the ``tools`` missing from PATH; the packages installed."""
    missing = sorted({package for binary, package in tools.items() if shutil.which(binary) is None})
    if missing:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run(["apt-get", "update", "-q"], what="apt-get update", env=env, timeout=600)
        run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
            what=f"apt-get install {' '.join(missing)}", env=env, timeout=1200)
    return missing


class Sandbox:
    """One Asterisk root on this machine and the Asterisk running in it.

    ``root`` is the directory debootstrap fills; ``sip_port`` is the UDP port
    the PJSIP transport binds on 127.0.0.1 at ``start``.  One root runs one
    Asterisk at a time: while a ``Sandbox`` has it started, another process's
    ``start`` on the same root is refused.
    """

    def __init__(self, root: Path, sip_port: int = DEFAULT_SIP_PORT, rtp_ports: tuple[int, int] = RTP_PORTS, *,
                 fastagi_port: int | None = None, agent_port: int | None = None) -> None:
        self.root = Path(root)
        self.sip_port = sip_port
        self.rtp_ports = rtp_ports  # a second Asterisk on this machine gets a range of its own
        # Where the FastAGI service listens (on the host's loopback, which the chroot shares) and where the
        # agent endpoint's phone answers (a SIPp UAS in the tests); written into the dialplan and pjsip.conf.
        self.fastagi_port = fastagi_port or free_tcp_port()
        self.agent_port = agent_port or free_sip_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._fastagi: subprocess.Popen[bytes] | None = None
        self._lock_holder: _FileLock | None = None  # held from start() to stop()

    # --- paths ---------------------------------------------------------------------

    def path(self, inside: str) -> Path:
        """The host path of ``inside``, an absolute path as seen in the chroot.

        Symbolic links are followed as the chroot sees them: the root has
        absolute ones (``/var/run -> /run``, ``sounds/en ->
        /etc/alternatives/...``) that, followed from the host, would lead
        out of the root and write on the host's own files.
        """
        return resolve_inside(self.root, inside)

    @property
    def stamp(self) -> Path:
        return self.path("/etc/recharge-sandbox.stamp")

    @property
    def log_dir(self) -> Path:
        return self.path("/var/log/asterisk")

    # --- building --------------------------------------------------------------------

    def is_built(self) -> bool:
        """Whether the root is complete and was built from the current ``BUILD_RECIPE``."""
        try:
            return self.stamp.read_text(encoding="utf-8").splitlines()[0] == BUILD_RECIPE
        except (OSError, IndexError):
            return False

    def build(self, *, force: bool = False, copy_of: Path | None = None) -> bool:
        """Make the root unless it is already built from this recipe; whether a build happened.

        Installs the missing host tools first either way.  The root is built
        beside its final place (``ROOT.partial``) and renamed when complete,
        so an interrupted build is never taken for a finished one.  With
        ``copy_of``, a root built from this recipe, the new root is a copy of
        it (seconds, not a debootstrap): how a second Asterisk on the same
        machine gets its own root.
        """
        ensure_host_tools()
        if self.is_built() and not force:
            return False
        if self._lock_holder is not None:
            raise SandboxError("this sandbox is started; stop it before rebuilding")
        with _FileLock(self._lock_path(), wait=BUILD_LOCK_WAIT):
            if self.is_built() and not force:
                return False  # another process built it while this one waited
            self._stop_running(timeout=15)
            self.root.parent.mkdir(parents=True, exist_ok=True)
            partial = self.root.with_name(self.root.name + ".partial")
            log = self.root.with_name(self.root.name + ".build.log")
            log.write_text("", encoding="utf-8")
            _remove_tree(partial)
            if copy_of is not None and Sandbox(copy_of).is_built():
                run(["cp", "-a", "--reflink=auto", Path(copy_of), partial], what="copy of the sandbox root", log=log,
                    timeout=600)
                _remove_tree(self.root)
                partial.rename(self.root)
                return True
            run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, partial],
                what="debootstrap", log=log, timeout=3600)
            run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
                 "--target", partial / CHROOT_PY_DIR.lstrip("/"), *PYTHON_PACKAGES],
                what="pip install into the sandbox", log=log, timeout=600)
            # Keep the package's sample configuration out of the way: the root
            # runs exactly the files in asterisk_conf/, nothing inherited.
            etc = partial / "etc/asterisk"
            etc.rename(partial / "etc/asterisk.dist")
            etc.mkdir()
            check = f"import sys; sys.path.insert(0, {CHROOT_PY_DIR!r}); import asterisk.agi; print(sys.version.split()[0])"
            version = run(["chroot", partial, "/usr/bin/python3", "-c", check], what="pyst2 check in the sandbox",
                          log=log, env=CHROOT_ENV, timeout=60).strip()
            asterisk = run(["chroot", partial, "/usr/sbin/asterisk", "-V"], what="asterisk -V", env=CHROOT_ENV,
                           timeout=60).strip()
            (partial / "etc/recharge-sandbox.stamp").write_text(
                f"{BUILD_RECIPE}\nbuilt {time.strftime('%Y-%m-%d %H:%M:%S')}; {asterisk}; Python {version}\n",
                encoding="utf-8")
            _remove_tree(self.root)
            partial.rename(self.root)
            return True

    # --- installing into the root ------------------------------------------------------

    def install_agi(self, name: str, script: str | Path) -> Path:
        """Install an AGI script as ``agi-bin/NAME`` (executable); ``script`` is its text or a file to copy.

        Dialplan runs it as ``AGI(NAME)``.  A Python script starts with
        ``#!/usr/bin/env python3`` and runs under the chroot's Python (3.13+,
        newer than the host's); pyst2 is importable after
        ``sys.path.insert(0, CHROOT_PY_DIR)``.
        """
        _check_name(name, "AGI script name")
        text = Path(script).read_text(encoding="utf-8") if isinstance(script, Path) else script
        target = self.path(CHROOT_AGI_DIR) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.chmod(0o755)
        tmp.replace(target)  # a call starting right now runs the old script or the new one, never half of one
        return target

    def install_sounds(self, src_dir: Path, lang: str) -> list[Path]:
        """Copy every file under ``src_dir`` (keeping sub-folders) into ``sounds/<lang>/``; the files written.

        Playback(name) on a channel whose language is ``lang`` then finds
        ``sounds/<lang>/name.<format>``; Asterisk falls back to ``en``
        for a name missing there.
        """
        _check_name(lang, "language")
        src_dir = Path(src_dir)
        if not src_dir.is_dir():
            raise SandboxError(f"no such sound folder: {src_dir}")
        written = []
        for src in sorted(p for p in src_dir.rglob("*") if p.is_file()):
            target = self.path(f"{CHROOT_SOUNDS_DIR}/{lang}/{src.relative_to(src_dir).as_posix()}")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
            written.append(target)
        return written

    def install_prompts(self, prompts: Path, langs: Sequence[str] = LANGS) -> list[Path]:
        """Install the hotline's rendered prompts (``build_prompts``): ``prompts/<lang>/`` for each of ``langs``."""
        return [path for lang in langs for path in self.install_sounds(Path(prompts) / lang, lang)]

    def write_agi_config(self, servers: Sequence[tuple[str, int]], api_key: bytes | None = None,
                         extra: Mapping[str, Mapping[str, str]] | None = None, *, ca_cert: bytes | None = None,
                         client: str = "hotline") -> Path:
        """Write ``/etc/recharge/agi.conf`` for the AGI script, and beside it the client's key (owner-only) and the CA certificate.

        ``api_key`` is channel client ``client``'s key (the hotline's is the
        installation's ``keys/api.key``); ``ca_cert`` the installation's
        ``keys/tls-ca.pem``, needed with a key (the servers speak TLS only).
        See ``render_agi_config`` for the format.  Takes effect on the next
        call: each call's AGI process reads it afresh.
        """
        if api_key is not None and ca_cert is None:
            raise SandboxError("the AGI needs the installation's CA certificate (keys/tls-ca.pem) with its key")
        conf = self.path(CHROOT_AGI_CONFIG)
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.parent.chmod(0o700)
        key_file = None
        if api_key is not None:
            fd = os.open(self.path(CHROOT_API_KEY), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT: set it
                f.write(api_key)
            key_file = CHROOT_API_KEY
        ca_file = None
        if ca_cert is not None:
            self.path(CHROOT_CA_CERT).write_bytes(ca_cert)
            ca_file = CHROOT_CA_CERT
        conf.write_text(render_agi_config(servers, key_file, extra, ca_file=ca_file, client=client if key_file else None),
                        encoding="utf-8")
        return conf

    def config_values(self) -> dict[str, str | int]:
        """What ``@NAME@`` stands for in this sandbox's configuration files."""
        return {"SIP_BIND": "127.0.0.1", "SIP_PORT": self.sip_port, "RTP_START": self.rtp_ports[0],
                "RTP_END": self.rtp_ports[1], "DISPATCHER_ADDR": DISPATCHER_ADDR, "FASTAGI_PORT": self.fastagi_port,
                "AGENT_PORT": self.agent_port}

    def install_configuration(self) -> list[Path]:
        """Render every ``asterisk_conf/*.conf`` into the root's ``/etc/asterisk``; the files written."""
        values = self.config_values()
        etc = self.path("/etc/asterisk")
        etc.mkdir(parents=True, exist_ok=True)
        for old in etc.glob("*.conf"):
            old.unlink()
        written = []
        for src in sorted(CONF_DIR.glob("*.conf")):
            target = etc / src.name
            target.write_text(render_config(src.read_text(encoding="utf-8"), values), encoding="utf-8")
            written.append(target)
        return written

    def install_app(self, packages: Iterable[str] = APP_PACKAGES, project: Path = PROJECT_DIR) -> list[str]:
        """Copy the project's packages that exist into ``/opt/recharge-app`` (replacing older copies); their names."""
        app = self.path(CHROOT_APP_DIR)
        _remove_tree(app)
        app.mkdir(parents=True)
        copied = []
        for name in packages:
            src = project / name
            if (src / "__init__.py").is_file():
                shutil.copytree(src, app / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "tests", "test"))
                copied.append(name)
        return copied

    # --- running -----------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        """Install configuration, code and entry script, start Asterisk, and wait until it takes calls.

        An Asterisk left running in this root by an earlier run (a killed
        test session, ``start`` from the command line) is stopped first.
        """
        if not self.is_built():
            raise SandboxError(f"the sandbox in {self.root} is not built (or was built from an older recipe): run build first")
        if self._process is not None:
            raise SandboxError("this sandbox is already started")
        lock = _FileLock(self._lock_path(), wait=0)
        lock.acquire()
        try:
            self.stop_fastagi()
            self._stop_running(timeout=15)
            self.install_configuration()
            self.install_app()
            self.install_agi(ENTRY_SCRIPT, entry_script())
            self.log_dir.mkdir(parents=True, exist_ok=True)
            for name in ("messages.log", "console.log", "fastagi.log"):
                (self.log_dir / name).write_text("", encoding="utf-8")
            console = (self.log_dir / "console.log").open("ab")
            try:
                self._process = subprocess.Popen(
                    ["chroot", str(self.root), "/usr/sbin/asterisk", "-g", "-f", "-n"], stdin=subprocess.DEVNULL,
                    stdout=console, stderr=subprocess.STDOUT, env=CHROOT_ENV, cwd="/", start_new_session=True)
            finally:
                console.close()
            self._wait_ready(timeout)
        except BaseException:
            self._kill()
            lock.release()
            raise
        self._lock_holder = lock

    def start_fastagi(self, timeout: float = 30.0) -> None:
        """Start the FastAGI service (``python3 -m ivr.fastagi --supervise``) under the chroot's Python, beside Asterisk.

        It reads ``/etc/recharge/agi.conf`` (``write_agi_config`` first) and
        listens on 127.0.0.1:``fastagi_port``, where the dialplan's
        ``AGI(agi://...)`` connects; its log is ``/var/log/asterisk/fastagi.log``.
        Returns once it accepts connections.  Until then (or when it is down)
        the dialplan runs calls by process AGI.
        """
        self.stop_fastagi()
        log = (self.log_dir / "fastagi.log").open("ab")
        try:
            self._fastagi = subprocess.Popen(
                ["chroot", str(self.root), "/usr/bin/python3", "-m", FASTAGI_MODULE, "--config", CHROOT_AGI_CONFIG,
                 "--listen", f"{LOOPBACK}:{self.fastagi_port}", "--supervise"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd="/", start_new_session=True,
                env={**CHROOT_ENV, "PYTHONPATH": f"{CHROOT_APP_DIR}:{CHROOT_PY_DIR}"})
        finally:
            log.close()
        self.path(FASTAGI_PID).write_text(f"{self._fastagi.pid}\n", encoding="utf-8")
        deadline = time.monotonic() + timeout
        while self.fastagi_worker() is None:
            if self._fastagi.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(_read(self.log_dir / "fastagi.log").splitlines()[-10:])
                self.stop_fastagi()
                raise SandboxError(f"the FastAGI service did not start on port {self.fastagi_port}:\n{tail}")
            time.sleep(0.1)

    def fastagi_worker(self) -> int | None:
        """The pid of the FastAGI service under its supervisor, once it listens; ``None`` when it is not serving."""
        if self._fastagi is None or self._fastagi.poll() is not None:
            return None
        try:
            children = Path(f"/proc/{self._fastagi.pid}/task/{self._fastagi.pid}/children").read_text().split()
        except OSError:
            return None
        for child in map(int, children):
            if _listens_on(child, self.fastagi_port):
                return child
        return None

    def stop_fastagi(self, timeout: float = 10.0) -> None:
        """Stop the FastAGI service and its supervisor; nothing happens if it is not running."""
        process, self._fastagi = self._fastagi, None
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            return
        # Started by another process (the command line's start): by its pid file, if it is still ours.
        try:
            pid = int(self.path(FASTAGI_PID).read_text().strip())
            if os.readlink(f"/proc/{pid}/root") != str(self.root.resolve()):
                return
            os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError):
            return
        if not self._wait_gone(pid, timeout):
            os.killpg(pid, signal.SIGKILL)

    def set_agi_mode(self, mode: str) -> None:
        """``fastagi`` (the service first, process AGI when it does not take a call) or ``process`` (process AGI only)."""
        if mode not in AGI_MODES:
            raise SandboxError(f"AGI mode {mode!r} is not one of {', '.join(AGI_MODES)}")
        self.rx(f"dialplan set global HOTLINE_AGI {mode}")

    def stop(self, timeout: float = 15.0) -> None:
        """Stop Asterisk (``core stop now``, then by its pid if it will not go) and the FastAGI service; nothing happens if it is not running."""
        try:
            self.stop_fastagi()
            self._stop_running(timeout)
        finally:
            if self._lock_holder is not None:
                self._lock_holder.release()
                self._lock_holder = None

    def kill(self) -> None:
        """Kill Asterisk and the FastAGI service at once (SIGKILL, as a machine dies): its calls end without a BYE.

        ``start`` (and ``start_fastagi``) run them again.
        """
        try:
            service, self._fastagi = self._fastagi, None
            if service is not None and service.poll() is None:
                os.killpg(service.pid, signal.SIGKILL)
                service.wait()
            pid = self._pid()
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                self._wait_gone(pid, 10)
            self._reap()
        finally:
            if self._lock_holder is not None:
                self._lock_holder.release()
                self._lock_holder = None

    def is_running(self) -> bool:
        """Whether an Asterisk is running in this root (by its pid file, checked against the process's root)."""
        return self._pid() is not None

    def rx(self, command: str, timeout: float = 20.0) -> str:
        """The output of the Asterisk CLI ``command`` (``asterisk -rx``), or ``SandboxError`` when it cannot be run."""
        return run(["chroot", self.root, "/usr/sbin/asterisk", "-rx", command], what=f"asterisk -rx {command!r}",
                   env=CHROOT_ENV, timeout=timeout)

    def messages_log(self) -> str:
        """``/var/log/asterisk/messages.log`` of this run: each ``Executing [...]`` line and the AGI scripts' VERBOSE lines."""
        return _read(self.log_dir / "messages.log")

    def fastagi_log(self) -> str:
        """``/var/log/asterisk/fastagi.log`` of this run: the FastAGI service's log (and its supervisor's)."""
        return _read(self.log_dir / "fastagi.log")

    def console_log(self) -> str:
        """Asterisk's own stdout and stderr, which also receive what AGI scripts write to stderr (tracebacks)."""
        return _read(self.log_dir / "console.log")

    def __enter__(self) -> Sandbox:
        self.build()
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # --- inside ------------------------------------------------------------------------

    def _lock_path(self) -> Path:
        self.root.parent.mkdir(parents=True, exist_ok=True)
        return self.root.with_name(self.root.name + ".lock")

    def _pid(self) -> int | None:
        if self._process is not None and self._process.poll() is None:
            return self._process.pid
        try:
            pid = int(self.path("/var/run/asterisk/asterisk.pid").read_text().strip())
            # Only an Asterisk whose root is ours: a stale pid file may name any process by now.
            if os.readlink(f"/proc/{pid}/root") != str(self.root.resolve()):
                return None
            if Path(f"/proc/{pid}/comm").read_text().strip() != "asterisk":
                return None
        except (OSError, ValueError):
            return None
        return pid

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise SandboxError(f"Asterisk exited with {self._process.returncode} while starting:\n{self._tail()}")
            try:
                version = self.rx("core show version", timeout=5)
                self.rx("core waitfullybooted", timeout=max(1.0, deadline - time.monotonic()))
                endpoints = self.rx("pjsip show endpoints", timeout=5)
            except SandboxError as e:
                last = str(e)
                time.sleep(0.2)
                continue
            if version.startswith("Asterisk") and f" {TEST_ENDPOINT} " in endpoints:
                return
            last = f"{version.strip()}\n{endpoints.strip()}"
            time.sleep(0.2)
        raise SandboxError(f"Asterisk did not become ready within {timeout:.0f} s; last answer:\n{last}\n{self._tail()}")

    def _tail(self) -> str:
        lines = (self.console_log() + self.messages_log()).strip().splitlines()
        return "\n".join(lines[-20:])

    def _stop_running(self, timeout: float) -> None:
        pid = self._pid()
        if pid is None:
            self._reap()
            return
        try:
            self.rx("core stop now", timeout=10)
        except SandboxError:
            pass  # not answering: the signals below
        if not self._wait_gone(pid, timeout):
            self._kill()
        self._reap()

    def _wait_gone(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.pid == pid:
                if self._process.poll() is not None:
                    return True
            elif not Path(f"/proc/{pid}").exists():
                return True
            time.sleep(0.1)
        return False

    def _kill(self) -> None:
        pid = self._pid()
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if pid is None:
                break
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            if self._wait_gone(pid, wait):
                break
        self._reap()

    def _reap(self) -> None:
        if self._process is not None:
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None


def _listens_on(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds a TCP socket listening on ``port`` (IPv4)."""
    try:
        fds = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        table = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    for line in table:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port and f"socket:[{fields[9]}]" in fds:
            return True
    return False


class _FileLock:
    """An ``flock`` on a file beside the root, so two processes never build, or run, the same root at once.

    Waits up to ``wait`` seconds for another process's lock (a build in
    progress), then gives up with ``SandboxError``.
    """

    def __init__(self, path: Path, *, wait: float) -> None:
        self.path = path
        self.wait = wait
        self.fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise SandboxBusy(f"another process is building or running the sandbox ({self.path} is locked)") from None
                time.sleep(0.5)
                continue
            self.fd = fd
            return

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None

    def __enter__(self) -> _FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _check_name(name: str, what: str) -> None:
    if not _SIMPLE_NAME.match(name):
        raise SandboxError(f"{what} {name!r} must be a plain file name")


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def _remove_tree(path: Path) -> None:
    """Remove a root; refuse while anything is mounted inside it, so a bind mount never takes host files with it."""
    if not path.exists() and not path.is_symlink():
        return
    prefix = str(path.resolve()) + "/"
    with open("/proc/mounts", encoding="utf-8") as mounts:
        for line in mounts:
            mountpoint = line.split()[1].replace("\\040", " ")
            if (mountpoint + "/").startswith(prefix):
                raise SandboxError(f"{mountpoint} is mounted inside {path}; unmount it first")
    shutil.rmtree(path)


# --- the hotline on a sandbox ---------------------------------------------------------------


def build_prompts(out: Path, langs: Sequence[str] = LANGS) -> Path:
    """The hotline's prompts and number sounds in ``out/<lang>/``, rendered (``voice_prompts.build``) unless all are there.

    ``BuildError`` (one line) when they cannot be rendered, e.g. without espeak-ng or sox.
    """
    out = Path(out)
    if not all((out / lang / f"{name}.wav").is_file() for lang in langs for name in sounds(lang)):
        render_prompts(out, langs)
    return out


def start_hotline(sandbox: Sandbox, prompts: Path, servers: Sequence[tuple[str, int]] = (),
                  api_key: bytes | None = None, *, wait: float = 0.0, ca_cert: bytes | None = None,
                  client: str = "hotline") -> Sandbox:
    """Build ``sandbox`` if needed, start it, install ``prompts`` (``build_prompts``) and point the AGI at ``servers``.

    With ``servers`` and ``api_key`` it also starts the FastAGI service beside
    Asterisk (``Sandbox.start_fastagi``), which then takes the calls.

    While another process runs the root, waits up to ``wait`` seconds for it
    (``SandboxBusy`` after that).  Without ``servers`` the AGI configuration
    is left as it is; ``api_key``, ``ca_cert`` and ``client`` are as for
    ``Sandbox.write_agi_config``.  If anything after the start fails, Asterisk is
    stopped again before the error goes on.
    """
    sandbox.build()
    deadline = time.monotonic() + wait
    while True:
        try:
            sandbox.start()
            break
        except SandboxBusy:
            if time.monotonic() >= deadline:
                raise
            time.sleep(2.0)
    try:
        sandbox.install_prompts(prompts)
        if servers:
            sandbox.write_agi_config(servers, api_key, ca_cert=ca_cert, client=client)
            if api_key is not None:
                sandbox.start_fastagi()
    except BaseException:
        sandbox.stop()
        raise
    return sandbox


# --- command line ------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m testkit.sandbox build|start|stop|status|path``; see the module docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m testkit.sandbox",
        description="Build and run the real-Asterisk test sandbox (a Debian sid root under chroot; needs root).",
        epilog="Example: python -m testkit.sandbox start --sip-port 5160 && "
               "sipp -sf call.xml -m 1 127.0.0.1:5160",
    )
    parser.add_argument("--root", help="the sandbox root (default: $ASTERISK_SANDBOX_DIR or ~/.cache/recharge-asterisk/root)")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build the root unless it is already built (about a minute, ~550 MB)")
    build.add_argument("--force", action="store_true", help="build again from nothing")
    start = commands.add_parser("start", help="build if needed, then start Asterisk in the background with the prompts installed")
    start.add_argument("--sip-port", type=int, default=DEFAULT_SIP_PORT, help=f"UDP port on 127.0.0.1 (default {DEFAULT_SIP_PORT})")
    start.add_argument("--server", action="append", default=[], metavar="HOST:PORT",
                       help="a recharge server for the AGI, primary first (repeat); writes /etc/recharge/agi.conf")
    start.add_argument("--api-key-file", type=Path, help="the hotline client's key (keys/api.key), copied into the root")
    start.add_argument("--ca-file", type=Path, help="the installation's CA certificate (keys/tls-ca.pem), copied into the root")
    start.add_argument("--prompts", type=Path, metavar="DIR",
                       help="keep the rendered prompts in DIR, rendering only what is missing there "
                            "(default: rendered afresh for this start)")
    commands.add_parser("stop", help="stop Asterisk")
    commands.add_parser("status", help="say whether the root is built and Asterisk is running")
    commands.add_parser("path", help="print the root")
    args = parser.parse_args(argv)

    root = resolve_root(args.root, os.environ)
    sandbox = Sandbox(root, getattr(args, "sip_port", DEFAULT_SIP_PORT))
    try:
        if args.command == "path":
            print(root)
        elif args.command == "build":
            started = time.monotonic()
            built = sandbox.build(force=args.force)
            print(f"{'built' if built else 'already built'}: {root} ({time.monotonic() - started:.0f} s)")
        elif args.command == "start":
            servers = [parse_server(s) for s in args.server]
            key = args.api_key_file.read_bytes() if args.api_key_file else None
            ca = args.ca_file.read_bytes() if args.ca_file else None
            sandbox.build()
            started = time.monotonic()
            with tempfile.TemporaryDirectory(prefix="recharge-prompts-") as scratch:
                start_hotline(sandbox, build_prompts(args.prompts or Path(scratch)), servers, key, ca_cert=ca)
            if servers and key:
                print(f"FastAGI service on tcp:127.0.0.1:{sandbox.fastagi_port} (log {sandbox.log_dir / 'fastagi.log'})")
            print(f"Asterisk is running in {root}, SIP on udp:127.0.0.1:{args.sip_port}, "
                  f"prompts in {', '.join(LANGS)} ({time.monotonic() - started:.1f} s); call 95598")
        elif args.command == "stop":
            sandbox.stop()
            print("stopped")
        elif args.command == "status":
            print(f"root: {root} ({'built' if sandbox.is_built() else 'not built'})")
            if sandbox.is_running():
                print(sandbox.rx("core show version").strip())
                print(sandbox.rx("pjsip show transports").strip())
            else:
                print("Asterisk is not running")
    except (SandboxError, BuildError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # the API key file cannot be read, a prompt folder cannot be written
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
