"""What `rmserve import` reads: a reward model in the format its library saved it, as one torch network.

Told apart by their files, in this order (nothing is ever fetched):

- a PEFT adapter (`adapter_config.json`), merged into its base (`--base`, else the adapter's
  `base_model_name_or_path` when that is a local directory): a sequence-classification adapter
  (TRL's RewardTrainer with a `peft_config`), or a causal-LM adapter with TRL's or LLaMA-Factory's value head;
- a value-head model: a causal LM with `v_head.summary` among its weights (TRL) or in
  `value_head.safetensors` beside them (LLaMA-Factory);
- an OpenRLHF reward model: `value_head_prefix` in config.json, or its class name `RewardModel`;
- an `AutoModelForSequenceClassification`; a head with several outputs needs `--head` or `--head-weights`.

The weights load in fp32, with eager attention (it exports to ONNX); a weight the network needs and the
checkpoint lacks is an error, never a random initialization.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from logging import ERROR
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from rmserve.core.manifest import Normalization
from rmserve.training.checkpoint import HFReward, RewardNetwork, segments
from rmserve.training.options import HeadChoice, ImportConfig
from rmserve.training.value_head import (
    TRL_HEAD,
    LastTokenReward,
    file_weight_names,
    linear_head,
    read_tensors,
    value_head_weights,
    weight_names,
)

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel

ADAPTER_CONFIG = "adapter_config.json"
SEQUENCE_CLASSIFICATION = "sequence-classification"
OPENRLHF = "openrlhf"
VALUE_HEAD = "value-head"
LORA = " + peft-lora"  # appended to the format an adapter was merged into
OPENRLHF_CLASSES = (["RewardModel"], ["CriticModel"])


class CheckpointError(ValueError):
    """A checkpoint that cannot be imported as it is; the message says what to change."""


@dataclass(frozen=True)
class RewardCheckpoint:
    """A loaded checkpoint: its format, fast tokenizer and transformer, and what turns that into a reward."""

    format: str  # SEQUENCE_CLASSIFICATION, OPENRLHF or VALUE_HEAD, with LORA when an adapter was merged
    tokenizer: Any  # the transformers fast tokenizer
    model: PreTrainedModel  # the classifier, or the transformer under a value head: its config and parameters
    value_head: nn.Linear | None  # read at the last attended token; None: the classifier's own head
    choice: HeadChoice
    normalization: Normalization | None  # the checkpoint's own (OpenRLHF's normalize_reward), else None

    def network(self, pair_segments: bool) -> RewardNetwork:
        """The network to trace, in eval mode; `pair_segments`: the layout is the tokenizer's pair template."""
        if self.value_head is not None:
            return LastTokenReward(self.model, self.value_head, self.format.startswith(OPENRLHF)).eval()
        separator = segment_separator(self.model, self.tokenizer) if pair_segments else None
        return HFReward(self.model, self.choice, separator).eval()

    def architecture(self) -> dict[str, Any]:
        """What the manifest records about the network beside its model type."""
        read_at = "last attended token" if self.value_head is not None else "classifier's own pooling"
        return {"checkpoint_format": self.format, "reward": f"{self.choice.describe()}, read at the {read_at}"}


def load_reward_checkpoint(config: ImportConfig) -> RewardCheckpoint:
    """Read `config.checkpoint` in whichever format it is, with its fast tokenizer."""
    from transformers import AutoConfig

    checkpoint = config.checkpoint
    if (checkpoint / ADAPTER_CONFIG).is_file():
        return _merged_adapter(config)
    tokenizer = _fast_tokenizer(checkpoint)
    hf_config: Any = AutoConfig.from_pretrained(checkpoint, local_files_only=True)  # its fields depend on the model
    head_names = value_head_weights(checkpoint)
    if head_names is not None:
        head = _trl_head(head_names)
        return _with_value_head(VALUE_HEAD, tokenizer, _transformer(checkpoint), head, config.head, None)
    names = weight_names(checkpoint)
    if hasattr(hf_config, "value_head_prefix") or hf_config.architectures in OPENRLHF_CLASSES:
        prefix = getattr(hf_config, "value_head_prefix", "score")
        if f"{prefix}.weight" not in names:
            raise CheckpointError(f"{checkpoint}: an OpenRLHF reward model without its value head {prefix}.weight")
        head = linear_head(read_tensors(names, [f"{prefix}.weight"]), prefix)
        normalization = _openrlhf_normalization(hf_config)
        return _with_value_head(OPENRLHF, tokenizer, _transformer(checkpoint), head, config.head, normalization)
    classifier = _classifier(checkpoint, hf_config.num_labels, config.head)
    return _classifier_checkpoint(SEQUENCE_CLASSIFICATION, tokenizer, classifier, config.head)


