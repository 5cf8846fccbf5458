"""Provider kinds register themselves: a config table per kind (shared/provider_config.py, read by
every process) and a provider class per kind (workers/providers/registry.py, workers only)."""
from finops.shared.config import build
from finops.shared.provider_config import PROVIDER_CONFIGS, ProviderConfig
from finops.workers.providers import PROVIDERS, build_provider
from finops.workers.providers.base import Provider

MINIMAL = {"mock": {}, "bedrock": {"keys": [{"access_key_id": "a", "secret_access_key": "s"}]},
           "openai": {}, "anthropic": {"keys": [{"api_key": "k"}]}, "mistral": {"keys": [{"api_key": "k"}]}}


def test_every_kind_has_a_config_table_and_a_provider():
    assert set(PROVIDERS) == set(PROVIDER_CONFIGS) == set(MINIMAL)
    for kind, cls in PROVIDERS.items():
        assert issubclass(cls, Provider) and cls.kind == kind
        assert issubclass(PROVIDER_CONFIGS[kind], ProviderConfig) and PROVIDER_CONFIGS[kind].kind == kind


def test_build_provider_picks_the_class_of_the_configs_kind():
    c = build({"providers": {k: {"kind": k, **t} for k, t in MINIMAL.items()}}, "test", environ={})
    for kind, pc in c.providers.items():
        assert type(pc) is PROVIDER_CONFIGS[kind]
        p = build_provider(pc)
        assert type(p) is PROVIDERS[kind] and p.cfg is pc and p.name == kind


def test_the_frontend_reads_every_kind_without_the_workers():
    import subprocess
    import sys
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.startswith('finops.workers'): raise ImportError(name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "from finops.shared.config import build\n"
            f"c = build({{'providers': {{k: {{'kind': k, **t}} for k, t in {MINIMAL!r}.items()}}}}, 't', environ={{}})\n"
            "print(sorted(c.providers))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(sorted(MINIMAL))
