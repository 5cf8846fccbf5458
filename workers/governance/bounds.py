"""Upper bounds of the input tokens an upstream can report for a request. Pure.

Governance reserves a request's maximum cost at the ledger before the upstream is called and
settles the reported usage afterwards. "Settled spend never exceeds a budget" holds only if the
reservation is at least what the upstream can report, so the input side of the reservation must be
an upper bound, not an estimate. This module computes it:

    b = input_bound(req, vendor_of(provider_kind, upstream_model), upstream_model)
    b.tokens       input + cache-read + cache-write tokens the upstream can report, at most
    b.strict       True when every part of the request has a proven or published bound
    b.unbounded    the parts that were estimated instead, each with its request path, e.g.
                   ("messages[0].content[1]: pdf document, 3 pages at 4,708 tokens a page (estimate)",)

The vendors split one prompt into input, cache-read and cache-write tokens; the three add up to the
prompt, so one bound covers their sum. (Pricing the reservation is the caller's: cache writes cost
more than input at some vendors, so the bound should be priced at the dearer of the two.)
docs/token-bounds.md lists every figure below with the vendor page it comes from.

Theory of operation
-------------------
The bound is a sum of one term per part of the request (system strings, messages, content blocks,
tool definitions, leftover body fields) plus the vendor's framing. Every term depends only on its own
part and is never negative, so adding content never lowers the bound; caps apply per image or
document, never to the sum.

Text. The tokenizers whose vocabularies are published are byte-level BPE (OpenAI's cl100k and
o200k, Llama 3, Mistral Tekken, Claude 2's) or SentencePiece with byte fallback (Llama 2, Mistral's
v1-v3); Anthropic, Amazon, Cohere and AI21 do not publish their current ones, and the bound assumes
they are of one of these two kinds. A byte-level BPE token covers at least one byte of the UTF-8
text, so a text of n bytes is at most n tokens. SentencePiece covers every character by a piece or
by its UTF-8 bytes and adds at most one dummy-prefix piece per segment: at most n + 1. Special-token
strings typed by a user are encoded as plain text by the vendors' APIs (or, where a server does
parse them, become one token for several bytes). A tokenizer that normalizes Unicode first sees the
normalized text, which can be longer: NFKC spells one 3-byte character out in up to 33 bytes, and
Claude 2's tokenizer, which normalizes to NFKC, does exceed the raw byte count on such text. So a
text counts as the largest UTF-8 length among itself and its NFC and NFKC forms; ASCII text is all
of them at once and costs one O(1) check. (The decomposing forms, NFD and NFKD, lengthen accented
text too, but no LLM tokenizer we know applies them without then stripping the marks, and they cost
ten times more to compute.) Lone surrogates (from JSON escapes) count 3 bytes each, as the U+FFFD an
upstream puts in their place. So: tokens(text) <= utf8_bound(text) + 1, which
scripts/check_token_bounds.py checks on the published vocabularies.

Framing. Chat templates add role markers, begin/end tokens and the primer of the assistant's
turn. Where the template is published (OpenAI's cookbook: 3 tokens a message and 3 for the reply
primer; Llama 3: 5 a message, 4 for the primer, 1 begin-of-text; mistral-common's [INST] markers) the
constants below cover it with room to spare; where it is not (Anthropic, Amazon, Cohere, AI21) they
are chosen well above any plausible template and docs/token-bounds.md says so. The constants are
per request, per message (each system string counts as one) and per content block.

JSON (tool inputs and results, tool schemas, leftover body fields). Bounded by the length of its
ASCII-escaped rendering with ", " and ": " separators, which is at least the UTF-8 length of any
compact rendering (an escape is longer than the character it stands for), and by the normalized
forms of its unescaped rendering; plus two tokens for each "," "{" "[" for an upstream that pretty-
prints (a newline and an indentation run a line: one token each in the BPE vocabularies above,
which have tokens for runs of spaces; an assumption for the others).

Tools. Each definition counts its name, description and JSON schema as above, plus a per-tool
constant for the wrapper the vendor renders it in; once per request, the vendor's tool-use system
prompt: Anthropic publishes its size per model (at most 530 tokens; we add 600), OpenAI's cookbook
gives the counting recipe (a few tokens a function and a property, well inside the JSON bound) and
mistral-common's template has only [AVAILABLE_TOOLS] markers. For the other vendors the prompt is
not published: 1,024 tokens are assumed and the request is not strict.

Images, by the vendor's published formula on the pixel size read from the image header
(`image_size`: PNG IHDR, JPEG SOF, GIF screen and first frame, WebP VP8/VP8L/VP8X). Every formula
is capped at the vendor's maximum per image, and an image whose size cannot be read costs that
maximum:
  anthropic  max(w*h/750, ceil(w/28)*ceil(h/28)), both published; capped at 1,700 (models before
             Opus 4.7: 1568 px long edge, ~1,600 tokens, largest unresized size 784x1568 = 1,639)
             or 5,000 (Opus 4.7 and later, and unknown Claude names: 2576 px, 3.75 megapixels).
  openai     tile models: base + tile * tiles (fit 2048x2048, shortest side to 768, 512 px tiles,
             at most 8 tiles: the high-detail limit is 768 x 2000); patch models: min(1536,
             ceil(w/32)*ceil(h/32)) * multiplier. A model the table does not know: estimate.
  mistral    rows * (columns + 1) patches (one break token a row) within a maximum size: Pixtral
             12B's settings ship with mistral-common (16 px, 1024 px); for other Mistral models the
             larger of those and Mistral Small 3.1's (28 px, 1540 px) is an estimate.
  meta       Llama 3.2 vision: at most 4 tiles of 1,601 tokens; Bedrock does not document what it
             reports: estimate 6,404.
  nova       Amazon publishes approximate counts only (900x450 ~800 ... 1300x1300 ~2,600):
             estimate w*h/500 after the documented upscaling, capped at 3,000.
  others     estimate 6,500 (the largest per-image maximum above, rounded up).
Each image block adds 8 tokens of markers.

Documents. Text formats (txt, csv, md, html) count as text: UTF-8 bytes, with undecodable bytes at
3 each (U+FFFD). docx: the sum of the uncompressed sizes in the zip's central directory (no
decompression, so no zip bomb) for the XML parts, whose text is a subset of that XML, plus the
vendor's per-image maximum for each embedded media file. No bound exists, and the part is
estimated and listed in `unbounded`, for: xlsx (the zip's sizes; shared strings are stored once
and repeated per cell), xls (file bytes; same reason), doc (file bytes; text stored at one byte a
character can take 3 UTF-8 bytes a character, so up to 3x), and pdf (pages * (3,000 text tokens + the
vendor's per-image maximum): vendors extract each page's text and also render the page as an
image; Anthropic documents 1,500-3,000 text tokens a page; the page count is the number of
/Type /Page objects, also inside object streams, which are inflated up to a fixed budget; none
found: one page per 100 KB).

Everything else is an estimate: redacted reasoning (encrypted; its length as bytes), and every
request to the "unknown" vendor, whose template and tokenizer are unknown. The worst overshoot of
an estimate is bounded only by the model's context window: the upstream refuses a longer prompt.

Cost. One pass over the request, linear in its size: ASCII text costs an O(1) check and a length;
other text one encode and two normalization quick checks; JSON one C-speed dump (two when it has
escapes); images read a few header bytes; zip documents read their central directory; PDFs run
one regex over their bytes and inflate object streams up to 8 MB. Nothing is cached.
"""
from __future__ import annotations

