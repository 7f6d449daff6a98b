"""Numbers on real tables: held-out MAE of the `regress` task (Gato-style inputs) against always predicting the
training mean and against linear regression, on scikit-learn's bundled tables: diabetes (442 rows, 10 features,
targets 25..346), Linnerud (20 rows, 3 exercises -> weight), and two of its classification tables read as
regression on one measured column: iris (150 rows, sepal length and width and petal length -> petal width, 0.1..2.5 cm)
and wine (178 rows, the 12 other chemical measurements -> alcohol, 11.0..14.8 %).

    python benchmarks/regress_tables.py [--steps 1500] [--tables diabetes linnerud] [--variants ...] [--seed 0]
                                        [--early-stop]

Each table is split 80 / 20 (seeded); features are min-max scaled on the training rows into [-1, 1] and given as
`input_range: [-1, 1]`, targets carry `value_range` = the training targets' range widened by 10 % (so held-out
targets outside it are clamped into it, counted). Variants, each trained from scratch on the tiny preset with the
same seed and steps (`VARIANTS`): `range` (regress scale: range), `+ HL-Gauss` (text.ordinal_loss_sigma 0.75),
`+ value feature` (text.value_feature), `+ input noise s` (the regress option input_noise), `uniform` (the regress
option spacing: uniform) and combinations; each read with argmax and with `decode: mean`. Beside them, on the
same split, five standard regressors as references (`references`: linear regression, gradient boosting, a random
forest, 15 nearest neighbours and an RBF support-vector regressor on standardised features); `--variants` with no
name prints only those. Prints one table per table (MAE, and its ratio to the training mean's and to linear
regression's); the results page's numbers rows come from it (docs/results.md).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path

import numpy as np

SMOKE = Path(__file__).parents[1] / "training" / "configs" / "tiny-smoke.yaml"


def table(name: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets

    if name == "diabetes":
        x, y = datasets.load_diabetes(return_X_y=True, scaled=False)
    elif name == "linnerud":
        data = datasets.load_linnerud()
        x, y = data.data, data.target[:, 0]  # exercises -> weight
    elif name in ("iris", "wine"):
        data = (datasets.load_iris if name == "iris" else datasets.load_wine)().data
        target = 3 if name == "iris" else 0  # petal width; alcohol
        x, y = np.delete(data, target, axis=1), data[:, target]
    else:
        raise SystemExit(f"unknown table {name!r}")
    return x.astype(float), y.astype(float)


def rows(x: np.ndarray, y: np.ndarray, low: np.ndarray, high: np.ndarray, bounds: tuple[float, float]) -> list[dict]:
    scaled = np.clip(2 * (x - low) / np.where(high > low, high - low, 1) - 1, -1, 1)
    return [{"inputs": [round(float(v), 4) for v in features], "values": [float(np.clip(t, *bounds))],
             "value_range": list(bounds), "input_range": [-1, 1]} for features, t in zip(scaled, y)]


VARIANTS = {  # label -> (config overrides on top of the smoke preset, regress task options)
    "range": ([], {}),
    "range + HL-Gauss 0.75": (["model.text={ordinal_loss_sigma: 0.75}"], {}),
    "range + value feature": (["model.text={value_feature: true}"], {}),
    "range + value feature + HL-Gauss": (["model.text={value_feature: true, ordinal_loss_sigma: 0.75}"], {}),
    "uniform + value feature": (["model.text={value_feature: true}"], {"spacing": "uniform"}),
    "range + value feature + input noise 0.1": (["model.text={value_feature: true}"], {"input_noise": 0.1}),
    "range + value feature + input noise 0.15": (["model.text={value_feature: true}"], {"input_noise": 0.15}),
    "range + value feature + input noise 0.3": (["model.text={value_feature: true}"], {"input_noise": 0.3}),
    "range + value feature + HL-Gauss + input noise 0.15": (
        ["model.text={value_feature: true, ordinal_loss_sigma: 0.75}"], {"input_noise": 0.15}),
    "uniform + value feature + HL-Gauss 25 + input noise 0.15": (
        ["model.text={value_feature: true, ordinal_loss_sigma: 25}"], {"spacing": "uniform", "input_noise": 0.15}),
}


def references(name: str) -> dict:
    """Standard scikit-learn regressors, default settings except where named (SVR's C: the diabetes targets span
    hundreds, the others single units)."""
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor
    from sklearn.linear_model import LinearRegression
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVR

    return {"linear regression": LinearRegression(),
            "gradient boosting": GradientBoostingRegressor(random_state=0),
            "random forest (300 trees)": RandomForestRegressor(300, random_state=0),
            "15 nearest neighbours": make_pipeline(StandardScaler(), KNeighborsRegressor(15)),
            "SVR (RBF)": make_pipeline(StandardScaler(), SVR(C=100.0 if name == "diabetes" else 1.0))}


def run(name: str, steps: int, seed: int = 0, variants: tuple[str, ...] = tuple(VARIANTS),
        early_stop: bool = False, ensemble: int = 1) -> dict[str, float]:
    """With `early_stop`, a fifth of the training rows is held back as a validation split, evaluated every 50
    steps (`decode: mean`), and the checkpoint best on it (`best/`) is scored on the test split. With `ensemble`
    K > 1, each variant also trains K - 1 more models (training seeds `seed` * 100 + k: other initialisations and
    row orders, the same split) and the mean of the K models' `decode: mean` answers is scored as well."""
    from unified import Model
    from unified.task_zoo import build_tasks
    from unified.task_zoo.decoding import predict
    from unified.training import load_config, train

    x, y = table(name)
    order = np.random.default_rng(seed).permutation(len(y))
    cut = int(0.8 * len(y))
    train_i, test_i = order[:cut], order[cut:]
    low, high = x[train_i].min(0), x[train_i].max(0)
    span = y[train_i].max() - y[train_i].min()
    bounds = (float(y[train_i].min() - 0.1 * span), float(y[train_i].max() + 0.1 * span))
    clamped = int(((y[test_i] < bounds[0]) | (y[test_i] > bounds[1])).sum())
    result = {"rows": len(y), "clamped held-out targets": clamped,
              "training mean": float(np.abs(y[test_i] - y[train_i].mean()).mean())}
    for label, reference in references(name).items():
        result[label] = float(np.abs(reference.fit(x[train_i], y[train_i]).predict(x[test_i]) - y[test_i]).mean())
    test_rows = rows(x[test_i], y[test_i], low, high, bounds)
    val_cut = len(train_i) // 5 if early_stop else 0
    fit_i, val_i = train_i[val_cut:], train_i[:val_cut]
    with tempfile.TemporaryDirectory() as tmp:
        for split, index in (("train", fit_i), ("val", val_i), ("test", test_i)):
            if not len(index):
                continue
            folder = Path(tmp) / split
            folder.mkdir()
            (folder / "regress.jsonl").write_text("".join(json.dumps(r) + "\n" for r in
                                                          rows(x[index], y[index], low, high, bounds)))
        for label in variants:
            extra, options = VARIANTS[label]
            answers = []
            for k in range(ensemble):
                out = Path(tmp) / f"{label.replace(' ', '_')}-{k}"
                random.seed(seed)
                chosen = {**options, "decode": "mean"} if early_stop else options
                selection = ([f"data.eval_dir={Path(tmp) / 'val'}", "eval.every=50", f"eval.max_rows={len(val_i)}"]
                             if early_stop else
                             [f"data.eval_dir={Path(tmp) / 'test'}", "eval.every=0", "eval.max_rows=8"])
                if chosen:
                    options_text = ", ".join(f"{k}: {v}" for k, v in chosen.items())
                    selection.append(f"task_options={{regress: {{{options_text}}}}}")
                cfg = load_config(SMOKE, [f"output_dir={out}", f"data.train_dir={Path(tmp) / 'train'}",
                                          "data.synthetic=null", "data.tasks=[regress]", f"optim.max_steps={steps}",
                                          "optim.warmup_steps=50", "checkpoint.every=0", "log_with=none",
                                          "tokenizer.text_vocab_size=60", *selection, *extra,
                                          *([f"seed={seed * 100 + k}"] if k else [])])
                train(cfg, progress=False)
                model = Model.from_pretrained(out / ("best" if early_stop else "final"))
                if k == 0:
                    for decode in ("argmax", "mean"):
                        model.task_options["regress"] = {**options, "scale": "range", "decode": decode}
                        metrics = model.evaluate({"regress": test_rows}, progress=False).metrics["regress"]
                        result[f"{label}, {decode}"] = float(metrics["mae"])
                if ensemble > 1:
                    served = {"regress": {**options, "scale": "range", "decode": "mean"}}
                    task = build_tasks(["regress"], served, model.processor.tokenizer.layout)["regress"]
                    answers.append([float(a[0]) for a in predict(task, model.network, model.processor, test_rows)])
            if ensemble > 1:
                mean_answer = np.mean(np.array(answers), axis=0)  # (test rows,)
                result[f"{label}, mean of {ensemble}"] = float(np.abs(mean_answer - y[test_i]).mean())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--tables", nargs="+", default=["diabetes", "linnerud"],
                        choices=["diabetes", "linnerud", "iris", "wine"])
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS),
                        help="none: only the reference regressors")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--early-stop", action="store_true", help="pick the checkpoint best on a validation split")
    parser.add_argument("--ensemble", type=int, default=1, help="also score the mean answer of this many models")
    args = parser.parse_args()
    for name in args.tables:
        result = run(name, args.steps, args.seed, tuple(args.variants), args.early_stop, args.ensemble)
        base = result["training mean"]
        trained = f"; {args.steps} steps" if args.variants else ""
        print(f"\n{name}: {result.pop('rows')} rows, {result.pop('clamped held-out targets')} held-out targets "
              f"clamped into the value range{trained}")
        linear, width = result["linear regression"], max(map(len, result))
        print(f"{'predictor':<{width}} {'held-out MAE':>12} {'vs mean':>8} {'vs linear':>9}")
        for label, mae in result.items():
            print(f"{label:<{width}} {mae:>12.3f} {mae / base:>8.3f} {mae / linear:>9.3f}")


if __name__ == "__main__":
    main()
