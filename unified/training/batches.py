"""What each micro-batch holds, decided in the training process, and its tensors, made in DataLoader workers.

    planner = Planner(cfg, sampler, stream, tasks, rank, world)      # the mixture draws tasks, the stream rows
    loader = batch_loader(planner, PlannedBatches(tasks, processor, rows, seed), num_workers=2, prefetch=2, seed=0)
    for prepared in loader:       # workers decode, sample frames, resize, log-mel, tokenise and collate each plan;
        planner.consumed(prepared.plan)                  # the training process runs the model

A `Plan` names a micro-batch by (step, micro) and its rows by (task, index into that task's rows). The planner is
the DataLoader's sampler: it runs in the training process, so the sampler and the row stream keep one state that
goes into the checkpoint. With workers the DataLoader asks for `num_workers * prefetch` plans ahead of the batch
being trained, so at a checkpoint the sampler and stream are that far ahead: the plans made but not yet trained
(`pending`) are saved with them and are the first ones a resumed run prepares. The run's plans are therefore the same
with 0, 2 or 8 workers and across a resume. The dynamic strategy reads training losses with that lag (a DataLoader
asks for exactly one new plan per batch it hands over), so its draws depend on `num_workers * prefetch`, and a resume
with the same setting follows the same trajectory.

A failure in a worker (a clip that does not decode) comes back to the training process as the same `UnifiedError`
naming file:row (`Failed`), not as a DataLoader traceback, and never as a silently missing batch.
"""

from __future__ import annotations

import random
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from unified.errors import UnifiedError
from unified.task_zoo.batching import process_row
from unified.training.packing import (
    PACK_BUFFER,
    PackLimits,
    fullest,
    lower_bound,
    pack_items,
    pack_to_budget,
    row_rng,
)
from unified.training.stages import stage_at


@dataclass(frozen=True)
class Plan:
    step: int
    micro: int
    rows: tuple[tuple[str, int], ...]  # (task, index into the task's rows), in the order the mixture drew them
    # token-budget packing: each pack's rows (indices into `rows`); every other row is contrastive
    packs: tuple[tuple[int, ...], ...] | None = None

    def to_list(self) -> list:
        out = [self.step, self.micro, [[t, i] for t, i in self.rows]]
        return out if self.packs is None else [*out, [list(p) for p in self.packs]]

    @classmethod
    def from_list(cls, data: Sequence) -> Plan:
        packs = tuple(tuple(int(i) for i in p) for p in data[3]) if len(data) > 3 else None
        return cls(int(data[0]), int(data[1]), tuple((str(t), int(i)) for t, i in data[2]), packs)


@dataclass
class Prepared:
    """A plan's tensors. `single`: the batch's one task (None: a mixed batch); `batch`: the generative rows
    collated, `names` their tasks; `own`: task -> its `Task.loss_batch` for the tasks with their own loss
    (contrastive: its rows then their pairs), `own_rows` how many rows each holds."""

    plan: Plan
    single: str | None
    batch: dict[str, torch.Tensor] | None
    names: list[str]
    own: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    own_rows: dict[str, int] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    packs: list[list[int]] | None = None  # packed: the generative rows (indices into `names`) of each batch row
    fitted: dict[str, int] = field(default_factory=dict)  # media fitted to budgets in a worker, for the main count

    def pin_memory(self) -> Prepared:  # DataLoader(pin_memory=True) calls this on what the workers return
        def pin(b):
            return {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in b.items()}

        self.batch = pin(self.batch) if self.batch is not None else None
        self.own = {k: pin(b) for k, b in self.own.items()}
        return self


@dataclass
class Failed:
    plan: Plan
    error: UnifiedError


def prepare(tasks: Mapping[str, Any], processor: Any, named_rows: Sequence[tuple[str, Mapping[str, Any]]],
            rng: random.Random | None, plan: Plan | None = None, pack: bool = False,
            row_rngs: Sequence[random.Random] | None = None) -> Prepared:
    """Rows of one or several tasks -> a `Prepared` batch: generative rows through the processor together (with
    `pack`, packed several to a row: `unified.training.packing`; as `plan.packs` say when the plan has them), each
    own-loss task's rows through its `Task.loss_batch` (prompts drawn from `rng` in that order, or each generative
    row's from its own `row_rngs` entry)."""
    names = [n for n, _ in named_rows]
    rngs = list(row_rngs) if row_rngs is not None else [rng] * len(named_rows)
    generative = [k for k, (n, _) in enumerate(named_rows) if not tasks[n].own_loss]
    batch, packs = None, None
    if generative:
        items = [process_row(processor, tasks[named_rows[k][0]],
                             tasks[named_rows[k][0]].example(named_rows[k][1], rng=rngs[k]), named_rows[k][1])
                 for k in generative]
        if pack:
            where = {k: j for j, k in enumerate(generative)}  # plan row -> generative item
            planned = None if plan is None or plan.packs is None else [[where[k] for k in p] for p in plan.packs]
            items = pack_items(items, planned)
            packs = [item.pop("members") for item in items]
        batch = processor.collate(items)
    own_rows = {name: [r for n, r in named_rows if n == name] for name in names if tasks[name].own_loss}
    own = {name: tasks[name].loss_batch(rows, processor, rng) for name, rows in own_rows.items()}
    return Prepared(plan=plan, single=names[0] if len(set(names)) == 1 else None, batch=batch,
                    names=[named_rows[k][0] for k in generative], own=own,
                    own_rows={n: len(r) for n, r in own_rows.items()},
                    sources=[str(r.get("_source", "")) for _, r in named_rows], packs=packs)


