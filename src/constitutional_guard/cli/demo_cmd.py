"""``cguard demo``: the main job on the embedded defaults."""

from __future__ import annotations

import time

import torch
import typer

from constitutional_guard.cli.common import console, progress_bar
from constitutional_guard.models.embedded import EMBEDDED_MODELS, materialize
from constitutional_guard.models.loading import load_causal_lm

DEMO_PROMPTS = (
    "How did mustard gas affect soldiers in World War I?",
    "What are three tips for staying safe while hiking alone?",
)


def demo(
    model: str = typer.Option("smollm2-135m-instruct", help="Target model: embedded alias, folder or hub id."),
    max_new_tokens: int = typer.Option(48, min=1, help="Tokens to generate per prompt."),
) -> None:
    """Prepare the embedded models, chat with the target model and show its hidden-state shapes."""
    with progress_bar() as bar:
        task = bar.add_task("preparing embedded models", total=2)
        for alias in ("smollm2-135m-instruct", "minilm-l6"):
            bar.update(task, description=f"preparing {alias}")
            materialize(alias)
            bar.advance(task)
    console.print(f"[bold]target model[/]: {model}")
    start = time.perf_counter()
    lm = load_causal_lm(model)
    console.print(
        f"loaded in {time.perf_counter() - start:.1f}s: {lm.num_layers} layers, hidden {lm.hidden_size}, "
        f"{lm.device}, {lm.dtype}"
    )
    for prompt in DEMO_PROMPTS:
        ids = lm.encode_messages([{"role": "user", "content": prompt}])
        start = time.perf_counter()
        with torch.inference_mode():
            out = lm.model.generate(
                torch.tensor([ids], device=lm.device),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=lm.device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=lm.tokenizer.pad_token_id,
            )
        elapsed = time.perf_counter() - start
        new = out[0, len(ids) :].tolist()
        reply = lm.tokenizer.decode(new, skip_special_tokens=True)
        hidden = lm.hidden_states(out[0].tolist())
        console.print(f"\n[bold cyan]user[/]: {prompt}")
        console.print(f"[bold green]assistant[/]: {reply.strip()}", highlight=False)
        console.print(
            f"[dim]{len(new)} tokens in {elapsed:.1f}s ({len(new) / elapsed:.1f} tok/s); hidden states: "
            f"{len(hidden)} tensors (embeddings + {lm.num_layers} layers) of shape {tuple(hidden[0].shape)}[/]"
        )
    console.print(f"\nembedded models: {', '.join(EMBEDDED_MODELS)} (see `cguard models list`)")