def segment_separator(classifier: PreTrainedModel, hf_tokenizer: Any) -> int | None:
    """The [SEP] id when the model reads segment ids from its pair template, after checking `segments` derives them."""
    probe = hf_tokenizer("How do I bake bread?", "Knead it.", return_token_type_ids=True)
    if getattr(classifier.config, "type_vocab_size", 0) <= 1 or not any(probe["token_type_ids"]):
        return None
    separator = hf_tokenizer.sep_token_id
    derived = None if separator is None else segments(torch.tensor([probe["input_ids"]]), separator)[0].tolist()
    if separator is None or derived != list(probe["token_type_ids"]):
        raise CheckpointError(
            "the model reads token_type_ids, and its pair template's segments are not `1 after the first [SEP]`; "
            "rmserve serves input_ids and attention_mask only, so this checkpoint would be scored wrong"
        )
    return int(separator)


def _fast_tokenizer(directory: Path) -> Any:
    from transformers import AutoTokenizer

    hf_tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    if not hf_tokenizer.is_fast:
        raise CheckpointError(f"{directory}: needs a fast tokenizer (tokenizer.json) so serving can load it")
    return hf_tokenizer


def _classifier(checkpoint: Path, outputs: int, choice: HeadChoice) -> PreTrainedModel:
    """The checkpoint's sequence classifier, its head checked against `choice`."""
    from transformers import AutoModelForSequenceClassification

    _check_choice(checkpoint, outputs, choice)
    return _loaded(AutoModelForSequenceClassification, checkpoint)


def _transformer(checkpoint: Path) -> PreTrainedModel:
    """The checkpoint's base transformer (`AutoModel`): a causal LM's or a reward model's, without their heads."""
    from transformers import AutoModel

    return _loaded(AutoModel, checkpoint)


def _loaded(auto_class: Any, path: Path, supplied: set[str] | None = None, **kwargs: Any) -> PreTrainedModel:
    """`auto_class.from_pretrained(path)` in fp32, refusing weights the checkpoint lacks (but for those an adapter
    `supplied`, by name)."""
    with _quiet_transformers():  # the heads a class leaves out are expected; missing weights are checked below
        model, info = auto_class.from_pretrained(
            path,
            attn_implementation="eager",
            dtype=torch.float32,
            local_files_only=True,
            output_loading_info=True,
            **kwargs,
        )
    missing = sorted(key for key in info["missing_keys"] if not any(name.endswith(key) for name in supplied or ()))
    if missing:
        raise CheckpointError(
            f"{path}: has no {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''} for "
            f"{type(model).__name__}; is it a reward model (a sequence classifier, a value-head, OpenRLHF or PEFT "
            "checkpoint)? Its scores would be random"
        )
    loaded: PreTrainedModel = model.eval()
    return loaded


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity(ERROR)
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)


def _check_choice(checkpoint: Path | str, outputs: int, choice: HeadChoice) -> None:
    if choice.weights is not None and len(choice.weights) != outputs:
        raise CheckpointError(f"--head-weights: {len(choice.weights)} weights for {checkpoint}'s {outputs} outputs")
    if choice.index is not None and choice.index >= outputs:
        raise CheckpointError(f"--head {choice.index}: {checkpoint} has outputs 0 to {outputs - 1}")
    if outputs > 1 and choice == HeadChoice():
        raise CheckpointError(
            f"{checkpoint}: has {outputs} outputs; name the reward with --head INDEX or --head-weights "
            + ",".join(["w"] * outputs)
        )


def _with_value_head(
    kind: str,
    tokenizer: Any,
    transformer: PreTrainedModel,
    head: nn.Linear,
    choice: HeadChoice,
    normalization: Normalization | None,
) -> RewardCheckpoint:
    _check_choice(f"a {kind} checkpoint", 1, choice)
    # Pooling reads the attention mask, so any in-vocabulary pad id serves; a tokenizer's own is kept.
    if transformer.config.pad_token_id is None:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        transformer.config.pad_token_id = 0 if pad is None else pad
    return RewardCheckpoint(kind, tokenizer, transformer, head, choice, normalization)