class PlannedBatches(torch.utils.data.Dataset):
    """The workers' side: a `Plan` -> its `Prepared` batch (or `Failed`). Indexed by plans, not integers."""

    def __init__(self, tasks: Mapping[str, Any], processor: Any, rows: Mapping[str, list], seed: int,
                 pack: bool = False):
        self.tasks, self.processor, self.rows, self.seed, self.pack = tasks, processor, rows, seed, pack

    def __getitem__(self, plan: Plan) -> Prepared | Failed:
        rng = random.Random((self.seed * 1_000_003 + plan.step) * 64 + plan.micro)  # prompt templates
        named = [(task, self.rows[task][i]) for task, i in plan.rows]
        rngs = None
        if plan.packs is not None:  # token-budget packs: each row's prompt as the planner measured it
            rngs = [row_rng(self.seed, plan.step, plan.micro, task, i) for task, i in plan.rows]
        before = Counter(self.processor.fitted)
        try:
            prepared = prepare(self.tasks, self.processor, named, rng, plan, self.pack, rngs)
        except UnifiedError as exc:  # DataLoader would re-raise it as a RuntimeError wrapping a traceback
            return Failed(plan, exc)
        if torch.utils.data.get_worker_info() is not None:  # counted in a worker's copy: the training process adds
            prepared.fitted = dict(Counter(self.processor.fitted) - before)
        return prepared

    def __len__(self) -> int:  # the DataLoader never asks (its sampler is the planner); defined for clarity
        raise TypeError("PlannedBatches is indexed by plans; it has no length")


