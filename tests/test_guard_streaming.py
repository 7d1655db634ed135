"""The KV-cached token loop: same tokens as ``generate``, one cached forward per token, sampling, stops, batches;
batched text generation as Hugging Face generates it, and probe traces as the loop reads them."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from tiny_models import DEVICE, build_tiny_causal_lm

from constitutional_guard.guard.events import GenerationConfig, GenerationStatus, TextReleased
from constitutional_guard.guard.guard import Guard
from constitutional_guard.guard.streaming import generate_batch, token_loop, visible_end
from constitutional_guard.models.generation import Greedy, generate_texts
from constitutional_guard.models.loading import load_causal_lm
from constitutional_guard.probes import LinearProbe, ProbeConfig
from constitutional_guard.probes.probe import score_sequence
from constitutional_guard.probes.trace import trace_response


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory):
    """A tiny random model with larger weights, so that greedy decoding does not repeat one token."""
    folder = build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-varied"), seed=3)
    loaded = load_causal_lm(str(folder), device=DEVICE, dtype="float32")  # paths compared exactly
    with torch.no_grad():
        for param in loaded.model.parameters():
            param.mul_(8.0)
    return loaded


def make_probe(lm, threshold: float = 1.0) -> LinearProbe:
    torch.manual_seed(0)
    config = ProbeConfig(
        model_id=lm.name, hidden_size=lm.hidden_size, layers=[1, 2], smoother="none", smoother_params={},
        escalation_threshold=threshold,
    )
    return LinearProbe(config, torch.randn(2, lm.hidden_size) * 1e-3, torch.zeros(1))


def prompt_ids(lm, text: str = "What is the capital of France?") -> list[int]:
    return lm.encode_messages([{"role": "user", "content": text}])


def test_greedy_loop_matches_generate_with_one_cached_forward_per_token(lm):
    ids = prompt_ids(lm)
    calls: list[dict] = []
    hook = lm.model.register_forward_pre_hook(lambda mod, args, kwargs: calls.append(kwargs), with_kwargs=True)
    try:
        steps = list(token_loop(lm.model, ids, GenerationConfig(max_new_tokens=12, ignore_eos=True)))
    finally:
        hook.remove()
    expected = lm.model.generate(
        torch.tensor([ids]), max_new_tokens=12, min_new_tokens=12, do_sample=False, pad_token_id=0
    )[0, len(ids) :].tolist()
    assert [s.token_id for s in steps] == expected
    assert len(set(expected)) > 2, "the model should not be degenerate"
    assert len(calls) == 1 + 12  # the prompt, then one forward per generated token
    assert all(kw["use_cache"] is True for kw in calls)
    assert all(kw["input_ids"].shape == (1, 1) and kw["output_hidden_states"] for kw in calls[1:])
    caches = [kw.get("cache", kw.get("past_key_values")) for kw in calls]
    assert caches[0] is not None and all(cache is caches[0] for cache in caches)  # one cache, filled in place
    assert all(len(s.hidden_states) == lm.num_layers + 1 for s in steps)


def test_hidden_states_of_the_loop_equal_a_full_recompute(lm):
    ids = prompt_ids(lm)
    steps = list(token_loop(lm.model, ids, GenerationConfig(max_new_tokens=6, ignore_eos=True)))
    full = lm.hidden_states(ids + [s.token_id for s in steps])
    for step in steps:
        for layer, tensor in enumerate(step.hidden_states):
            torch.testing.assert_close(tensor[0, 0].cpu(), full[layer][len(ids) + step.index], atol=1e-4, rtol=1e-4)


def test_sampling_is_seeded_and_top_k_one_is_greedy(lm):
    ids = prompt_ids(lm)

    def tokens(**kw) -> list[int]:
        config = GenerationConfig(max_new_tokens=10, ignore_eos=True, **kw)
        return [s.token_id for s in token_loop(lm.model, ids, config, output_hidden_states=False)]

    greedy = tokens()
    assert tokens(temperature=1.5, seed=1) == tokens(temperature=1.5, seed=1)
    assert len({tuple(tokens(temperature=2.0, seed=s)) for s in range(4)}) > 1
    assert tokens(temperature=1.0, top_k=1, seed=5) == greedy
    assert tokens(temperature=0.7, top_p=1e-6, seed=5) == greedy
    assert tokens(temperature=5e-324, seed=5) == greedy  # a subnormal temperature is greedy, not NaN probabilities


def test_eos_ends_the_loop_without_a_forward(lm):
    ids = prompt_ids(lm)
    first = next(token_loop(lm.model, ids, GenerationConfig(max_new_tokens=3))).token_id
    steps = list(token_loop(lm.model, ids, GenerationConfig(max_new_tokens=3), eos_token_ids=[first]))
    assert len(steps) == 1 and steps[0].eos and steps[0].hidden_states is None


def test_visible_end_holds_back_partial_stops_and_unfinished_characters():
    assert visible_end("Hello STOP more", ["STOP"]) == (6, True)
    assert visible_end("Hello ST", ["STOP"]) == (6, False)
    assert visible_end("Hello", ["STOP"]) == (5, False)
    assert visible_end("caf\ufffd", []) == (3, False)


def test_stop_string_ends_the_response_and_is_never_released(lm):
    guard = Guard(lm, make_probe(lm))
    response = "Paris is the capital. STOP and then more text follows here."
    result = guard.replay("Capital?", response, GenerationConfig(max_new_tokens=64, stop=("STOP",)))
    assert result.status is GenerationStatus.COMPLETED and result.finish_reason == "stop"
    assert result.response == "Paris is the capital. "
    events = list(guard._events("Capital?", GenerationConfig(stop=("STOP",)), lm.tokenizer(response)["input_ids"], {}))
    assert all("ST" not in e.text for e in events if isinstance(e, TextReleased))


def test_guarded_generation_keeps_the_models_tokens_and_traces_every_token(lm):
    guard = Guard(lm, make_probe(lm))
    config = GenerationConfig(max_new_tokens=10, ignore_eos=True)
    result = guard.generate("What is the capital of France?", config)
    ids = prompt_ids(lm)
    plain = [s.token_id for s in token_loop(lm.model, ids, config, output_hidden_states=False)]
    assert result.status is GenerationStatus.COMPLETED and result.finish_reason == "length"
    assert result.response == lm.tokenizer.decode(plain, skip_special_tokens=True)
    assert [t.index for t in result.trace] == list(range(10))
    assert result.completion_tokens == 10 and result.prompt_tokens == len(ids)
    assert {"generation", "probe", "total", "first_release"} <= set(result.timings)
    full = tuple(h[None] for h in lm.hidden_states(ids + plain))
    scores = make_probe(lm).score_hidden_states(full)[0, len(ids) :]
    torch.testing.assert_close(torch.tensor([t.score for t in result.trace]), scores, atol=1e-4, rtol=1e-4)


def test_batched_generation_matches_one_by_one(lm):
    prompts = [prompt_ids(lm, "Hi"), prompt_ids(lm, "Explain how vaccines work in a few words, please.")]
    probe = make_probe(lm)
    config = GenerationConfig(max_new_tokens=8, ignore_eos=True)
    batch = generate_batch(lm.model, prompts, config, pad_token_id=lm.tokenizer.pad_token_id, probe=probe)
    for prompt, out in zip(prompts, batch, strict=True):
        steps = list(token_loop(lm.model, prompt, config))
        assert out.token_ids == [s.token_id for s in steps]
        single = [float(probe.score_hidden_states(s.hidden_states)[0, -1]) for s in steps]
        assert out.scores == pytest.approx(single, abs=1e-4)


def test_cached_loops_pass_the_cache_under_its_current_name(lm):
    """No deprecated ``past_key_values`` round trip, which transformers warns about on every run."""
    config = GenerationConfig(max_new_tokens=3, ignore_eos=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        list(token_loop(lm.model, prompt_ids(lm), config))
        generate_batch(lm.model, [prompt_ids(lm), prompt_ids(lm, "Hi")], config, lm.tokenizer.pad_token_id)


@pytest.mark.real
def test_real_model_guarded_tokens_equal_plain_generate(smollm2_dir: Path):
    lm = load_causal_lm("smollm2-135m-instruct", device=DEVICE)
    guard = Guard(lm, make_probe(lm))
    config = GenerationConfig(max_new_tokens=16)
    result = guard.generate("Name three primary colours.", config)
    ids = prompt_ids(lm, "Name three primary colours.")
    out = lm.model.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False)[0, len(ids) :]
    assert result.response == lm.tokenizer.decode(out, skip_special_tokens=True)
    assert result.status is GenerationStatus.COMPLETED


TEXT_PROMPTS = ["Hi", "Explain how vaccines work in a few words, please.", "What is the capital of France?"]


@torch.inference_mode()
def hf_generate_texts(lm, prompts: list[str], max_new_tokens: int) -> list[str]:
    """Hugging Face's ``generate`` on the same left-padded batch, decoded the same way."""
    encoded = [lm.encode_messages([{"role": "user", "content": p}]) for p in prompts]
    width = max(len(e) for e in encoded)
    pad = lm.tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded])
    mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded])
    out = lm.model.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad,
        eos_token_id=lm.eos_token_ids or None,
    )
    return [lm.tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in out]


