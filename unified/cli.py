"""The `unified` command line.

    unified demo [--out DIR]                          a synthetic clip through every task with the default model
    unified generate --task caption --video x.mp4 [--model PATH] [--question ...] [--options a b c]
    unified eval --model PATH --data DIR [--tasks ...] [--ablate] [--json]
    unified data synth --out DIR --n N --seed S --split train|test|compositional
    unified data check DIR [--workers N] [--json]    decode every media file; bad rows by file:row (exit 1 if any)
    unified data import FILE --format sharegpt|openai|llava --out DIR [--task NAME] [--media-root DIR]
                                                      conversations -> a data directory; left-out records listed
    unified train CONFIG [key=value ...] [--resume auto|last-intact|never|PATH] [--overwrite] [--allow-changes]
                                                      the same loop as `accelerate launch training/multitask.py`
    unified tasks [--json]                            the registered tasks: inputs, grammar, prompts, metrics
    unified serve [MODEL] [--host H] [--port P] [--max-batch N] [--max-wait-ms MS] [--media-root DIR] [--ray ...]
                                                      an OpenAI-compatible server (docs/serving.md)
    unified predict [MODEL] --data DIR|FILE --out predictions.jsonl [--task NAME] [--strict] [--ray]
                                                      answer every row of a corpus, resumable
    unified ui [MODEL] [--port P]                     a web page to try the model (Gradio)
    unified merge A B [...] --method linear|slerp|ties|dare|svd-delta [--base BASE] [--weights W ...] [--t T]
                  [--rank R] [--density D] --out DIR [--overwrite]
                                                      saved models merged weight by weight (docs/toolkit.md)
    unified merge-adapters MODEL --method cat|linear|svd|ties|dare_linear|dare_ties [--weights W ...] --out DIR
                                                      a model's per-task LoRA adapters combined into one (peft)
    unified export MODEL --out DIR [--merge-adapters] [--dtype bf16|fp16|fp32] [--quantize int8|int4]
                   [--max-size 4.5GB] [--overwrite]   a model rewritten for shipping (docs/toolkit.md)

A user's mistake (a missing file, an unknown task) prints one `unified: error: ...` line and exits with 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from unified.arguments import (
    Parser,
    count,
    directory,
    existing,
    file,
    fraction,
    new_file,
    non_negative,
    non_negative_number,
    out_directory,
    port,
    positive_number,
    real,
    seed,
    size,
)
from unified.errors import UnifiedError


def _demo(args: argparse.Namespace) -> int:
    from unified.demo import run_demo

    run_demo(args.out, model_path=args.model, seed=args.seed, train_steps=args.train_steps)
    return 0


def _load_model(path: str | None):
    from unified import Model

    return Model.default() if path is None else Model.from_pretrained(path)


def _printable(value):
    if hasattr(value, "tolist"):
        return [round(float(v), 4) for v in value.tolist()]
    if hasattr(value, "_asdict"):
        return {k: round(float(v), 2) for k, v in value._asdict().items()}
    if isinstance(value, (list, tuple)):
        return [_printable(v) for v in value]
    return value


def _generate(args: argparse.Namespace) -> int:
    model = _load_model(args.model)
    fields = {k: getattr(args, k) for k in ("image", "video", "audio", "question", "text", "phrase", "options",
                                            "labels") if getattr(args, k) is not None}
    if args.num_values is not None:
        fields["num_values"] = args.num_values
    answer = model.generate(task=args.task, allow_untrained=args.allow_untrained, **fields)
    print(json.dumps(_printable(answer)) if args.json else _printable(answer))
    return 0


def _eval(args: argparse.Namespace) -> int:
    model = _load_model(args.model)
    data, reports = model.evaluation_data(args.data, args.tasks, skip_bad_rows=args.skip_bad_rows,
                                          allow_outside_paths=args.allow_outside_paths)
    result = model.evaluate(data, ablate=args.ablate, max_rows=args.max_rows, batch_size=args.batch_size,
                            progress=not args.json, allow_untrained=args.allow_untrained)
    skipped = [r.summary() for r in reports if r.skipped]
    if args.json:
        print(json.dumps({**result.to_dict(), "skipped_rows": skipped}))
    else:
        print(result.table())
        for line in skipped:
            print(f"skipped: {line}")
    return 0


def _synth(args: argparse.Namespace) -> int:
    from unified.data.synthetic import write_split

    files = write_split(args.out, args.n, seed=args.seed, split=args.split, progress=True)
    for task, path in sorted(files.items()):
        print(f"{task:<20} {path}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from unified.data import check_media, load_data_dir
    from unified.data.files import BadRow
    from unified.data.shard_rows import check_shards, is_shard_dir

    if is_shard_dir(args.dir):  # every shard, row and member against its tar, then the intact rows' media decoded
        data, damaged = check_shards(args.dir, args.tasks)
        bad = [BadRow(where, reason) for where, reason in damaged]
        rows = sum(len(r) for r in data.values()) + len(bad)
    else:
        data, reports = load_data_dir(args.dir, args.tasks, skip_bad_rows=True,
                                      allow_outside_paths=args.allow_outside_paths)
        bad = [b for r in reports for b in r.skipped]
        rows = sum(len(r) for r in data.values()) + sum(len(r.skipped) for r in reports)
    bad += check_media(data, workers=args.workers, cache_dir=args.dir, progress=not args.json)
    if args.json:
        print(json.dumps({"rows": rows, "bad": [{"row": b.source, "reason": b.reason} for b in bad]}))
    else:
        for b in bad:
            print(f"{b.source}: {b.reason}")
        print(f"{rows} rows in {len(data)} task file(s): {len(bad)} bad")
    return 1 if bad else 0


def _import(args: argparse.Namespace) -> int:
    from unified.data.conversations import import_conversations

    files, report = import_conversations(args.file, args.format, args.out, media_root=args.media_root,
                                         task=args.task)
    for name, (path, n) in sorted(files.items()):
        print(f"{name:<20} {n:>6} rows  {path}")
    print(report.summary())
    print(f"{len(report.skipped)} left out, each with its reason, in {args.out}/skipped.jsonl")
    return 0


def _shard(args: argparse.Namespace) -> int:
    from unified.data.shards import write_shards
    from unified.training.build import processor_settings

    decode = None if args.decode is None else processor_settings(args.decode, args.dir, args.tasks)
    index = write_shards(args.dir, args.out, tasks=args.tasks, rows_per_shard=args.rows_per_shard,
                         skip_bad_rows=args.skip_bad_rows, check=not args.no_check, decode=decode)
    for task, entry in index["tasks"].items():
        print(f"{task}: {entry['rows']} rows in {len(entry['shards'])} shard(s)")
    print(f"wrote {args.out}/shards.json; train with data.train_dir={args.out}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from unified.training import main as train_main

    flags = [f"--resume={args.resume}"] + ["--overwrite"] * args.overwrite + ["--allow-changes"] * args.allow_changes
    return int(train_main([args.config, *args.overrides, *flags]) or 0)


def _tasks(args: argparse.Namespace) -> int:
    from unified.task_zoo import get_task, list_tasks

    described = [get_task(name).describe() for name in list_tasks()]
    if args.json:
        print(json.dumps(described, indent=2))
        return 0
    for d in described:
        inputs = ", ".join(d["accepts"]) or "text only"
        required = f" (requires {', '.join(d['requires'])})" if d["requires"] else ""
        answer = {"generate": f"writes under the {d['grammar']!r} grammar", "rank": "ranks its options by likelihood",
                  "embed": "an embedding (contrastive)"}[d["answer"]]
        given = [f for f in d["fields"] if f not in d["target_fields"] and f not in d["derived_fields"]]
        derived = [f for f in d["derived_fields"] if f in d["fields"]]
        optional = [f for f in d["optional_fields"] if f not in d["target_fields"]]
        fields = ", ".join(given) or "-"
        if optional:
            fields += f" (optional: {', '.join(optional)})"
        if derived:
            fields += f" (read from the media when not given: {', '.join(derived)})"
        print(f"{d['name']}\n  media:   {inputs}{required}\n  fields:  {fields}\n"
              f"  truth:   {', '.join(d['target_fields']) or '-'}\n  answer:  {answer}\n"
              f"  metrics: {', '.join(d['metrics'])}\n  prompts: {' | '.join(d['prompts'])}\n"
              f"  example: {json.dumps(d['example_row'])}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from unified.serving.engine import ServingConfig

    config = ServingConfig(model_name=args.name or _model_name(args.model), max_batch=args.max_batch,
                           max_wait_ms=args.max_wait_ms, timeout=args.timeout, max_upload_mb=args.max_upload_mb,
                           media_root=args.media_root, api_key=args.api_key,
                           decode_workers=args.decode_workers).validate()
    if args.ray:
        from unified.serving.ray import serve_with_ray

        return serve_with_ray(args.model, config, host=args.host, port=args.port, replicas=args.replicas,
                              num_cpus=args.replica_cpus, num_gpus=args.replica_gpus)
    from unified.serving.app import run_server

    run_server(_load_model(args.model), config, host=args.host, port=args.port)
    return 0


def _predict(args: argparse.Namespace) -> int:
    from unified.serving.predict import run_predict

    spread = None
    if args.ray:  # the `ray` extra
        from unified.serving.ray import predict_shards as spread
    summary = run_predict(args.model, args.data, args.out, task=args.task, strict=args.strict,
                          batch_size=args.batch_size, workers=args.workers, spread=spread, actors=args.actors,
                          actor_cpus=args.actor_cpus, progress=not args.quiet)
    print(json.dumps(summary))
    return 1 if summary["bad"] and args.strict else 0


def _ui(args: argparse.Namespace) -> int:
    from unified.serving.ui import launch

    launch(_load_model(args.model), name=args.name or _model_name(args.model), host=args.host, port=args.port)
    return 0


def _merge(args: argparse.Namespace) -> int:
    from unified.merging import merge

    out = merge(args.models, args.out, method=args.method, base=args.base, weights=args.weights, t=args.t,
                rank=args.rank, density=args.density, seed=args.seed, overwrite=args.overwrite)
    print(f"merged {len(args.models)} models ({args.method}) into {out}")
    return 0


def _merge_adapters(args: argparse.Namespace) -> int:
    from unified.merging import merge_adapters

    out = merge_adapters(args.source, args.out, method=args.method, weights=args.weights, name=args.name,
                         rank=args.rank, density=args.density, overwrite=args.overwrite)
    print(f"merged the adapters of {args.source} ({args.method}) into {out}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from unified.exporting import export

    out = export(args.source, args.out, dtype=args.dtype, quantize=args.quantize, merge_adapters=args.merge_adapters,
                 max_size=args.max_size, overwrite=args.overwrite)
    print(f"exported {args.source} to {out}")
    return 0


def _model_name(path: str | None) -> str:
    from pathlib import Path

    return "default" if path is None else Path(path).resolve().name


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand and flag; each value is checked by its type as it is parsed (`unified.arguments`)."""
    parser = Parser(prog="unified", description="One multitask, multimodal encoder-decoder.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    model_help = "a saved model directory (default: the built-in model)"

    demo = sub.add_parser("demo", help="write a synthetic clip and run every task on it with the default model")
    demo.add_argument("--out", type=out_directory, default=None,
                      help="folder for the clip, table and PNG (default: a new temp folder)")
    demo.add_argument("--model", type=directory, default=None,
                      help="a saved model (default: the built-in one, else a tiny one trained on the spot)")
    demo.add_argument("--seed", type=seed, default=7, help="seed of the synthetic clip")
    demo.add_argument("--train-steps", type=count, default=300,
                      help="steps of the stand-in tiny model when there is no default model")
    demo.set_defaults(func=_demo)

    gen = sub.add_parser("generate", help="answer one task for the given inputs")
    gen.add_argument("--task", required=True, help="a registered task (`unified tasks`)")
    gen.add_argument("--model", type=directory, default=None, help=model_help)
    for name in ("image", "video", "audio"):
        gen.add_argument(f"--{name}", type=file, default=None, help=f"{name} file")
    for name in ("question", "text", "phrase"):
        gen.add_argument(f"--{name}", default=None)
    gen.add_argument("--options", nargs="+", default=None, help="multiple-choice options")
    gen.add_argument("--labels", nargs="+", default=None, help="class labels (classify)")
    gen.add_argument("--num-values", type=count, default=None, help="how many numbers to answer (regress)")
    gen.add_argument("--allow-untrained", action="store_true", help="ask a task the model was not trained on")
    gen.add_argument("--json", action="store_true")
    gen.set_defaults(func=_generate)

    ev = sub.add_parser("eval", help="evaluate a model on a data directory (one file per task) or tar shards")
    ev.add_argument("--model", type=directory, default=None, help=model_help)
    ev.add_argument("--data", type=directory, required=True)
    ev.add_argument("--tasks", nargs="+", default=None, help="default: the tasks the model was trained on")
    ev.add_argument("--ablate", action="store_true", help="also evaluate with one frame, no audio, no media")
    ev.add_argument("--max-rows", type=count, default=None, help="a seeded sample of at most this many rows per task")
    ev.add_argument("--batch-size", type=count, default=16)
    ev.add_argument("--skip-bad-rows", action="store_true")
    ev.add_argument("--allow-outside-paths", action="store_true",
                    help="relative media paths may leave the data directory (held-out rows sharing training clips)")
    ev.add_argument("--allow-untrained", action="store_true", help="evaluate tasks the model was not trained on")
    ev.add_argument("--json", action="store_true", help="print one JSON object of the metrics")
    ev.set_defaults(func=_eval)

    data = sub.add_parser("data", help="datasets").add_subparsers(dest="data_command", required=True,
                                                                   parser_class=Parser)
    synth = data.add_parser("synth", help="write a split of the synthetic audio-visual world (mp4 + JSONL per task)")
    synth.add_argument("--out", type=out_directory, required=True)
    synth.add_argument("--n", type=count, default=100, help="clips")
    synth.add_argument("--seed", type=seed, default=0)
    synth.add_argument("--split", default="train", choices=["train", "test", "compositional"])
    synth.set_defaults(func=_synth)
    check = data.add_parser("check", help="read every row and decode every media file of a data directory; list the "
                                          "bad rows by file:row (exit 1 when there are any)")
    check.add_argument("dir", type=directory)
    check.add_argument("--tasks", nargs="+", default=None)
    check.add_argument("--workers", type=count, default=None, help="decoding threads (default: min(8, cores))")
    check.add_argument("--allow-outside-paths", action="store_true")
    check.add_argument("--json", action="store_true")
    check.set_defaults(func=_check)
    imp = data.add_parser("import", help="conversations in ShareGPT, OpenAI or LLaVA format -> a data directory "
                                         "(one file per task, by the rule in docs/data.md)")
    imp.add_argument("file", type=file)
    imp.add_argument("--format", required=True, choices=["sharegpt", "openai", "llava"])
    imp.add_argument("--out", type=out_directory, required=True)
    imp.add_argument("--task", default=None, help="put every turn in this task instead of the rule's choice")
    imp.add_argument("--media-root", type=directory, default=None,
                     help="the folder media paths are relative to (default: the file's folder)")
    imp.set_defaults(func=_import)
    shard = data.add_parser("shard", help="pack a data directory into tar shards with the media inside (train "
                                          "from them with data.train_dir=OUT)")
    shard.add_argument("dir", type=directory)
    shard.add_argument("--out", type=out_directory, required=True)
    shard.add_argument("--tasks", nargs="+", default=None)
    shard.add_argument("--rows-per-shard", type=count, default=1000)
    shard.add_argument("--skip-bad-rows", action="store_true", help="leave out rows that fail their checks")
    shard.add_argument("--no-check", action="store_true", help="do not decode every media file first")
    shard.add_argument("--decode", metavar="CONFIG", type=existing, default=None,
                       help="store videos and audio decoded as this training config (YAML) or saved model's "
                            "processor samples them, so training decodes nothing")
    shard.set_defaults(func=_shard)

    train = sub.add_parser("train", help="multitask training from a YAML config (key=value overrides)")
    train.add_argument("config", type=file)
    train.add_argument("overrides", nargs="*", help="dotted key=value, checked with the config")
    from unified.training.config import add_resume_flags

    add_resume_flags(train)
    train.set_defaults(func=_train)

    serve = sub.add_parser("serve", help="an OpenAI-compatible HTTP server (chat completions, embeddings)")
    serve.add_argument("model", nargs="?", type=directory, default=None, help=model_help)
    serve.add_argument("--name", default=None, help="the model's name in requests (default: the directory's name)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    serve.add_argument("--port", type=port, default=8000)
    serve.add_argument("--max-batch", type=count, default=8, help="rows per batched model call")
    serve.add_argument("--max-wait-ms", type=non_negative_number, default=10.0, help="how long a batch waits to fill")
    serve.add_argument("--timeout", type=positive_number, default=120.0, help="seconds before a request gets 504")
    serve.add_argument("--max-upload-mb", type=positive_number, default=25.0,
                       help="largest media item a request may carry")
    serve.add_argument("--media-root", type=directory, default=None,
                       help="the only folder requests may name files in")
    serve.add_argument("--api-key", default=None, help="require `Authorization: Bearer KEY` on /v1")
    serve.add_argument("--decode-workers", type=count, default=4, help="threads decoding media")
    serve.add_argument("--ray", action="store_true", help="run as a Ray Serve deployment")
    serve.add_argument("--replicas", type=count, default=1, help="Ray Serve replicas (with --ray)")
    serve.add_argument("--replica-cpus", type=positive_number, default=1.0, help="CPUs per replica (with --ray)")
    serve.add_argument("--replica-gpus", type=non_negative_number, default=None,
                       help="GPUs per replica (with --ray; default: 1 when CUDA is there, else 0)")
    serve.set_defaults(func=_serve)

    pred = sub.add_parser("predict", help="answer every row of a data directory or JSONL file (resumable)")
    pred.add_argument("model", nargs="?", type=directory, default=None, help=model_help)
    pred.add_argument("--data", type=existing, required=True,
                      help="a data directory (one file per task) or one JSONL file")
    pred.add_argument("--out", type=new_file, required=True,
                      help="predictions.jsonl (appended to: a rerun skips rows it has)")
    pred.add_argument("--task", default=None, help="the task of a single --data file")
    pred.add_argument("--strict", action="store_true", help="stop at the first bad row (exit 1)")
    pred.add_argument("--batch-size", type=count, default=16)
    pred.add_argument("--workers", type=non_negative, default=2, help="DataLoader workers decoding ahead")
    pred.add_argument("--ray", action="store_true", help="spread the rows over a Ray cluster (Ray Data)")
    pred.add_argument("--actors", type=count, default=2, help="model copies with --ray")
    pred.add_argument("--actor-cpus", type=positive_number, default=1.0, help="CPUs per actor with --ray")
    pred.add_argument("--quiet", action="store_true", help="no progress bar")
    pred.set_defaults(func=_predict)

    ui = sub.add_parser("ui", help="a web page to try the model (Gradio)")
    ui.add_argument("model", nargs="?", type=directory, default=None, help=model_help)
    ui.add_argument("--name", default=None)
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=port, default=7860)
    ui.set_defaults(func=_ui)

    mrg = sub.add_parser("merge", help="merge saved models of one architecture into a new one (docs/toolkit.md)")
    mrg.add_argument("models", nargs="+", type=directory, help="saved model directories (svd-delta: OLDER NEWER)")
    mrg.add_argument("--method", default="linear", choices=["linear", "slerp", "ties", "dare", "svd-delta"])
    mrg.add_argument("--base", type=directory, default=None,
                     help="the common ancestor task vectors are taken from (ties, dare, svd-delta)")
    mrg.add_argument("--weights", nargs="+", type=real, default=None, help="one per model (linear, ties, dare)")
    mrg.add_argument("--t", type=fraction, default=0.5, help="slerp / svd-delta: 0 = the first model, 1 = the second")
    mrg.add_argument("--rank", type=count, default=16, help="svd-delta: rank of the newer model's delta")
    mrg.add_argument("--density", type=fraction, default=0.5, help="ties / dare: share of each task vector kept")
    mrg.add_argument("--seed", type=seed, default=0, help="dare: seed of the dropped entries")
    mrg.add_argument("--out", type=out_directory, required=True)
    mrg.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    mrg.set_defaults(func=_merge)

    madp = sub.add_parser("merge-adapters", help="combine a model's per-task LoRA adapters into one (peft's "
                                                 "add_weighted_adapter; docs/toolkit.md)")
    madp.add_argument("source", type=directory, help="a saved model with adapters/")
    madp.add_argument("--method", default="cat", choices=["cat", "linear", "svd", "ties", "dare_linear", "dare_ties"])
    madp.add_argument("--weights", nargs="+", type=real, default=None, help="one per adapter (adapters.json order)")
    madp.add_argument("--name", default="merged", help="the combined adapter's name")
    madp.add_argument("--rank", type=count, default=None, help="svd: the combined adapter's rank")
    madp.add_argument("--density", type=fraction, default=0.5, help="ties / dare: share of each adapter kept")
    madp.add_argument("--out", type=out_directory, required=True)
    madp.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    madp.set_defaults(func=_merge_adapters)

    exp = sub.add_parser("export", help="a saved model rewritten for shipping: adapters folded in, a smaller dtype, "
                                        "int8 / int4 linear layers, under a size budget (docs/toolkit.md)")
    exp.add_argument("source", type=directory, help="a saved model directory")
    exp.add_argument("--out", type=out_directory, required=True)
    exp.add_argument("--merge-adapters", action="store_true",
                     help="fold per-task LoRA adapters into the weights: one directory per adapter under --out")
    exp.add_argument("--dtype", default=None, choices=["bf16", "fp16", "fp32"],
                     help="of every floating weight (default: as saved)")
    exp.add_argument("--quantize", default=None, choices=["int8", "int4"],
                     help="weight-only linear layers of the language model (torchao: the `quant` extra)")
    exp.add_argument("--max-size", type=size, default=None,
                     help="refuse, writing nothing, when the export is larger (4.5GB, 900MB, 2GiB)")
    exp.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    exp.set_defaults(func=_export)

    tasks = sub.add_parser("tasks", help="the registered tasks with their inputs, prompts and metrics")
    tasks.add_argument("--json", action="store_true")
    tasks.set_defaults(func=_tasks)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UnifiedError as err:  # a user's mistake: one clear line, no traceback
        print(f"unified: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