import io
import json
import re
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from finops.shared.model import (ChatRequest, DocumentBlock, EmbedRequest, ImageBlock, JsonBlock, ReasoningBlock,
                                 RedactedReasoningBlock, TextBlock, ToolResultBlock, ToolUseBlock, estimate_tokens,
                                 request_tokens)

__all__ = ["VENDORS", "InputBound", "vendor_of", "input_bound", "image_size", "image_tokens",
           "pdf_page_count", "utf8_bound"]

VENDORS = ("anthropic", "openai", "mistral", "nova", "meta", "cohere", "titan", "ai21", "mock", "unknown")


@dataclass(frozen=True, slots=True)
class InputBound:
    tokens: int                       # at least the input + cache-read + cache-write tokens reported
    strict: bool = True               # False when some part has no proven bound (tokens then estimates it)
    unbounded: tuple[str, ...] = ()   # the estimated parts, "path: what and how"


# --- vendors -------------------------------------------------------------------------------------

_REGION = re.compile(r"^(?:us-gov|us|eu|apac|global|jp|au|ca)\.(?=.)")          # as pricing.py
_BEDROCK_PREFIXES = (("anthropic.", "anthropic"), ("amazon.nova", "nova"), ("amazon.titan", "titan"),
                     ("meta.", "meta"), ("mistral.", "mistral"), ("cohere.", "cohere"), ("ai21.", "ai21"),
                     ("openai.", "openai"))
