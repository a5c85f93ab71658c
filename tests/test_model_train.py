"""The transformer and its training loop: it can learn, its cache is exact, and training is
deterministic and resumable."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from trajsim.engine import ReferenceSource, simulate
from trajsim.events import events_frame
from trajsim.model.gpt import GPT, GPTConfig, KVCache
from trajsim.model.tokenizer import HEADER
from trajsim.model.sample import generate, one_thread
from trajsim.model.population import POPULATION
from trajsim.model.train import CARD, CHECKPOINT, TOKENIZER, WEIGHTS, TrainConfig, load_model, sized_for, train, windows

from tests.conftest import small_scenario

TINY = GPTConfig(vocab_size=32, block_size=64, n_layer=1, n_head=2, n_embd=16)


@pytest.fixture(scope="module")
def reference_events() -> pl.DataFrame:
    return events_frame(e for r in simulate(small_scenario(16, seed=5), ReferenceSource()) for e in r.events)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models train faster on one thread (and leave the other cores to parallel tests)."""
    with one_thread():
        yield


def tiny_training(max_steps: int = 12) -> TrainConfig:
    return TrainConfig(seed=3, batch_size=4, max_steps=max_steps, eval_every=4, warmup_steps=2, patience=100,
                       model=GPTConfig(block_size=128, n_layer=1, n_head=2, n_embd=16))


