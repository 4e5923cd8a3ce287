"""The demo's text: single-turn questions and exchanges from the training lines of the preference data.

Only line numbers of the data leave this module into reports (the data set is never copied into the repository).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rmserve.training.data import LineRange, read_comparisons

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "hh-rlhf-harmless-test.jsonl.gz"
TRAINING_LINES = LineRange(1, 1800)  # never the held-out lines 1801-2312 (../shared/data/README.md)


@dataclass(frozen=True)
class Question:
    line: int  # the data file's line it comes from
    text: str


@dataclass(frozen=True)
class Corpus:
    """Questions for the policy to answer, and exchanges to pre-train it on."""

    questions: list[Question]  # the user turn of each short single-turn prompt
    exchanges: list[tuple[str, str]]  # (last user turn, response) of every comparison, each response


def read_corpus(path: Path = DATA, max_question_chars: int = 160) -> Corpus:
    """The training lines' exchanges; questions only from short single-turn prompts (the policy's context is small)."""
    questions: list[Question] = []
    exchanges: list[tuple[str, str]] = []
    # read_comparisons keeps one comparison per line, in order (it refuses a file with a bad line).
    for line, comparison in enumerate(read_comparisons(path, TRAINING_LINES), start=TRAINING_LINES.first):
        turns = comparison.prompt
        question = turns[-1].content.strip()
        exchanges.extend((question, response.strip()) for response in comparison.responses)
        if len(turns) == 1 and len(question) <= max_question_chars:
            questions.append(Question(line, question))
    return Corpus(questions, exchanges)
