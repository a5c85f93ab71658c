"""Batched sampling: masks are absolute, top-p keeps only the nucleus, and a row's draws depend on
its own random stream only."""

from __future__ import annotations

import numpy as np
import torch

from trajsim.model.draws import row_seeds, uniforms
from trajsim.model.gpt import GPT, GPTConfig
from trajsim.model.sample import _slid, generate, next_token
from trajsim.model.tokenizer import HEADER

from tests.test_model_train import one_torch_thread  # noqa: F401 - autouse fixture


def test_forbidden_tokens_are_never_drawn_however_likely():
    rng = np.random.default_rng(0)
    logits = torch.from_numpy(rng.normal(size=(10_000, 50))).float()
    allowed = rng.random((10_000, 50)) < 0.3
    allowed[:, 0] = True
    logits[~torch.from_numpy(allowed)] += 50.0  # forbidden tokens are the model's favourites
    drawn = next_token(logits, rng.random(10_000), allowed=allowed).numpy()
    assert allowed[np.arange(10_000), drawn].all()


def test_top_p_draws_only_from_the_nucleus():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).repeat(2000, 1)
    drawn = next_token(probs.log(), np.random.default_rng(1).random(2000), top_p=0.7)
    assert set(drawn.tolist()) == {0, 1}


def test_batched_rows_match_rows_sampled_one_at_a_time():
    torch.manual_seed(2)
    model = GPT(GPTConfig(vocab_size=40, block_size=48, n_layer=1, n_head=2, n_embd=16))
    prompts = torch.tensor([[1, 2], [1, 3], [1, 4], [1, 5]])
    batched = generate(model, prompts, np.arange(4, dtype=np.uint64), 40, stop_token=0)
    for row in range(4):
        alone = generate(model, prompts[row:row + 1], np.array([row], dtype=np.uint64), 40, stop_token=0)
        assert alone[0].tolist() == batched[row, : alone.shape[1]].tolist()


def test_a_record_longer_than_the_context_is_written_on_from_its_header():
    torch.manual_seed(3)
    model = GPT(GPTConfig(vocab_size=40, block_size=32, n_layer=1, n_head=2, n_embd=16))
    prompts = torch.tensor([[1, 2, 3, 4], [1, 5, 6, 7]])
    rows = generate(model, prompts, np.arange(2, dtype=np.uint64), 150, stop_token=-1)
    assert rows.shape == (2, 154)  # five contexts' worth, where the context alone would stop at 32
    again = generate(model, prompts, np.arange(2, dtype=np.uint64), 150, stop_token=-1)
    assert torch.equal(rows, again)


def test_a_continued_context_leads_with_the_year_the_record_has_reached():
    torch.manual_seed(5)
    model = GPT(GPTConfig(vocab_size=64, block_size=32, n_layer=1, n_head=2, n_embd=16, first_year=1980,
                          n_years=40, year_token=20, birth_token=8)).eval()
    row = torch.tensor([[1, 4, 9, 21] + [2] * 10 + [25] + [3] * 30])  # started in 1981, reached 1985 long ago
    _, logits = _slid(model, row, HEADER)
    header = torch.tensor([[1, 4, 9, 25]])
    with torch.no_grad():
        expected = model(torch.cat([header, row[:, -(32 // 2 - HEADER):]], dim=1))[:, -1]
    assert torch.allclose(logits, expected, atol=1e-5)


def test_draws_at_the_extremes_of_the_unit_interval_never_pick_a_forbidden_token():
    logits = torch.zeros(4, 6)
    allowed = np.ones((4, 6), dtype=bool)
    allowed[:, [0, 5]] = False  # the first and last tokens: where a draw of 0 or 1 would land
    edges = np.array([0.5 * 2.0 ** -53, 1e-12, 1 - 1e-12, 1 - 0.5 * 2.0 ** -53])
    assert next_token(logits, edges, allowed=allowed).tolist() == [1, 1, 4, 4]


def test_each_row_draws_uniformly_from_its_own_seed_whatever_the_batch():
    seeds = row_seeds([np.random.default_rng(s) for s in range(500)])
    draws = np.stack([uniforms(seeds, step) for step in range(200)])
    assert np.array_equal(draws[:, 7], [uniforms(seeds[7:8], step)[0] for step in range(200)])
    counts = np.histogram(draws, bins=20, range=(0, 1))[0]
    assert np.abs(counts / draws.size - 0.05).max() < 0.003  # 100,000 draws: 5% a bin, sd 0.07%
    assert abs(np.corrcoef(draws[:-1].ravel(), draws[1:].ravel())[0, 1]) < 0.01  # successive steps unrelated