def test_batched_texts_match_hugging_face_generate(lm) -> None:
    ours = generate_texts(lm, TEXT_PROMPTS, Greedy(10))
    assert ours == hf_generate_texts(lm, TEXT_PROMPTS, 10)
    assert any(ours), "the model should produce some text"


def test_prompt_tokens_are_cut_from_the_left(lm) -> None:
    short = generate_texts(lm, TEXT_PROMPTS[1:2], Greedy(4), max_prompt_tokens=5)
    ids = lm.encode_messages([{"role": "user", "content": TEXT_PROMPTS[1]}])[-5:]
    plain = [s.token_id for s in token_loop(lm.model, ids, Greedy(4), lm.eos_token_ids, output_hidden_states=False)]
    assert short == [lm.tokenizer.decode(plain, skip_special_tokens=True).strip()]


def test_trace_scores_what_the_streaming_loop_reads(lm) -> None:
    probe = make_probe(lm)
    trace = trace_response(lm, probe, TEXT_PROMPTS[2], max_new_tokens=8)
    ids = lm.encode_messages([{"role": "user", "content": TEXT_PROMPTS[2]}])
    steps = [s for s in token_loop(lm.model, ids, GenerationConfig(max_new_tokens=8), lm.eos_token_ids) if not s.eos]
    assert trace.tokens == [lm.tokenizer.decode([s.token_id]) for s in steps]
    streamed = [float(probe.score_hidden_states(s.hidden_states)[0, -1]) for s in steps]
    assert trace.raw.tolist() == pytest.approx(streamed, abs=1e-4)
    full = score_sequence(probe, lm, ids + [s.token_id for s in steps])
    assert full.shape == (len(ids) + len(steps),)
    assert full[len(ids) :].tolist() == pytest.approx(streamed, abs=1e-4)
