"""Token-budget packing (`data.pack_length`, `data.pack_target_length`): a plan is `optim.batch_size` packs, each
within its lengths and media limits as the processor actually tokenises it; every drawn row is trained once, ranks
take different rows, a resumed planner makes the same plans, and the loss is the mean over the step's target
tokens, each weighted by its task (checked against each row run alone)."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from task_rows import WORDS, task_rows, tiny_stack, write_media

from unified.errors import ConfigError
from unified.model import UnifiedConfig, UnifiedModel
from unified.task_zoo import build_tasks
from unified.task_zoo.batching import process_row
from unified.training import load_config
from unified.training.batches import Plan, PlannedBatches, Planner
from unified.training.data import RowStream
from unified.training.loss import prepared_mixed_loss
from unified.training.mixture import TaskSampler
from unified.training.packing import first_fit_decreasing, item_need, measure_row, pack_to_budget, row_rng

TASKS = ("text2text", "vqa", "caption")
LIMITS = {"length": 40, "target": 12, "visual": 2, "audio": 2}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    rows = task_rows(write_media(tmp_path_factory.mktemp("media")))
    words = WORDS.split()[:40]
    rng = random.Random(0)
    rows["text2text"] = [{"text": " ".join(rng.choices(words, k=rng.randint(2, 18))),
                          "target": " ".join(rng.choices(words, k=rng.randint(1, 6)))} for _ in range(30)]
    for name in ("vqa", "caption"):  # 40 rows each (the media repeat): no epoch wraps within the tests' steps
        rows[name] = [{**rows[name][k % len(rows[name])], "_copy": k} for k in range(40)]
    tokenizer, processor, _ = tiny_stack()
    tasks = build_tasks(list(TASKS))
    data = {name: rows[name] for name in TASKS}
    return tokenizer, processor, tasks, data


def _config(tmp_path, **extra):
    overrides = {"data.pack": "true", "data.pack_length": LIMITS["length"],
                 "data.pack_target_length": LIMITS["target"], "data.pack_max_visual": LIMITS["visual"],
                 "data.pack_max_audio": LIMITS["audio"], "mixture.mixed_batches": "true", "optim.batch_size": 3,
                 "optim.max_steps": 6, "output_dir": str(tmp_path), **extra}
    return load_config(None, [f"{k}={v}" for k, v in overrides.items()] + ["data.synthetic={n_train: 8}"])


def _planner(cfg, setup, rank=0, world=1):
    tokenizer, _, tasks, data = setup
    sampler = TaskSampler({t: len(r) for t, r in data.items()}, "uniform", seed=0)

    def measure(task, index, rng):
        return measure_row(tasks[task], data[task][index], tokenizer, rng)

    return Planner(cfg, sampler, RowStream(data, seed=0), tasks, rank, world, measure=measure)


def test_first_fit_decreasing_by_hand():
    needs = [(5, 1, 0, 0), (9, 2, 1, 0), (3, 3, 0, 0), (6, 1, 1, 0), (2, 1, 0, 0), (12, 1, 0, 0)]
    # by length: 12 (alone: over 10), 9, 6, 5, 3, 2; 6 cannot join 9 (15 > 10) nor share its visual item slot
    assert first_fit_decreasing(needs, (10, 4, 1, 1)) == [[5], [1], [3, 2], [0, 4]]


def test_packing_to_a_budget_by_hand():
    """Limits (10 prompt, 4 target). Fill sums: a 1.05, b 0.95, c 0.85, d 0.85, e 0.45. a opens a pack with room
    (0.2, 0.75): b scores 0.2 * 0.2 + 0.75 * 0.75 = 0.6025 over d 0.5825 and e 0.2275 and fills it. c opens the next,
    room (0.4, 0.75): d 0.6025 beats e 0.2675; e then overflows the target and opens the last. f is over the limit:
    a pack of its own."""
    a, b, c, d, e, f = (8, 1, 0, 0), (2, 3, 0, 0), (6, 1, 0, 0), (1, 3, 0, 0), (2, 1, 0, 0), (3, 5, 0, 0)
    assert pack_to_budget([a, b, c, d, e], (10, 4, 9, 9)) == [[0, 1], [2, 3], [4]]
    assert pack_to_budget([e, f], (10, 4, 9, 9)) == [[1], [0]]
    video = (1, 1, 1, 0)  # one visual item
    assert pack_to_budget([video] * 2, (9, 9, 2, 9)) == [[0, 1]]
    assert pack_to_budget([video] * 2, (9, 9, 1, 9)) == [[0], [1]]


def test_plans_are_batches_of_packs_within_their_limits(setup, tmp_path):
    _, processor, tasks, data = setup
    cfg = _config(tmp_path)
    planner = _planner(cfg, setup)
    dataset = PlannedBatches(tasks, processor, data, cfg.seed, pack=True)
    drawn = []
    for plan in planner:
        assert plan.packs is not None and len(plan.packs) == cfg.optim.batch_size
        prepared = dataset[plan]
        batch = prepared.batch
        for b, members in enumerate(prepared.packs):  # what the processor made, not what the planner measured
            assert int((batch["segment_ids"][b] > 0).sum()) <= LIMITS["length"] or len(members) == 1
            assert int((batch["decoder_segment_ids"][b] > 0).sum()) <= LIMITS["target"] or len(members) == 1
        assert batch.get("pixel_values", torch.zeros(1, 0)).shape[1] <= LIMITS["visual"]
        drawn += list(plan.rows)
        planner.consumed(plan)
        real = float((batch["segment_ids"] > 0).float().mean())
        assert real > 0.5  # packs are mostly full: text rows fill the gaps the media rows leave
    assert len(drawn) > cfg.optim.batch_size * cfg.optim.max_steps  # several rows a pack
    left = [row for buffer in planner.buffers for row in buffer]
    stream = RowStream(data, seed=0)  # the same stream again: every row drawn is trained or still waiting
    taken = {t: stream.take_indices(t, sum(1 for n, _ in drawn + left if n == t)) for t in TASKS}
    assert sorted(drawn + left) == sorted((t, i) for t, idx in taken.items() for i in idx)


def test_ranks_take_different_rows_and_a_resume_plans_the_same(setup, tmp_path):
    cfg = _config(tmp_path)
    ranks = [_planner(cfg, setup, rank, 2) for rank in range(2)]
    plans = [[ranks[r].plan(step, 0) for step in range(3)] for r in range(2)]
    for step in range(3):
        assert len(plans[0][step].packs) == len(plans[1][step].packs) == cfg.optim.batch_size
        assert not set(plans[0][step].rows) & set(plans[1][step].rows)
    state = ranks[0].state_dict()
    assert state["buffers"] == [[list(r) for r in b] for b in ranks[0].buffers]
    again = _planner(cfg, setup, 0, 2)
    # the planner's state goes with the sampler's and the stream's (a checkpoint holds all three)
    again.sampler.load_state_dict(ranks[0].sampler.state_dict())
    again.stream.load_state_dict(ranks[0].stream.state_dict())
    again.load_state_dict(state)
    assert [again.plan(step, 0) for step in range(3, 5)] == [ranks[0].plan(step, 0) for step in range(3, 5)]
    assert Plan.from_list(plans[0][1].to_list()) == plans[0][1]


def test_the_loss_is_the_mean_over_the_steps_target_tokens(setup, tmp_path):
    """Each target token's cross-entropy (its row run alone) times its task's weight, summed over the packed
    batch's rows and divided by their target tokens: a step with more rows needs no other learning rate."""
    tokenizer, processor, tasks, data = setup
    config = UnifiedConfig.preset("tiny", text={"vocab_size": tokenizer.vocab_size,
                                                "image_token_id": tokenizer.image_token_id,
                                                "video_token_id": tokenizer.video_token_id,
                                                "audio_token_id": tokenizer.audio_token_id},
                                  fusion={"mode": "concat"}, resampler={"mode": "pool3d", "pool_frames": 2,
                                                                        "pool_hw": 2})
    torch.manual_seed(0)
    model = UnifiedModel(config).eval()
    cfg = _config(tmp_path)
    plan = _planner(cfg, setup).plan(0, 0)
    prepared = PlannedBatches(tasks, processor, data, cfg.seed, pack=True)[plan]
    weights = {"text2text": 2.0, "vqa": 0.5}
    items = [process_row(processor, tasks[t], tasks[t].to_example(data[t][i], rng=row_rng(cfg.seed, 0, 0, t, i)),
                         data[t][i]) for t, i in plan.rows]
    with torch.no_grad():
        loss, _ = prepared_mixed_loss(tasks, prepared, model, "cpu", weights)
        unpacked = processor.collate(items)  # the same rows unpacked, one to a sequence
        logits, labels = model(**unpacked).logits, unpacked["labels"]
        per_token = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none")  # (N, Lt), 0 on padding
        row_weight = torch.tensor([weights.get(t, 1.0) for t, _ in plan.rows])
        total = float((per_token.sum(1) * row_weight).sum())
        count = sum(item_need(it)[1] for it in items)
    assert float(loss) == pytest.approx(total / count, abs=1e-5)


def test_budget_settings_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="data.pack_length"):
        load_config(None, [f"output_dir={tmp_path}", "data.synthetic={n_train: 8}", "data.pack_length=64",
                           "data.pack_target_length=16"])  # data.pack is off
    with pytest.raises(ConfigError, match="data.pack_target_length"):
        load_config(None, [f"output_dir={tmp_path}", "data.synthetic={n_train: 8}", "data.pack=true",
                           "data.pack_length=64"])
    with pytest.raises(ConfigError, match="data.pack_length"):
        load_config(None, [f"output_dir={tmp_path}", "data.synthetic={n_train: 8}", "data.pack=true",
                           "data.pack_length=0", "data.pack_target_length=16"])
    with pytest.raises(ConfigError, match="per-task LoRA"):
        load_config(None, [f"output_dir={tmp_path}", "data.synthetic={n_train: 8}", "data.pack=true",
                           "data.pack_length=64", "data.pack_target_length=16", "lora.enabled=true",
                           "stages=[{train: [lora]}]"])
