"""Does triage earn its place? Flags vs the same number of least-confident drafts, on real images.

Real labelled images that ship inside installed wheels (no download), embedded exactly as
``benchmarks/accuracy.py`` does (``effnet-lite0`` and ``mobilenet_v2`` through ONNX Runtime,
64 x 64 inputs; the matrices are shared with it under ``benchmarks/.cache/accuracy/``):

* ``digits``: scikit-learn's ``load_digits`` (1,797 real 8 x 8 scans, 10 classes);
  oddities: the 200 photos of ``skimage.data.lfw_subset()`` (faces and non-faces);
* ``lfw``: those 200 photos, face vs non-face; oddities: 200 random scans from ``digits``.

The oddities go into ``X_all`` unlabelled, as images unlike anything labelled (gravel among
blood cells). No class is right for them, so every draft of an oddity is a draft error.

For each seed, ``per-class`` labels per class are drawn and ``train_classifier_ensemble``
(default members effnet-lite0 + mobilenet_v2) predicts every other item. On those items
(held-out in-distribution + oddities), for each triage variant:

* ``flags``: how many items the variant flags (``B``) and the share of draft errors among
  them it catches, against ``least-conf.``: flagging the ``B`` least-confident drafts
  instead (the same budget);
* variants: triage without the novelty flag (disagreement, low confidence, conformal set),
  with it (the default), and with it under a review budget of 20% (``max_flag_fraction``);
* ``held-out only``: the same comparison with the oddities left out of the scoring (they
  are still in ``X_all``), so the novelty flag is judged on ordinary drafts too.

Then the novelty flag on its own: share of oddities flagged ``novel``, share of held-out
items flagged ``novel`` (false alarms) and their error rate against the held-out error
rate, and how many oddities are drafted at >= 80% / >= 95% confidence and left unflagged
(before issue 10 these were drafted "100%"). Finally the out-of-fold accuracy with its 95%
Wilson interval, as Loupe shows it, and how often the interval held the held-out accuracy.

Figures are pooled over the seeds (sums of counts). Runs in about a minute on 2 cores once
the embeddings are cached (the first run embeds 2,000 images: about two minutes).

Run: ``.venv/bin/python benchmarks/triage.py [--seeds 5] [--per-class 20 10]``
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy import draw_labelled, embeddings, load_digits_set, load_lfw_set  # noqa: E402

MEMBERS = ("effnet-lite0", "mobilenet_v2")
BUDGET = 0.2
N_ODD_DIGITS = 200


@dataclass
class Tally:
    """Pooled counts of one triage variant: flagged items, errors caught, baseline."""

    flagged: int = 0
    caught: int = 0
    baseline_caught: int = 0
    errors: int = 0
    items: int = 0

    def add(self, flags: np.ndarray, wrong: np.ndarray, confidence: np.ndarray) -> None:
        budget = int(flags.sum())
        least_confident = np.argsort(confidence, kind="stable")[:budget]
        self.flagged += budget
        self.caught += int((flags & wrong).sum())
        self.baseline_caught += int(wrong[least_confident].sum())
        self.errors += int(wrong.sum())
        self.items += len(flags)

    def row(self, name: str) -> str:
        def share(count: int) -> str:
            return f"{count / self.errors:6.1%}" if self.errors else "   n/a"

        return (
            f"    {name:<34}{self.flagged:>7} ({self.flagged / max(self.items, 1):5.1%})"
            f"{self.errors:>8}{share(self.caught):>12}{share(self.baseline_caught):>13}"
            f"{(self.caught - self.baseline_caught):>+9}"
        )


@dataclass
class Summary:
    variants: dict[str, Tally] = field(default_factory=dict)
    held_out: dict[str, Tally] = field(default_factory=dict)
    odd_total: int = 0
    odd_novel: int = 0
    odd_confident: dict[float, int] = field(default_factory=dict)
    odd_confident_unflagged_before: dict[float, int] = field(default_factory=dict)
    odd_confident_unflagged: dict[float, int] = field(default_factory=dict)
    held_total: int = 0
    held_novel: int = 0
    held_novel_wrong: int = 0
    held_wrong: int = 0
    oof: list[str] = field(default_factory=list)
    ci_holds: int = 0
    temperatures: list[float] = field(default_factory=list)


def run_once(
    features: dict[str, np.ndarray],
    labels: np.ndarray,
    odd_features: dict[str, np.ndarray],
    class_names: list[str],
    labelled: np.ndarray,
    seed: int,
    summary: Summary,
) -> None:
    from loupe.learn.metrics import format_rate
    from loupe.learn.train import train_classifier_ensemble

    n_in = len(labels)
    member_features = {}
    for name in MEMBERS:
        every = np.concatenate([features[name], odd_features[name]])
        member_features[name] = (features[name][labelled], every)
    y = labels[labelled]
    runs = {
        "no novelty flag": train_classifier_ensemble(
            member_features, y, class_names, seed=seed, novelty=False
        ),
        "with novelty flag": train_classifier_ensemble(member_features, y, class_names, seed=seed),
        f"with novelty, budget {BUDGET:.0%}": train_classifier_ensemble(
            member_features, y, class_names, seed=seed, max_flag_fraction=BUDGET
        ),
    }
    held_out = np.setdiff1d(np.arange(n_in), labelled)
    pool = np.r_[held_out, np.arange(n_in, n_in + len(next(iter(odd_features.values()))))]
    is_odd = pool >= n_in
    for variant, result in runs.items():
        p = result.predictions
        wrong = np.ones(len(pool), dtype=bool)  # an oddity has no right class
        wrong[~is_odd] = p.label[held_out] != labels[held_out]
        summary.variants.setdefault(variant, Tally()).add(
            p.flagged[pool], wrong, p.confidence[pool]
        )
        summary.held_out.setdefault(variant, Tally()).add(
            p.flagged[held_out], wrong[~is_odd], p.confidence[held_out]
        )

    before, after = runs["no novelty flag"].predictions, runs["with novelty flag"].predictions
    odd = pool[is_odd]
    summary.odd_total += len(odd)
    summary.odd_novel += int(after.novel[odd].sum())
    for level in (0.8, 0.95):
        confident = after.confidence[odd] >= level
        summary.odd_confident[level] = summary.odd_confident.get(level, 0) + int(confident.sum())
        summary.odd_confident_unflagged_before[level] = summary.odd_confident_unflagged_before.get(
            level, 0
        ) + int((confident & ~before.flagged[odd]).sum())
        summary.odd_confident_unflagged[level] = summary.odd_confident_unflagged.get(
            level, 0
        ) + int((confident & ~after.flagged[odd]).sum())
    held_wrong = after.label[held_out] != labels[held_out]
    summary.held_total += len(held_out)
    summary.held_novel += int(after.novel[held_out].sum())
    summary.held_novel_wrong += int((after.novel[held_out] & held_wrong).sum())
    summary.held_wrong += int(held_wrong.sum())

    metrics = runs["with novelty flag"].ensemble_metrics or {}
    if metrics.get("accuracy") is not None:
        ci = metrics["accuracy_ci"]
        truth = float(np.mean(~held_wrong))
        summary.ci_holds += int(ci[0] <= truth <= ci[1])
        summary.oof.append(
            f"seed {seed}: OOF {format_rate(metrics['accuracy'], metrics['n'], ci)}; "
            f"held-out {truth:.1%}"
        )
    summary.temperatures.extend(runs["with novelty flag"].temperatures.values())


def report(title: str, summary: Summary) -> None:
    print(f"\n{title}")
    header = (
        f"    {'triage variant':<34}{'flagged (share)':>15}{'errors':>8}"
        f"{'caught':>12}{'least-conf.':>13}{'diff':>9}"
    )
    print("  draft errors caught by the flags vs the same number of least-confident drafts")
    print("  (held-out items + oddities; every oddity draft is an error):")
    print(header)
    for name, tally in summary.variants.items():
        print(tally.row(name))
    print("  held-out items only (oddities still in X_all, left out of the scoring):")
    print(header)
    for name, tally in summary.held_out.items():
        print(tally.row(name))
    print(
        f"  novelty: oddities flagged novel {summary.odd_novel}/{summary.odd_total} "
        f"({summary.odd_novel / summary.odd_total:.1%}); held-out flagged novel "
        f"{summary.held_novel}/{summary.held_total} "
        f"({summary.held_novel / summary.held_total:.1%}), error rate among them "
        f"{summary.held_novel_wrong / max(summary.held_novel, 1):.1%} vs "
        f"{summary.held_wrong / summary.held_total:.1%} over all held-out items"
    )
    for level in (0.8, 0.95):
        print(
            f"  oddities drafted at >= {level:.0%}: {summary.odd_confident[level]}; of these "
            f"left unflagged: {summary.odd_confident_unflagged_before[level]} without the "
            f"novelty flag, {summary.odd_confident_unflagged[level]} with it"
        )
    temps = np.asarray(summary.temperatures)
    print(
        f"  member temperatures: median {np.median(temps):.2f}, range "
        f"{temps.min():.2f}-{temps.max():.2f} (bounds 0.05-20)"
    )
    print(
        f"  OOF accuracy as shown (95% Wilson CI) and the held-out accuracy of the final "
        f"model; the CI held it in {summary.ci_holds}/{len(summary.oof)} seeds:"
    )
    for line in summary.oof:
        print(f"    {line}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--per-class", type=int, nargs="+", default=[20, 10])
    args = parser.parse_args()

    print(f"cores: {os.cpu_count()}; load average before: {os.getloadavg()}", flush=True)
    digit_images, digit_labels, digit_names = load_digits_set()
    face_images, face_labels, face_names = load_lfw_set()
    digits = embeddings("digits", digit_images)
    faces = embeddings("lfw", face_images)
    odd_digits = np.random.default_rng(12345).choice(len(digit_labels), N_ODD_DIGITS, False)
    sets = {
        "digits (oddities: 200 LFW photos)": (digits, digit_labels, digit_names, faces),
        "lfw face / non-face (oddities: 200 digit scans)": (
            faces,
            face_labels,
            face_names,
            {name: matrix[odd_digits] for name, matrix in digits.items()},
        ),
    }
    for title, (features, labels, names, odd) in sets.items():
        for per_class in args.per_class:
            summary = Summary()
            for seed in range(args.seeds):
                labelled = draw_labelled(labels, per_class, seed)
                run_once(features, labels, odd, names, labelled, seed, summary)
            n_labels = per_class * len(names)
            report(
                f"{title}, {per_class} labels per class ({n_labels} labels), "
                f"{args.seeds} seeds, members {' + '.join(MEMBERS)}",
                summary,
            )
    print(
        "\n'caught': share of the draft errors among the flagged items; 'least-conf.': share "
        "among the same number of least-confident drafts; 'diff': errors caught more (+) or "
        "fewer (-) than that baseline, pooled over the seeds."
    )
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