_NAME_RULES = tuple((re.compile(p), v) for p, v in (
    (r"^(?:gpt-|chatgpt-|o\d(?:$|-)|computer-use|text-embedding-|davinci|babbage)", "openai"),
    (r"^claude", "anthropic"),
    (r"^(?:meta-)?(?:code)?llama", "meta"),
    (r"^(?:mistral|mixtral|codestral|pixtral|ministral|magistral|devstral|voxtral)", "mistral"),
    (r"^(?:amazon[.-])?nova", "nova"),
    (r"^(?:amazon[.-])?titan", "titan"),
    (r"^(?:cohere|command|c4ai|embed-(?:english|multilingual|v4))", "cohere"),
    (r"^(?:ai21|jamba|j2-|jurassic)", "ai21"),
))


def _names(model: str) -> list[str]:
    """The bare names a model id may stand for, most specific first: lowercase, URL-decoded, each
    ARN resource part (a custom-model ARN names its base model too, which pricing.normalize, keeping
    the last part only, does not need), each part of a PROVIDER/MODEL form, all without a Bedrock
    inference-profile region prefix."""
    s = model.strip().lower()
    if "%" in s:
        s = unquote(s)
    if s.startswith("arn:"):
        resource = s.split(":", 5)[-1] if s.count(":") >= 5 else s
        parts = resource.split("/")[1:] or [resource]
    else:
        parts = s.split("/")
    return [_REGION.sub("", p, count=1) for p in reversed(parts) if p]


def _bare(model: str) -> str:
    """The most specific bare name of a model id ("" for none)."""
    names = _names(model or "")
    return names[0] if names else ""


def vendor_of(provider_kind: str, model: str) -> str:
    """Whose tokenizer, chat template and media formulas apply: one of VENDORS.

    anthropic and mistral providers are their vendors. Otherwise a Bedrock family prefix decides
    (anthropic., amazon.nova, meta. ...; region prefixes, ARNs and PROVIDER/MODEL forms allowed),
    then the model name: gpt-*, o1/o3/o4*, claude*, llama*, mistral* ... (what an OpenAI-compatible
    server calls its models). Anything else is "unknown". The built-in mock provider is its own
    vendor, whatever model it answers for: it counts tokens with `request_tokens`."""
    if provider_kind in ("anthropic", "mistral", "mock"):
        return provider_kind
    names = _names(model or "")
    for n in names:                     # Bedrock ids, wherever they are served (the mock serves them too)
        for prefix, vendor in _BEDROCK_PREFIXES:
            if n.startswith(prefix):
                return vendor
    for n in names:
        for rule, vendor in _NAME_RULES:
            if rule.match(n):
                return vendor
    return "unknown"


# --- text and JSON -------------------------------------------------------------------------------

_FORMS = ("NFC", "NFKC")


def _utf8_len(s: str) -> int:
    return len(s.encode("utf-8", "surrogatepass"))


def utf8_bound(s: str) -> int:
    """The largest UTF-8 length among `s` and its NFC and NFKC forms (lone surrogates: 3 bytes)."""
    if s.isascii():
        return len(s)
    n = _utf8_len(s)
    for form in _FORMS:
        if not unicodedata.is_normalized(form, s):
            n = max(n, _utf8_len(unicodedata.normalize(form, s)))
    return n


def _text(s: Any) -> int:
    """Tokens of one text segment: its bytes, plus one for a SentencePiece dummy prefix."""
    if not isinstance(s, str):
        s = "" if s is None else str(s)
    return utf8_bound(s) + 1 if s else 0


def _json(v: Any) -> int:
    """Tokens of a JSON value, however the upstream renders it (see the module docstring)."""
    try:
        a = json.dumps(v, ensure_ascii=True)
    except (TypeError, ValueError, RecursionError):
        return _walk(v)
    n = len(a)
    if "\\u" in a:
        n = max(n, utf8_bound(json.dumps(v, ensure_ascii=False)))
    return n + 2 * (a.count(",") + a.count("{") + a.count("[")) + 1


