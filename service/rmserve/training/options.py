"""Every training, export and evaluation default, defined once; `rmserve train/export/eval` read them here.

No torch here, so the CLI can build its flags without importing it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, get_args

from rmserve.config import DEFAULT_REPOSITORY
from rmserve.training.data import LineRange
from rmserve.training.vocab import PAD_ID, SEP_ID

EVAL_THREADS = 2  # ONNX Runtime intra-op threads for `rmserve eval`
# `rmserve import --layout`: how the model was trained (rmserve.core.formats), or `auto`: what the checkpoint shows.
TrainedLayout = Literal["chat_template", "pair", "text"]
ImportLayout = Literal["auto", TrainedLayout]
IMPORT_LAYOUTS: tuple[str, ...] = get_args(ImportLayout)


@dataclass
class ModelConfig:
    """The from-scratch network (`rmserve.training.model`)."""

    vocab_size: int = 8192
    max_length: int = 256
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    dropout: float = 0.1
    n_towers: int = 1  # transformers averaged in the score
    ngram_orders: int = 2  # 0 turns the bag of n-grams off
    hash_buckets: int = 131_071  # token n-grams; a prime, so `n-gram id mod buckets` spreads evenly
    char_buckets: int = 131_071  # character n-grams inside tokens
    char_ngrams_per_token: int = 48
    pad_id: int = PAD_ID
    sep_id: int = SEP_ID

    def to_dict(self) -> dict[str, int | float]:
        return asdict(self)


@dataclass
class TrainConfig:
    data: Path
    out: Path  # the run directory the caller saves to
    lines: LineRange | None = None
    base: Path | None = None  # a local Hugging Face checkpoint to fine-tune instead of `model`
    model: ModelConfig = field(default_factory=ModelConfig)  # from scratch; vocab_size is the BPE target
    seed: int = 0
    dev_seed: int | None = None  # the dev split's seed; None: `seed` (ensemble members share one split)
    dev_fraction: float = 0.1
    epochs: int = 6
    patience: int = 2  # epochs without a better dev accuracy before stopping
    batch_size: int = 16  # comparisons per step
    learning_rate: float = 3e-4
    weight_decay: float = 0.01
    loss: str = "plackett-luce"  # for rankings of more than two; pairs always use Bradley–Terry
    pretrain_epochs: int = 0
    threads: int = 2


@dataclass(frozen=True)
class HeadChoice:
    """Which output of a multi-output head is the reward: one (`--head INDEX`) or a weighted sum (`--head-weights`).

    Neither: the head must have one output.
    """

    index: int | None = None
    weights: tuple[float, ...] | None = None

    def describe(self) -> str:
        """How the manifest records it: "output 2", "weighted sum 0.5, 0.5", or "the one output"."""
        if self.weights is not None:
            return "weighted sum " + ", ".join(f"{weight:g}" for weight in self.weights)
        return "the one output" if self.index is None else f"output {self.index}"


@dataclass
class ImportConfig:
    """`rmserve import`: a Hugging Face reward model checkpoint -> a repository version."""

    checkpoint: Path
    name: str
    base: Path | None = None  # a PEFT adapter's base model directory (default: the adapter's own record of it)
    head: HeadChoice = field(default_factory=HeadChoice)
    repository: Path = DEFAULT_REPOSITORY
    version: int = 1
    calibration: Path | None = None  # preference file: normalization, parity and int8 agreement on its responses
    calibration_lines: LineRange | None = None
    max_length: int = 2048  # tokens per item, further capped by the model's positions and tokenizer limit
    layout: ImportLayout = "auto"
    int8: bool = False
    external_data_above: int = 1_800_000_000  # weights past this many bytes go to model.onnx.data (protobuf: 2 GB)
    max_batch_tokens: int | None = None  # the run budget measured best for it: the manifest's serving hint


@dataclass
class ExportConfig:
    run: Path
    name: str
    held_out: Path  # preference file for parity, int8 agreement and the manifest's evaluation
    repository: Path = DEFAULT_REPOSITORY
    version: int = 1
    held_out_lines: LineRange | None = None
    int8: bool = False
    max_batch_tokens: int | None = None  # the run budget measured best for it: the manifest's serving hint
