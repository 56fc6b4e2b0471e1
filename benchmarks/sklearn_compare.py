"""portgd.sklearn against scikit-learn's own MLPClassifier / MLPRegressor.

Both estimators get the same data (float32, so both compute in float32), the same
architecture, Adam with the same learning rate, betas and epsilon, the same batch size and
the same number of epochs: ``tol=0`` and ``n_iter_no_change`` above the epoch count, so
neither stops early. The L2 penalty is the same per step: scikit-learn's ``alpha`` is divided
by the batch size, portgd's by the training-set size, so portgd gets ``alpha * n / B``, twice
that for the regressor whose loss is twice scikit-learn's (docs/sklearn.md). Each fit is
timed whole (input validation included) and scored on a held-out split (accuracy, or R^2
for regression). Round ``r`` fits both with
``random_state=r``, so the scores are medians over seeds, not one seed repeated.

Three problems: the digits (1,797 x 64, ten classes), a synthetic 20,000 x 784 ten-class
problem (``make_classification``, 16,000 to train), and a regression set (``make_friedman1``,
10 features, 20,000 samples). The two estimators run in rounds in a shuffled order after one
warm-up fit each (``compare.interleaved``); the table gives medians over the rounds and
the median of the per-round time ratios. ``--threads 1`` limits BLAS/OpenMP to one thread for
both; the load average of the machine is printed with the numbers.

    python benchmarks/sklearn_compare.py --threads 1 --markdown
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_digits, make_classification, make_friedman1
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier as SkClassifier
from sklearn.neural_network import MLPRegressor as SkRegressor
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import interleaved

from portgd.sklearn import MLPClassifier, MLPRegressor


@dataclass
class Problem:
    name: str
    hidden: tuple[int, ...]
    batch_size: int
    epochs: int
    lr: float
    regression: bool = False
    data: tuple[Any, ...] = field(default=(), repr=False)


def problems(quick: bool = False) -> list[Problem]:
    """The three problems; ``quick`` shrinks them to a smoke test (seconds)."""
    X, y = load_digits(return_X_y=True)
    digits = Problem("digits 64-128-64-10", (128, 64), 32, 2 if quick else 30, 3e-3,
                     data=_split(X / 16.0, y, stratify=True))
    n = 1_000 if quick else 20_000
    X, y = make_classification(n_samples=n, n_features=784, n_informative=60,
                               n_redundant=0, n_classes=10, n_clusters_per_class=2,
                               class_sep=1.5, random_state=0)
    wide = Problem(f"{n:,} x 784 784-256-256-10", (256, 256), 128, 1 if quick else 3, 1e-3,
                   data=_split(X, y, stratify=True, scale=True))
    X, y = make_friedman1(n_samples=n, n_features=10, noise=1.0, random_state=0)
    friedman = Problem(f"friedman1 {n:,} x 10 10-64-64-1", (64, 64), 64,
                       2 if quick else 20, 1e-3, regression=True,
                       data=_split(X, (y - y.mean()) / y.std(), scale=True))
    return [digits, wide, friedman]


def _split(X: np.ndarray, y: np.ndarray, stratify: bool = False,
           scale: bool = False) -> tuple[np.ndarray, ...]:
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.2, random_state=0, stratify=y if stratify else None)
    if scale:
        scaler = StandardScaler().fit(X_train)
        X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
    return X_train.astype(np.float32), X_test.astype(np.float32), y_train, y_test


def estimators(problem: Problem, backend: str, alpha: float = 1e-4) -> dict[str, Any]:
    """scikit-learn's estimator and portgd's, set up identically."""
    common = dict(hidden_layer_sizes=problem.hidden, solver="adam", batch_size=problem.batch_size,
                  learning_rate_init=problem.lr, max_iter=problem.epochs, tol=0.0,
                  n_iter_no_change=problem.epochs + 1, shuffle=True, random_state=0)
    n = problem.data[0].shape[0]
    if problem.regression:
        sk, ours, loss_scale = SkRegressor, MLPRegressor, 2.0
    else:
        sk, ours, loss_scale = SkClassifier, MLPClassifier, 1.0
    return {
        "scikit-learn": sk(alpha=alpha, **common),
        f"portgd ({backend})": ours(alpha=loss_scale * alpha * n / problem.batch_size,
                                    backend=backend,
                                    dtype="float32", **common),
    }


def measure(problem: Problem, backend: str, rounds: int) -> dict[str, dict[str, list[float]]]:
    """Fit time and held-out score of each estimator, per round."""
    X_train, X_test, y_train, y_test = problem.data
    scores: dict[str, list[float]] = {}
    contenders = {}
    for name, est in estimators(problem, backend).items():
        scores[name] = []

        def fit(est: Any = est, name: str = name) -> float:
            est.set_params(random_state=len(scores[name]))  # round r: seed r on both sides
            start = time.perf_counter()
            est.fit(X_train, y_train)
            seconds = time.perf_counter() - start
            scores[name].append(float(est.score(X_test, y_test)))
            return seconds

        contenders[name] = fit
    seconds = interleaved(contenders, rounds)
    return {name: {"seconds": seconds[name], "scores": scores[name][1:]}  # [0]: warm-up
            for name in contenders}


def report(problem: Problem, results: dict[str, dict[str, list[float]]],
           markdown: bool) -> str:
    sk_name, pg_name = list(results)
    sk, pg = results[sk_name], results[pg_name]
    ratio = statistics.median(p / s for p, s in zip(pg["seconds"], sk["seconds"], strict=True))
    what = "R^2" if problem.regression else "accuracy"
    cells = [problem.name, f"{problem.epochs}", f"{problem.batch_size}",
             f"{statistics.median(sk['seconds']):.2f}", f"{statistics.median(pg['seconds']):.2f}",
             f"{ratio:.2f}x", f"{what} {statistics.median(sk['scores']):.4f}",
             f"{statistics.median(pg['scores']):.4f}"]
    return ("| " + " | ".join(cells) + " |") if markdown else "  ".join(cells)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None,
                        help="BLAS/OpenMP threads for both (default: the libraries' own)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument("--backend", default="numpy", help="portgd's backend (default numpy)")
    parser.add_argument("--only", default=None, help="run only problems whose name has this")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", ConvergenceWarning)
    if args.threads is not None and args.backend == "torch":
        import torch

        torch.set_num_threads(args.threads)
    header = ["problem", "epochs", "batch", "scikit-learn s", "portgd s", "time ratio",
              "scikit-learn score", "portgd score"]
    print(f"# threads={args.threads or 'default'} rounds={args.rounds} "
          f"backend={args.backend} load before={os.getloadavg()}")
    print(("| " + " | ".join(header) + " |\n|" + "---|" * len(header)) if args.markdown
          else "  ".join(header))
    with threadpool_limits(limits=args.threads):
        for problem in problems(args.quick):
            if args.only and args.only not in problem.name:
                continue
            print(report(problem, measure(problem, args.backend, args.rounds), args.markdown),
                  flush=True)
    print(f"# load after={os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
