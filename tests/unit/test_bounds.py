"""Upper bounds of a request's input tokens (workers/governance/bounds.py).

The figures in the formula tests are the vendors' own worked examples (docs/token-bounds.md cites
each page): a bound below one of them would let reported usage overshoot a reservation.
"""
from __future__ import annotations

import io
import json
import struct
import unicodedata
import zipfile
import zlib

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from finops.shared.model import (ChatRequest, DocumentBlock, EmbedRequest, ImageBlock, JsonBlock, Message,
                                 ReasoningBlock, RedactedReasoningBlock, TextBlock, Tool, ToolChoice,
                                 ToolResultBlock, ToolUseBlock)
from finops.workers.governance import bounds
from finops.workers.governance.bounds import (VENDORS, InputBound, image_size, image_tokens, input_bound,
                                              pdf_page_count, utf8_bound, vendor_of)

# the vendors whose tokenizers the bounds are about (the mock counts with request_tokens)
TOKENIZER_VENDORS = tuple(v for v in VENDORS if v != "mock")

MARK = bounds.IMAGE_MARKERS
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def chat(*blocks, system=(), tools=(), role="user", **kw) -> ChatRequest:
    return ChatRequest(messages=[Message(role, list(blocks))], system=list(system), tools=list(tools), **kw)


def img(data: bytes, fmt: str = "png") -> dict:
    return ImageBlock(fmt, data)


# --- images built by hand ------------------------------------------------------------------------

def png(w: int, h: int) -> bytes:
    """A valid PNG (8-bit greyscale, all black)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    raw = zlib.compress((b"\x00" + b"\x00" * w) * h, 9)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


def seg(marker: int, body: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body


def sof(marker: int, w: int, h: int) -> bytes:
    return seg(marker, struct.pack(">BHHB", 8, h, w, 1) + b"\x01\x11\x00")


def jpeg(w: int, h: int, *, marker: int = 0xC0, exif_thumb: tuple[int, int] | None = None,
         fill: bool = False) -> bytes:
    """SOI, APP0 (JFIF), optional APP1 holding a thumbnail's SOF, DQT, SOF, DHT, SOS, EOI."""
    out = b"\xff\xd8" + seg(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    if exif_thumb:
        out += seg(0xE1, b"Exif\x00\x00" + b"\xff\xd8" + sof(0xC0, *exif_thumb) + b"\xff\xd9")
    out += seg(0xDB, b"\x00" + bytes(range(64)))
    out += (b"\xff\xff\xff" if fill else b"") + sof(marker, w, h)
    out += seg(0xC4, b"\x00" + b"\x00" * 16) + seg(0xDA, b"\x01\x01\x00\x00\x3f\x00") + b"\x00\x11\x22" + b"\xff\xd9"
    return out


def gif(w: int, h: int, frame: tuple[int, int, int, int] | None = None, color_table: bool = True) -> bytes:
    flags = 0x80 if color_table else 0
    out = b"GIF89a" + struct.pack("<HHBBB", w, h, flags, 0, 0)
    if color_table:
        out += b"\x00\x00\x00\xff\xff\xff"                        # 2 colours
    out += b"\x21\xf9\x04\x00\x00\x00\x00\x00"                   # graphic control extension
    if frame:
        out += b"\x2c" + struct.pack("<HHHHB", *frame, 0) + b"\x02\x02\x44\x01\x00"
    return out + b"\x3b"


def webp_vp8(w: int, h: int) -> bytes:
    body = b"\x10\x02\x00" + b"\x9d\x01\x2a" + struct.pack("<HH", w, h) + b"\x00" * 10
    return b"RIFF" + struct.pack("<I", 4 + 8 + len(body)) + b"WEBP" + b"VP8 " + struct.pack("<I", len(body)) + body


def webp_vp8l(w: int, h: int) -> bytes:
    bits = (w - 1) | ((h - 1) << 14)
    body = b"\x2f" + struct.pack("<I", bits) + b"\x00" * 8
    return b"RIFF" + struct.pack("<I", 4 + 8 + len(body)) + b"WEBP" + b"VP8L" + struct.pack("<I", len(body)) + body


def webp_vp8x(w: int, h: int) -> bytes:
    body = b"\x10\x00\x00\x00" + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + 8 + len(body)) + b"WEBP" + b"VP8X" + struct.pack("<I", len(body)) + body


