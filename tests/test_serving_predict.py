"""`unified predict` on a data directory of the synthetic world with the default model: answers equal
`Model.generate`'s, bad rows listed and counted (fatal only with --strict), and a rerun after a kill resumes."""

from __future__ import annotations

import json

import pytest

from unified.cli import main


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from unified.data.synthetic import write_split

    root = tmp_path_factory.mktemp("predict")
    write_split(root / "data", 1, seed=5, split="test", progress=False)
    for name in ("retrieval", "regress", "text2text", "audio_video_mcqa", "classify", "temporal_grounding"):
        (root / "data" / f"{name}.jsonl").unlink()  # a smaller corpus: four tasks
    with (root / "data" / "vqa.jsonl").open("a") as f:  # a bad row: its clip does not exist
        f.write(json.dumps({"video": "clips/missing.mp4", "question": "what colour?", "answer": "red"}) + "\n")
    return root


def test_predict_answers_resumes_and_lists_bad_rows(corpus, capsys):
    from unified import Model
    from unified.data.files import read_rows
    from unified.task_zoo import build_tasks

    out = corpus / "predictions.jsonl"
    assert main(["predict", "--data", str(corpus / "data"), "--out", str(out), "--quiet", "--workers", "1"]) == 0
    summary = json.loads(capsys.readouterr().out)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert summary["bad"] == 1 and summary["answered"] == summary["rows"] - 1 == len(lines) - 1
    bad = [line for line in lines if "error" in line]
    assert bad[0]["_source"] == f"vqa.jsonl:{sum(1 for x in lines if x['task'] == 'vqa')}"
    assert "missing" in bad[0]["error"]
    model = Model.default()
    for line in lines:
        if "error" in line:
            continue
        name, file = line["task"], line["_source"].split(":")[0]
        task = build_tasks([name], {name: model.task_options[name]}, model.processor.tokenizer.layout)[name]
        row = next(r for r in read_rows(corpus / "data" / file, skip_bad_rows=True)[0]
                   if r["_source"] == line["_source"])
        scored = model.generate(task=name, **{k: v for k, v in task.inputs(row).items() if k != "_source"},
                                return_score=True)
        assert line["text"] == task.show(scored.answer)
        assert line["score"] == pytest.approx(scored.score, abs=1e-4)

    # a kill mid-line: the torn line is dropped, the rows after the last whole line are answered again
    whole = out.read_text().splitlines(keepends=True)
    out.write_text("".join(whole[:3]) + whole[3][:17])
    assert main(["predict", "--data", str(corpus / "data"), "--out", str(out), "--quiet", "--workers", "0"]) == 0
    resumed = json.loads(capsys.readouterr().out)
    assert resumed["already_done"] == 3
    again = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(x["_source"] for x in again) == sorted(x["_source"] for x in lines)
    assert {x["_source"]: x.get("text") for x in again} == {x["_source"]: x.get("text") for x in lines}
    # strict: the bad row stops the run, naming it
    assert main(["predict", "--data", str(corpus / "data"), "--out", str(corpus / "strict.jsonl"), "--quiet",
                 "--strict", "--workers", "0"]) == 2
    assert "vqa.jsonl" in capsys.readouterr().err