class Planner:
    """The DataLoader's sampler: yields the run's plans from `start` on, the pending ones of a resumed run first.

    With token-budget packing (`data.pack_length`; `measure` gives a row's `Need`) a plan is `optim.batch_size`
    packs: the mixture draws rows a batch's worth at a time into a buffer until they fill `PACK_BUFFER` batches'
    worth and more than that many packs (`pack_to_budget`), the fullest packs become the plan and the other rows
    wait for the next one. Every process keeps every rank's buffer, so all draw the same number of times and the
    row stream's split between ranks holds. A draw whose first task is contrastive (a whole batch of pairs) is a
    plan of its own, as without packing."""

    def __init__(self, cfg: Any, sampler: Any, stream: Any, tasks: Mapping[str, Any], rank: int = 0, world: int = 1,
                 start: int = 0, measure: Callable[[str, int, random.Random], tuple] | None = None):
        self.cfg, self.sampler, self.stream, self.rank, self.world = cfg, sampler, stream, rank, world
        self.stage_at = stage_at
        self.whole = [name for name, task in tasks.items() if task.own_loss]  # its loss reads a whole batch
        self.next = (start, 0)  # (step, micro) of the next plan to make
        self.pending: deque[Plan] = deque()  # made (handed to the DataLoader) but not yet trained
        self.replay: deque[Plan] = deque()  # a resumed run's pending plans, handed out before new ones
        d = cfg.data
        self.measure = measure if d.pack and d.pack_length else None
        self.limits = PackLimits(d.pack_length, d.pack_target_length, d.pack_max_visual,
                                 d.pack_max_audio) if self.measure else None
        self.buffers: list[list[tuple[str, int]]] = [[] for _ in range(world)]  # rows drawn, not yet in a plan

    def _draw(self, step: int, only: Sequence[str] | None) -> tuple[list[str], list[list[tuple[str, int]]]]:
        """A batch's worth of tasks from the mixture and every rank's rows for them."""
        cfg = self.cfg
        drawn = self.sampler.batch_tasks(step, cfg.optim.batch_size, mixed=cfg.mixture.mixed_batches, only=only,
                                         whole=self.whole)
        rows: list[list[tuple[str, int]]] = [[] for _ in range(self.world)]
        for name in dict.fromkeys(drawn):  # each task's rows in one take, so ranks still split them
            taken = self.stream.take_indices(name, drawn.count(name) * self.world)
            for r in range(self.world):
                rows[r] += [(name, i) for i in taken[r::self.world]]
        return drawn, rows

    def _packed_plan(self, step: int, micro: int) -> Plan:
        size, only = self.cfg.optim.batch_size, self.stage_at(self.cfg, step).tasks
        generative = None if only is None else [t for t in only if t not in self.whole]
        first, known = True, {}
        while True:
            for buffer in self.buffers:  # each row measured once per plan (its prompt is drawn per plan)
                for t, i in buffer:
                    if (t, i) not in known:
                        known[t, i] = self.measure(t, i, row_rng(self.cfg.seed, step, micro, t, i))
            needs = [[known[row] for row in buffer] for buffer in self.buffers]
            limits = self.limits.as_tuple()
            if all(lower_bound(n, limits) >= PACK_BUFFER * size for n in needs):
                packs = [pack_to_budget(n, limits) for n in needs]
                if all(len(p) > size for p in packs):
                    break
            drawn, rows = self._draw(step, only if first else (generative or [t for t in self.sampler.tasks
                                                                              if t not in self.whole]))
            if first and drawn[0] in self.whole:  # a contrastive batch: a plan of its own, the buffers wait
                return Plan(step, micro, tuple(rows[self.rank]))
            first = False
            for buffer, new in zip(self.buffers, rows):
                buffer += new
        chosen = [fullest(p, n, self.limits, size) for p, n in zip(packs, needs)]
        mine = self.buffers[self.rank]
        order = [i for pack in chosen[self.rank] for i in pack]
        plan_rows = tuple(mine[i] for i in order)
        position = iter(range(len(order)))
        plan_packs = tuple(tuple(next(position) for _ in pack) for pack in chosen[self.rank])
        for r, buffer in enumerate(self.buffers):
            taken = {i for pack in chosen[r] for i in pack}
            self.buffers[r] = [row for i, row in enumerate(buffer) if i not in taken]
        return Plan(step, micro, plan_rows, plan_packs)

    def plan(self, step: int, micro: int) -> Plan:
        if self.measure is not None:
            return self._packed_plan(step, micro)
        cfg = self.cfg
        drawn = self.sampler.batch_tasks(step, cfg.optim.batch_size, mixed=cfg.mixture.mixed_batches,
                                         only=self.stage_at(cfg, step).tasks, whole=self.whole)
        rows = []
        for name in dict.fromkeys(drawn):  # each task's rows in one take, so ranks still split them
            rows += [(name, i) for i in self.stream.batch_indices(name, drawn.count(name), self.rank, self.world)]
        return Plan(step, micro, tuple(rows))

    def __iter__(self) -> Iterator[Plan]:
        while self.replay:
            plan = self.replay.popleft()
            self.pending.append(plan)
            yield plan
        accum = self.cfg.optim.grad_accum
        while self.next[0] < self.cfg.optim.max_steps:
            step, micro = self.next
            plan = self.plan(step, micro)
            self.next = (step, micro + 1) if micro + 1 < accum else (step + 1, 0)
            self.pending.append(plan)
            yield plan

    def consumed(self, plan: Plan) -> None:
        expected = self.pending.popleft() if self.pending else None
        if expected != plan:
            raise RuntimeError(f"batches arrived out of order: got step {plan.step}.{plan.micro}, expected "
                               f"{expected and (expected.step, expected.micro)}")

    def state_dict(self) -> dict[str, Any]:
        return {"next": list(self.next), "pending": [p.to_list() for p in (*self.pending, *self.replay)],
                "buffers": [[[t, i] for t, i in buffer] for buffer in self.buffers]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.next = (int(state["next"][0]), int(state["next"][1]))
        self.replay = deque(Plan.from_list(p) for p in state["pending"])
        self.pending.clear()
        buffers = state.get("buffers") or [[] for _ in range(self.world)]
        self.buffers = [[(str(t), int(i)) for t, i in buffer] for buffer in buffers]


def _as_is(item: Any) -> Any:  # collate_fn: a Prepared is already a batch
    return item


def batch_loader(planner: Planner, dataset: PlannedBatches, *, num_workers: int, prefetch: int, seed: int,
                 pin_memory: bool = False) -> Iterator[Prepared]:
    """The prepared batches in plan order; a worker's `UnifiedError` is raised here as itself."""
    loader = torch.utils.data.DataLoader(
        dataset, sampler=planner, batch_size=None, collate_fn=_as_is, num_workers=num_workers,
        prefetch_factor=prefetch if num_workers else None, persistent_workers=num_workers > 0,
        pin_memory=pin_memory, generator=torch.Generator().manual_seed(seed))  # not the global RNG: resume exact
    batches = iter(loader)
    try:
        for item in batches:
            if isinstance(item, Failed):
                raise item.error
            yield item
    finally:  # close() or an error: the workers stop now, not at garbage collection
        getattr(batches, "_shutdown_workers", lambda: None)()
