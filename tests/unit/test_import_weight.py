"""What importing a layer drags in, checked in a fresh interpreter (this one has loaded everything).

The operator CLI must not load the web server (aiohttp): only ``serve`` needs it, and the
validators' HTTP client loads only for the commands that call out. The protocol core must load
without the YAML parser: ``config``'s loader is imported on first use, not by ``import config``.
"""

from __future__ import annotations

import subprocess
import sys

# A finder that makes the named top-level packages unimportable, then the imports under test;
# it prints the modules of those packages that were loaded anyway (none, if all is well).
_PROBE = """
import importlib, importlib.abc, sys
blocked = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] in blocked:
            raise ImportError(f"{name} is blocked in this test")
        return None
sys.meta_path.insert(0, Block())
for module in sys.argv[2].split(","):
    importlib.import_module(module)
exec(sys.argv[3])
print(sorted(m for m in sys.modules if m.partition(".")[0] in blocked))
"""


def _load(blocked: str, modules: list[str], then: str = "pass") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _PROBE, blocked, ",".join(modules), then],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_cli_loads_without_aiohttp() -> None:
    result = _load(
        "aiohttp,multidict,yarl",
        ["scep_ca.cli", "scep_ca.cli.main"],
        "sys.modules['scep_ca.cli.main'].build_parser()",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[]\n", result.stdout
