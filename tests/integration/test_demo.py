"""`bridge demo`: the scripted scene plays end to end over loopback, as a user runs it.

The command runs in a subprocess (its own event loop, signals and exit status, exactly as
`make demo` runs it) with BRIDGE_DEMO_FREE_PORTS=1, so the tests never need the example's
fixed ports to be free on this machine.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import tomllib
import urllib.request
from pathlib import Path

from bridge.simpeers import layout

ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 30


def _demo_command(*args: str) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "BRIDGE_DEMO_FREE_PORTS": "1", "PYTHONUNBUFFERED": "1"}
    return [sys.executable, "-m", "bridge", "demo", *args], env


def test_demo_once_plays_both_calls_with_audio_and_exits_0() -> None:
    command, env = _demo_command("--once")
    result = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=DEADLINE_S
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "✘" not in out, out
    assert "✔ 通过：第 1 步" in out
    assert "✔ 通过：第 2 步" in out
    assert "结果：2/2 步通过" in out
    # The seats registered through a digest challenge before anything else happened.
    assert out.count("REGISTER → 401 质询") == 2
    assert out.count("REGISTER → 200 OK") == 2
    # Each side of each call reports the packets it received, and heard the other's tone.
    received = [int(n) for n in re.findall(r"收到 RTP (\d+) 包", out)]
    assert len(received) == 4, out
    assert min(received) >= 50
    assert "听到 620 Hz" in out  # the 12345 seat, heard by the citizen
    assert "听到 820 Hz" in out  # the 110 seat
    assert out.count("听到 440 Hz") == 2  # the citizen, heard by each seat
    # Who hung up: the citizen in step 1, the 110 seat in step 2; the bridge saw both.
    assert "reason=BYE from caller" in out
    assert "reason=BYE from callee" in out
    # Transfers are not faked: the script says they are missing.
    assert "一键转接" in out
    assert "三方通话" in out
    assert "尚未实现" in out
    assert "issue 5" in out
    # Callers' numbers appear masked only.
    assert "13800138000" not in out
    assert "13900139001" not in out
    assert "138****00" in out
    assert "139****01" in out


def test_demo_keeps_serving_the_console_until_sigterm() -> None:
    command, env = _demo_command()
    with subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        guard = threading.Timer(DEADLINE_S, process.kill)
        guard.start()
        try:
            assert process.stdout is not None
            lines: list[str] = []
            for line in process.stdout:
                lines.append(line)
                if "Ctrl-C" in line:
                    break
            out = "".join(lines)
            assert "结果：2/2 步通过" in out, out
            console = re.search(r"控制台\s+(http://\S+?)/?\s", out)
            assert console is not None, out
            with urllib.request.urlopen(f"{console.group(1)}/healthz", timeout=5) as reply:
                assert reply.status == 200
            process.send_signal(signal.SIGTERM)
            rest, errors = process.communicate(timeout=15)
        finally:
            guard.cancel()
        assert process.returncode == 0, out + rest + errors
        assert "正在停止" in rest


def test_a_taken_port_is_replaced_by_a_free_one() -> None:
    held = [socket.socket(socket.AF_INET, kind) for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM)]
    try:
        held[0].bind((layout.HOST, 0))
        port = held[0].getsockname()[1]
        held[1].bind((layout.HOST, port))
        held[1].listen()
        chosen, moved = layout.choose_port(port)
        assert moved
        assert chosen != port
        assert layout.port_is_free(chosen)
    finally:
        for sock in held:
            sock.close()
    assert layout.choose_port(port) == (port, False)


def test_the_demo_copy_of_the_config_keeps_every_setting() -> None:
    data = tomllib.loads((ROOT / "config.example.toml").read_text(encoding="utf-8"))
    assert tomllib.loads(layout.to_toml(data)) == data
