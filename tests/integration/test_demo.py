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

import pytest

from bridge.simpeers import layout

ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 60


def _demo_command(*args: str) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "BRIDGE_DEMO_FREE_PORTS": "1", "PYTHONUNBUFFERED": "1"}
    return [sys.executable, "-m", "bridge", "demo", *args], env


@pytest.fixture(scope="module")
def out() -> str:
    """What one `bridge demo --once` printed; it exited 0. Shared by the tests reading it."""
    command, env = _demo_command("--once")
    result = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=DEADLINE_S
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    return out


def _step(out: str, number: int) -> str:
    """The part of the output that step ``number`` printed."""
    start = out.index(f"第 {number} 步：")
    end = out.index(f"通过：第 {number} 步", start)
    return out[start : out.index("\n", end)]


def test_demo_once_plays_every_step_and_exits_0(out: str) -> None:
    assert "✘" not in out, out
    for number in range(1, 7):
        assert f"✔ 通过：第 {number} 步" in out
    assert "结果：6/6 步通过" in out
    # Nothing is announced as missing any more.
    assert "尚未实现" not in out
    # The seats and the supervisor's phone registered through a digest challenge before
    # anything else happened, the supervisor with the example config's own credentials.
    assert out.count("REGISTER → 401 质询") == 3
    assert out.count("REGISTER → 200 OK") == 3
    assert "✔ 班长 sup01（sup01）注册成功" in out
    assert "班长 sup01 的话机在配置里没有口令" not in out
    # Callers' numbers appear masked only.
    assert "13800138000" not in out
    assert "13900139001" not in out
    assert "138****00" in out
    assert "139****01" in out


def test_demo_plain_calls_carry_audio_both_ways(out: str) -> None:
    for number, seat_hz in ((1, 620), (2, 820)):
        step = _step(out, number)
        # Each side reports the packets it received, and heard the other's tone.
        received = [int(n) for n in re.findall(r"收到 RTP (\d+) 包", step)]
        assert len(received) == 2, step
        assert min(received) >= 50
        assert f"听到 {seat_hz} Hz" in step
        assert "听到 440 Hz" in step
    # Who hung up: the citizen in step 1, the 110 seat in step 2; the bridge saw both.
    assert "reason=BYE from caller" in _step(out, 1)
    assert "reason=BYE from callee" in _step(out, 2)


def _assert_ticket_reached(step: str, desk: str) -> str:
    """Whoever the bridge rang for ``desk`` (its seat on duty, else its PBX) got the ticket
    headers and opened the ticket from its link; the desk's screen popped the ticket while the
    call still rang. Returns the ticket id."""
    ticket_id = re.search(rf"{desk} \S+ ?\S*\s+收到 X-Ticket-Id: (T\w+)", step)
    assert ticket_id is not None, step
    tid = ticket_id.group(1)
    assert f"收到 User-to-User: {tid.encode().hex()};encoding=hex" in step
    assert re.search(rf"收到 Call-Info: <http://[^>]+/api/v1/tickets/{tid}\?token=…>", step)
    assert "purpose=ticket" in step
    assert "收到 Referred-By: <sip:agent" in step
    assert "GET Call-Info 链接（无需令牌，签名即凭据）→ 200" in step
    assert f"工单 {tid}：来源" in step
    assert re.search(rf"{desk} 工作台\s+WebSocket 弹屏：工单 {tid} 振铃中", step)
    assert "工单事件：transfer_requested → ringing → transferred" in step
    # The screen pop came before the target answered: the transferred call was still ringing.
    rang = step.index("收到 X-Ticket-Id")
    assert step.index("WebSocket 弹屏") < step.index("摘机应答", rang)
    return tid


def _heard(step: str, who: str, tones: str) -> bool:
    """``who`` reported hearing exactly ``tones`` after the transfer."""
    return re.search(rf"{who}\s+收到 RTP \d+ 包，听到 {tones}\n", step) is not None


