"""The optional native build: the call core and the relay's packet path compiled with mypyc,
used only while it matches the source.

The signalling core (``bridge/sip``, ``bridge/calls``) and the relay's packet path are plain,
fully typed Python, so mypyc can compile them to C extension modules unchanged; the core runs
the same code at about 1.5 times the speed, which is what lets one signalling process carry
500 calls/s, and the relay costs about what a bare relay does (BENCHMARKS.md). As with
aiohttp's C parser, the compiled modules are an accelerator, never a requirement: without a C
compiler, with ``BRIDGE_PURE=1``, or when any compiled source has changed since the build, the
same modules run as Python.

The build goes to ``build/native`` beside the package (``make native``, which ``make demo``,
``make test`` and ``make bench`` run first), never into the source tree, where a stale ``.so``
would shadow an edited ``.py``. Its manifest records each source's SHA-256 and the interpreter's
extension suffix; :func:`install` checks both before putting a finder for the compiled modules
at the front of ``sys.meta_path``, so an edit falls back to Python at once, with one logged
warning (not a Python warning: a test run after an edit goes on, as Python).
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import logging
import os
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

PACKAGE_DIR = Path(__file__).resolve().parent
BUILD_DIR = PACKAGE_DIR.parent / "build" / "native"
MANIFEST = BUILD_DIR / "manifest.json"
GROUP = "bridge._native"
"""The one shared library every compiled module's shim loads (``bridge._native__mypyc``)."""

COMPILED = (
    *("sip/*.py", "sip/transaction/*.py", "calls/*.py"),
    *("media/rtp.py", "media/stats.py", "media/continuity.py", "media/dtmf.py"),
    *("media/endpoint.py", "media/relay.py", "media/silence.py"),
)
"""What is compiled (globs under ``bridge/``): the path of every SIP message and RTP packet."""
NOT_COMPILED = frozenset({"sip/errors.py"})
"""mypyc exception classes keep class attributes per class, not per instance: the errors'
``status`` and ``reason`` defaults, overridden by subclasses, must stay Python."""


def sources() -> list[Path]:
    """The modules the native build compiles, in a stable order."""
    found: list[Path] = []
    for pattern in COMPILED:
        for path in sorted(PACKAGE_DIR.glob(pattern)):
            relative = path.relative_to(PACKAGE_DIR).as_posix()
            if path.name != "__init__.py" and relative not in NOT_COMPILED:
                found.append(path)
    return found


def module_name(path: Path) -> str:
    return "bridge." + ".".join(path.relative_to(PACKAGE_DIR).with_suffix("").parts)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _suffix() -> str:
    return str(sysconfig.get_config_var("EXT_SUFFIX"))


class _NativeFinder(importlib.abc.MetaPathFinder):
    """Resolve the compiled modules (and their shared library) to the native build."""

    def __init__(self, libraries: dict[str, Path]) -> None:
        self.libraries = libraries

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        library = self.libraries.get(fullname)
        if library is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(library))
        return importlib.util.spec_from_file_location(fullname, library, loader=loader)


def stale_reason(manifest: dict[str, object]) -> str | None:
    """Why a native build cannot stand in for the source, or None when it matches."""
    if manifest.get("ext_suffix") != _suffix():
        return "built for another Python"
    recorded = manifest.get("sources")
    if not isinstance(recorded, dict):
        return "no source list"
    current = {module_name(path): path for path in sources()}
    if set(current) != set(recorded):
        return "the set of compiled modules changed"
    for name, path in current.items():
        if recorded[name] != digest(path):
            return f"{path.relative_to(PACKAGE_DIR.parent)} changed since the build"
    return None


def _read_manifest() -> dict[str, object]:
    try:
        manifest = json.loads(MANIFEST.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def status() -> str:
    """How a bridge started now runs its call core (benchmarks print it beside their figures)."""
    if os.environ.get("BRIDGE_PURE"):
        return "as Python (BRIDGE_PURE)"
    if not MANIFEST.exists():
        return "as Python (no native build)"
    reason = stale_reason(_read_manifest())
    return "compiled" if reason is None else f"as Python ({reason})"


def install() -> bool:
    """Use the native build when it exists and matches the source; say why not otherwise."""
    if os.environ.get("BRIDGE_PURE") or not MANIFEST.exists():
        return False
    if any(isinstance(finder, _NativeFinder) for finder in sys.meta_path):
        return True
    reason = stale_reason(_read_manifest())
    if reason is None:
        libraries = {
            name: BUILD_DIR / f"{name.replace('.', '/')}{_suffix()}"
            for name in [*map(module_name, sources()), f"{GROUP}__mypyc"]
        }
        if all(path.exists() for path in libraries.values()):
            sys.meta_path.insert(0, _NativeFinder(libraries))
            return True
        reason = "a compiled module is missing"
    logging.getLogger(__name__).warning(
        "native build not used (%s): the call core runs as Python; `make native` rebuilds", reason
    )
    return False


def active() -> bool:
    """Whether the call core in this process runs compiled (the ``ready:`` log line, and
    ``bridge_call_core_compiled`` on /metrics)."""
    return getattr(sys.modules.get("bridge.sip.message"), "__file__", "").endswith(_suffix())


def build() -> None:
    """Compile :func:`sources` into ``build/native`` and write the manifest last, so an
    interrupted build is never taken for a finished one."""
    from mypyc.build import mypycify
    from setuptools import setup  # type: ignore[import-untyped]

    paths = sources()
    MANIFEST.unlink(missing_ok=True)
    root = PACKAGE_DIR.parent
    os.chdir(root)  # mypy reads the project's configuration (pyproject.toml) from here
    relative = [str(path.relative_to(root)) for path in paths]
    setup(
        name="bridge-native",
        ext_modules=mypycify(relative, group_name=GROUP, target_dir="build/native-c"),
        script_args=[
            "build_ext",
            "--build-lib",
            str(BUILD_DIR),
            "--build-temp",
            str(root / "build" / "native-tmp"),
        ],
    )
    manifest = {
        "ext_suffix": _suffix(),
        "sources": {module_name(path): digest(path) for path in paths},
    }
    MANIFEST.write_text(json.dumps(manifest, indent=1), encoding="utf-8")


if __name__ == "__main__":
    build()
