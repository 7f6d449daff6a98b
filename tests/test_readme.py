"""The README's task example is real code: it runs, registers, and its example row becomes the prompt and target
it prints."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from unified.task_zoo import registry

pytestmark = pytest.mark.slow  # runs every README block, a training run included

README = Path(__file__).parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_the_add_a_task_example_runs(capsys):
    block = next(b for b in python_blocks() if '@register_task("count_shapes")' in b)
    try:
        exec(compile(block, "README.md", "exec"), {"__name__": "readme_example"})
        printed = capsys.readouterr().out.strip()
        prompt, target = printed.split(" -> ")
        assert prompt.startswith("<video> ") and prompt[len("<video> "):] in ("how many shapes appear?",
                                                                               "count the shapes.")
        assert target == "<int_3>"  # the count as Gato's integer token
    finally:
        registry.TASKS.pop("count_shapes", None)


def test_every_python_block_runs_in_order(tmp_path, monkeypatch):
    """All of the README's Python blocks, top to bottom in one namespace, in a folder holding the files they name:
    a clip and frames of the synthetic world, a SentencePiece model, data folders, a trained model (the built-in
    default model), a run with per-task adapters, and (random, tiny) SigLIP and T5 checkpoints."""
    import io
    import shutil
    import textwrap

    import pytest
    import sentencepiece as spm

    from unified.api import DEFAULT_MODEL_DIR
    from unified.data.synthetic import write_split
    from unified.model.adapters import TaskAdapters, save_model

    if not (DEFAULT_MODEL_DIR / "config.json").is_file():
        pytest.skip("the README's Model example needs the built-in default model, which this checkout lacks")
    monkeypatch.chdir(tmp_path)
    write_split(tmp_path / "data" / "train", 3, seed=1, split="train", progress=False)
    write_split(tmp_path / "data" / "test", 3, seed=1, split="test", progress=False)
    clips = sorted((tmp_path / "data" / "test" / "clips").glob("*.mp4"))
    for name, source in (("clip.mp4", clips[0]), ("a.mp4", clips[1]), ("b.mp4", clips[2])):
        shutil.copy(source, name)
    for name in ("frame.png", "photo.png"):
        shutil.copy(next((tmp_path / "data" / "test" / "clips").glob("*.png")), name)
    text = [line for line in (README.read_text().lower().split("\n")) if line.strip()]
    model_file = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(text), model_writer=model_file, vocab_size=200,
                                   hard_vocab_limit=False, minloglevel=2)
    (tmp_path / "spiece.model").write_bytes(model_file.getvalue())
    (tmp_path / "runs" / "shapes-small").mkdir(parents=True)
    (tmp_path / "runs" / "shapes-small" / "best").symlink_to(DEFAULT_MODEL_DIR)
    from task_rows import tiny_stack

    _, _, tiny = tiny_stack()
    TaskAdapters.attach(tiny, ["vqa", "caption"], {"vqa": "language", "caption": "language"}, r=2)  # as the config
    save_model(tiny, tmp_path / "runs" / "lora-per-task" / "final")

    from transformers import SiglipVisionConfig, SiglipVisionModel

    # a random SigLIP of the real one's input size, for the pretrained-encoder example
    SiglipVisionModel(SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, image_size=224, patch_size=16)).save_pretrained(
        tmp_path / "models" / "siglip-base-patch16-224")

    from transformers import T5Config, T5ForConditionalGeneration

    # a random T5 v1.1 with Flan-T5-small's vocabulary, for the text-backbone example
    T5ForConditionalGeneration(T5Config(vocab_size=32128, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2,
                                        feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                                        decoder_start_token_id=0)).save_pretrained(tmp_path / "models" / "flan-t5-small")

    namespace = {"__name__": "readme"}
    try:
        for i, block in enumerate(python_blocks()):
            exec(compile(textwrap.dedent(block), f"README.md block {i}", "exec"), namespace)
    finally:
        registry.TASKS.pop("count_shapes", None)
    assert isinstance(namespace["result"].integral, float)
    assert namespace["adapters"].active == "language"  # the README activates vqa, which is in the language group
