"""Label Studio tasks in and out of the label store, in the shapes Label Studio documents.

- Ranker: the "LLM Ranker" template's data (docs/source/templates/generative-llm-ranker.md) and the Ranker tag's
  result, `{"ranker": {"<ranker name>": [ids]}}` (web/libs/editor/src/tags/control/Ranker.jsx; the tag's page,
  docs/source/tags/ranker.md, shows the older `{"ranker": [ids]}`).
- Pairwise: the "Human Preferences collection for RLHF" template's data (generative-pairwise-human-preference.md)
  and the Pairwise tag's result `{"selected": "left" | "right"}`, its to_name its own name (tags/control/Pairwise.js).
- The export: a JSON array of tasks with `annotations` (`result`, `was_cancelled`, `completed_by`, ...) as in
  docs/source/includes/task_format.md.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from rmserve.cli import main
from tests.labels.labelling import KIND_AND_SHORT, order_as_best_first, store_in, write_json, write_lines


def annotation(annotator: int, result: list[dict[str, Any]], cancelled: bool = False) -> dict[str, Any]:
    """An annotation as Label Studio exports it."""
    return {
        "id": 1000 + annotator,
        "result": result,
        "was_cancelled": cancelled,
        "ground_truth": False,
        "created_at": "2024-03-09T22:16:08.728353Z",
        "updated_at": "2024-03-09T22:16:08.728378Z",
        "lead_time": 4.288,
        "result_count": 0,
        "task": 1,
        "completed_by": annotator,
    }


def ranker_result(ids: list[str]) -> dict[str, Any]:
    return {
        "id": "Dx_aB91ISN",
        "from_name": "rank",
        "to_name": "answers",
        "type": "ranker",
        "value": {"ranker": {"rank": ids}},
    }


RANKER_TASK = {
    "id": 1,
    "data": {
        "prompt": "What caused the ancient library of Alexandria to be destroyed?",
        "items": [
            {"id": "llm_1", "title": "LLM 1", "body": "Wars led to library's ruin."},
            {"id": "llm_2", "title": "LLM 2", "body": "Library's end through various wars."},
            {"id": "llm_3", "title": "LLM 3", "body": "Ruin resulted from library wars."},
        ],
    },
    "annotations": [
        annotation(10, [ranker_result(["llm_2", "llm_1", "llm_3"])]),
        annotation(
            11,
            [
                {
                    "from_name": "rank",
                    "to_name": "answers",
                    "type": "ranker",
                    "value": {"ranker": ["llm_2", "llm_3", "llm_1"]},
                }
            ],
        ),
        annotation(12, [], cancelled=True),
    ],
    "predictions": [],
}
PAIRWISE_TASK = {
    "id": 2,
    "data": {
        "prompt": "What are the key benefits of RLHF?",
        "answer1": "It aligns the model with what people prefer.",
        "answer2": "None at all.",
    },
    "annotations": [
        annotation(
            10,
            [{"from_name": "comparison", "to_name": "comparison", "type": "pairwise", "value": {"selected": "left"}}],
        )
    ],
    "predictions": [],
}


def test_ranker_and_pairwise_annotations_become_orderings_for_training(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, data_dir: Path
) -> None:
    export = write_json(tmp_path / "label-studio.json", [RANKER_TASK, PAIRWISE_TASK])
    assert main(["label", "add", "--format", "label-studio", str(export)]) == 0
    assert "2 tasks added (0 were already in the store), 3 orderings and 1 skips" in capsys.readouterr().out
    assert main(["label", "add", "--format", "label-studio", str(export)]) == 0
    assert "0 orderings and 0 skips (4 already held" in capsys.readouterr().out
    rankings = tmp_path / "rankings.jsonl"
    assert main(["label", "export", str(rankings)]) == 0
    wars = ["Library's end through various wars.", "Wars led to library's ruin.", "Ruin resulted from library wars."]
    assert [json.loads(line)["responses"] for line in rankings.read_text().splitlines()] == [
        wars,
        [wars[0], wars[2], wars[1]],
        ["It aligns the model with what people prefer.", "None at all."],
    ]
    labellers = sorted({ordering.labeller for ordering in store_in(data_dir).orderings()})
    assert labellers == ["label-studio:10", "label-studio:11", "label-studio:12"]


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (
            lambda task: task["annotations"][0]["result"][0]["value"].update(ranker={"best": ["llm_1"], "ads": []}),
            "[0].annotations[0].result[0].value.ranker: must be the Ranker's ids best first",
        ),
        (
            lambda task: task["annotations"][0]["result"][0]["value"]["ranker"].update(rank=["llm_1", "llm_2"]),
            "[0].annotations[0].result[0].value.ranker: must name each of llm_1, llm_2, llm_3 once",
        ),
        (lambda task: task["annotations"][0].pop("completed_by"), "[0].annotations[0].completed_by"),
        (lambda task: task["data"]["items"][1].pop("body"), "[0].data.items[1].body: must be a non-empty string"),
        (
            lambda task: task["data"].pop("items"),
            "[0].data: must hold 'items' (a Ranker's list) or answer1 and answer2",
        ),
    ],
)
def test_a_bad_task_is_one_line_naming_it_and_its_field_and_adds_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, data_dir: Path, change: Any, where: str
) -> None:
    task = copy.deepcopy(RANKER_TASK)
    change(task)
    assert main(["label", "add", "--format", "label-studio", str(write_json(tmp_path / "ls.json", [task]))]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"ls.json: {where}" in line
    assert store_in(data_dir).counts().queued == 0


def test_the_tasks_still_to_order_go_to_label_studio_and_its_annotations_come_back_to_them(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, data_dir: Path
) -> None:
    tasks = write_lines(tmp_path / "tasks.jsonl", *KIND_AND_SHORT)
    assert main(["label", "add", str(tasks)]) == 0
    order_as_best_first(store_in(data_dir), "ana", ["kind", "neutral", "rude"])
    exported = tmp_path / "for-label-studio.json"
    assert main(["label", "export", "--format", "label-studio", str(exported)]) == 0
    assert "1 tasks written" in capsys.readouterr().out
    (task,) = json.loads(exported.read_text())
    assert task["data"]["prompt"] == "Which is short?"
    assert [item["body"] for item in task["data"]["items"]] == ["a long answer", "short"]
    # Label Studio hands it to an annotator and exports it with the annotation (and its own id).
    task |= {"id": 7, "annotations": [annotation(3, [ranker_result(["response-2", "response-1"])])]}
    assert main(["label", "add", "--format", "label-studio", str(write_json(tmp_path / "back.json", [task]))]) == 0
    assert capsys.readouterr().out.startswith("0 tasks added (1 were already in the store), 1 orderings")
    short = [o.ranked_responses() for o in store_in(data_dir).orderings() if o.prompt == "Which is short?"]
    assert short == [["short", "a long answer"]]
    assert store_in(data_dir).counts().queued == 0