SAMPLES = [(png(3, 2), (3, 2)), (png(1568, 784), (1568, 784)), (jpeg(640, 480), (640, 480)),
           (jpeg(4000, 3000, marker=0xC2), (4000, 3000)), (jpeg(800, 600, exif_thumb=(160, 120)), (800, 600)),
           (jpeg(123, 45, fill=True), (123, 45)), (gif(300, 200), (300, 200)),
           (gif(10, 10, color_table=False), (10, 10)), (webp_vp8(1024, 768), (1024, 768)),
           (webp_vp8l(16383, 1), (16383, 1)), (webp_vp8x(5000, 2500), (5000, 2500))]


@pytest.mark.parametrize("data, size", SAMPLES)
def test_image_size_reads_each_format(data, size):
    assert image_size(data, "png") == size          # the bytes decide, not the declared format


@pytest.mark.parametrize("data, size", SAMPLES)
def test_image_size_of_every_truncation_is_none_or_right(data, size):
    for n in range(len(data)):
        assert image_size(data[:n]) in (None, size)


def test_image_size_skips_the_exif_thumbnail_frame_header():
    assert image_size(jpeg(4032, 3024, exif_thumb=(160, 120))) == (4032, 3024)


def test_image_size_of_unreadable_headers_is_none():
    assert image_size(jpeg(640, 0)) is None                              # height defined later (DNL)
    assert image_size(b"\xff\xd8" + seg(0xDA, b"\x00" * 6) + sof(0xC0, 9, 9)) is None   # scan before frame
    assert image_size(png(1, 1)[:12] + b"XXXX" + png(1, 1)[16:]) is None                # no IHDR
    assert image_size(b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"\x00" * 20) is None            # no start code
    assert image_size(b"RIFF\x00\x00\x00\x00WEBPALPH" + b"\x00" * 20) is None
    assert image_size(b"") is None and image_size(b"BM\x00\x00") is None
    assert image_size(None) is None and image_size("not bytes") is None  # type: ignore[arg-type]


def test_image_size_gif_takes_a_first_frame_larger_than_the_screen():
    assert image_size(gif(100, 100, frame=(50, 10, 400, 90))) == (450, 100)
    assert image_size(gif(0, 0, frame=(0, 0, 64, 32))) == (64, 32)


