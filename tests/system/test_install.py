"""Installing like a Python tool: `pip install <checkout>`, `pipx install` and `uv tool install` all
build the same wheel. It must carry every module of the four folders, the dashboard's files, the
embedder's tokenizer and the `finops` command, and say which Pythons it runs on."""
from __future__ import annotations

import pathlib
import subprocess
import sys
import zipfile

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOP = ("frontend", "workers", "shared", "launcher")


def test_the_wheel_carries_the_code_its_data_and_the_command(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        scripts = z.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    missing = [f"finops/{p.relative_to(ROOT).as_posix()}" for t in TOP for p in (ROOT / t).rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
               and f"finops/{p.relative_to(ROOT).as_posix()}" not in names]
    assert not missing, missing
    assert {"finops/frontend/ui/index.html", "finops/workers/cache/assets/tokenizer.json"} <= names
    assert "finops = finops.launcher.cli:main" in scripts
    assert "Requires-Python: <3.14,>=3.11" in meta
    assert not [n for n in names if n.startswith(("tests/", "scripts/"))]