def test_demo_transfers_by_key_and_by_api_release_the_agent(out: str) -> None:
    key = _step(out, 3)
    assert "按键 *1（RFC 4733 telephone-event" in key
    _assert_ticket_reached(key, "110")
    assert "转接完成，桥接释放了 12345" in key
    # After the transfer the citizen (440 Hz) and the 110 desk (its seat 820 Hz, or its PBX
    # 1000 Hz) hear each other, and no longer the 12345 seat (620 Hz).
    assert _heard(key, "运营商中继", "(820|1000) Hz"), key
    assert _heard(key, "110 \\S+ \\S+", "440 Hz"), key

    api = _step(out, 4)
    assert "POST /api/v1/calls/C" in api
    assert "← 202，工单 T" in api
    _assert_ticket_reached(api, "12345")
    # The 12345 side reads what the 110 desk wrote.
    assert "来源 110，类别 environment，紧急 否" in api
    assert "摘要：工地夜间施工噪声扰民" in api
    assert "地点：幸福路 8 号在建工地" in api
    assert "转接完成，桥接释放了 110" in api
    assert _heard(api, "运营商中继", "(620|1000) Hz"), api
    assert "reason=BYE from target" in api


def test_demo_three_way_call_keeps_the_agent_and_mixes_all_three(out: str) -> None:
    step = _step(out, 5)
    assert "按键 *2（SIP INFO application/dtmf-relay" in step
    _assert_ticket_reached(step, "110")
    assert "桥接释放了" not in step
    assert "三方通话：12345" in step
    # Each party hears the other two: citizen 440, 12345 seat 620, 110 seat 820 (PBX 1000) Hz.
    assert _heard(step, "运营商中继", "620 Hz、(820|1000) Hz"), step
    assert _heard(step, "12345 \\S+ \\d+", "440 Hz、(820|1000) Hz"), step
    assert _heard(step, "110 \\S+ \\S+", "440 Hz、620 Hz"), step


def test_demo_supervisor_listens_then_whispers(out: str) -> None:
    step = _step(out, 6)
    asked = re.search(r"/api/v1/calls/(C[\w-]+)/supervise（supervisor=sup01，mode=listen）", step)
    assert asked is not None, step
    call_id = asked.group(1)
    assert "← 202，状态 ringing，模式 listen" in step
    assert re.search(r"班长 sup01\s+← INVITE：来电振铃", step), step
    listen, whisper = step.split("mode=whisper）", 1)
    # Listen: the supervisor (1200 Hz) hears the citizen (440 Hz) and the 12345 seat (620 Hz);
    # neither of them hears the supervisor.
    assert _heard(listen, "班长 sup01", "440 Hz、620 Hz"), listen
    assert _heard(listen, "运营商中继", "620 Hz"), listen
    assert _heard(listen, "12345 \\S+ \\d+", "440 Hz"), listen
    # Whisper, on the same leg (200, not a second ringing): the seat hears the supervisor too,
    # the citizen still does not.
    assert "← 200，状态 joined，模式 whisper" in whisper
    assert "← INVITE" not in whisper
    assert _heard(whisper, "班长 sup01", "440 Hz、620 Hz"), whisper
    assert _heard(whisper, "运营商中继", "620 Hz"), whisper
    assert _heard(whisper, "12345 \\S+ \\d+", "440 Hz、1200 Hz"), whisper
    # The supervisor's console followed it on the events WebSocket; the call's end ended it.
    assert (
        f"通话 {call_id} 的监听事件：supervise_requested → supervisor_joined → "
        "supervise_mode_changed → supervisor_left"
    ) in step
    assert "班长 sup01 一侧通话随之结束" in step


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
            assert "结果：6/6 步通过" in out, out
            console = re.search(r"控制台\s+(http://\S+?)/?\s", out)
            assert console is not None, out
            with urllib.request.urlopen(f"{console.group(1)}/healthz", timeout=5) as reply:
                assert reply.status == 200
            process.send_signal(signal.SIGTERM)
            rest, errors = process.communicate(timeout=15)
        finally:
            guard.cancel()
            if process.poll() is None:  # a failed assertion must not leave it serving
                process.kill()
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
