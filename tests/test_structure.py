"""The shape of the house: the core imports none of its consumers, has no import cycles, lists
every package for installation, and its command line lists every command without importing torch."""

from __future__ import annotations

import ast
import configparser
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "maeast_embed"
CONSUMERS = ("upstream", "maeast_upstream", "hear_module", "probes", "suites", "maeast_suites")


def core_modules() -> list[str]:
    names = []
    for path in sorted(CORE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


BLOCKER = """
import importlib, sys
BLOCKED = {blocked!r}

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is blocked: the core must not import its consumers")
        return None

sys.meta_path.insert(0, Blocker())
for name in {modules!r}:
    importlib.import_module(name)
print("imported", len({modules!r}))
"""


def test_every_core_module_imports_with_the_consumers_unimportable(tmp_path):
    modules = core_modules()
    assert "maeast_embed.extract.run" in modules and "maeast_embed.cli" in modules
    script = BLOCKER.format(blocked=CONSUMERS, modules=modules)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"imported {len(modules)}" in result.stdout


def imports_of(path: Path, module: str) -> set[str]:
    """Every module of the core that `module` imports, at any depth of its code."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            base = base[: len(base) - node.level + 1] if node.level else []
            target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the import graph (a package's __init__ importing its own modules aside)."""
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if nxt.startswith(node + "."):
                continue
            if state.get(nxt) == "open":
                return [*trail, node, nxt]
            if nxt not in state and (cycle := visit(nxt, [*trail, node])):
                return cycle
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node, [])):
            return cycle
    return None


def test_no_import_cycles_in_the_core():
    modules = set(core_modules())
    graph = {}
    for path in CORE.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        graph[name] = {m for m in imports_of(path, name) if m in modules and m != name}
    assert "maeast_embed.features" in graph["maeast_embed.extract.engine"]  # the graph sees imports
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
    # the check itself finds the cycle the file-level API used to make (features <-> extract)
    graph["maeast_embed.features"].add("maeast_embed.extract.engine")
    assert find_cycle(graph) is not None


def test_setup_cfg_lists_every_package():
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    listed = set(config["options"]["packages"].split())
    mapped = dict(line.split(" = ") for line in config["options"]["package_dir"].strip().splitlines())
    folders = {v: k for k, v in mapped.items()}
    found = set()
    for top in (p for p in REPO.iterdir() if (p / "__init__.py").is_file()):  # the top-level packages
        for init in top.rglob("__init__.py"):
            parts = init.parent.relative_to(REPO).parts
            found.add(".".join([folders.get(parts[0], parts[0]), *parts[1:]]))
    assert found == listed


def test_help_lists_every_command_without_importing_torch(tmp_path):
    script = (
        "import sys\n"
        "from maeast_embed.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    listed = {line.split()[0] for line in result.stdout.split("Commands:")[1].splitlines() if line.strip()}
    plugins = {ep.name for ep in entry_points(group="maeast_embed.commands")}
    assert plugins == {"hear", "probe", "s3prl", "xares", "mteb", "bench"}
    assert listed >= {"extract", "info", "pretrain", *plugins} and "unavailable" not in result.stdout
    assert result.stdout.strip().endswith("NO-TORCH")


def test_a_broken_plugin_is_listed_as_unavailable_and_the_rest_works(monkeypatch):
    from click.testing import CliRunner

    from maeast_embed import cli

    monkeypatch.setitem(cli.CORE, "broken", "no_such_module_anywhere:command")
    runner = CliRunner()
    assert "(unavailable: ModuleNotFoundError" in runner.invoke(cli.main, ["--help"]).output
    result = runner.invoke(cli.main, ["broken"])
    assert result.exit_code == 1 and "cannot be loaded" in result.output
    assert runner.invoke(cli.main, ["s3prl", "--help"]).exit_code == 0