def _classifier_checkpoint(
    kind: str, tokenizer: Any, classifier: PreTrainedModel, choice: HeadChoice
) -> RewardCheckpoint:
    if classifier.config.pad_token_id is None:  # decoders read the score at the last non-pad token
        if tokenizer.pad_token_id is None:
            raise CheckpointError(
                f"{classifier.name_or_path}: neither the model config nor the tokenizer names a pad token; set "
                "pad_token_id in config.json to the id the model was trained with (decoders read the score at the "
                "last non-pad token)"
            )
        classifier.config.pad_token_id = tokenizer.pad_token_id
    return RewardCheckpoint(kind, tokenizer, classifier, None, choice, None)


def _trl_head(names: dict[str, Path]) -> nn.Linear:
    """`v_head.summary` (weight and bias) from the files that hold it."""
    return linear_head(read_tensors(names, [f"{TRL_HEAD}.weight", f"{TRL_HEAD}.bias"]), TRL_HEAD)


def _openrlhf_normalization(hf_config: PretrainedConfig) -> Normalization | None:
    """OpenRLHF's `(reward - mean) / std` when its config turns `normalize_reward` on (mean 0, std 1 if unset)."""
    if not getattr(hf_config, "normalize_reward", False):
        return None
    return Normalization(mean=getattr(hf_config, "mean", 0.0), std=getattr(hf_config, "std", 1.0))


def _merged_adapter(config: ImportConfig) -> RewardCheckpoint:
    """A PEFT LoRA adapter merged into its base: TRL's sequence-classification adapter, or a causal-LM adapter
    with LLaMA-Factory's value head beside it."""
    adapter = config.checkpoint
    record = json.loads((adapter / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    base = config.base or Path(record.get("base_model_name_or_path") or "")
    if not (base / "config.json").is_file():
        raise CheckpointError(
            f"{adapter}: an adapter over {record.get('base_model_name_or_path')!r}, which is not a local "
            "checkpoint; pass its directory with --base"
        )
    try:
        from peft import PeftModel
    except ImportError:
        raise CheckpointError(f"{adapter}: a PEFT adapter; importing it needs peft (the [train] extra)") from None
    has_tokenizer = any((adapter / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json"))
    tokenizer = _fast_tokenizer(adapter if has_tokenizer else base)
    task = record.get("task_type")
    head_names = value_head_weights(adapter)
    if task == "SEQ_CLS":
        from transformers import AutoModelForSequenceClassification

        adapter_names = _adapter_weight_names(adapter)
        outputs = _adapter_outputs(adapter_names)
        _check_choice(adapter, outputs, config.head)
        # The base has no reward head: the adapter must carry it (`modules_to_save`), or it would be random.
        classifier = _loaded(AutoModelForSequenceClassification, base, set(adapter_names), num_labels=outputs)
        merged = PeftModel.from_pretrained(classifier, adapter).merge_and_unload().eval()
        return _classifier_checkpoint(SEQUENCE_CLASSIFICATION + LORA, tokenizer, merged, config.head)
    if head_names is not None:
        from transformers import AutoModelForCausalLM

        language_model = _loaded(AutoModelForCausalLM, base)
        merged = PeftModel.from_pretrained(language_model, adapter).merge_and_unload().eval()
        head = _trl_head(head_names)
        return _with_value_head(VALUE_HEAD + LORA, tokenizer, merged.base_model, head, config.head, None)
    raise CheckpointError(
        f"{adapter}: a PEFT adapter of task type {task!r} without a value head beside it; rmserve imports "
        "sequence-classification adapters (SEQ_CLS) and causal-LM adapters with a v_head (TRL, LLaMA-Factory)"
    )


def _adapter_weight_names(adapter: Path) -> dict[str, Path]:
    files = [adapter / name for name in ("adapter_model.safetensors", "adapter_model.bin")]
    return next((file_weight_names(path) for path in files if path.is_file()), {})


def _adapter_outputs(adapter_names: dict[str, Path]) -> int:
    """How many outputs the classification head an adapter carries (`modules_to_save`) has; 1 if it carries none."""
    heads = [name for name in adapter_names if name.endswith(("score.weight", "classifier.weight"))]
    return int(read_tensors(adapter_names, heads[-1:])[heads[-1]].shape[0]) if heads else 1
