"""Pure modules import no I/O library: they must load with trio, zmq, httpx and the HTTP stacks blocked.

(botocore is allowed: sigv4 builds on its signer, which pulls in the stdlib `socket` module via
`email.utils` without using it.)
"""
from __future__ import annotations

import subprocess
import sys

import pytest

PURE = ["finops.shared.eventstream", "finops.shared.envelope", "finops.shared.errors", "finops.shared.model",
        "finops.shared.config", "finops.shared.sigv4", "finops.frontend.routes",
        "finops.workers.bedrock.converse", "finops.workers.bedrock.families", "finops.workers.bedrock.reported",
        "finops.workers.translate.openai_chat", "finops.workers.translate.mistral_chat",
        "finops.workers.translate.anthropic_messages", "finops.workers.translate.sse",
        "finops.workers.translate.provider_errors", "finops.shared.governance",
        "finops.workers.governance.auth", "finops.workers.governance.ledger_state",
        "finops.workers.governance.pricing", "finops.workers.governance.periods", "finops.workers.governance.bounds",
        "finops.workers.governance.redis_lua",
        "finops.workers.cache.keys", "finops.workers.cache.index", "finops.workers.cache.embedder",
        "finops.workers.observe.logdb", "finops.workers.observe.metrics", "finops.workers.observe.report",
        "finops.workers.observe.dashboard", "finops.frontend.ui_static"]

BLOCKER = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('trio', 'zmq', 'httpx', 'httpcore', 'hypercorn', 'h11', 'h2'):
            raise ImportError('pure module imported ' + name)
sys.meta_path.insert(0, Block())
import importlib
importlib.import_module(sys.argv[1])
"""


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_no_io(module):
    r = subprocess.run([sys.executable, "-c", BLOCKER, module], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
