"""Price table, cost arithmetic and savings rules (golden figures to 1e-9 USD), and price-file validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cco.config import ConfigError, bundled_config_dir
from cco.pricing import (CallCost, LongContext, Price, PriceTable, Usage, call_cost, cost_at, load_price_table,
                         usage_from_anthropic)

EPS = 1e-9
SHIPPED = bundled_config_dir() / "model-pricing.json"

SONNET = Price(input=3.0, output=15.0, cache_write=3.75, cache_write_1h=6.0, cache_read=0.3, batch_discount=0.5,
               long_context=LongContext(threshold=200_000, input=6.0, output=22.5, cache_write=7.5,
                                        cache_write_1h=12.0, cache_read=0.6))
HAIKU = Price(input=1.0, output=5.0, cache_write=1.25, cache_write_1h=2.0, cache_read=0.1, batch_discount=0.5)
OPUS = Price(input=5.0, output=25.0, cache_write=6.25, cache_write_1h=10.0, cache_read=0.5, batch_discount=0.5)
LOCAL = Price(input=0.0, output=0.0, savings_comparison="claude-sonnet-4-5")


def table() -> PriceTable:
    return PriceTable({"claude-sonnet-4-5": SONNET, "claude-haiku-4-5": HAIKU, "claude-opus-4-5": OPUS,
                       "gpt-4o": Price(input=2.5, output=10.0, cache_read=1.25),
                       "ollama/*": LOCAL, "llama*": LOCAL})


def close(a: float, b: float) -> bool:
    return abs(a - b) <= EPS


# --- cost_at ------------------------------------------------------------------------------------------------

def test_plain_call():
    # 1,000 in × $3 + 500 out × $15 per million
    assert close(cost_at(SONNET, Usage(input_tokens=1_000, output_tokens=500)), 0.0105)


def test_five_minute_and_one_hour_cache_writes():
    # 10k written for 5 minutes at $3.75 and 20k for an hour at $6; the 1-hour tokens are part of the total
    usage = Usage(input_tokens=100, output_tokens=200, cache_creation_tokens=30_000, cache_creation_1h_tokens=20_000)
    expected = (100 * 3 + 200 * 15 + 10_000 * 3.75 + 20_000 * 6) / 1e6
    assert close(cost_at(SONNET, usage), expected)
    assert close(expected, 0.1608)


def test_cache_reads():
    usage = Usage(input_tokens=50, output_tokens=100, cache_read_tokens=100_000)
    assert close(cost_at(SONNET, usage), (50 * 3 + 100 * 15 + 100_000 * 0.3) / 1e6)
    assert close(cost_at(SONNET, usage), 0.03165)


def test_missing_cache_prices_fall_back_to_input():
    bare = Price(input=2.0, output=8.0)
    usage = Usage(cache_creation_tokens=1_000_000, cache_creation_1h_tokens=250_000, cache_read_tokens=1_000_000)
    assert close(cost_at(bare, usage), 2.0 * 2)


def test_long_context_tier_just_below_and_above_threshold():
    # the prompt is input + cache writes + cache reads; exactly at the threshold stays on the base prices
    at_threshold = Usage(input_tokens=100_000, cache_creation_tokens=50_000, cache_read_tokens=50_000,
                         output_tokens=1_000)
    assert close(cost_at(SONNET, at_threshold), (100_000 * 3 + 50_000 * 3.75 + 50_000 * 0.3 + 1_000 * 15) / 1e6)
    assert close(cost_at(SONNET, at_threshold), 0.5175)
    above = Usage(input_tokens=100_001, cache_creation_tokens=50_000, cache_read_tokens=50_000, output_tokens=1_000)
    # every token of the call, output included, moves to the long-context prices
    expected = (100_001 * 6 + 50_000 * 7.5 + 50_000 * 0.6 + 1_000 * 22.5) / 1e6
    assert close(cost_at(SONNET, above), expected)
    assert close(expected, 1.027506)


def test_long_context_tier_missing_cache_prices_fall_back_to_tier_input():
    price = Price(input=1.0, output=2.0, cache_read=0.1,
                  long_context=LongContext(threshold=10, input=4.0, output=8.0))
    usage = Usage(input_tokens=5, cache_read_tokens=1_000_000)
    assert close(cost_at(price, usage), (5 * 4.0 + 1_000_000 * 4.0) / 1e6)


def test_batch_discount():
    usage = Usage(input_tokens=1_000, output_tokens=500, cache_read_tokens=2_000)
    full = cost_at(SONNET, usage)
    assert close(cost_at(SONNET, usage, batch=True), full * 0.5)
    assert close(cost_at(Price(input=1.0, output=1.0), Usage(input_tokens=1_000_000), batch=True), 1.0)


# --- lookup -------------------------------------------------------------------------------------------------

def test_dated_id_matches_base_entry():
    prices = table()
    assert prices.lookup("claude-sonnet-4-5-20250929") is SONNET
    assert prices.lookup("gpt-4o-2024-08-06") is prices.lookup("gpt-4o")
    assert prices.price_of("claude-haiku-4-5-20251001") is HAIKU
    assert prices.lookup("claude-sonnet-4-5-preview") is None  # only a date suffix is stripped


def test_star_patterns_match_in_file_order_after_exact_ids():
    prices = PriceTable({"ollama/special": HAIKU, "ollama/*": LOCAL, "*": OPUS})
    assert prices.lookup("ollama/llama3.2") is LOCAL
    assert prices.lookup("ollama/special") is HAIKU
    assert prices.lookup("anything-else") is OPUS


def test_unknown_model_costs_nothing_and_is_unpriced():
    result = call_cost(table(), "mystery-model", Usage(input_tokens=1_000, output_tokens=1_000))
    assert result == CallCost(cost=0.0, would_be_cost=0.0, savings=0.0, unpriced=True)


def test_lookup_memo_is_bounded():
    prices = PriceTable({"a": HAIKU}, memo_size=8)
    for i in range(100):
        assert prices.lookup(f"made-up-{i}") is None
    assert len(prices._memo) <= 8
    assert prices.lookup("a") is HAIKU


def test_table_behaves_like_a_collection_of_ids():
    prices = table()
    assert "claude-sonnet-4-5" in prices and "claude-sonnet-4-5-20250929" not in prices
    assert list(prices)[:2] == ["claude-sonnet-4-5", "claude-haiku-4-5"]
    assert len(prices) == 6
    assert prices.as_dict()["ollama/*"] == {"input": 0.0, "output": 0.0, "batch_discount": 0.0,
                                            "savings_comparison": "claude-sonnet-4-5"}
    json.dumps(prices.as_dict())


# --- call_cost rules ----------------------------------------------------------------------------------------

def test_plain_miss_saves_nothing():
    usage = Usage(input_tokens=1_000, output_tokens=500)
    result = call_cost(table(), "claude-sonnet-4-5-20250929", usage)
    assert close(result.cost, 0.0105) and close(result.would_be_cost, 0.0105) and result.savings == 0.0
    assert not result.unpriced


def test_local_model_costs_nothing_and_saves_its_comparison_price():
    usage = Usage(input_tokens=1_000, output_tokens=500)
    for model in ("ollama/llama3.2", "llama3.1:8b"):
        result = call_cost(table(), model, usage)
        assert result.cost == 0.0 and not result.unpriced
        assert close(result.would_be_cost, 0.0105) and close(result.savings, 0.0105)


def test_cache_hit_and_coalesced_cost_nothing_and_save_the_original():
    usage = Usage(input_tokens=1_000, output_tokens=500, cache_read_tokens=2_000)
    original = (1_000 * 3 + 500 * 15 + 2_000 * 0.3) / 1e6
    for outcome in ("hit", "coalesced"):
        result = call_cost(table(), "claude-sonnet-4-5", usage, cache=outcome)
        assert result.cost == 0.0 and close(result.would_be_cost, original) and close(result.savings, original)
    local_hit = call_cost(table(), "ollama/qwen3", usage, cache="hit")
    assert local_hit.cost == 0.0 and close(local_hit.savings, original)  # valued at the comparison model
    unknown_hit = call_cost(table(), "mystery", usage, cache="hit")
    assert unknown_hit == CallCost(cost=0.0, would_be_cost=0.0, savings=0.0, unpriced=True)


def test_override_to_cheaper_model_saves_the_price_difference():
    usage = Usage(input_tokens=10_000, output_tokens=2_000)
    result = call_cost(table(), "claude-haiku-4-5", usage, requested_model="claude-sonnet-4-5-20250929",
                       overridden=True)
    assert close(result.cost, (10_000 * 1 + 2_000 * 5) / 1e6)
    assert close(result.would_be_cost, (10_000 * 3 + 2_000 * 15) / 1e6)
    assert close(result.savings, 0.04)


def test_override_to_pricier_model_has_negative_savings():
    usage = Usage(input_tokens=10_000, output_tokens=2_000)
    result = call_cost(table(), "claude-opus-4-5", usage, requested_model="claude-haiku-4-5", overridden=True)
    assert close(result.cost, 0.1) and close(result.would_be_cost, 0.02)
    assert close(result.savings, -0.08)


def test_override_edge_cases():
    usage = Usage(input_tokens=10_000, output_tokens=2_000)
    # the requested model is unpriced: nothing to compare with
    result = call_cost(table(), "claude-haiku-4-5", usage, requested_model="mystery", overridden=True)
    assert result.savings == 0.0 and close(result.would_be_cost, result.cost)
    # requested_model without `overridden` is just informational
    result = call_cost(table(), "claude-haiku-4-5", usage, requested_model="claude-sonnet-4-5")
    assert result.savings == 0.0
    # an override onto an unknown model: no cost known, the requested model's price is what was avoided
    result = call_cost(table(), "mystery", usage, requested_model="claude-haiku-4-5", overridden=True)
    assert result.unpriced and result.cost == 0.0 and close(result.would_be_cost, 0.02) and close(result.savings, 0.02)
    # an override onto a local model: valued at the requested model's prices
    result = call_cost(table(), "ollama/llama3", usage, requested_model="claude-opus-4-5", overridden=True)
    assert result.cost == 0.0 and close(result.savings, 0.1)


def test_batch_applies_to_every_figure():
    usage = Usage(input_tokens=10_000, output_tokens=2_000)
    result = call_cost(table(), "claude-haiku-4-5", usage, batch=True, requested_model="claude-sonnet-4-5",
                       overridden=True)
    assert close(result.cost, 0.01) and close(result.would_be_cost, 0.03) and close(result.savings, 0.02)


# --- usage_from_anthropic -----------------------------------------------------------------------------------

def test_usage_from_anthropic_reads_the_cache_breakdown():
    usage = usage_from_anthropic({"input_tokens": 12, "output_tokens": 34, "cache_creation_input_tokens": 300,
                                  "cache_read_input_tokens": 56,
                                  "cache_creation": {"ephemeral_5m_input_tokens": 100,
                                                     "ephemeral_1h_input_tokens": 200}})
    assert usage == Usage(input_tokens=12, output_tokens=34, cache_creation_tokens=300, cache_creation_1h_tokens=200,
                          cache_read_tokens=56)


@pytest.mark.parametrize("obj, expected", [
    (None, Usage()),
    ("nope", Usage()),
    ({}, Usage()),
    ({"input_tokens": None, "output_tokens": "7", "cache_read_input_tokens": 1.5, "cache_creation": None}, Usage()),
    ({"input_tokens": True, "output_tokens": -3}, Usage()),
    ({"cache_creation": {"ephemeral_1h_input_tokens": 40, "ephemeral_5m_input_tokens": 10}},
     Usage(cache_creation_tokens=50, cache_creation_1h_tokens=40)),
    ({"cache_creation_input_tokens": 70, "cache_creation": {"ephemeral_1h_input_tokens": "x"}},
     Usage(cache_creation_tokens=70)),
])
def test_usage_from_anthropic_is_tolerant(obj, expected):
    assert usage_from_anthropic(obj) == expected


# --- the loader ---------------------------------------------------------------------------------------------

def write(tmp_path: Path, data) -> Path:
    path = tmp_path / "model-pricing.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


@pytest.mark.parametrize("data, json_path, words", [
    ("{not json", "$", "invalid JSON"),
    ([], "$", "expected an object"),
    ({"prices": {}}, "$.pricing", "expected an object"),
    ({"pricing": []}, "$.pricing", "expected an object"),
    ({"pricing": {}, "extra": 1}, "$.extra", "unknown field"),
    ({"pricing": {"claude-x": {"input": -1}}}, '$.pricing["claude-x"].input', "price must be >= 0, got -1"),
    ({"pricing": {"claude-x": {"cache_read": -0.5}}}, '$.pricing["claude-x"].cache_read', "got -0.5"),
    ({"pricing": {"claude-x": {"input": "3"}}}, '$.pricing["claude-x"].input', "Expected float, got str"),
    ({"pricing": {"claude-x": {"input": True}}}, '$.pricing["claude-x"].input', "Expected float, got bool"),
    ({"pricing": {"claude-x": {"inptu": 3}}}, '$.pricing["claude-x"]', "unknown field"),
    ({"pricing": {"claude-x": 3}}, '$.pricing["claude-x"]', "Expected object"),
    ({"pricing": {"claude-x": {"batch_discount": 1}}}, '$.pricing["claude-x"].batch_discount', "[0, 1)"),
    ({"pricing": {"claude-x": {"batch_discount": -0.1}}}, '$.pricing["claude-x"].batch_discount', "[0, 1)"),
    ({"pricing": {"claude-x": {"long_context": {"threshold": 0, "input": 1, "output": 1}}}},
     '$.pricing["claude-x"].long_context.threshold', "must be > 0"),
    ({"pricing": {"claude-x": {"long_context": {"threshold": 10, "input": 1}}}},
     '$.pricing["claude-x"].long_context', "missing required field"),
    ({"pricing": {"claude-x": {"long_context": {"threshold": 10, "input": 1, "output": -2}}}},
     '$.pricing["claude-x"].long_context.output', "price must be >= 0, got -2"),
    ({"pricing": {"claude-x": {"long_context": {"threshold": 1.5, "input": 1, "output": 1}}}},
     '$.pricing["claude-x"].long_context.threshold', "Expected int"),
    ({"pricing": {"ollama/*": {"savings_comparison": "claude-nowhere"}}},
     '$.pricing["ollama/*"].savings_comparison', '"claude-nowhere" names no priced'),
    ({"pricing": {"a/*": {"savings_comparison": "b"}, "b": {"savings_comparison": "a/x"}}},
     '$.pricing["a/*"].savings_comparison', "names no priced"),
])
def test_invalid_price_files_name_file_and_json_path(tmp_path, data, json_path, words):
    with pytest.raises(ConfigError) as info:
        load_price_table(write(tmp_path, data))
    message = str(info.value)
    assert message.startswith(f"model-pricing.json: {json_path}: "), message
    assert words in message, message
    assert info.value.file == "model-pricing.json" and info.value.path == json_path


def test_unreadable_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"model-pricing.json: \$: cannot read"):
        load_price_table(tmp_path / "model-pricing.json")


def test_comments_empty_entries_and_dated_comparison_targets_load(tmp_path):
    prices = load_price_table(write(tmp_path, {
        "_source": "x", "_updated": "2026-12-05", "_notes": ["free text"],
        "pricing": {"claude-sonnet-4-5": {"input": 3, "output": 15}, "gpt-4o": {},
                    "ollama/*": {"input": 0, "output": 0, "savings_comparison": "claude-sonnet-4-5-20250929"}}}))
    assert list(prices) == ["claude-sonnet-4-5", "gpt-4o", "ollama/*"]
    assert prices.lookup("gpt-4o") == Price()
    assert prices.lookup("claude-sonnet-4-5").input == 3.0


# --- the shipped price file ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shipped() -> PriceTable:
    return load_price_table(SHIPPED)


def test_shipped_file_loads_with_its_provenance(shipped):
    data = json.loads(SHIPPED.read_text())
    assert "platform.claude.com" in data["_source"] and "developers.openai.com" in data["_source"]
    assert data["_updated"] == "2026-12-05"
    assert len(shipped) >= 50


@pytest.mark.parametrize("model", [
    "claude-opus-4-5-20251101", "claude-opus-4-1-20250805", "claude-opus-4-20250514", "claude-sonnet-4-5-20250929",
    "claude-sonnet-4-20250514", "claude-3-7-sonnet-20250219", "claude-3-7-sonnet-latest", "claude-haiku-4-5-20251001",
    "claude-3-5-haiku-20241022", "claude-3-haiku-20240307", "claude-opus-4-6", "claude-sonnet-4-6",
    "claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5", "claude-fable-5-2",
    "gpt-5", "gpt-5-mini", "gpt-5-nano", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "gpt-4o", "gpt-4o-mini",
    "gpt-4o-2024-08-06", "o3", "o4-mini", "gpt-6.2-sol",
])
def test_shipped_file_prices_models_in_use(shipped, model):
    price = shipped.lookup(model)
    assert price is not None and price.input > 0 and price.output > 0 and price.savings_comparison is None


@pytest.mark.parametrize("model", ["ollama/llama3.2", "local/whatever", "llama3.3:70b", "qwen3-coder:30b",
                                   "mistral-small", "deepseek-r1:14b", "gemma3:27b"])
def test_shipped_file_values_local_models_at_a_priced_comparison(shipped, model):
    price = shipped.lookup(model)
    assert price is not None and price.input == 0 and price.output == 0
    comparison = shipped.lookup(price.savings_comparison)
    assert comparison is not None and comparison.input > 0


# Published list prices, USD per MTok: (input, output, 5m write, 1h write, cache read), from
# https://platform.claude.com/docs/en/about-claude/pricing and https://developers.openai.com/api/docs/models/*.
@pytest.mark.parametrize("model, published", [
    ("claude-opus-4-5", (5, 25, 6.25, 10, 0.5)),
    ("claude-opus-4-1", (15, 75, 18.75, 30, 1.5)),
    ("claude-opus-4", (15, 75, 18.75, 30, 1.5)),
    ("claude-sonnet-4-5", (3, 15, 3.75, 6, 0.3)),
    ("claude-sonnet-4", (3, 15, 3.75, 6, 0.3)),
    ("claude-3-7-sonnet", (3, 15, 3.75, 6, 0.3)),
    ("claude-haiku-4-5", (1, 5, 1.25, 2, 0.1)),
    ("claude-3-5-haiku", (0.8, 4, 1, 1.6, 0.08)),
    ("claude-3-haiku", (0.25, 1.25, 0.3, 0.5, 0.03)),
    ("claude-opus-5-5", (4, 20, 5, 8, 0.2)),
    ("claude-fable-5-1", (10, 50, 12.5, 20, 0.25)),
    ("gpt-6-sol", (2, 10, 2.5, 2.5, 0.2)),
])
def test_shipped_prices_match_published_list_prices(shipped, model, published):
    price = shipped.lookup(model)
    assert (price.input, price.output, price.cache_write, price.cache_write_1h, price.cache_read) == published
    assert price.batch_discount == 0.5


@pytest.mark.parametrize("model, published", [
    ("gpt-5", (1.25, 0.125, 10)), ("gpt-5-mini", (0.25, 0.025, 2)), ("gpt-5-nano", (0.05, 0.005, 0.4)),
    ("gpt-4.1", (2, 0.5, 8)), ("gpt-4o", (2.5, 1.25, 10)), ("gpt-4o-mini", (0.15, 0.075, 0.6)),
    ("o3", (2, 0.5, 8)), ("o4-mini", (1.1, 0.275, 4.4)),
])
def test_shipped_openai_prices_input_cached_output(shipped, model, published):
    # OpenAI publishes input / cached input / output; a cache write there is billed as ordinary input
    price = shipped.lookup(model)
    assert (price.input, price.cache_read, price.output) == published and price.cache_write == price.input


def test_anthropic_published_batch_prices(shipped):
    # Anthropic's batch processing page lists batch prices per MTok: Claude Haiku 3 $0.125 in / $0.625 out,
    # Claude Sonnet 4 $1.50 / $7.50, Claude Haiku 3.5 $0.40 / $2, Claude Opus 4.1 $7.50 / $37.50
    # (https://docs.anthropic.com/en/docs/build-with-claude/batch-processing).
    # (100K tokens at a time: a 1M-token prompt would put Sonnet 4 on its long-context prices.)
    tenth_in = Usage(input_tokens=100_000)
    tenth_out = Usage(output_tokens=100_000)
    published = [("claude-3-haiku-20240307", 0.125, 0.625), ("claude-sonnet-4-20250514", 1.5, 7.5),
                 ("claude-3-5-haiku-20241022", 0.4, 2.0), ("claude-opus-4-1-20250805", 7.5, 37.5)]
    for model, batch_in, batch_out in published:
        assert close(call_cost(shipped, model, tenth_in, batch=True).cost, batch_in / 10)
        assert close(call_cost(shipped, model, tenth_out, batch=True).cost, batch_out / 10)


def test_anthropic_published_long_context_prices(shipped):
    # Anthropic's pricing page: with the 1M context window, Sonnet 4 / 4.5 prompts of <= 200K input tokens cost
    # $3 / $15 per MTok and prompts of > 200K cost $6 / $22.50, for the whole request.
    for model in ("claude-sonnet-4-5-20250929", "claude-sonnet-4-20250514"):
        at = call_cost(shipped, model, Usage(input_tokens=200_000, output_tokens=10_000)).cost
        over = call_cost(shipped, model, Usage(input_tokens=200_001, output_tokens=10_000)).cost
        assert close(at, 200_000 * 3 / 1e6 + 10_000 * 15 / 1e6)
        assert close(over, 200_001 * 6 / 1e6 + 10_000 * 22.5 / 1e6)
    # Claude Haiku 5.5: prompts over 100,000 tokens cost $0.50 / $2.50 instead of $0.10 / $0.50 (model page)
    assert close(call_cost(shipped, "claude-haiku-5-5", Usage(input_tokens=100_000)).cost, 0.01)
    assert close(call_cost(shipped, "claude-haiku-5-5", Usage(input_tokens=100_001)).cost, 100_001 * 0.5 / 1e6)


def test_cross_check_worked_example(shipped):
    # Worked example from a third-party write-up of Anthropic's batch page (neverpaytwice, "Claude Batch API: half
    # price, if you can wait"): an Opus 5.5 request with 5,000 input and 800 output tokens costs $0.036 at the
    # standard rate and $0.018 in a batch.
    usage = Usage(input_tokens=5_000, output_tokens=800)
    assert close(call_cost(shipped, "claude-opus-5-5", usage).cost, 0.036)
    assert close(call_cost(shipped, "claude-opus-5-5", usage, batch=True).cost, 0.018)
