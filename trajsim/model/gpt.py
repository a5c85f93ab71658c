"""A small decoder-only transformer over patient token sequences, with a KV cache for sampling.

Readable in one sitting on purpose (after nanoGPT): a config dataclass, attention, MLP, block,
model. The KV cache lets the sampler feed one new token per step instead of the whole history.
Models fitted with a calendar (`n_years > 0`) also add, at every position, the calendar year, the
age and the years left until the record ends, read from its year, birth-band and end-year tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from trajsim.model.tokenizer import BIRTH_BAND_YEARS


@dataclass
class GPTConfig:
    vocab_size: int = 512
    block_size: int = 512
    n_layer: int = 2
    n_head: int = 4
    n_kv_head: int = 1  # heads share key/value heads (multi-query): a 4x smaller cache to read per step
    n_embd: int = 64
    dropout: float = 0.0
    # The calendar as the tokens spell it: ids year_token + k are YEAR/<first_year + k> (k < n_years),
    # ids birth_token + j up to year_token are BIRTH/<first_year + 5j>, ids until_token + k (if not
    # 0) are UNTIL/<first_year + k>. n_years 0: no calendar embedding (models fitted before it).
    first_year: int = 0
    n_years: int = 0
    year_token: int = 0
    birth_token: int = 0
    until_token: int = 0


YEARS_PER_ANCHOR = 10  # calendar years and ages are interpolated between learned anchors a decade apart
AGE_ANCHORS = 14  # ages 0 to 130


class CalendarEmbedding(nn.Module):
    """The year a record has reached, the patient's age then and the years left until the record
    ends, at every position, as vectors interpolated between learned anchors a decade apart.

    The model could read the year from the latest year token, but on its own records it reads how
    dense care was from its own recent visits instead, and once it writes a dense stretch it stays
    dense (a Synthea record of 1960 then looks like one of 2015). Anchors shared by neighbouring
    years make the date a cue at every position that a year seen in few records still carries; the
    years left say how near the end of the data it is (data extracts hold their last years in full).
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        year_of = torch.full((config.vocab_size,), -1.0)
        year_of[config.year_token:config.year_token + config.n_years] = config.first_year + torch.arange(config.n_years)
        birth_of = torch.full((config.vocab_size,), -1.0)
        bands = torch.arange(config.year_token - config.birth_token)
        birth_of[config.birth_token:config.year_token] = config.first_year + BIRTH_BAND_YEARS * bands + BIRTH_BAND_YEARS / 2
        until_of = torch.full((config.vocab_size,), -1.0)
        if config.until_token:
            until_of[config.until_token:config.until_token + config.n_years] = year_of[config.year_token:config.year_token + config.n_years]
        self.register_buffer("year_of", year_of, persistent=False)
        self.register_buffer("birth_of", birth_of, persistent=False)
        self.register_buffer("until_of", until_of, persistent=False)
        self.first_year = config.first_year
        self.years = nn.Embedding(config.n_years // YEARS_PER_ANCHOR + 2, config.n_embd)
        self.ages = nn.Embedding(AGE_ANCHORS + 1, config.n_embd)
        self.left = nn.Embedding(AGE_ANCHORS + 1, config.n_embd) if config.until_token else None

    def forward(self, idx: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
        """(B, T, n_embd) for token ids (B, T); a cache carries each row's year, birth and end so far."""
        year = self._so_far(self.year_of[idx], None if cache is None else cache.year)
        birth = self._so_far(self.birth_of[idx], None if cache is None else cache.birth)
        until = self._so_far(self.until_of[idx], None if cache is None else cache.until)
        if cache is None:
            return self._vectors(year, birth, until)
        if idx.shape[1] == 1 and cache.calendar is not None:
            # One step: a row's vector changes only when it draws a year, birth or end token.
            changed = ((year[:, 0] != cache.year) | (birth[:, 0] != cache.birth) | (until[:, 0] != cache.until)).nonzero()[:, 0]
            if len(changed):
                cache.calendar[changed] = self._vectors(year[changed], birth[changed], until[changed])[:, 0]
            out = cache.calendar[:, None]
        else:
            out = self._vectors(year, birth, until)
            cache.calendar = out[:, -1].clone()
        cache.year, cache.birth, cache.until = year[:, -1], birth[:, -1], until[:, -1]
        return out

    def _vectors(self, year: torch.Tensor, birth: torch.Tensor, until: torch.Tensor) -> torch.Tensor:
        """The calendar vectors at positions with these years, births and record ends (-1: unknown)."""
        age = torch.where((year >= 0) & (birth >= 0), (year + 0.5 - birth).clamp(min=0), -1.0)
        out = (_between(self.years, torch.where(year >= 0, (year - self.first_year) / YEARS_PER_ANCHOR, -1.0))
               + _between(self.ages, torch.where(age >= 0, age / YEARS_PER_ANCHOR, -1.0)))
        if self.left is not None:
            left = torch.where((year >= 0) & (until >= 0), (until - year).clamp(min=0), -1.0)
            out = out + _between(self.left, torch.where(left >= 0, left / YEARS_PER_ANCHOR, -1.0))
        return out

    @staticmethod
    def _so_far(values: torch.Tensor, before: torch.Tensor | None) -> torch.Tensor:
        """The latest value at each position (years only grow along a record; -1 before any)."""
        if before is not None:
            values = torch.maximum(values, before[:, None])
        return values if values.shape[1] == 1 else torch.cummax(values, dim=1).values


def _between(anchors: nn.Embedding, position: torch.Tensor) -> torch.Tensor:
    """Anchor vectors interpolated at fractional positions; negative (unknown) positions give zeros."""
    clamped = position.clamp(0, anchors.num_embeddings - 1 - 1e-4)
    low = clamped.floor().long()
    weight = (clamped - low)[..., None]
    mixed = (1 - weight) * anchors(low) + weight * anchors(low + 1)
    return mixed * (position >= 0)[..., None]


class KVCache:
    """Keys and values of every layer for a batch of rows, all at the same position. Capacity
    doubles as needed (up to block_size), and finished rows can be dropped to save work."""

    def __init__(self, config: GPTConfig, batch_size: int, capacity: int = 64) -> None:
        self.config = config
        shape = (batch_size, config.n_kv_head, min(capacity, config.block_size), config.n_embd // config.n_head)
        self.keys = [torch.empty(shape) for _ in range(config.n_layer)]
        self.values = [torch.empty(shape) for _ in range(config.n_layer)]
        self.length = 0  # positions filled
        # each row's calendar year, birth and record end so far (the calendar embedding's state), -1 before any
        self.year, self.birth, self.until = (torch.full((batch_size,), -1.0) for _ in range(3))
        self.calendar: torch.Tensor | None = None  # each row's calendar vector at its latest position

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new positions' keys and values; returns all keys and values so far."""
        start, end = self.length, self.length + k.shape[2]
        if end > self.keys[layer].shape[2]:
            grown = min(self.config.block_size, max(end, 2 * self.keys[layer].shape[2]))
            for store in (self.keys, self.values):
                old = store[layer]
                store[layer] = torch.empty(*old.shape[:2], grown, old.shape[3])
                store[layer][:, :, :start] = old[:, :, :start]
        self.keys[layer][:, :, start:end] = k
        self.values[layer][:, :, start:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only these rows (a bool mask or indices), in that order."""
        self.keys = [k[rows] for k in self.keys]
        self.values = [v[rows] for v in self.values]
        self.year, self.birth, self.until = self.year[rows], self.birth[rows], self.until[rows]
        if self.calendar is not None:
            self.calendar = self.calendar[rows]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head, self.n_kv_head = config.n_head, config.n_kv_head
        self.head_size = config.n_embd // config.n_head
        self.qkv = nn.Linear(config.n_embd, config.n_embd + 2 * config.n_kv_head * self.head_size)
        self.proj = nn.Linear(config.n_embd, config.n_embd)
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        B, T, C = x.shape
        kv_size = self.n_kv_head * self.head_size
        q, k, v = self.qkv(x).split([C, kv_size, kv_size], dim=2)
        q = q.view(B, T, self.n_head, self.head_size).transpose(1, 2)
        k, v = (t.view(B, T, self.n_kv_head, self.head_size).transpose(1, 2) for t in (k, v))
        if cache is not None:
            if T > 1 and cache.length:
                raise ValueError("a cached forward pass takes either a whole prompt or one token")
            k, v = cache.append(layer, k, v)
        if T == 1:
            # One new token: the heads sharing a key/value head become query rows of one matrix
            # product against the cache, rather than one thin product per head.
            y = F.scaled_dot_product_attention(q.reshape(B, self.n_kv_head, -1, self.head_size), k, v)
        else:
            dropout = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True, enable_gqa=True)
        return self.proj(y.reshape(B, self.n_head, T, self.head_size).transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.up = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.down = nn.Linear(4 * config.n_embd, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down(F.gelu(self.up(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: KVCache | None, layer: int) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), cache, layer)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.n_embd)
        self.position_embedding = nn.Embedding(config.block_size, config.n_embd)
        self.calendar = CalendarEmbedding(config) if config.n_years else None
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.head.weight = self.token_embedding.weight  # weight tying
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Logits (B, T, vocab) for token ids (B, T); with a cache, continue from its length."""
        start = cache.length if cache is not None else 0
        T = idx.shape[1]
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens exceeds block_size {self.config.block_size}")
        positions = torch.arange(start, start + T, device=idx.device)
        x = self.token_embedding(idx) + self.position_embedding(positions)
        if self.calendar is not None:
            x = x + self.calendar(idx, cache)
        for layer, block in enumerate(self.blocks):
            x = block(x, cache, layer)
        if cache is not None:
            cache.length += T
        return self.head(self.ln_f(x))

    def loss(self, idx: torch.Tensor, pad: int) -> torch.Tensor:
        """Mean next-token cross-entropy over non-padding targets."""
        logits = self(idx[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), idx[:, 1:].reshape(-1), ignore_index=pad)

    def latest_year_tokens(self, rows: torch.Tensor) -> torch.Tensor | None:
        """Each row's latest year token (None without a calendar): what a continued context leads with."""
        if self.calendar is None:
            return None
        years = self.calendar.year_of[rows]
        return self.config.year_token + (years.max(dim=1).values - self.config.first_year).long()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