@SETTINGS
@given(st.binary(max_size=200),
       st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8", b"GIF89a", b"RIFF\x00\x00\x00\x00WEBP"]))
def test_image_size_never_raises_on_garbage(tail, head):
    size = image_size(head + tail)
    assert size is None or (size[0] > 0 and size[1] > 0)


def test_image_size_agrees_with_pillow_on_real_encoders():
    pil = pytest.importorskip("PIL.Image")
    for fmt, kw in (("PNG", {}), ("JPEG", {}), ("JPEG", {"progressive": True}), ("GIF", {}),
                    ("WEBP", {"lossless": False}), ("WEBP", {"lossless": True})):
        for w, h in ((1, 1), (37, 1201), (1092, 1092), (2049, 17)):
            buf = io.BytesIO()
            pil.new("RGB", (w, h), (200, 10, 10)).save(buf, fmt, **kw)
            assert image_size(buf.getvalue()) == (w, h), (fmt, kw, w, h)


# --- image formulas against the vendors' worked examples ------------------------------------------

def tok(vendor, model, size) -> int:
    return image_tokens(vendor, model, size).tokens - MARK


@pytest.mark.parametrize("size, documented", [((200, 200), 54), ((1000, 1000), 1334), ((1092, 1092), 1590),
                                              ((951, 1268), 1608), ((896, 1344), 1606), ((819, 1456), 1590),
                                              ((784, 1568), 1639)])
def test_anthropic_documented_sizes(size, documented):
    # Anthropic's vision page: tokens = w*h/750; the last five are its largest unresized sizes
    for model in ("claude-3-5-sonnet-20241022", "anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-opus-4-7"):
        assert documented <= tok("anthropic", model, size) <= documented + 80


def test_anthropic_caps_resized_images_by_model_generation():
    assert tok("anthropic", "claude-3-5-sonnet-20241022", (8000, 8000)) == bounds.ANTHROPIC_CAP
    assert tok("anthropic", "us.anthropic.claude-sonnet-4-20250514-v1:0", (4000, 3000)) == bounds.ANTHROPIC_CAP
    assert tok("anthropic", "claude-opus-4-6", (4000, 3000)) == bounds.ANTHROPIC_CAP
    # Opus 4.7 reads 2576 px / 3.75 MP: 2576x1449 = 4,977 tokens at w*h/750, 4,784 visual tokens
    assert tok("anthropic", "claude-opus-4-7", (2576, 1449)) >= 4784
    assert tok("anthropic", "claude-opus-4-7", (8000, 8000)) == bounds.ANTHROPIC_HIGH_CAP
    assert tok("anthropic", "claude-mystery", (8000, 8000)) == bounds.ANTHROPIC_HIGH_CAP    # undated: the larger
    assert tok("anthropic", "claude-sonnet-5", (8000, 8000)) == bounds.ANTHROPIC_HIGH_CAP
    assert image_tokens("anthropic", "claude-3-haiku", None).tokens == bounds.ANTHROPIC_CAP + MARK


@pytest.mark.parametrize("model, size, documented", [
    ("gpt-4o", (1024, 1024), 765), ("gpt-4o-2024-08-06", (2048, 4096), 1105), ("gpt-4.1", (1024, 1024), 765),
    ("gpt-4o-mini", (1024, 1024), 2833 + 4 * 5667), ("gpt-5", (1024, 1024), 70 + 4 * 140),
    ("o1", (1024, 1024), 75 + 4 * 150), ("o3-2025-04-16", (2048, 4096), 75 + 6 * 150),
    ("computer-use-preview", (1024, 1024), 65 + 4 * 129), ("openai/gpt-4o", (512, 512), 85 + 4 * 170),
    # patch models: ceil(w/32)*ceil(h/32), at most 1536, times the multiplier; OpenAI's example
    # 1800x2400 costs 1452 patches after its resize
    ("gpt-4.1-mini", (1024, 1024), 1659), ("gpt-4.1-mini-2025-04-14", (1800, 2400), 2353),
    ("gpt-4.1-nano", (1024, 1024), 2519), ("o4-mini", (1024, 1024), 1762), ("gpt-5-nano", (1800, 2400), 3572),
])
def test_openai_documented_examples(model, size, documented):
    b = image_tokens("openai", model, size)
    assert b.strict and documented <= b.tokens - MARK <= documented * 1.07 + 1


def test_openai_tile_models_never_exceed_8_tiles():
    for size in ((1, 1), (100, 100), (2048, 100), (100_000, 10), (7, 9000)):
        assert tok("openai", "gpt-4o", size) <= 85 + 8 * 170
    assert tok("openai", "gpt-4o", None) == 85 + 8 * 170


def test_openai_unknown_model_is_an_estimate():
    b = image_tokens("openai", "gpt-5.2", (4032, 3024))
    assert not b.strict and "gpt-5.2" in b.unbounded[0]
    assert b.tokens >= 126 * 95 * 1.2             # a newer patch model at 1.2 a patch, uncapped


@pytest.mark.parametrize("size, documented", [((720, 512), 1440), ((1920, 1080), 2304), ((1024, 1024), 4096)])
def test_mistral_documented_examples(size, documented):
    # Pixtral 12B: (w/16)*(h/16), images over 1024x1024 scaled down; a break token ends each row
    b = image_tokens("mistral", "pixtral-12b-2409", size)
    assert b.strict and documented <= b.tokens - MARK <= documented * 1.07
    other = image_tokens("mistral", "mistral-large-2512", size)          # settings not published
    assert not other.strict and other.tokens >= b.tokens


def test_mistral_small_settings_are_covered():
    # Mistral Small 3.1: 14 px patches merged 2x2 within 1540 px: 55 rows of 55 + 1 tokens at most
    assert tok("mistral", "mistral-small-2503", (1540, 77)) >= 3 * 56
    assert tok("mistral", "mistral-small-2503", None) >= 55 * 56
    assert tok("mistral", "pixtral-12b", None) == 64 * 65


@pytest.mark.parametrize("size, documented", [((900, 450), 800), ((900, 900), 1300), ((1400, 900), 1800),
                                              ((1800, 900), 2400), ((1300, 1300), 2600), ((800, 400), 800)])
def test_nova_covers_the_published_table_as_an_estimate(size, documented):
    b = image_tokens("nova", "amazon.nova-pro-v1:0", size)
    assert not b.strict and b.tokens - MARK >= documented


def test_meta_and_others_are_estimates():
    b = image_tokens("meta", "meta.llama3-2-90b-instruct-v1:0", (1120, 1120))
    assert not b.strict and b.tokens == 4 * 1601 + MARK
    for vendor in ("cohere", "titan", "ai21", "unknown", "nonsense"):
        assert not image_tokens(vendor, "x", (10, 10)).strict


DIM = st.integers(1, 9000)


@SETTINGS
@given(st.sampled_from([("anthropic", "claude-3-5-sonnet"), ("anthropic", "claude-opus-4-7"), ("openai", "gpt-4o"),
                        ("openai", "gpt-4o-mini"), ("openai", "gpt-4.1-mini"), ("openai", "gpt-9"),
                        ("mistral", "pixtral-12b"), ("mistral", ""), ("nova", ""), ("meta", ""), ("unknown", "")]),
       DIM, DIM, DIM, DIM)
def test_image_tokens_are_below_the_unreadable_maximum(vm, w, h, dw, dh):
    vendor, model = vm
    small, large = tok(vendor, model, (w, h)), tok(vendor, model, (w + dw, h + dh))
    assert small > 0
    if model not in ("gpt-4o", "gpt-4o-mini") and vendor not in ("mistral", "nova"):
        assert small <= large     # OpenAI's tiles and Nova's upscaling depend on the aspect ratio (1x2 px:
                                  # 6 tiles, 3x3 px: 4), Mistral's rows on rounding after a resize
    if (vendor, model) != ("openai", "gpt-9"):        # a model without a published cap
        assert large <= tok(vendor, model, None)


# --- text ----------------------------------------------------------------------------------------

def test_utf8_bound_counts_bytes_and_normal_forms():
    assert utf8_bound("hello") == 5 and utf8_bound("") == 0
    assert utf8_bound("e\u0301") == 3 and utf8_bound("é") == 2   # NFC composes: never shorter than the text
    assert utf8_bound("\ufdfa") == 33               # NFKC spells out a 3-byte ligature in 18 letters
    assert utf8_bound("\u0344") == 4                # NFC: 2 bytes become 4
    assert utf8_bound("a\ud800b") == 5              # a lone surrogate counts 3 (U+FFFD)
    assert utf8_bound("\U0001F600") == 4


CODEPOINTS = st.lists(st.integers(0, 0x10FFFF), max_size=40).map(lambda cps: "".join(map(chr, cps)))


@SETTINGS
@given(CODEPOINTS)
def test_utf8_bound_is_at_least_every_normal_form(s):
    n = utf8_bound(s)
    assert n >= len(s.encode("utf-8", "surrogatepass"))
    for form in ("NFC", "NFKC"):
        assert n >= len(unicodedata.normalize(form, s).encode("utf-8", "surrogatepass"))


@SETTINGS
@given(st.text(max_size=200))
def test_a_real_tokenizer_never_exceeds_the_text_bound(s):
    # The project's MiniLM WordPiece tokenizer is not an upstream's, but it is the one on disk;
    # docs/token-bounds.md reports the same check on OpenAI, Mistral and Claude 2 vocabularies.
    from tokenizers import Tokenizer
    from pathlib import Path
    t = Tokenizer.from_file(str(Path(bounds.__file__).parents[1] / "cache" / "assets" / "tokenizer.json"))
    t.no_padding()
    t.no_truncation()
    assert len(t.encode(s, add_special_tokens=False).ids) <= utf8_bound(s) + 1


# --- requests ------------------------------------------------------------------------------------

TEXT = st.text(max_size=60)
JSONV = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
                     lambda c: st.lists(c, max_size=4) | st.dictionaries(TEXT, c, max_size=4), max_leaves=12)