def _walk(v: Any) -> int:
    """A bound of the JSON rendering of anything, without recursion: strings at 12 bytes a
    character (the longest escape) or their normalized length, blobs as base64, 6 per element."""
    n, stack = 1, [v]
    while stack:
        x = stack.pop()
        n += 6
        if isinstance(x, str):
            n += max(12 * len(x), utf8_bound(x))
        elif isinstance(x, (bytes, bytearray, memoryview)):
            n += 4 * (len(x) + 2) // 3
        elif isinstance(x, dict):
            for k, val in x.items():
                stack.append(k)
                stack.append(val)
        elif isinstance(x, (list, tuple)):
            stack.extend(x)
        else:
            n += len(str(x))
    return n


def _bytes_text(data: bytes) -> int:
    """Tokens of a text document given as bytes: UTF-8, each undecodable byte as U+FFFD."""
    try:
        s = data.decode("utf-8")
    except UnicodeDecodeError:
        s = data.decode("utf-8", "surrogateescape")     # each bad byte -> one lone surrogate: 3 bytes
    return _text(s)


# --- image sizes ---------------------------------------------------------------------------------

_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def _dims(w: int, h: int) -> tuple[int, int] | None:
    return (w, h) if w > 0 and h > 0 else None


def _png(d: bytes) -> tuple[int, int] | None:
    pos = 8
    for _ in range(4):                  # IHDR comes first; Apple's CgBI PNGs put one chunk before it
        if len(d) < pos + 16:
            return None
        if d[pos + 4:pos + 8] == b"IHDR":
            return _dims(int.from_bytes(d[pos + 8:pos + 12], "big"), int.from_bytes(d[pos + 12:pos + 16], "big"))
        pos += 12 + int.from_bytes(d[pos:pos + 4], "big")
    return None


def _jpeg(d: bytes) -> tuple[int, int] | None:
    n, pos = len(d), 2
    while pos < n:
        if d[pos] != 0xFF:              # junk between segments: decoders skip to the next marker
            pos = d.find(b"\xff", pos)
            if pos < 0:
                return None
        while pos < n and d[pos] == 0xFF:
            pos += 1
        if pos >= n:
            return None
        marker = d[pos]
        pos += 1
        if marker in (0x00, 0x01, 0xD8) or 0xD0 <= marker <= 0xD7:     # no length field
            continue
        if marker in (0xD9, 0xDA) or pos + 2 > n:   # end of image, or scan data before a frame header
            return None
        length = int.from_bytes(d[pos:pos + 2], "big")
        if marker in _SOF:
            if length < 7 or pos + 7 > n:
                return None
            return _dims(int.from_bytes(d[pos + 5:pos + 7], "big"), int.from_bytes(d[pos + 3:pos + 5], "big"))
        if length < 2:
            return None
        pos += length
    return None


def _gif(d: bytes) -> tuple[int, int] | None:
    n = len(d)
    if n < 13:
        return None
    w, h = int.from_bytes(d[6:8], "little"), int.from_bytes(d[8:10], "little")
    pos = 13 + (3 * (2 << (d[10] & 7)) if d[10] & 0x80 else 0)
    while pos < n:                      # decoders differ on a first frame larger than the screen:
        kind = d[pos]                   # take the larger
        if kind == 0x2C and pos + 9 <= n:
            left, top = int.from_bytes(d[pos + 1:pos + 3], "little"), int.from_bytes(d[pos + 3:pos + 5], "little")
            fw, fh = int.from_bytes(d[pos + 5:pos + 7], "little"), int.from_bytes(d[pos + 7:pos + 9], "little")
            if fw and fh:
                w, h = max(w, left + fw), max(h, top + fh)
            break
        if kind != 0x21:
            break
        pos += 2                        # extension: introducer, label, then sub-blocks
        while pos < n:
            size = d[pos]
            pos += 1 + size
            if size == 0:
                break
    return _dims(w, h)


