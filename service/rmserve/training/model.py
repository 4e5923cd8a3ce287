"""The from-scratch reward model, read top to bottom: config, attention, block, bag of n-grams,
transformer, reward model.

raw_score = deep_weight * mean_i transformer_i(prompt, response) + bag_of_ngrams(response)

The transformer reads `[CLS] prompt-tail [SEP] response [SEP]` and pools the response (its mean
state beside the final state; those pooled features, every tower's side by side, are the graph's
second output, the embedding the out-of-distribution flag measures). The
bag of n-grams is a linear model over the response's hashed token uni/bi-grams and character
n-grams with TF-IDF weighting and L2 normalisation (what scikit-learn's TfidfVectorizer does),
plus the log response length. Both are computed inside the graph, so one ONNX file with inputs
`input_ids` and `attention_mask` holds the whole model. On small data the bag carries most of
the accuracy; the transformer adds what word counts cannot see (the prompt, word order).
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import nn

from rmserve.training.options import ModelConfig


def response_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor, sep_id: int) -> torch.Tensor:
    """True on response tokens: after the first [SEP], excluding [SEP] itself. [batch, seq] -> bool."""
    is_sep = input_ids == sep_id
    after_first_sep = torch.cumsum(is_sep.long(), dim=1) >= 1
    return after_first_sep & ~is_sep & attention_mask.bool()


class SelfAttention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_heads = config.n_heads
        self.head_width = config.d_model // config.n_heads
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.proj = nn.Linear(config.d_model, config.d_model)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, key_padding: torch.Tensor) -> torch.Tensor:
        batch, seq, width = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=2)
        # [batch, seq, width] -> [batch, heads, seq, head_width]
        q, k, v = (t.view(batch, seq, self.n_heads, self.head_width).transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_width)
        scores = scores.masked_fill(key_padding[:, None, None, :], torch.finfo(scores.dtype).min)
        attended = self.dropout(scores.softmax(dim=-1)) @ v
        projected: torch.Tensor = self.proj(attended.transpose(1, 2).reshape(batch, seq, width))
        return projected


class Block(nn.Module):
    """Pre-norm transformer block: x + attention(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.norm_1 = nn.LayerNorm(config.d_model)
        self.attention = SelfAttention(config)
        self.norm_2 = nn.LayerNorm(config.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(config.d_model, 4 * config.d_model),
            nn.GELU(),
            nn.Linear(4 * config.d_model, config.d_model),
            nn.Dropout(config.dropout),
        )

    def forward(self, x: torch.Tensor, key_padding: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm_1(x), key_padding)
        mixed: torch.Tensor = self.mlp(self.norm_2(x))
        return x + mixed


class BagOfNgrams(nn.Module):
    """Linear score over TF-IDF weighted, L2-normalised hashed n-grams of the response.

    Two groups of n-grams, each L2-normalised on its own (like a union of two TfidfVectorizers):
    token uni/bi-grams, and character 2-5-grams inside each token (close to scikit-learn's
    `char_wb`, since most tokens are whole words). A token's character n-grams are looked up
    in `char_ngrams`, a table filled from the tokenizer's vocabulary when training starts.
    """

    idf: torch.Tensor  # buffers, declared for the type checker (register_buffer sets them)
    char_ngrams: torch.Tensor

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.orders = config.ngram_orders
        self.vocab_size = config.vocab_size
        self.token_buckets = config.hash_buckets
        self.char_buckets = config.char_buckets
        self.unused = config.hash_buckets + config.char_buckets  # where padding and prompt tokens go
        width = self.unused + 1
        self.weight = nn.Parameter(torch.zeros(width))
        self.length_weight = nn.Parameter(torch.zeros(()))
        self.register_buffer("idf", torch.ones(width))
        table_shape = (config.vocab_size, config.char_ngrams_per_token)
        self.register_buffer("char_ngrams", torch.full(table_shape, self.unused, dtype=torch.int32))

    def bucket_ids(self, input_ids: torch.Tensor, in_response: torch.Tensor) -> torch.Tensor:
        """The bucket of every n-gram position; positions outside the response go to `unused`. -> [batch, positions]"""
        buckets = []
        for order in range(1, self.orders + 1):
            width = input_ids.shape[1] - order + 1
            ngram_id = input_ids[:, :width]
            valid = in_response[:, :width]
            for offset in range(1, order):
                ngram_id = ngram_id * self.vocab_size + input_ids[:, offset : offset + width]
                valid = valid & in_response[:, offset : offset + width]
            buckets.append(torch.where(valid, torch.remainder(ngram_id, self.token_buckets), self.unused))
        chars = self.char_ngrams[input_ids].long()  # [batch, seq, ngrams per token]
        buckets.append(torch.where(in_response[:, :, None], chars, self.unused).flatten(1))
        return torch.cat(buckets, dim=1)

    def term_counts(self, input_ids: torch.Tensor, in_response: torch.Tensor) -> torch.Tensor:
        """How often each hashed n-gram occurs in each response. [batch, seq] -> [batch, buckets + 1]"""
        return self._counts(self.bucket_ids(input_ids, in_response))

    def _counts(self, bucket: torch.Tensor) -> torch.Tensor:
        """[batch, positions] bucket ids -> [batch, buckets + 1] occurrences."""
        counts = torch.zeros(bucket.shape[0], self.unused + 1, dtype=torch.float32)
        return counts.scatter_add(1, bucket, torch.ones(bucket.shape, dtype=torch.float32))

    def weighted_counts(self, input_ids: torch.Tensor, in_response: torch.Tensor) -> torch.Tensor:
        """(1 + ln count) * idf for every bucket, 0 where absent. -> [batch, buckets + 1]"""
        counts = self.term_counts(input_ids, in_response)
        return (torch.log(counts.clamp(min=1.0)) + (counts > 0).float()) * self.idf

    def norms(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """L2 norm of the token group and of the character group. -> [batch] x2"""
        tokens, chars = values[:, : self.token_buckets], values[:, self.token_buckets :]
        return tokens.norm(dim=1).clamp(min=1e-6), chars.norm(dim=1).clamp(min=1e-6)

    def tfidf(self, input_ids: torch.Tensor, in_response: torch.Tensor) -> torch.Tensor:
        """The normalised feature vector, as scikit-learn sees it when fitting. -> [batch, buckets + 1]"""
        values = self.weighted_counts(input_ids, in_response)
        token_norm, char_norm = self.norms(values)
        split = self.token_buckets
        return torch.cat([values[:, :split] / token_norm[:, None], values[:, split:] / char_norm[:, None]], dim=1)

    def log_length(self, in_response: torch.Tensor) -> torch.Tensor:
        return torch.log1p(in_response.float().sum(dim=1))

    def forward(self, input_ids: torch.Tensor, in_response: torch.Tensor) -> torch.Tensor:
        """tfidf(x) @ weight + length term, computed over the row's n-gram positions, not its buckets.

        The same numbers as `tfidf(x) @ weight`, but every step after counting touches one value per
        position instead of all 262,143 buckets: a bucket that occurs c times is seen at c positions,
        so each position adds 1/c of the bucket's term to a sum over buckets. The dense vector work
        was a third of the whole graph's run time for a 150-token item.
        """
        bucket = self.bucket_ids(input_ids, in_response)  # [batch, positions]
        count = self._counts(bucket).gather(1, bucket)  # [batch, positions]: occurrences of each one's bucket
        value = (torch.log(count) + 1.0) * self.idf[bucket]  # the bucket's weighted count
        share = 1.0 / count  # each of the bucket's positions adds this share of its term
        in_tokens = bucket < self.token_buckets  # the two groups are normalised separately
        squares, products = value * value * share, value * self.weight[bucket] * share
        zero = torch.zeros_like(squares)
        token_norm = torch.where(in_tokens, squares, zero).sum(1).sqrt().clamp(min=1e-6)
        char_norm = torch.where(in_tokens, zero, squares).sum(1).sqrt().clamp(min=1e-6)
        linear = (
            torch.where(in_tokens, products, zero).sum(1) / token_norm
            + torch.where(in_tokens, zero, products).sum(1) / char_norm
        )
        return linear + self.length_weight * self.log_length(in_response)


class Transformer(nn.Module):
    """One transformer tower: token ids -> a score from the mean response state and the final state."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.d_model, padding_idx=config.pad_id)
        self.position_embedding = nn.Embedding(config.max_length, config.d_model)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(2 * config.d_model, 1)
        self.mlm_head = nn.Linear(config.d_model, config.vocab_size)  # pretraining only; not in the score

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[batch, seq] -> [batch, seq, d_model]"""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.dropout(self.token_embedding(input_ids) + self.position_embedding(positions))
        key_padding = attention_mask == 0
        for block in self.blocks:
            x = block(x, key_padding)
        normed: torch.Tensor = self.norm(x)
        return normed

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """What the head reads: the mean response state and the final state. [batch, seq] -> [batch, 2 * d_model]"""
        hidden = self.hidden_states(input_ids, attention_mask)
        in_response = response_mask(input_ids, attention_mask, self.config.sep_id).float()[..., None]
        response_mean = (hidden * in_response).sum(1) / in_response.sum(1).clamp(min=1.0)
        last = attention_mask.sum(dim=1) - 1
        final = hidden[torch.arange(hidden.shape[0]), last]
        return torch.cat([response_mean, final], dim=-1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[batch, seq] -> [batch]"""
        score: torch.Tensor = self.head(self.pooled(input_ids, attention_mask))
        return score.squeeze(-1)


class RewardModel(nn.Module):
    """deep_weight * mean(transformer towers) + bag of n-grams."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        # Towers differ only in their random start and batch order; averaging them cuts the
        # run-to-run variance of transformers trained from scratch on little data.
        self.towers = nn.ModuleList(Transformer(config) for _ in range(config.n_towers))
        self.deep_weight = nn.Parameter(torch.ones(()))
        self.bag = BagOfNgrams(config) if config.ngram_orders > 0 else None
        self.apply(_init_weights)

    def deep_score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Mean tower score. -> [batch]"""
        return torch.stack([tower(input_ids, attention_mask) for tower in self.towers]).mean(dim=0)

    def wide_score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Bag-of-n-grams score (zero when the model has none). -> [batch]"""
        if self.bag is None:
            return torch.zeros(input_ids.shape[0])
        wide: torch.Tensor = self.bag(input_ids, response_mask(input_ids, attention_mask, self.config.sep_id))
        return wide

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[batch, seq] int64 x2 -> [batch] raw reward."""
        return self.score_and_embedding(input_ids, attention_mask)[0]

    def score_and_embedding(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The raw reward [batch] and the pooled features every tower's head reads, side by side
        [batch, n_towers * 2 * d_model]: the served graph's two outputs, from one pass of each tower."""
        towers = cast(list[Transformer], list(self.towers))  # a ModuleList yields untyped Modules
        pooled = [tower.pooled(input_ids, attention_mask) for tower in towers]
        deep = torch.stack([tower.head(features).squeeze(-1) for tower, features in zip(towers, pooled, strict=True)])
        score = self.deep_weight * deep.mean(dim=0) + self.wide_score(input_ids, attention_mask)
        return score, torch.cat(pooled, dim=-1)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear | nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