BLOCK = st.one_of(
    TEXT.map(TextBlock),
    st.tuples(TEXT, TEXT, JSONV).map(lambda a: ToolUseBlock(a[0], a[1], a[2])),
    st.tuples(TEXT, st.lists(st.one_of(TEXT.map(TextBlock), JSONV.map(JsonBlock)),
                             max_size=3))
    .map(lambda a: ToolResultBlock(a[0], a[1], "success")),
    TEXT.map(lambda t: ReasoningBlock(t)),
    TEXT.map(lambda t: DocumentBlock("doc", "txt", text=t)),
)
TOOL = st.tuples(TEXT, TEXT, st.dictionaries(TEXT, JSONV, max_size=3)).map(lambda a: Tool(a[0], a[1], a[2]))
REQUEST = st.builds(
    lambda msgs, system, tools: ChatRequest(messages=[Message(r, bl) for r, bl in msgs], system=system, tools=tools),
    st.lists(st.tuples(st.sampled_from(["user", "assistant"]), st.lists(BLOCK, min_size=1, max_size=4)),
             min_size=1, max_size=4),
    st.lists(TEXT, max_size=2), st.lists(TOOL, max_size=2))


def texts_of(req: ChatRequest) -> list[str]:
    """Every string the model reads in a request: texts, names, ids, and the keys and strings of
    JSON values."""
    out: list[str] = list(req.system)

    def json_strings(v):
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, dict):
            for k, x in v.items():
                out.append(k)
                json_strings(x)
        elif isinstance(v, list):
            for x in v:
                json_strings(x)

    def block(b):
        match b:
            case TextBlock() | ReasoningBlock():
                out.append(b.text)
            case JsonBlock():
                json_strings(b.value)
            case ToolUseBlock():
                out.extend([b.tool_use_id, b.name])
                json_strings(b.input)
            case ToolResultBlock():
                out.append(b.tool_use_id)
                for c in b.content:
                    block(c)
            case DocumentBlock():
                out.extend([b.name, b.text])
    for m in req.messages:
        for b in m.content:
            block(b)
    for t in req.tools:
        out.extend([t.name, t.description])
        json_strings(t.input_schema)
    return out


