"""frontend/ui_static.py: which paths map to which dashboard files, and with what headers."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from finops.frontend import ui_static

UI = ui_static.UI_DIR


def hdrs(entry) -> dict[bytes, bytes]:
    return dict(entry[1])


@pytest.mark.parametrize("path", [b"/ui", b"/ui/"])
def test_root_is_index_html(path):
    body, headers = ui_static.lookup(path)
    with open(os.path.join(UI, "index.html"), "rb") as f:
        assert body == f.read()
    h = dict(headers)
    assert h[b"content-type"] == b"text/html; charset=utf-8"
    assert h[b"cache-control"] == b"no-cache"
    assert h[b"content-length"] == str(len(body)).encode()


def test_every_file_in_the_folder_is_served_with_its_type():
    want = {".html": b"text/html", ".js": b"text/javascript", ".css": b"text/css", ".txt": b"text/plain",
            ".svg": b"image/svg+xml"}
    names = sorted(os.listdir(UI))
    assert {"index.html", "dashboard.js", "dashboard.css", "chart.umd.min.js", "chart.js.LICENSE.txt"} <= set(names)
    for name in names:
        found = ui_static.lookup(b"/ui/" + name.encode())
        assert found is not None, name
        h = hdrs(found)
        assert h[b"content-type"].startswith(want[os.path.splitext(name)[1]]), name
        assert h[b"cache-control"] == (b"no-cache" if name == "index.html" else ui_static.ASSET_CACHE)


def test_security_headers_on_every_answer():
    for path in (b"/ui/", b"/ui/dashboard.js", b"/ui/chart.js.LICENSE.txt"):
        h = hdrs(ui_static.lookup(path))
        assert h[b"x-content-type-options"] == b"nosniff"
        csp = h[b"content-security-policy"].decode()
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["default-src"] == "'self'"
        assert directives["script-src"] == "'self'"            # no inline script, no eval
        assert directives["object-src"] == "'none'" and directives["frame-ancestors"] == "'none'"
        assert "unsafe" not in csp and "http" not in csp        # no CDN, no inline anything


@pytest.mark.parametrize("path", [
    b"/ui/../shared/config.py", b"/ui/..", b"/ui/../frontend/app.py", b"/ui/%2e%2e/x", b"/ui/dashboard%2ejs",
    b"/ui/nope.js", b"/ui/sub/index.html", b"/ui//index.html", b"/ui/.hidden", b"/ui/index.html/",
    b"/ui/..\\app.py", b"/ui/\xff.js", b"/uix", b"/ui.js", b"/", b"/health", b"/ui/ui_static.py",
])
def test_anything_else_is_none(path):
    assert ui_static.lookup(path) is None


def test_no_inline_script_in_the_page():
    body, _ = ui_static.lookup(b"/ui/")
    html = body.decode()
    assert "<script>" not in html and " on" + "click=" not in html and "javascript:" not in html
    assert html.count("<script src=") == 2
    for ref in ("/ui/dashboard.js", "/ui/dashboard.css", "/ui/chart.umd.min.js", "/ui/favicon.svg"):
        assert ref in html and ui_static.lookup(ref.encode()) is not None, ref   # every reference resolves
    assert "http://" not in html and "https://" not in html                         # nothing from elsewhere


def test_vendored_chart_js_is_v4_with_its_license():
    body, _ = ui_static.lookup(b"/ui/chart.umd.min.js")
    assert body.startswith(b"/*!\n * Chart.js v4.")
    lic, _ = ui_static.lookup(b"/ui/chart.js.LICENSE.txt")
    assert b"MIT License" in lic and b"Chart.js Contributors" in lic


def test_files_are_read_once(tmp_path, monkeypatch):
    (tmp_path / "index.html").write_bytes(b"<p>one</p>")
    (tmp_path / "a.js").write_bytes(b"1;")
    (tmp_path / "notes.md").write_bytes(b"# not served")
    (tmp_path / ".secret.js").write_bytes(b"no")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.js").write_bytes(b"no")
    table = ui_static.load(str(tmp_path))
    assert sorted(table) == ["a.js", "index.html"]
    (tmp_path / "index.html").write_bytes(b"<p>two</p>")          # later changes are not seen
    assert ui_static.lookup(b"/ui", table)[0] == b"<p>one</p>"
    assert ui_static.lookup(b"/ui/notes.md", table) is None
    assert ui_static.lookup(b"/ui/sub/b.js", table) is None

    monkeypatch.setattr(ui_static, "_files", None)
    calls = []
    real = ui_static.load
    monkeypatch.setattr(ui_static, "load", lambda d=ui_static.UI_DIR: calls.append(d) or real(d))
    ui_static.lookup(b"/ui/")
    ui_static.lookup(b"/ui/dashboard.js")
    assert calls == [ui_static.UI_DIR]


def test_headers_are_a_fresh_list_each_time():
    a = ui_static.lookup(b"/ui/")[1]
    a.append((b"x-extra", b"1"))
    assert (b"x-extra", b"1") not in ui_static.lookup(b"/ui/")[1]


def test_module_is_pure():
    """It loads with the I/O libraries blocked, like the other pure modules (test_layering)."""
    code = ("import sys\n"
            "class B:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('trio', 'zmq', 'httpx', 'httpcore', 'hypercorn', 'h11', 'h2'):\n"
            "            raise ImportError('pure module imported ' + name)\n"
            "sys.meta_path.insert(0, B())\n"
            "import importlib; m = importlib.import_module('finops.frontend.ui_static'); assert m.lookup(b'/ui/')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
