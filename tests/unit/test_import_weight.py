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


def _modules_of(*packages: str) -> list[str]:
    import importlib
    import pkgutil

    found = []
    for name in packages:
        package = importlib.import_module(name)
        found.append(name)
        found += [info.name for info in pkgutil.walk_packages(package.__path__, f"{name}.")]
    return found


def test_the_protocol_core_loads_without_yaml() -> None:
    modules = _modules_of("scep_ca.asn1", "scep_ca.protocol")
    assert {"scep_ca.protocol.message", "scep_ca.protocol.envelope", "scep_ca.protocol.csr"} <= set(modules)
    result = _load("yaml", modules)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[]\n", result.stdout


def test_load_config_still_comes_from_the_config_package() -> None:
    """``from config import load_config`` loads the loader (and yaml) on first use."""
    then = (
        "assert 'yaml' not in sys.modules\n"
        "from config import ENV_PREFIX, load_config\n"
        "assert ENV_PREFIX == 'SCEP_CA_' and load_config(None, {}, {}).server.port == 8080\n"
        "assert 'yaml' in sys.modules"
    )
    result = _load("none", ["config"], then)
    assert (result.returncode, result.stdout) == (0, "[]\n"), result.stderr