@SETTINGS
@given(REQUEST, st.sampled_from(TOKENIZER_VENDORS))
def test_bound_is_at_least_the_bytes_of_every_text(req, vendor):
    b = input_bound(req, vendor, "m")
    assert b.tokens >= sum(utf8_bound(s) for s in texts_of(req))
    published_tool_prompt = vendor in ("anthropic", "openai", "mistral")
    assert b.strict == (vendor != "unknown" and (published_tool_prompt or not req.tools))


@SETTINGS
@given(REQUEST, BLOCK, TOOL, TEXT, st.sampled_from(TOKENIZER_VENDORS))
def test_adding_content_never_lowers_the_bound(req, block, tool, system, vendor):
    base = input_bound(req, vendor, "m").tokens
    more_block = ChatRequest(messages=[Message(m.role, m.content + ((block,) if i == 0 else ()))
                                       for i, m in enumerate(req.messages)], system=req.system, tools=req.tools)
    more_msg = ChatRequest(messages=(*req.messages, Message("user", [block])), system=req.system, tools=req.tools)
    more_tool = ChatRequest(messages=req.messages, system=req.system, tools=(*req.tools, tool))
    more_sys = ChatRequest(messages=req.messages, system=(*req.system, system), tools=req.tools)
    for r in (more_block, more_msg, more_tool, more_sys):
        assert input_bound(r, vendor, "m").tokens >= base


@SETTINGS
@given(JSONV)
def test_json_bound_covers_its_renderings(v):
    req = chat(ToolUseBlock("", "", v))
    n = input_bound(req, "openai", "gpt-4o").tokens
    compact = (",", ":")
    for kw in ({}, {"ensure_ascii": False}, {"separators": compact}, {"ensure_ascii": False, "separators": compact}):
        assert n >= len(json.dumps(v, **kw).encode("utf-8", "surrogatepass"))