def _webp(d: bytes) -> tuple[int, int] | None:
    if len(d) < 30:
        return None
    chunk = d[12:16]
    if chunk == b"VP8 ":
        if d[23:26] != b"\x9d\x01\x2a":
            return None
        return _dims(int.from_bytes(d[26:28], "little") & 0x3FFF, int.from_bytes(d[28:30], "little") & 0x3FFF)
    if chunk == b"VP8L":
        if d[20] != 0x2F:
            return None
        bits = int.from_bytes(d[21:25], "little")
        return _dims((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X":
        return _dims(int.from_bytes(d[24:27], "little") + 1, int.from_bytes(d[27:30], "little") + 1)
    return None


def image_size(data: bytes, fmt: str = "") -> tuple[int, int] | None:
    """(width, height) in pixels from a PNG, JPEG, GIF or WebP header, or None when the bytes are
    not one of those or are cut short. The bytes' signature decides; `fmt` is only a hint. Never
    raises: the bytes come from clients."""
    try:
        d = bytes(data)
        if d.startswith(b"\x89PNG\r\n\x1a\n"):
            return _png(d)
        if d.startswith(b"\xff\xd8"):
            return _jpeg(d)
        if d.startswith((b"GIF87a", b"GIF89a")):
            return _gif(d)
        if d[:4] == b"RIFF" and d[8:12] == b"WEBP":
            return _webp(d)
    except (TypeError, ValueError, IndexError):
        pass
    return None


# --- image tokens --------------------------------------------------------------------------------

IMAGE_MARKERS = 8                   # per image block: begin/end markers and the like
UNKNOWN_IMAGE = 6_500               # estimate for vendors without a formula
ANTHROPIC_CAP = 1_700               # models before Opus 4.7
ANTHROPIC_HIGH_CAP = 5_000          # Opus 4.7 and later (and Claude names we cannot date)
META_IMAGE = 4 * 1_601              # Llama 3.2 vision: 4 tiles of 40x40 patches + 1
NOVA_CAP = 3_000                    # Amazon Nova: the largest image in its published table (docs/token-bounds.md)

# (name, base, per tile): OpenAI "Images and vision", calculating costs (tile models)
_OPENAI_TILES = (("gpt-4o-mini", 2833, 5667), ("gpt-5-chat", 70, 140), ("computer-use", 65, 129),
                 ("chatgpt-4o", 85, 170), ("gpt-4-turbo", 85, 170), ("gpt-4o", 85, 170), ("gpt-4.1", 85, 170),
                 ("gpt-4.5", 85, 170), ("gpt-5", 70, 140), ("o1", 75, 150), ("o3", 75, 150))
# (name, multiplier in hundredths): the patch models, checked first (gpt-4.1-mini before gpt-4.1)
_OPENAI_PATCHES = (("gpt-4.1-mini", 162), ("gpt-4.1-nano", 246), ("gpt-5-mini", 162), ("gpt-5-nano", 246),
                   ("o4-mini", 172))
# claude-opus-4-7, claude-sonnet-4-20250514 (4.0: a date is no minor version), claude-3-5-sonnet
_CLAUDE = re.compile(r"claude-(?:(?:opus|sonnet|haiku)-(\d+)(?:[-.](\d)(?!\d))?"
                     r"|(\d+)(?:[-.](\d)(?!\d))?-(?:opus|sonnet|haiku))")


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _claude_high_res(model: str) -> bool:
    """Opus 4.7 and later read images up to 2576 px; earlier Claude models up to 1568 px. A name
    we cannot date gets the larger."""
    m = _CLAUDE.search(model.lower())
    if m is None:
        return True
    major, minor = int(m[1] or m[3]), int(m[2] or m[4] or 0)
    return (major, minor) >= (4, 7)


def _anthropic_image(model: str, size) -> int:
    cap = ANTHROPIC_HIGH_CAP if _claude_high_res(model) else ANTHROPIC_CAP
    if size is None:
        return cap
    w, h = size
    return min(cap, max(_cdiv(w * h, 750), _cdiv(w, 28) * _cdiv(h, 28)))


def _openai_model(model: str):
    """("patch", multiplier) | ("tile", base, per tile) | None for a model the table lacks."""
    name = _bare(model)
    for prefix, mult in _OPENAI_PATCHES:
        if name == prefix or name.startswith(prefix + "-"):
            return ("patch", mult)
    for prefix, base, tile in _OPENAI_TILES:
        if name == prefix or name.startswith(prefix + "-"):
            return ("tile", base, tile)
    return None


def _openai_tiles(w: int, h: int) -> int:
    if max(w, h) > 2048:                # fit in 2048 x 2048
        s = 2048 / max(w, h)
        w, h = w * s, h * s
    s = 768 / min(w, h)                 # shortest side to 768 (also upwards: the larger reading)
    return min(8, _fceil(w * s / 512) * _fceil(h * s / 512))


def _fceil(x: float) -> int:
    return int(-(-x // 1))


def _openai_image(model: str, size) -> tuple[int, bool]:
    kind = _openai_model(model)
    if kind is None:                    # a newer or unknown model: patches at the dearest multiplier, uncapped
        if size is None:
            return UNKNOWN_IMAGE, False
        w, h = size
        return max(UNKNOWN_IMAGE, _cdiv(_cdiv(w, 32) * _cdiv(h, 32) * 246, 100)), False
    if kind[0] == "patch":
        patches = 1536 if size is None else min(1536, _cdiv(size[0], 32) * _cdiv(size[1], 32))
        return _cdiv(patches * kind[1], 100), True
    tiles = 8 if size is None else _openai_tiles(*size)
    return kind[1] + kind[2] * tiles, True


def _grid(w: int, h: int, patch: int, max_side: int) -> int:
    if max(w, h) > max_side:            # mistral-common: scale down to fit, never up
        w, h = _cdiv(w * max_side, max(w, h)), _cdiv(h * max_side, max(w, h))
    rows, cols = _cdiv(h, patch), _cdiv(w, patch)
    return rows * (cols + 1)            # a break token ends each row (the last one is the end token)


def _mistral_image(model: str, size) -> tuple[int, str | None]:
    """Pixtral 12B's encoder settings ship with mistral-common (16 px patches, 1024 px): exact.
    Other Mistral models' are not published with the API; the larger of Pixtral 12B's and Mistral
    Small 3.1's (14 px patches merged 2x2, 1540 px) is an estimate."""
    w, h = size or (1540, 1540)
    pixtral = _grid(w, h, 16, 1024)
    if _bare(model).removeprefix("mistral.").startswith("pixtral-12b"):
        return pixtral, None
    note = f"image: Mistral does not publish {model or 'this model'!r}'s image encoder settings"
    return max(pixtral, _grid(w, h, 28, 1540)), note


def _nova_image(size) -> int:
    if size is None:
        return NOVA_CAP
    w, h = size
    up = max(1.0, 896 / max(w, h))      # upscaled so that one side reaches 896 px
    return min(NOVA_CAP, _fceil(w * h * up * up / 500))


def _image(vendor: str, model: str, size) -> tuple[int, str | None]:
    """Tokens of one image (markers included) and, for an estimate, what was assumed."""
    if vendor == "anthropic":
        return _anthropic_image(model, size) + IMAGE_MARKERS, None
    if vendor == "openai":
        n, strict = _openai_image(model, size)
        note = None if strict else f"image for {model or 'an unnamed model'!r}, not in the published table"
        return n + IMAGE_MARKERS, note
    if vendor == "mistral":
        n, note = _mistral_image(model, size)
        return n + IMAGE_MARKERS, note
    if vendor == "meta":
        return META_IMAGE + IMAGE_MARKERS, "image: Bedrock does not publish how it counts Llama image tokens"
    if vendor == "nova":
        return _nova_image(size) + IMAGE_MARKERS, "image: Amazon publishes approximate Nova counts only"
    return UNKNOWN_IMAGE + IMAGE_MARKERS, f"image: no published formula for vendor {vendor!r}"


def image_tokens(vendor: str, model: str, size: tuple[int, int] | None) -> InputBound:
    """Tokens one image of `size` (None: unknown) costs at the vendor, markers included."""
    if size is not None:
        try:
            size = _dims(int(size[0]), int(size[1]))
        except (TypeError, ValueError, IndexError):
            size = None
    n, note = _image(vendor if vendor in VENDORS else "unknown", model or "", size)
    return InputBound(n, note is None, (note,) if note else ())


def _image_block(vendor: str, model: str, img: ImageBlock) -> tuple[int, str | None]:
    size = image_size(img.data, img.format) if img.data else None
    return _image(vendor, model, size)


# --- documents -----------------------------------------------------------------------------------

PDF_TEXT_PER_PAGE = 3_000           # Anthropic: 1,500-3,000 text tokens a page
PDF_MAX_PAGES = 1_000               # pages counted at most (Bedrock documents are far smaller)
PDF_BYTES_PER_PAGE = 100_000        # when no page object is found
_PDF_INFLATE_BUDGET = 8 << 20       # bytes of compressed object streams inflated to count pages
_PAGE = re.compile(rb"/Type\s*/Page(?![A-Za-z0-9])")
_OBJSTM = re.compile(rb"/Type\s*/ObjStm(?![A-Za-z0-9])")
_TEXT_DOCS = frozenset({"txt", "csv", "md", "html"})


def pdf_page_count(data: bytes) -> int:
    """The number of /Type /Page objects in a PDF, including those in object streams (inflated up
    to a fixed budget); 0 when none is found. Never raises."""
    try:
        d = bytes(data)
    except (TypeError, ValueError):
        return 0
    n = len(_PAGE.findall(d))
    if b"/ObjStm" not in d:
        return n
    view, budget = memoryview(d), _PDF_INFLATE_BUDGET
    for m in _OBJSTM.finditer(d):
        if budget <= 0:
            break
        start = d.find(b"stream", m.end())
        if start < 0:
            break
        start += 6
        start += 2 if d[start:start + 2] == b"\r\n" else 1 if d[start:start + 1] in (b"\n", b"\r") else 0
        end = d.find(b"endstream", start)
        try:
            out = zlib.decompressobj().decompress(view[start:end if end >= 0 else len(d)], budget)
        except zlib.error:
            continue
        budget -= len(out)
        n += len(_PAGE.findall(out))
    return n


def _zip_parts(data: bytes) -> tuple[int, int] | None:
    """(uncompressed bytes of the non-media parts, number of media files) from a zip's central
    directory, without decompressing anything; None when it is not a readable zip."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            infos = z.infolist()
    except Exception:                   # any malformed archive: the bytes come from clients
        return None
    size = media = 0
    for info in infos:
        if "/media/" in info.filename:
            media += 1
        else:
            size += info.file_size
    return size, media


def _document(vendor: str, model: str, d: DocumentBlock) -> tuple[int, str | None]:
    """Tokens of one document block and, for an estimate, what was assumed."""
    n = 16 + _text(d.name) + _text(d.context)
    if d.text is not None:
        return n + _text(d.text), None
    fmt = d.format
    data = d.data
    if fmt in _TEXT_DOCS:
        return n + _bytes_text(data), None
    if fmt == "pdf":
        pages = pdf_page_count(data)
        found = pages > 0
        pages = min(PDF_MAX_PAGES, pages if found else max(1, _cdiv(len(data), PDF_BYTES_PER_PAGE)))
        per_page = PDF_TEXT_PER_PAGE + _image(vendor, model, None)[0]
        how = f"{pages} pages" if found else f"page count not found, {pages} assumed (1 per 100 KB)"
        return n + pages * per_page, f"pdf document, {how} at {per_page:,} tokens a page (estimate)"
    if fmt in ("docx", "xlsx"):
        parts = _zip_parts(data)
        if parts is None:
            return n + len(data), f"{fmt} document that is not a readable zip: its bytes (estimate)"
        size, media = parts
        img, img_note = _image(vendor, model, None)
        n += size + media * img
        if fmt == "xlsx":
            return n, "xlsx document: uncompressed size (estimate: shared strings repeat per cell)"
        return n, f"docx document with media: {img_note}" if media and img_note else None
    if fmt == "doc":
        return n + len(data), "doc document: its bytes (estimate: up to 3x for 1-byte-stored text)"
    if fmt == "xls":
        return n + len(data), "xls document: its bytes (estimate: shared strings repeat per cell)"
    return n + len(data), f"{fmt} document: its bytes (estimate)"


# --- framing -------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Framing:
    request: int            # once: begin-of-text, the reply primer, hidden headers
    message: int            # each message and each system string
    block: int              # each content block (and each item of a tool result)
    tool: int               # each tool definition's wrapper
    tool_prompt: int        # once when tools are given: the vendor's tool-use system prompt
    tool_prompt_known: bool
    embed_text: int = 4     # each embeddings input: begin/end/separator tokens


_FRAMING = {
    "openai": _Framing(request=128, message=4, block=4, tool=32, tool_prompt=64, tool_prompt_known=True),
    "anthropic": _Framing(request=64, message=8, block=8, tool=32, tool_prompt=600, tool_prompt_known=True),
    "meta": _Framing(request=64, message=16, block=8, tool=32, tool_prompt=1024, tool_prompt_known=False),
    "mistral": _Framing(request=32, message=16, block=8, tool=32, tool_prompt=32, tool_prompt_known=True),
    "nova": _Framing(request=128, message=16, block=16, tool=32, tool_prompt=1024, tool_prompt_known=False),
    "cohere": _Framing(request=512, message=16, block=16, tool=32, tool_prompt=1024, tool_prompt_known=False),
    "titan": _Framing(request=64, message=16, block=8, tool=32, tool_prompt=1024, tool_prompt_known=False),
    "ai21": _Framing(request=64, message=16, block=8, tool=32, tool_prompt=1024, tool_prompt_known=False),
    "unknown": _Framing(request=512, message=32, block=16, tool=64, tool_prompt=1024, tool_prompt_known=False),
}


# --- the request ---------------------------------------------------------------------------------

class _Sum:
    __slots__ = ("tokens", "notes")

    def __init__(self) -> None:
        self.tokens = 0
        self.notes: list[str] = []

    def add(self, n: int, note: str | None = None, where: str = "") -> None:
        self.tokens += n
        if note is not None:
            self.notes.append(f"{where}: {note}" if where else note)


def _content(acc: _Sum, b, vendor: str, model: str, f: _Framing, where) -> None:
    """One content block (or tool-result item). `where` builds the block's path, only for notes."""
    acc.add(f.block)
    match b:
        case TextBlock():
            acc.add(_text(b.text))
        case JsonBlock():
            acc.add(_json(b.value))
        case ImageBlock():
            n, note = _image_block(vendor, model, b)
            acc.add(n, note, where() if note else "")
        case DocumentBlock():
            n, note = _document(vendor, model, b)
            acc.add(n, note, where() if note else "")
        case ToolUseBlock():
            acc.add(_text(b.name) + _text(b.tool_use_id) + _json(b.input))
        case ToolResultBlock():
            acc.add(_text(b.tool_use_id) + _text(b.status))
            for k, item in enumerate(b.content):
                _content(acc, item, vendor, model, f, lambda k=k: f"{where()}.toolResult.content[{k}]")
        case ReasoningBlock():
            acc.add(_text(b.text) + _text(b.signature))
        case RedactedReasoningBlock():
            acc.add(_walk(b.data), "redacted reasoning: encrypted, its length (estimate)", where())
        case _:
            raise TypeError(f"not a content block: {type(b).__name__}")


def input_bound(req: ChatRequest | EmbedRequest, vendor: str, model: str) -> InputBound:
    """An upper bound of the input (+ cache read + cache write) tokens the vendor's upstream can
    report for `req`, or, where no bound exists, an estimate with `strict=False`."""
    if vendor == "mock":            # its usage IS this estimate (workers/providers/mock.py): exact
        if isinstance(req, EmbedRequest):
            return InputBound(sum(estimate_tokens(t) for t in req.texts))
        return InputBound(request_tokens(req))
    if vendor not in _FRAMING:
        vendor = "unknown"
    model = model or ""
    f = _FRAMING[vendor]
    acc = _Sum()
    if vendor == "unknown":
        acc.add(0, "chat template and tokenizer of an unknown vendor (estimate)")
    if isinstance(req, EmbedRequest):
        acc.add(f.request)
        for t in req.texts:
            acc.add(_text(t) + f.embed_text)
        if req.extra:
            acc.add(_json(req.extra))
        return InputBound(acc.tokens, not acc.notes, tuple(acc.notes))
    acc.add(f.request)
    for s in req.system:
        acc.add(f.message + _text(s))
    for i, m in enumerate(req.messages):
        acc.add(f.message + _text(m.role))
        for j, b in enumerate(m.content):
            _content(acc, b, vendor, model, f, lambda i=i, j=j: f"messages[{i}].content[{j}]")
    if req.tools:
        acc.add(f.tool_prompt, None if f.tool_prompt_known else
                f"tool-use system prompt of vendor {vendor!r} is not published, {f.tool_prompt:,} assumed (estimate)",
                "tools")
        for t in req.tools:
            acc.add(f.tool + _text(t.name) + _text(t.description) + _json(t.input_schema))
    if req.tool_choice is not None:
        acc.add(_json(req.tool_choice.to_dict()))
    if req.extra:
        acc.add(_json(req.extra))
    return InputBound(acc.tokens, not acc.notes, tuple(acc.notes))
