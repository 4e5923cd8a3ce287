"""`rmserve train`: preference file in, trained reward model (a run directory) out.

In order: read the comparisons and carve a seeded dev split out of them; build the network
(from scratch with a tokenizer trained on the training text, or a local Hugging Face
checkpoint); fit the bag of n-grams (from scratch only); optionally pretrain the transformer
as a masked LM; train it with the ranking loss, keeping the epoch with the best dev accuracy;
blend the two scores on dev; print a summary.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from tqdm import tqdm

from rmserve.core.formats import PromptTexts, transcript_response
from rmserve.core.tokenizer import SpecialTokens, pad_batch
from rmserve.training.checkpoint import TRANSCRIPT, HFReward, TrainedModel, load_hf_classifier, torch_score_fn
from rmserve.training.data import Comparison, DataError, read_comparisons, split_dev
from rmserve.training.evaluate import EncodedComparison, encode_comparisons, pairwise_accuracy, score_comparisons
from rmserve.training.losses import ranking_loss
from rmserve.training.model import RewardModel, Transformer
from rmserve.training.options import TrainConfig
from rmserve.training.pretrain import pretrain_masked_lm
from rmserve.training.vocab import SCRATCH_SPECIAL, train_tokenizer
from rmserve.training.wide import fill_char_ngrams, fit_bag

MIN_COMPARISONS = 2  # one to train on and one for the dev split


def train(config: TrainConfig) -> TrainedModel:
    started = time.monotonic()
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    torch.set_num_threads(config.threads)

    comparisons = read_comparisons(config.data, config.lines)
    if len(comparisons) < MIN_COMPARISONS:
        raise DataError(
            f"{config.data}: only {len(comparisons)} comparison to read; training needs at least {MIN_COMPARISONS}, "
            "one to learn from and one held out (--dev-fraction) to stop early on: rank more records"
        )
    dev_seed = config.seed if config.dev_seed is None else config.dev_seed
    train_set, dev_set = split_dev(comparisons, config.dev_fraction, dev_seed)
    trained = _build(config, train_set)
    input_format = trained.input_format()
    train_encoded, dev_encoded = encode_comparisons(input_format, train_set), encode_comparisons(input_format, dev_set)
    pad_id = trained.special.pad_id
    results: dict[str, Any] = {}

    network = trained.network
    towers: list[torch.nn.Module] = [network]
    if isinstance(network, RewardModel):
        if network.bag is not None:
            fill_char_ngrams(network.bag, trained.tokenizer)
            results["bag_of_ngrams"] = fit_bag(network.bag, train_encoded, dev_encoded, pad_id, network.config.sep_id)
            tqdm.write(f"bag of n-grams: dev pairwise accuracy {results['bag_of_ngrams']['dev_accuracy']:.4f}")
        towers = list(network.towers)
    results["transformer"] = []
    for index, tower in enumerate(towers):
        random.seed(config.seed + index)  # each tower its own batch order
        if config.pretrain_epochs and isinstance(tower, Transformer):
            sequences = [seq for group in train_encoded for seq in group]
            loss = pretrain_masked_lm(tower, sequences, config.pretrain_epochs, config.seed + index)
            results.setdefault("pretrain_loss", []).append(loss)
        label = f"tower {index + 1}/{len(towers)} " if len(towers) > 1 else ""
        results["transformer"].append(_fit(tower, label, config, train_set, train_encoded, dev_encoded, pad_id))
    if isinstance(network, RewardModel) and network.bag is not None:
        results["blend"] = _blend(network, dev_encoded, pad_id)

    network.eval()
    results["dev_accuracy"] = pairwise_accuracy(score_comparisons(torch_score_fn(network), dev_encoded, pad_id))
    results["seconds"] = round(time.monotonic() - started, 1)
    trained.training = {
        "data": str(config.data),
        "lines": None if config.lines is None else str(config.lines),
        "seed": config.seed,
        "dev_seed": dev_seed,
        "dev_fraction": config.dev_fraction,
        "train_comparisons": len(train_set),
        "dev_comparisons": len(dev_set),
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        **results,
    }
    return trained


def _build(config: TrainConfig, train_set: Sequence[Comparison]) -> TrainedModel:
    if config.base is not None:
        return _build_from_base(config)
    prompts = PromptTexts.transcript(TRANSCRIPT)  # the vocabulary of the texts the model will read
    texts = (
        text
        for c in train_set
        for text in (prompts.text(c.prompt, c.prompt_text), *(transcript_response(r) for r in c.responses))
    )
    tokenizer = train_tokenizer(texts, config.model.vocab_size)
    model_config = replace(config.model, vocab_size=tokenizer.get_vocab_size())
    network = RewardModel(model_config)
    architecture = {"type": "transformer+bag-of-ngrams", **model_config.to_dict(), "parameters": _count(network)}
    return TrainedModel(network, tokenizer, SCRATCH_SPECIAL, model_config.max_length, architecture, training={})


def _build_from_base(config: TrainConfig) -> TrainedModel:
    from transformers import AutoTokenizer, PreTrainedModel

    assert config.base is not None
    hf_tokenizer = AutoTokenizer.from_pretrained(config.base)
    if not hf_tokenizer.is_fast:
        raise ValueError(f"{config.base}: needs a fast tokenizer (tokenizer.json) so serving can load it")
    classifier = load_hf_classifier(config.base)
    assert isinstance(classifier, PreTrainedModel)  # what AutoModelForSequenceClassification builds
    pad_id = hf_tokenizer.pad_token_id if hf_tokenizer.pad_token_id is not None else hf_tokenizer.eos_token_id
    classifier.config.pad_token_id = pad_id  # sequence classifiers find the last token by it
    boundary = hf_tokenizer.sep_token_id if hf_tokenizer.sep_token_id is not None else hf_tokenizer.eos_token_id
    start = hf_tokenizer.cls_token_id if hf_tokenizer.cls_token_id is not None else hf_tokenizer.bos_token_id
    special = SpecialTokens(pad_id=pad_id or 0, bos_id=start, sep_id=boundary, eos_id=boundary)
    max_length = config.model.max_length
    positions = getattr(classifier.config, "max_position_embeddings", max_length)
    architecture = {
        "type": "hf-sequence-classification",
        "base": str(config.base),
        "model_type": classifier.config.model_type,
        "parameters": _count(classifier),
    }
    network = HFReward(classifier)
    return TrainedModel(network, hf_tokenizer.backend_tokenizer, special, min(max_length, positions), architecture, {})


def _fit(
    model: torch.nn.Module,
    label: str,
    config: TrainConfig,
    train_set: Sequence[Comparison],
    train_encoded: Sequence[EncodedComparison],
    dev_encoded: Sequence[EncodedComparison],
    pad_id: int,
) -> dict[str, Any]:
    """Ranking-loss training of `model` (ids, mask -> [batch]) with early stopping on dev accuracy.

    Leaves the best epoch's weights in `model`.
    """
    parameters = list(model.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(train_encoded) / config.batch_size)
    schedule = _warmup_then_linear_decay(optimizer, steps_per_epoch * config.epochs)
    margins = [c.margin for c in train_set]
    best_accuracy, best_state, history, stale = -1.0, None, [], 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        progress = tqdm(
            _batches(train_encoded, config.batch_size),
            total=steps_per_epoch,
            desc=f"{label}epoch {epoch}/{config.epochs}",
            leave=False,
        )
        for indices in progress:
            scores, valid = _group_scores(model, [train_encoded[i] for i in indices], pad_id)
            margin = None
            if any(margins[i] is not None for i in indices):
                margin = torch.tensor([margins[i] or 0.0 for i in indices])
            loss = ranking_loss(scores, valid, config.loss, margin)
            optimizer.zero_grad()
            torch.autograd.backward(loss)
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            schedule.step()
            progress.set_postfix(loss=f"{loss.item():.3f}")
        model.eval()
        accuracy = pairwise_accuracy(score_comparisons(torch_score_fn(model), dev_encoded, pad_id))
        history.append(round(accuracy, 4))
        tqdm.write(f"{label}epoch {epoch}: dev pairwise accuracy {accuracy:.4f}")
        if accuracy > best_accuracy:
            best_accuracy, best_state, stale = accuracy, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= config.patience:
                break
    assert best_state is not None  # the first epoch always beats -1
    model.load_state_dict(best_state)
    return {"dev_accuracy_per_epoch": history, "best_epoch": history.index(max(history)) + 1}


def _blend(network: RewardModel, dev_encoded: Sequence[EncodedComparison], pad_id: int) -> dict[str, float]:
    """Set deep_weight so deep_weight * transformer + bag best fits the dev pairs (2-feature BT)."""
    network.eval()
    deep = score_comparisons(torch_score_fn(network.deep_score), dev_encoded, pad_id)
    wide = score_comparisons(torch_score_fn(network.wide_score), dev_encoded, pad_id)
    differences = np.array(
        [
            [w[i] - w[j], d[i] - d[j]]
            for w, d in zip(wide, deep, strict=False)
            for i in range(len(w))
            for j in range(i + 1, len(w))
        ]
    )
    features = np.vstack([differences, -differences])
    labels = np.r_[np.ones(len(differences)), np.zeros(len(differences))]
    wide_coef, deep_coef = LogisticRegression(C=1.0, fit_intercept=False).fit(features, labels).coef_[0]
    deep_weight = max(0.0, deep_coef / wide_coef) if wide_coef > 0 else 1.0
    with torch.no_grad():
        network.deep_weight.fill_(deep_weight)
    return {
        "deep_weight": deep_weight,
        "dev_accuracy_bag": pairwise_accuracy(wide),
        "dev_accuracy_transformer": pairwise_accuracy(deep),
    }


def _group_scores(
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], groups: Sequence[EncodedComparison], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Score every response of a batch of comparisons. -> scores, valid: [groups, max K]"""
    input_ids, attention_mask = (torch.from_numpy(a) for a in pad_batch([s for g in groups for s in g], pad_id))
    flat = score(input_ids, attention_mask)  # [responses]
    width = max(len(g) for g in groups)
    index = torch.zeros(len(groups), width, dtype=torch.long)
    valid = torch.zeros(len(groups), width, dtype=torch.bool)
    start = 0
    for row, group in enumerate(groups):
        index[row, : len(group)] = torch.arange(start, start + len(group))
        valid[row, : len(group)] = True
        start += len(group)
    return flat[index], valid


def _batches(encoded: Sequence[EncodedComparison], batch_size: int) -> Iterator[list[int]]:
    """Shuffled batches of comparisons of similar length (less padding), in shuffled order."""
    count = len(encoded)
    order = list(range(count))
    random.shuffle(order)
    pool = batch_size * 32
    batches = []
    for start in range(0, count, pool):
        chunk = sorted(order[start : start + pool], key=lambda i: max(len(s) for s in encoded[i]))
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    random.shuffle(batches)
    yield from batches


def _warmup_then_linear_decay(optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = max(1, total_steps // 20)
    decay = max(1, total_steps - warmup)  # a one-step run (a few records, one epoch) warms up and stops
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (total_steps - step) / decay))
    )


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