def test_plain_text_request_is_strict_and_covers_the_cookbook_count():
    req = chat(TextBlock("Hello, world"), system=["Be brief."])
    b = input_bound(req, "openai", "gpt-4o")
    # OpenAI's cookbook: 3 tokens a message + 3 for the reply primer, plus the text tokens
    assert b == InputBound(b.tokens, True, ()) and b.tokens >= 3 + 3 + 3 + len("Hello, world") + len("Be brief.")


def test_tools_add_the_published_tool_use_prompt():
    schema = {"type": "object", "properties": {"ticker": {"type": "string", "description": "The stock ticker"}}}
    tool = Tool("get_stock_price", "Get the current stock price for a given ticker symbol.", schema)
    without, with_tools = chat(TextBlock("hi")), chat(TextBlock("hi"), tools=[tool])
    a = input_bound(with_tools, "anthropic", "claude-3-opus-20240229")
    assert a.strict and a.tokens - input_bound(without, "anthropic", "x").tokens >= 530 + len(json.dumps(schema))
    assert input_bound(with_tools, "openai", "gpt-4o").strict
    assert input_bound(with_tools, "mistral", "mistral-large-latest").strict
    for vendor in ("nova", "meta", "cohere", "titan", "ai21"):
        b = input_bound(with_tools, vendor, "x")
        assert not b.strict and b.unbounded[0].startswith("tools: ")


def test_images_in_a_request_use_the_vendor_formula_with_the_path():
    req = chat(TextBlock("what is this"), img(png(1092, 1092)), img(b"\x89PNG garbage"))
    a = input_bound(req, "anthropic", "anthropic.claude-3-5-sonnet-20240620-v1:0")
    assert a.strict and a.tokens >= 1590 + bounds.ANTHROPIC_CAP          # the unreadable one costs the maximum
    n = input_bound(req, "nova", "amazon.nova-lite-v1:0")
    assert not n.strict
    assert [u.split(":")[0] for u in n.unbounded] == ["messages[0].content[1]", "messages[0].content[2]"]


def test_tool_result_items_are_counted_with_their_paths():
    req = chat(ToolResultBlock("t1", [TextBlock("x" * 1000), JsonBlock({"k": "y" * 500}), img(png(64, 64))]))
    b = input_bound(req, "meta", "meta.llama3-2-11b-instruct-v1:0")
    assert b.tokens >= 1500 + 4 * 1601
    assert b.unbounded == ("messages[0].content[0].toolResult.content[2]: image: Bedrock does not publish how it "
                           "counts Llama image tokens",)


def test_text_documents_count_bytes_and_bad_bytes_three_times():
    ok = chat(DocumentBlock("n", "csv", data=b"a,b\n1,2\n" * 100))
    bad = chat(DocumentBlock("n", "csv", data=b"\xff" * 800))
    assert input_bound(ok, "anthropic", "c").strict and input_bound(bad, "anthropic", "c").strict
    assert input_bound(bad, "anthropic", "c").tokens - input_bound(ok, "anthropic", "c").tokens == 1600


