"""The layers of the code, checked two ways.

Imports between the packages (read from the source with `ast`, every import statement, including
those inside functions): `shared` is used by everyone and imports none of the others; `frontend`
and `workers` never import each other (they meet only through envelopes, shared/envelope.py);
only `launcher` (the `finops` command and the supervisor) may know them all, and nothing imports it.

Pure modules do no I/O: no sockets, no event loop, no files (no SQLite, no model files): they
must load with trio, zmq, httpx, the HTTP stacks, sqlite3 and the model runtimes blocked, and
their source calls nothing that opens a file. Modules that read local files but never the network
(LOCAL_IO) must still load without the event loop and the network stacks.
(botocore is allowed: sigv4 builds on its signer, which pulls in the stdlib `socket` module via
`email.utils` without using it.)
"""
from __future__ import annotations

import ast
import importlib.util
import pathlib
import subprocess
import sys

import pytest

PACKAGES = ("shared", "frontend", "workers", "launcher")
MAY_NOT_IMPORT = {
    "shared": ("frontend", "workers", "launcher"),
    "frontend": ("workers", "launcher"),
    "workers": ("frontend", "launcher"),
    "launcher": (),
}

PURE = ["finops.shared.eventstream", "finops.shared.envelope", "finops.shared.errors", "finops.shared.model",
        "finops.shared.config_schema", "finops.shared.provider_config",
        "finops.shared.sigv4", "finops.shared.governance", "finops.frontend.routes",
        "finops.workers.formats.common", "finops.workers.formats.bedrock.converse",
        "finops.workers.formats.bedrock.families", "finops.workers.formats.bedrock.usage",
        "finops.workers.formats.openai.api", "finops.workers.formats.mistral.api", "finops.workers.formats.anthropic.api",
        "finops.workers.formats.sse", "finops.workers.formats.provider_errors",
        "finops.workers.governance.auth", "finops.workers.ledger.state",
        "finops.workers.governance.pricing", "finops.workers.governance.periods", "finops.workers.governance.bounds",
        "finops.workers.ledger.redis_lua",
        "finops.workers.cache.keys", "finops.workers.cache.index", "finops.workers.observe.metrics",
        "finops.workers.observe.exposition",
        "finops.workers.admin.routes", "finops.workers.alerts.rules", "finops.workers.alerts.payload",
        "finops.workers.formats.bedrock.guardrail", "finops.workers.governance.guardrail_prices",
        "finops.workers.governance.tiers"]

# Read local files, never the network. config: the TOML file, the environment, the TLS files it
# names; logdb, report, dashboard: SQLite; embedder: the ONNX model and tokenizer files;
# ui_static: the dashboard's files.
LOCAL_IO = ["finops.shared.config", "finops.workers.observe.logdb", "finops.workers.observe.report",
            "finops.workers.observe.dashboard", "finops.workers.cache.embedder", "finops.frontend.ui_static",
            "finops.workers.alerts.outbox", "finops.workers.alerts.spend"]

NETWORK = ("trio", "zmq", "httpx", "httpcore", "hypercorn", "h11", "h2")
FILES = ("sqlite3", "_sqlite3", "onnxruntime", "tokenizers")      # faiss is allowed: an index in memory
# calls that touch files: builtins, and attributes of modules that a pure module may import
FILE_CALLS = {"open"}
FILE_ATTRS = {("os", a) for a in ("open", "listdir", "scandir", "stat", "makedirs", "mkdir", "remove", "unlink",
                                  "replace", "rename", "walk", "chmod")} | {
             ("path", a) for a in ("exists", "isfile", "isdir", "getsize", "getmtime")} | {
             ("glob", "glob"), ("shutil", "*"), ("tempfile", "*"), ("pathlib", "*"), ("faiss", "read_index"),
             ("faiss", "write_index")}

BLOCKER = """
import sys
blocked = tuple(sys.argv[2].split(','))
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in blocked:
            raise ImportError('imported ' + name + ', which is blocked here')
sys.meta_path.insert(0, Block())
import importlib
importlib.import_module(sys.argv[1])
"""


def module_files(module: str) -> list[tuple[pathlib.Path, str]]:
    """(source file, module name) of `module`, or of every module in it when it is a package."""
    spec = importlib.util.find_spec(module)
    if not spec.submodule_search_locations:
        return [(pathlib.Path(spec.origin), module)]
    root = pathlib.Path(list(spec.submodule_search_locations)[0])
    return [(path, ".".join([module, *[p for p in path.relative_to(root).with_suffix("").parts if p != "__init__"]]))
            for path in sorted(root.rglob("*.py"))]


def imported(path: pathlib.Path, module: str) -> set[str]:
    """Every module `path` (the source of `module`) imports, relative imports resolved."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


@pytest.mark.parametrize("top", PACKAGES)
def test_packages_import_only_the_layers_below(top):
    bad = []
    for path, module in module_files(f"finops.{top}"):
        for name in imported(path, module):
            for other in MAY_NOT_IMPORT[top]:
                if name == f"finops.{other}" or name.startswith(f"finops.{other}."):
                    bad.append(f"{path}: {module} imports {name}")
    assert not bad, "\n".join(bad)


def test_the_check_sees_imports_in_every_form(tmp_path):
    """The scan is not fooled by relative imports, imports inside functions, or `from . import x`."""
    src = tmp_path / "m.py"
    src.write_text("import os\nfrom ..workers import pipeline\ndef f():\n    from finops.frontend.app import App\n"
                   "    from . import sibling\n")
    got = imported(src, "finops.shared.m")
    assert {"finops.workers", "finops.workers.pipeline", "finops.frontend.app", "finops.shared.sibling", "os"} <= got


def file_calls(path: pathlib.Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Name) and f.id in FILE_CALLS:
            out.append(f"{path}:{node.lineno}: {f.id}()")
        elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
            if (f.value.id, f.attr) in FILE_ATTRS or (f.value.id, "*") in FILE_ATTRS:
                out.append(f"{path}:{node.lineno}: {f.value.id}.{f.attr}()")
        elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Attribute) and f.value.attr == "path":
            if ("path", f.attr) in FILE_ATTRS:
                out.append(f"{path}:{node.lineno}: os.path.{f.attr}()")
    return out


@pytest.mark.parametrize("module", PURE)
def test_pure_module_touches_no_file(module):
    bad = [c for p, _ in module_files(module) for c in file_calls(p)]
    bad += [f"{p}: imports {n}" for p, m in module_files(module) for n in imported(p, m)
            if n.split(".")[0] in FILES + NETWORK]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_no_io(module):
    r = subprocess.run([sys.executable, "-c", BLOCKER, module, ",".join(NETWORK + FILES)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.parametrize("module", LOCAL_IO)
def test_local_io_module_imports_no_network(module):
    r = subprocess.run([sys.executable, "-c", BLOCKER, module, ",".join(NETWORK)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