def test_tiny_model_learns_a_deterministic_sequence_exactly():
    torch.manual_seed(0)
    sequence = torch.tensor([[1] + [2 + (7 * i) % 29 for i in range(40)] + [31]])
    model = GPT(TINY)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(300):
        loss = model.loss(sequence, pad=0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    continued = generate(model, sequence[:, :1], np.zeros(1, dtype=np.uint64), 60, stop_token=31, temperature=0)
    assert continued.tolist() == sequence.tolist()


def test_cached_sampling_gives_the_logits_of_a_full_pass():
    torch.manual_seed(1)
    model = GPT(TINY).eval()
    tokens = torch.randint(0, 32, (3, 20))
    with torch.no_grad():
        full = model(tokens)
        cache = KVCache(model.config, 3, capacity=4)  # small, so it has to grow
        stepwise = torch.cat([model(tokens[:, :5], cache)] + [model(tokens[:, i:i + 1], cache) for i in range(5, 20)], 1)
    assert torch.allclose(full, stepwise, atol=1e-5)


def test_a_model_with_a_calendar_gives_cached_logits_of_a_full_pass():
    torch.manual_seed(4)
    # births 8-19, YEAR/1980-2019 20-59, UNTIL/1980-2019 60-99
    config = GPTConfig(vocab_size=112, block_size=64, n_layer=1, n_head=2, n_embd=16, first_year=1980, n_years=40,
                       year_token=20, birth_token=8, until_token=60)
    model = GPT(config).eval()
    years = torch.sort(torch.randint(20, 50, (3, 4)), dim=1).values
    tokens = torch.cat([torch.tensor([[1, 4, 9]] * 3), years[:, :1], years[:, -1:] + 50, torch.randint(0, 8, (3, 8)),
                        years[:, 1:], torch.randint(0, 8, (3, 5))], dim=1)
    with torch.no_grad():
        full = model(tokens)
        cache = KVCache(model.config, 3, capacity=4)
        stepwise = torch.cat([model(tokens[:, :2], cache)] + [model(tokens[:, i:i + 1], cache) for i in range(2, 19)], 1)
        cache.keep(torch.tensor([2, 0]))  # dropping rows keeps each row's calendar
        kept = model(tokens[[2, 0], 19:20], cache)
        assert torch.allclose(full[:, :19], stepwise, atol=1e-5)
        assert torch.allclose(full[[2, 0], 19:20], kept, atol=1e-5)
        for column in (3, 4):  # the same record five years later, or ending five years later
            changed = tokens.clone()
            changed[:, column] += 5
            logits = model(changed)
            assert torch.allclose(logits[:, :column], full[:, :column])
            assert not torch.allclose(logits[:, column:], full[:, column:])


def test_a_model_fitted_now_reads_the_year_and_age_from_its_tokens(reference_events, tmp_path):
    train(reference_events, tmp_path, tiny_training(max_steps=2))
    model, tokenizer = load_model(tmp_path)
    calendar = model.calendar
    assert calendar is not None
    assert calendar.year_of[tokenizer.index["YEAR/2015"]] == 2015 and calendar.year_of[tokenizer.index["GAP/1d"]] == -1
    assert calendar.birth_of[tokenizer.index["BIRTH/1980"]] == 1982.5  # mid-band
    assert calendar.birth_of[tokenizer.index["BIRTH/U"]] == -1
    assert calendar.until_of[tokenizer.index["UNTIL/2015"]] == 2015 and calendar.left is not None
    assert model.config.n_years == sum(token.startswith("YEAR/") for token in tokenizer.vocab)


def test_training_writes_weights_tokenizer_population_and_model_card(reference_events, tmp_path):
    result = train(reference_events, tmp_path, tiny_training(), "sixteen reference patients")
    assert {p.name for p in tmp_path.iterdir()} == {WEIGHTS, TOKENIZER, CARD, POPULATION}
    card = (tmp_path / CARD).read_text()
    assert "sixteen reference patients" in card and f"{result.best_val_loss:.4f}" in card
    assert "## Intended use" in card and "## Limitations" in card
    model, tokenizer = load_model(tmp_path)
    assert model.config.vocab_size == len(tokenizer.vocab)


def test_resumed_training_ends_with_the_weights_of_an_uninterrupted_run(reference_events, tmp_path):
    train(reference_events, tmp_path / "whole", tiny_training())

    def interrupt(step: int, loss: float, val_loss: float | None) -> None:
        if step == 7:  # between the checkpoints of steps 4 and 8
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(reference_events, tmp_path / "resumed", tiny_training(), on_step=interrupt)
    assert (tmp_path / "resumed" / CHECKPOINT).exists()
    train(reference_events, tmp_path / "resumed", tiny_training())
    whole = torch.load(tmp_path / "whole" / WEIGHTS)["weights"]
    resumed = torch.load(tmp_path / "resumed" / WEIGHTS)["weights"]
    assert all(torch.equal(whole[name], resumed[name]) for name in whole)


def _interrupted(events: pl.DataFrame, out) -> None:
    def interrupt(step: int, loss: float, val_loss: float | None) -> None:
        if step == 5:  # after the first checkpoint
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(events, out, tiny_training(), on_step=interrupt)
    assert (out / CHECKPOINT).exists()


class _RunsCode:
    def __reduce__(self):
        return (exec, ("open(__import__('os').environ['TRAJSIM_PWNED'], 'w').close()",))


def test_a_crafted_checkpoint_is_refused_without_running_its_code(reference_events, tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("TRAJSIM_PWNED", str(marker))
    out = tmp_path / "model"
    out.mkdir()
    torch.save({"config": {}, "payload": _RunsCode()}, out / CHECKPOINT)
    with pytest.raises(ValueError, match="not a trajsim training checkpoint.*--restart"):
        train(reference_events, out, tiny_training())
    assert not marker.exists()


def test_a_checkpoint_of_other_data_is_refused_and_restart_trains_afresh(reference_events, tmp_path):
    out = tmp_path / "model"
    _interrupted(reference_events, out)
    other = reference_events.filter(pl.col("subject_id") != pl.col("subject_id").min())
    with pytest.raises(ValueError, match="other data.*--restart"):
        train(other, out, tiny_training())
    train(other, tmp_path / "fresh", tiny_training())
    train(other, out, tiny_training(), restart=True)
    fresh = torch.load(tmp_path / "fresh" / WEIGHTS)["weights"]
    restarted = torch.load(out / WEIGHTS)["weights"]
    assert all(torch.equal(fresh[name], restarted[name]) for name in fresh)


def test_training_stops_early_when_validation_stops_improving(reference_events, tmp_path):
    config = tiny_training(max_steps=400)
    config.learning_rate = config.min_learning_rate = 0.5  # diverges, so validation loss soon worsens
    config.patience = 2
    result = train(reference_events, tmp_path, config)
    assert result.stopped_early and result.steps < 400
    assert result.best_step <= result.steps - 2 * config.eval_every


def test_a_long_record_is_learned_whole_in_windows_led_by_its_header():
    record = list(range(100, 400))
    rows = windows(record, 64)
    assert all(len(row) <= 64 and row[:HEADER] == record[:HEADER] for row in rows)
    covered = {token for row in rows for token in row}
    assert covered == set(record)
    assert windows(record[:50], 64) == [record[:50]]


def test_a_continued_window_leads_with_the_year_the_record_has_reached():
    years = {1000, 1001, 1002}  # token ids of year marks
    record = [1, 2, 3, 1000] + [10 + i % 7 for i in range(60)] + [1001] + [20] * 70 + [1002] + [30] * 40
    rows = windows(record, 64, years)
    assert [row[HEADER - 1] for row in rows[:1]] == [1000]
    for row in rows[1:]:
        start = next(i for i in range(len(record)) if record[i:i + len(row) - HEADER] == row[HEADER:])
        assert row[:HEADER] == record[:HEADER - 1] + [max(t for t in record[:start] if t in years)]


class CountedYears(set):
    """Year-mark token ids that count how often a token is asked about."""

    asked = 0

    def __contains__(self, token: object) -> bool:
        self.asked += 1
        return super().__contains__(token)


def test_windowing_a_long_record_looks_at_each_token_once():
    """A MIMIC record of 36,000 tokens in windows of 1,025 costs its length, not its length squared."""
    years = CountedYears({1000, 1001})
    record = [1, 2, 3, 1000, 5] + [10 + i % 50 for i in range(18_000)] + [1001] + [20] * 18_000
    rows = windows(record, 1025, years, header=5)
    assert len(rows) == 70 and years.asked <= len(record)
    assert [row[3] for row in rows] == [1000] * 36 + [1001] * 34  # each led by the year it has reached


def test_the_model_is_sized_for_its_data():
    short, long = [[1] * 100] * 50, [[1] * 3000] * 50
    assert sized_for(short, 200).block_size == 128 and sized_for(long, 200).block_size == 1024
    many = [[1] * 100] * 20_000  # two million tokens
    assert sized_for(many, 8000).n_embd > sized_for(many, 200).n_embd == sized_for(short, 8000).n_embd


def test_drug_indications_are_learned_from_named_reasons_and_the_visits_diagnoses():
    """A drug's indication is the condition its orders name, else the one diagnosed at the order's
    visit; a condition that merely coexists (an old hypertension) is none, and a pair seen in fewer
    than five patients is not kept."""
    from datetime import datetime

    from trajsim.events import Event, events_frame
    from trajsim.model.indications import learned_indications

    bronchitis, hypertension, sinusitis = "SNOMED/10509002", "SNOMED/38341003", "SNOMED/444814009"
    acetaminophen, augmentin, rare = "RXNORM/313782", "RXNORM/562251", "RXNORM/197361"
    rows = []
    for subject in range(1, 7):
        rows += [Event(subject, datetime(2000, 1, 1), 1, hypertension),
                 Event(subject, datetime(2010, 1, 1), 2, bronchitis), Event(subject, datetime(2010, 1, 1), 2, acetaminophen),
                 Event(subject, datetime(2012, 1, 1), 3, augmentin, text=sinusitis),
                 Event(subject, datetime(2012, 1, 1), 3, sinusitis)]
    rows += [Event(subject, datetime(2013, 1, 1), 4, rare, text=hypertension) for subject in range(1, 4)]
    assert learned_indications(events_frame(rows)) == {acetaminophen: [bronchitis], augmentin: [sinusitis]}