def zipped(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


def test_docx_counts_uncompressed_xml_without_inflating_it():
    text = "Quarterly results " * 2000
    xml = f"<w:document><w:body><w:p><w:r><w:t>{text}</w:t></w:r></w:p></w:body></w:document>".encode()
    bomb = b"\x00" * 20_000_000                                  # 20 MB of zeros: about 20 KB zipped
    data = zipped({"word/document.xml": xml, "word/settings.xml": bomb})
    assert len(data) < 100_000
    b = input_bound(chat(DocumentBlock("r", "docx", data=data)), "anthropic", "claude-3-haiku")
    assert b.strict and b.tokens >= len(xml) + len(bomb) >= len(text)


def test_docx_media_count_as_images_and_xlsx_is_an_estimate():
    data = zipped({"word/document.xml": b"<w:t>see figure</w:t>", "word/media/image1.png": png(2, 2)})
    b = input_bound(chat(DocumentBlock("r", "docx", data=data)), "anthropic", "claude-3-haiku")
    assert b.strict and b.tokens >= bounds.ANTHROPIC_CAP
    xlsx = zipped({"xl/sharedStrings.xml": b"<si/>"})
    x = input_bound(chat(DocumentBlock("s", "xlsx", data=xlsx)), "anthropic", "c")
    assert not x.strict and "shared strings" in x.unbounded[0]
    junk = input_bound(chat(DocumentBlock("r", "docx", data=b"PK\x03\x04 no zip")), "nova", "n")
    assert not junk.strict and "not a readable zip" in junk.unbounded[0]


def pdf(pages: int, *, stream_pages: int = 0) -> bytes:
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [] /Count %d >>" % (pages + stream_pages)]
    objs += [b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>"] * pages
    if stream_pages:
        inner = b" ".join(b"<</Type/Page/Parent 2 0 R>>" for _ in range(stream_pages))
        z = zlib.compress(inner)
        head = b"<< /Type /ObjStm /N %d /First 0 /Filter /FlateDecode /Length %d >>" % (stream_pages, len(z))
        objs.append(head + b"\nstream\r\n" + z + b"\nendstream")
    body = b"%PDF-1.7\n" + b"".join(b"%d 0 obj\n%s\nendobj\n" % (i + 1, o) for i, o in enumerate(objs))
    return body + b"trailer << /Root 1 0 R >>\n%%EOF"


def test_pdf_page_count_finds_pages_in_plain_and_compressed_objects():
    assert pdf_page_count(pdf(3)) == 3
    assert pdf_page_count(pdf(1, stream_pages=4)) == 5
    assert pdf_page_count(b"%PDF-1.4 /Type /Pages /Type /PageLabel") == 0
    assert pdf_page_count(b"/Type /ObjStm stream\n" + b"\x00garbage") == 0
    assert pdf_page_count(None) == 0  # type: ignore[arg-type]


def test_pdf_is_an_estimate_per_page():
    b = input_bound(chat(DocumentBlock("p", "pdf", data=pdf(3))), "anthropic", "claude-3-haiku")
    per_page = bounds.PDF_TEXT_PER_PAGE + bounds.ANTHROPIC_CAP + MARK
    assert not b.strict and b.tokens >= 3 * per_page
    assert b.unbounded == (f"messages[0].content[0]: pdf document, 3 pages at {per_page:,} tokens a page (estimate)",)
    blank = b"%PDF" + b" " * 250_000
    nopages = input_bound(chat(DocumentBlock("p", "pdf", data=blank)), "openai", "gpt-4o")
    assert "3 assumed" in nopages.unbounded[0]


@pytest.mark.parametrize("fmt", ["doc", "xls"])
def test_binary_office_documents_are_estimates(fmt):
    ole = b"\xd0\xcf\x11\xe0" + b"x" * 5000
    b = input_bound(chat(DocumentBlock("d", fmt, data=ole)), "nova", "n")
    assert not b.strict and b.tokens >= 5004 and b.unbounded[0].startswith(f"messages[0].content[0]: {fmt} document")


def test_redacted_reasoning_and_unknown_vendors_are_estimates():
    redacted = chat(RedactedReasoningBlock(b"\x01" * 900), role="assistant")
    red = input_bound(redacted, "anthropic", "c")
    assert not red.strict and red.tokens >= 900
    unk = input_bound(chat(TextBlock("hi")), "unknown", "some-model")
    assert not unk.strict and "unknown vendor" in unk.unbounded[0]
    assert input_bound(chat(TextBlock("hi")), "not-a-vendor", "x") == unk


def test_extra_fields_and_tool_choice_are_counted():
    base = input_bound(chat(TextBlock("hi")), "cohere", "cohere.command-r-v1:0").tokens
    docs = [{"title": "t", "text": "z" * 3000}]
    assert input_bound(chat(TextBlock("hi"), extra={"documents": docs}), "cohere", "c").tokens >= base + 3000
    choice = ToolChoice("tool", "n" * 64)
    assert input_bound(chat(TextBlock("hi"), tool_choice=choice), "cohere", "c").tokens >= base + 64


def test_embeddings_bound_every_text():
    req = EmbedRequest(texts=["héllo", "x" * 100, ""])
    b = input_bound(req, "titan", "amazon.titan-embed-text-v2:0")
    assert b.strict and b.tokens >= 3 + 100 + 3 * bounds._FRAMING["titan"].embed_text
    assert not input_bound(req, "unknown", "e").strict


# --- vendor_of -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, model, vendor", [
    ("bedrock", "anthropic.claude-3-5-sonnet-20241022-v2:0", "anthropic"),
    ("bedrock", "us.anthropic.claude-sonnet-4-5-20250929-v1:0", "anthropic"),
    ("bedrock", "global.anthropic.claude-opus-4-7", "anthropic"),
    ("bedrock", "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0", "anthropic"),
    ("bedrock", "arn:aws:bedrock:us-east-1:123456789012:inference-profile/eu.meta.llama3-2-90b-instruct-v1:0", "meta"),
    ("bedrock", "arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.amazon.nova-pro-v1%3A0", "nova"),
    ("bedrock", "arn:aws:bedrock:us-east-1:1:custom-model/cohere.command-r-v1:0/abc123", "cohere"),
    ("bedrock", "arn:aws:bedrock:us-east-1:1:application-inference-profile/a1b2c3", "unknown"),
    ("bedrock", "apac.amazon.nova-lite-v1:0", "nova"), ("bedrock", "amazon.nova-2-lite-v1:0", "nova"),
    ("bedrock", "amazon.titan-embed-text-v2:0", "titan"), ("bedrock", "amazon.titan-text-express-v1", "titan"),
    ("bedrock", "meta.llama3-1-70b-instruct-v1:0", "meta"), ("bedrock", "mistral.pixtral-large-2502-v1:0", "mistral"),
    ("bedrock", "cohere.embed-english-v3", "cohere"), ("bedrock", "ai21.jamba-1-5-large-v1:0", "ai21"),
    ("bedrock", "openai.gpt-oss-120b-1:0", "openai"), ("bedrock", "deepseek.r1-v1:0", "unknown"),
    ("bedrock", "my-fine-tuned-llama", "unknown"), ("bedrock", "", "unknown"),
    ("openai", "gpt-4o", "openai"), ("openai", "gpt-4.1-mini-2025-04-14", "openai"), ("openai", "o3", "openai"),
    ("openai", "o4-mini", "openai"), ("openai", "o1-preview", "openai"), ("openai", "chatgpt-4o-latest", "openai"),
    ("openai", "openai/gpt-4o", "openai"), ("openai", "meta-llama/Llama-3.1-8B-Instruct", "meta"),
    ("openai", "mistralai/Mistral-7B-Instruct-v0.3", "mistral"), ("openai", "claude-sonnet-4-5", "anthropic"),
    ("openai", "qwen2.5-72b", "unknown"), ("openai", "omni-model", "unknown"), ("openai", "o10x", "unknown"),
    ("anthropic", "claude-opus-4-7", "anthropic"), ("anthropic", "anything", "anthropic"),
    ("mistral", "mistral-large-latest", "mistral"), ("mistral", "pixtral-12b", "mistral"),
    ("mock", "anthropic.claude-3-haiku-20240307-v1:0", "mock"), ("mock", "mock-model", "mock"),
])
def test_vendor_of(kind, model, vendor):
    assert vendor_of(kind, model) == vendor


@SETTINGS
@given(st.sampled_from(["bedrock", "openai", "anthropic", "mistral", "mock", "other"]), st.text(max_size=80))
def test_vendor_of_always_answers_a_vendor(kind, model):
    vendor = vendor_of(kind, model)
    assert vendor in VENDORS
    req = chat(TextBlock("hi"), img(png(9, 9)), DocumentBlock("p", "pdf", data=pdf(1)))
    for v in (vendor, "openai", "mistral", "anthropic"):       # any model name, never an exception
        assert input_bound(req, v, model).tokens > 0


def test_the_mock_is_bounded_by_its_own_count():
    """The built-in mock reports `request_tokens` as its input usage: that is its exact bound."""
    from finops.shared.model import EmbedRequest, estimate_tokens, request_tokens
    req = chat(TextBlock("hello there"), img(png(9, 9)))
    assert input_bound(req, "mock", "anything") == InputBound(request_tokens(req), True, ())
    emb = EmbedRequest(texts=["a b c", "defgh"])
    assert input_bound(emb, "mock", "x").tokens == sum(estimate_tokens(t) for t in emb.texts)
