"""Batched sampling with a KV cache, temperature, nucleus (top-p) truncation and rule masks.

Each row draws its tokens by inverse CDF on one uniform per step, a hash of its seed and the step
(`trajsim.model.draws`), so a patient's sequence depends on its own seed, not on which other patients
share the batch, and the draws of a whole batch take a few array operations.
Masks arrive as boolean arrays (rows x vocabulary); forbidden tokens get -inf logits, so they can
never be drawn however confident the model is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from trajsim.model.draws import uniforms
from trajsim.model.gpt import GPT, KVCache
from trajsim.model.tokenizer import HEADER, YEAR_AT

# Called after every step with the tokens drawn so far (rows x length); returns the allowed tokens
# of the next step (rows x vocabulary) or None for no constraint.
Constraint = Callable[[torch.Tensor], np.ndarray | None]


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch and numpy's BLAS on one thread: a sampling step's matrix products (and the rule
    masks') are small, so more threads only add synchronisation; run shards in parallel instead."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(threads)


def next_token(logits: torch.Tensor, uniforms: np.ndarray, temperature: float = 1.0, top_p: float = 1.0,
               allowed: np.ndarray | None = None) -> torch.Tensor:
    """One token per row from the last-position logits (rows x vocabulary), by inverse CDF on each
    row's uniform in (0, 1)."""
    logits = logits.float()
    if allowed is not None:
        logits = torch.where(torch.from_numpy(np.ascontiguousarray(allowed)), logits, float("-inf"))
    if temperature <= 0:
        return logits.argmax(dim=-1)
    weights = torch.softmax(logits if temperature == 1.0 else logits / temperature, dim=-1)
    order = None
    if top_p < 1.0:
        # keep the smallest set whose mass reaches top_p (always at least the most likely token)
        weights, order = weights.sort(dim=-1, descending=True)
        weights = weights.masked_fill(weights.cumsum(dim=-1) - weights >= top_p, 0.0)
    cumulative = weights.cumsum(dim=-1)
    targets = torch.from_numpy(uniforms).float().unsqueeze(1) * cumulative[:, -1:]  # the total, rounding included
    # The first token whose cumulative weight reaches a target above 0 has a weight above 0, and a
    # target never exceeds the total: no forbidden token, however rounding falls.
    picks = torch.searchsorted(cumulative, targets)
    return picks.squeeze(1) if order is None else order.gather(1, picks).squeeze(1)


def _slid(model: GPT, rows: torch.Tensor, header_length: int) -> tuple[KVCache, torch.Tensor]:
    """A fresh cache holding each row's header (with the year it has reached, for a model with a
    calendar) and its latest half context, and the next logits."""
    keep = model.config.block_size // 2 - header_length
    header = rows[:, :header_length].clone()
    year = model.latest_year_tokens(rows)
    if year is not None:
        header[:, YEAR_AT] = year
    context = torch.cat([header, rows[:, -keep:]], dim=1)
    cache = KVCache(model.config, len(rows))
    return cache, model(context, cache)[:, -1]


@torch.inference_mode()
def generate(model: GPT, prompts: torch.Tensor, seeds: np.ndarray, max_new_tokens: int,
             stop_token: int, temperature: float = 1.0, top_p: float = 1.0,
             constraint: Constraint | None = None, header_length: int = HEADER) -> torch.Tensor:
    """Continue each prompt row (all the same length, one uint64 seed a row: `draws.row_seeds`)
    until it emits `stop_token` or has `max_new_tokens` more; rows that stopped are padded with
    `stop_token`. A row longer than the
    model's context goes on from its header (its first `header_length` tokens) and the latest half
    context, as the model was trained."""
    model.eval()
    rows, prompt_length = prompts.shape
    budget = max_new_tokens
    tokens = torch.full((rows, prompt_length + budget), stop_token, dtype=torch.long)
    tokens[:, :prompt_length] = prompts
    cache = KVCache(model.config, rows)
    logits = model(prompts, cache)[:, -1]
    in_cache = torch.arange(rows)  # original row of each cache row
    done = np.zeros(rows, dtype=bool)
    length = prompt_length
    for _ in range(budget):
        allowed = constraint(tokens[:, :length]) if constraint is not None else None
        members = in_cache.numpy()
        drawn = next_token(logits, uniforms(seeds[members], length), temperature, top_p, None if allowed is None else allowed[members])
        drawn[torch.from_numpy(done[members])] = stop_token
        tokens[in_cache, length] = drawn
        length += 1
        done[members] |= (drawn == stop_token).numpy()
        if done.all():
            break
        finished = torch.from_numpy(done[members])
        if int(finished.sum()) * 8 >= len(members):  # drop finished rows once they are an eighth
            cache.keep(~finished)
            in_cache, drawn = in_cache[~finished], drawn[~finished]
        if cache.length >= model.config.block_size:
            cache, logits = _slid(model, tokens[in_cache, :length], header_length)
        else:
            logits = model(drawn[:, None], cache)[:, -1]
    return tokens[:, :length]
