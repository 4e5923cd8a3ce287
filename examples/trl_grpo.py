"""GRPO with TRL, rewarded by an rmserve server: the reward function is one line.

    rmserve serve --port 8000 &
    python examples/trl_grpo.py --url http://127.0.0.1:8000 --policy Qwen/Qwen2.5-0.5B-Instruct
    python examples/trl_grpo.py --url http://127.0.0.1:8000            # a tiny random policy, CPU, seconds

Without `--policy` the script builds a tiny random-init Llama and a tokenizer trained on the
prompts, so it runs anywhere (no hub download); the rewards are real rmserve scores either way.
`--conversational` sends chat prompts, which the server renders in the reward model's own format.

Needs TRL, `datasets` and CPU torch: `pip install -e '.[examples]'` in an rmserve checkout.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from rmserve.client import RewardClient

try:
    from datasets import Dataset
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
    )
    from trl import GRPOConfig, GRPOTrainer
except ModuleNotFoundError as missing:  # one sentence and exit status 2, as rmserve's commands do
    print(f"{Path(__file__).name}: needs {missing.name}: pip install -e '.[examples]'", file=sys.stderr)
    raise SystemExit(2) from None

PROMPTS = [
    "How do I bake bread?",
    "What is the capital of France?",
    "Give me one tip for writing clear code.",
    "How can I get better sleep?",
    "Explain what a reward model is.",
    "What should I pack for a day hike?",
    "How do I apologise to a friend?",
    "Why is the sky blue?",
]
# The transcript layout rmserve's models read (InputFormat's default), as a chat template for the tiny policy.
CHAT_TEMPLATE = (
    "{% for message in messages %}\n\n{{ {'system': 'System', 'user': 'Human', 'assistant': 'Assistant'}"
    "[message['role']] }}: {{ message['content'] }}{% endfor %}"
    "{% if add_generation_prompt %}\n\nAssistant:{% endif %}"
)


def tiny_tokenizer(corpus: Sequence[str], vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `corpus`, with the special tokens generation needs."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(list(corpus), trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def tiny_policy(tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> LlamaForCausalLM:
    """A random-init two-layer Llama: enough to sample completions and take gradient steps on a CPU."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    import torch

    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def prompt_dataset(conversational: bool) -> Dataset:
    if conversational:
        return Dataset.from_dict({"prompt": [[{"role": "user", "content": prompt}] for prompt in PROMPTS]})
    return Dataset.from_dict({"prompt": PROMPTS})


def build_trainer(
    reward_func: Callable[..., list[float]],
    policy: str | None,
    output_dir: Path,
    steps: int,
    conversational: bool = False,
    num_generations: int = 4,
    max_completion_length: int = 16,
) -> GRPOTrainer:
    if policy is None:
        tokenizer = tiny_tokenizer(PROMPTS * 4)
        model = tiny_policy(tokenizer)
    else:
        tokenizer = AutoTokenizer.from_pretrained(policy)
        model = AutoModelForCausalLM.from_pretrained(policy)
    config = GRPOConfig(
        output_dir=str(output_dir),
        max_steps=steps,
        per_device_train_batch_size=num_generations,  # one prompt's group per step
        num_generations=num_generations,
        max_completion_length=max_completion_length,
        learning_rate=1e-4,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        seed=0,
    )
    return GRPOTrainer(
        model=model,
        reward_funcs=[reward_func],
        args=config,
        train_dataset=prompt_dataset(conversational),
        processing_class=tokenizer,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="rmserve base URL")
    parser.add_argument("--api-key", default=None, help="rmserve API key, if the server has keys")
    parser.add_argument("--reward-model", default=None, help="rmserve model name (default: the server's default)")
    parser.add_argument("--policy", default=None, help="HF policy to train (default: a tiny random Llama)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--conversational", action="store_true", help="chat prompts instead of plain text")
    parser.add_argument("--output-dir", type=Path, default=Path("runs/trl-grpo"))
    args = parser.parse_args(argv)

    client = RewardClient(args.url, api_key=args.api_key, model=args.reward_model, timeout=60.0, retries=5)
    trainer = build_trainer(client.as_reward_func(), args.policy, args.output_dir, args.steps, args.conversational)
    trainer.train()
    for entry in trainer.state.log_history:
        if "rewards/rmserve/mean" in entry:
            print(f"step {entry['step']}: mean reward {entry['rewards/rmserve/mean']:+.3f}")


if __name__ == "__main__":
    main()
