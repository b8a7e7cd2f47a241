"""The native build (bridge/native.py): used when it matches the source, Python otherwise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from bridge import native

REPORT = (
    "import bridge.calls.b2bua, bridge.sip.message as m; from bridge import native; "
    "print(native.active(), m.__file__)"
)


def current_manifest() -> dict[str, object]:
    return {
        "ext_suffix": sysconfig.get_config_var("EXT_SUFFIX"),
        "sources": {native.module_name(p): native.digest(p) for p in native.sources()},
    }


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "BRIDGE_PURE"} | env
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
        check=True,
    )


def test_the_compiled_modules_are_the_call_core_and_not_the_errors() -> None:
    names = {native.module_name(path) for path in native.sources()}
    assert {"bridge.sip.message", "bridge.sip.transaction.layer", "bridge.calls.b2bua"} <= names
    assert "bridge.sip.errors" not in names
    assert not any(name.endswith("__init__") for name in names)


def test_a_build_matching_the_source_stands_in_for_it() -> None:
    assert native.stale_reason(current_manifest()) is None


def test_an_edited_module_is_not_taken_from_the_build() -> None:
    manifest = current_manifest()
    sources = manifest["sources"]
    assert isinstance(sources, dict)
    sources["bridge.calls.reinvite"] = "0" * 64
    assert native.stale_reason(manifest) == "bridge/calls/reinvite.py changed since the build"


def test_a_build_for_another_python_or_module_set_is_not_used() -> None:
    other_python = current_manifest() | {"ext_suffix": ".cpython-312-x86_64-linux-gnu.so"}
    assert native.stale_reason(other_python) == "built for another Python"
    fewer = current_manifest()
    sources = fewer["sources"]
    assert isinstance(sources, dict)
    del sources["bridge.sip.sdp"]
    assert native.stale_reason(fewer) == "the set of compiled modules changed"
    assert native.stale_reason({}) == "built for another Python"


def test_the_call_core_runs_compiled_once_built() -> None:
    status = native.status()
    if status != "compiled" and not os.environ.get("CI"):  # CI builds it first (make test)
        pytest.skip(f"call core {status} here: `make native` compiles it")
    active, path = run_python(REPORT).stdout.split()
    assert active == "True"
    assert path.endswith(sysconfig.get_config_var("EXT_SUFFIX"))
    assert Path(path).is_relative_to(native.BUILD_DIR)


def test_bridge_pure_runs_the_python_modules() -> None:
    active, path = run_python(REPORT, BRIDGE_PURE="1").stdout.split()
    assert (active, Path(path)) == ("False", native.PACKAGE_DIR / "sip" / "message.py")


def test_a_stale_build_falls_back_to_python_and_says_why(tmp_path: Path) -> None:
    manifest = current_manifest()
    sources = manifest["sources"]
    assert isinstance(sources, dict)
    sources["bridge.sip.uri"] = "0" * 64
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    code = (
        "import os, pathlib; from bridge import native; del os.environ['BRIDGE_PURE']; "
        f"native.MANIFEST = pathlib.Path({str(tmp_path / 'manifest.json')!r}); "
        "print(native.install()); " + REPORT
    )
    result = run_python(code, BRIDGE_PURE="1")
    assert result.stdout.split()[:2] == ["False", "False"]
    assert "native build not used (bridge/sip/uri.py changed since the build)" in result.stderr
