"""Active learning, measured honestly: labels saved per strategy, label-error finding, speed.

Part 1: learning curves. A simulated annotator answers with the true labels of two real
labelled image sets that ship inside installed wheels (no download):

* ``digits``: scikit-learn's ``load_digits`` (1,797 real 8 x 8 scans of handwritten digits,
  10 classes); each scan scaled to 0-255, upscaled bilinearly to 64 x 64, RGB, PNG files.
* ``textures``: 32 x 32 grey patches cut at random places (random rot90 / flip) from six
  photographs bundled in scikit-image's wheel: ``brick``, ``grass``, ``gravel`` (texture
  photographs), ``moon`` (lunar surface), ``cell`` (microscopy) and
  ``immunohistochemistry`` (stained tissue, as grey); 120 per class (720), the class is
  the photograph; upscaled to 64 x 64, RGB, PNG files.

Everything runs through the real services on SQLite in a temporary LOUPE_HOME: a classify
project is created, the PNG files are ingested (``ingest_paths``), features are computed by
the real feature store and backbone (``--backbone``: ``classic`` by default, for speed on
2 cores; ``default`` is the effnet-lite0 + mobilenet_v2 ensemble), labels are written with
``labels.set_label``, the next 10 come from ``queues.next_items`` with the strategy, and
``training.train_project`` retrains after every round. A fixed 30% of every set (stratified)
is held out in a second project that is never labelled: each ModelVersion's saved heads
(``heads.npz``) are applied to the held-out features (the same feature store code) and the
held-out accuracy is recorded. 2 labels per class to start, rounds of 10, 5 seeds.

Printed per strategy: the labels needed for the mean curve to reach 95% of the held-out
accuracy of a model trained on every pool label, and the ratio to ``random`` (target: the
best strategy <= 0.6 x random). The curves (mean +- sd) go to
``docs/active-learning-<set>.png``.

Results and the run times measured: ``docs/active-learning.md``.

Part 2: ``mistakes``. 300 pool items labelled with 5% of the labels flipped on purpose; the
queue's ``mistakes`` strategy lists the first k (k = the flipped count): precision and
recall (target both >= 0.6).

Part 3: speed on a 100,000-item SQLite project (rows inserted in bulk, synthetic float32
features and probabilities): ``next_items`` for 50 items from every queue (target < 300 ms),
split into the service's database part and the strategy itself, and a cosine kNN query
(target < 50 ms), each with its ratio to a naive implementation. First, the first queue
request after a new model version, before (the version's JSON outputs decoded) and after
(its ``queue_arrays.npz`` read, as the predicting job writes it).

Run: ``nice .venv/bin/python benchmarks/active_learning.py [--quick] [--seeds 5]``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

CACHE = Path(__file__).resolve().parent / ".cache" / "active_learning"
DOCS = ROOT / "docs"
SIDE = 64
HELD_OUT = 0.3
ROUND = 10
TEXTURES = ("brick", "grass", "gravel", "moon", "cell", "immunohistochemistry")
PER_TEXTURE = 120
PATCH = 32
STRATEGIES = ("random", "uncertain", "diverse", "hybrid")
SECRET = "benchmark-only-secret-" + "x" * 40


# -- the data --------------------------------------------------------------------------------


def _to_rgb(grey: np.ndarray) -> np.ndarray:
    """float grey image in [0, 1] -> uint8 RGB SIDE x SIDE, bilinear upscale."""
    from PIL import Image

    image = Image.fromarray(np.clip(np.rint(grey * 255.0), 0, 255).astype(np.uint8))
    big = np.asarray(image.resize((SIDE, SIDE), Image.Resampling.BILINEAR))
    return np.repeat(big[..., None], 3, axis=-1)


def digits_set() -> tuple[list[np.ndarray], list[str]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return [_to_rgb(im / 16.0) for im in digits.images], [str(int(t)) for t in digits.target]


def textures_set() -> tuple[list[np.ndarray], list[str]]:
    import skimage.data
    from skimage.color import rgb2gray

    rng = np.random.default_rng(7)
    images, labels = [], []
    for name in TEXTURES:
        photo = np.asarray(getattr(skimage.data, name)())
        grey = rgb2gray(photo) if photo.ndim == 3 else photo / 255.0
        rows, cols = grey.shape
        for _ in range(PER_TEXTURE):
            r = int(rng.integers(0, rows - PATCH + 1))
            c = int(rng.integers(0, cols - PATCH + 1))
            patch = np.rot90(grey[r : r + PATCH, c : c + PATCH], k=int(rng.integers(0, 4)))
            if rng.random() < 0.5:
                patch = patch[:, ::-1]
            images.append(_to_rgb(np.ascontiguousarray(patch)))
            labels.append(name)
    return images, labels


SETS = {"digits": digits_set, "textures": textures_set}


def write_set(name: str) -> tuple[list[Path], list[str]]:
    """The set's PNG files (cached) and their true labels, file k is image k."""
    from PIL import Image

    images, labels = SETS[name]()
    folder = CACHE / name
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{k:05d}.png" for k in range(len(images))]
    for path, image in zip(paths, images, strict=True):
        if not path.is_file():
            Image.fromarray(image).save(path)
    return paths, labels


def split(labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """A fixed stratified (pool rows, held-out rows) split."""
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(labels))
    pool, held = train_test_split(rows, test_size=HELD_OUT, stratify=labels, random_state=1234)
    return np.sort(pool), np.sort(held)


# -- the services ----------------------------------------------------------------------------


def _env(home: Path) -> None:
    os.environ.update(LOUPE_HOME=str(home), LOUPE_SECRET_KEY=SECRET)
    os.environ.pop("LOUPE_DATABASE_URL", None)
    os.environ.pop("LOUPE_QUEUE_URL", None)


@dataclass
class Sim:
    """One data set loaded into a real Loupe home: a pool project and a held-out project."""

    name: str
    settings: Any
    user_id: int
    pool_id: int
    classes: list[str]
    truth: dict[int, str]  # pool item id -> true label
    held_features: dict[str, np.ndarray]  # member -> (n_held, d)
    held_truth: np.ndarray  # class index of each held-out row
    timings: dict[str, float] = field(default_factory=dict)


def _link_folder(paths: list[Path], rows: np.ndarray, folder: Path) -> None:
    folder.mkdir(parents=True)
    for r in rows:
        os.symlink(paths[r], folder / paths[r].name)


def setup(home: Path, name: str, members: list[str]) -> Sim:
    """Create the projects, ingest the files, compute the held-out features."""
    from sqlalchemy import select

    from loupe.db.migrate import upgrade
    from loupe.db.models import Item
    from loupe.db.session import session_scope
    from loupe.services.auth.core import create_user
    from loupe.services.items.ingest import ingest_paths
    from loupe.services.projects.core import create_project
    from loupe.services.training.train import load_training_data
    from loupe.settings import Settings
    from loupe.tasks.embedding import compute_features

    paths, labels = write_set(name)
    classes = sorted(set(labels), key=lambda c: (len(c), c))
    pool_rows, held_rows = split(labels)
    _link_folder(paths, pool_rows, home / "files" / name / "pool")
    _link_folder(paths, held_rows, home / "files" / name / "held")
    settings = Settings()
    settings.ensure_dirs()
    upgrade(settings.db_url)
    project_settings = {"ensemble": members, "lease_minutes": 60}
    with session_scope(settings.db_url) as db:
        email = "annotator@example.org"
        from loupe.db.models import User

        user = db.scalar(select(User).where(User.email == email))
        if user is None:
            user = create_user(db, email=email, password="x" * 12)
        ids = []
        for part in ("pool", "held-out"):
            project = create_project(
                db,
                name=f"{name} {part}",
                task="classify",
                schema={"classes": [{"name": c} for c in classes]},
                owner_id=user.id,
                settings=project_settings,
            )
            ids.append(project.id)
        user_id = user.id
    pool_id, held_id = ids
    timings = {}
    start = time.perf_counter()
    for pid, part in ((pool_id, "pool"), (held_id, "held")):
        report = ingest_paths(settings, pid, [home / "files" / name / part])
        if report.failed:
            raise SystemExit(f"ingest failed: {report.failed[:3]}")
    timings["ingest"] = time.perf_counter() - start
    with session_scope(settings.db_url, write=False) as db:
        pool_items = db.execute(select(Item.id, Item.filename).where(Item.project_id == pool_id))
        truth = {int(i): labels[int(Path(f).stem)] for i, f in pool_items}
        data = load_training_data(db, held_id)
        held_files = dict(
            db.execute(select(Item.id, Item.filename).where(Item.project_id == held_id)).all()
        )
    start = time.perf_counter()
    held_ids, matrices, errors = compute_features(settings, data, members, report=lambda f, m: None)
    if errors:
        raise SystemExit(f"held-out features failed: {list(errors.values())[:3]}")
    held_truth = np.array([classes.index(labels[int(Path(held_files[i]).stem)]) for i in held_ids])
    timings["held_features"] = time.perf_counter() - start
    return Sim(name, settings, user_id, pool_id, classes, truth, matrices, held_truth, timings)


def set_labels(sim: Sim, answers: dict[int, str]) -> None:
    """The annotator's answers, written through the label service."""
    from loupe.db.models import Project
    from loupe.db.session import session_scope
    from loupe.services.labels.core import set_label
    from loupe.tasks.base import LabelValue

    with session_scope(sim.settings.db_url) as db:
        project = db.get(Project, sim.pool_id)
        assert project is not None
        for item_id, label in answers.items():
            set_label(
                db, project, item_id, LabelValue(kind="class", label=label), user_id=sim.user_id
            )


def clear_labels(sim: Sim, item_ids: list[int]) -> None:
    from loupe.db.models import Project
    from loupe.db.session import session_scope
    from loupe.services.labels.core import clear_label

    with session_scope(sim.settings.db_url) as db:
        project = db.get(Project, sim.pool_id)
        assert project is not None
        for item_id in item_ids:
            clear_label(db, project, item_id, user_id=sim.user_id)


def next_batch(sim: Sim, strategy: str, n: int, seed: int) -> tuple[list[int], str]:
    """The next ``n`` item ids from the real queue service, and the strategy it used."""
    from loupe.db.models import Project, User
    from loupe.db.session import session_scope
    from loupe.services.queues import next_items

    with session_scope(sim.settings.db_url) as db:
        project = db.get(Project, sim.pool_id)
        user = db.get(User, sim.user_id)
        assert project is not None and user is not None
        result = next_items(db, sim.settings, project, user, strategy, n=n, params={"seed": seed})
    return [item_id for item_id, _ in result.items], result.strategy_used


def train(sim: Sim) -> int:
    from loupe.services.training.train import train_project

    start = time.perf_counter()
    summary = train_project(sim.settings, sim.pool_id)
    sim.timings["train"] = sim.timings.get("train", 0.0) + time.perf_counter() - start
    sim.timings["trainings"] = sim.timings.get("trainings", 0) + 1
    return int(summary["model_version_id"])


def held_out_accuracy(sim: Sim, version_id: int) -> float:
    """The saved model version applied to the held-out features: accuracy."""
    import json

    from loupe.db.models import ModelVersion
    from loupe.db.session import session_scope
    from loupe.learn import CLASS_HEADS
    from loupe.learn.ensemble import combine_members
    from loupe.learn.state import state_from_bytes

    with session_scope(sim.settings.db_url, write=False) as db:
        version = db.get(ModelVersion, version_id)
        assert version is not None and version.artifact_path
        folder = Path(version.artifact_path)
        head_cls = CLASS_HEADS[str(version.params.get("class_head"))]
    meta = json.loads((folder / "heads.json").read_text())
    names: list[str] = meta["class_names"]
    with np.load(folder / "heads.npz", allow_pickle=False) as archive:
        probs = [
            head_cls.from_state(state_from_bytes(archive[f"head_{m}"].tobytes())).predict_proba(
                sim.held_features[m]
            )
            for m in meta["members"]
        ]
    predicted = combine_members(probs).argmax(axis=1)
    as_class = np.array([sim.classes.index(names[k]) for k in predicted])
    return float(np.mean(as_class == sim.held_truth))


# -- part 1: learning curves -----------------------------------------------------------------


def start_labels(sim: Sim, seed: int, per_class: int = 2) -> dict[int, str]:
    rng = np.random.default_rng(seed)
    ids = np.array(sorted(sim.truth))
    picked = {}
    for c in sim.classes:
        of_class = ids[[sim.truth[int(i)] == c for i in ids]]
        for i in rng.choice(of_class, per_class, replace=False):
            picked[int(i)] = c
    return picked


def run_curve(sim: Sim, strategy: str, seed: int, budget: int) -> tuple[list[int], list[float]]:
    """One simulated annotation session; the labels are cleared again at the end."""
    answers = start_labels(sim, seed)
    set_labels(sim, answers)
    labelled = list(answers)
    counts: list[int] = []
    accuracy: list[float] = []
    while True:
        accuracy.append(held_out_accuracy(sim, train(sim)))
        counts.append(len(labelled))
        if len(labelled) >= budget:
            break
        batch, used = next_batch(sim, strategy, ROUND, seed * 1000 + len(counts))
        if used != strategy:
            raise SystemExit(f"{strategy} fell back to {used}")
        set_labels(sim, {i: sim.truth[i] for i in batch})
        labelled += batch
    clear_labels(sim, labelled)
    return counts, accuracy


def labels_to_reach(counts: list[int], mean: np.ndarray, goal: float) -> int | None:
    reached = np.flatnonzero(mean >= goal)
    return int(counts[reached[0]]) if len(reached) else None


def full_accuracy(sim: Sim) -> float:
    """Held-out accuracy of a model trained on every pool label."""
    set_labels(sim, sim.truth)
    accuracy = held_out_accuracy(sim, train(sim))
    clear_labels(sim, list(sim.truth))
    return accuracy


def plot(
    name: str, counts: list[int], curves: dict[str, np.ndarray], goal: float, out: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for strategy, acc in curves.items():
        mean, sd = acc.mean(axis=0), acc.std(axis=0)
        ax.plot(counts, mean, label=strategy)
        ax.fill_between(counts, mean - sd, mean + sd, alpha=0.2)
    ax.axhline(goal, color="grey", linestyle="--", linewidth=1, label="95% of all labels")
    ax.set_xlabel("human labels")
    ax.set_ylabel("held-out accuracy")
    ax.set_title(f"{name}: mean +- sd over {len(next(iter(curves.values())))} seeds")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def curves_for(sim: Sim, strategies: tuple[str, ...], seeds: int, budget: int) -> dict[str, Any]:
    full = full_accuracy(sim)
    goal = 0.95 * full
    counts: list[int] = []
    curves: dict[str, np.ndarray] = {}
    for strategy in strategies:
        runs = []
        for seed in range(seeds):
            counts, accuracy = run_curve(sim, strategy, seed, budget)
            runs.append(accuracy)
        curves[strategy] = np.array(runs)
        print(f"  {strategy:<10} done ({sim.timings['trainings']} trainings so far)", flush=True)
    needed = {s: labels_to_reach(counts, c.mean(axis=0), goal) for s, c in curves.items()}
    return {"full": full, "goal": goal, "counts": counts, "curves": curves, "needed": needed}


def report_curves(name: str, result: dict[str, Any], budget: int, backbone: str) -> list[str]:
    """Print the table; return its markdown lines."""
    needed = result["needed"]
    base = needed.get("random")
    lines = [
        f"**{name}** ({backbone}; held-out accuracy with every pool label: {result['full']:.3f}; "
        f"goal 95% of it = {result['goal']:.3f}; budget {budget} labels)",
        "",
        "| strategy | labels to reach goal | ratio to random | accuracy at 50 / 100 labels |",
        "|---|---|---|---|",
    ]
    counts = result["counts"]
    print(f"{name}: full-label held-out accuracy {result['full']:.3f}, goal {result['goal']:.3f}")
    for strategy, curve in result["curves"].items():
        n = needed[strategy]
        ratio = "n/a" if n is None or base is None else f"{n / base:.2f}x"
        mean = curve.mean(axis=0)
        # the first point at or past 50 and 100 labels (digits start at 20, textures at 12)
        at = [
            f"{mean[i]:.3f} ({counts[i]})"
            if (i := np.searchsorted(counts, k)) < len(counts)
            else "-"
            for k in (50, 100)
        ]
        shown = f">{budget}" if n is None else str(n)
        print(
            f"  {strategy:<10} labels to 95%: {shown:>6}  ratio to random: {ratio:>6}"
            f"  acc@50 {at[0]} acc@100 {at[1]}"
        )
        lines.append(f"| {strategy} | {shown} | {ratio} | {at[0]} / {at[1]} |")
    named = [(needed[s], s) for s in needed if s != "random" and needed[s] is not None]
    if named and base:
        best_n, best = min(named)
        verdict = "met" if best_n <= 0.6 * base else "MISSED"
        print(f"  best: {best} at {best_n / base:.2f}x random (target <= 0.6x: {verdict})")
        lines += ["", f"Best: `{best}` at {best_n / base:.2f}x random (target <= 0.6x: {verdict})."]
    return lines


# -- part 2: mistakes ------------------------------------------------------------------------


def mistakes_check(sim: Sim, seeds: int, labelled: int = 300, rate: float = 0.05) -> list[str]:
    """Label ``labelled`` pool items with ``rate`` of them flipped; score ``mistakes``."""
    precisions, recalls = [], []
    for seed in range(seeds):
        rng = np.random.default_rng(100 + seed)
        ids = [int(i) for i in rng.choice(sorted(sim.truth), labelled, replace=False)]
        flipped = {int(i) for i in rng.choice(ids, int(round(rate * labelled)), replace=False)}
        answers = {}
        for i in ids:
            label = sim.truth[i]
            if i in flipped:
                label = str(rng.choice([c for c in sim.classes if c != label]))
            answers[i] = label
        set_labels(sim, answers)
        listed, used = next_batch(sim, "mistakes", len(flipped), seed)
        assert used == "mistakes", used
        hits = len(flipped & set(listed))
        precisions.append(hits / max(1, len(listed)))
        recalls.append(hits / len(flipped))
        clear_labels(sim, ids)
    p, r = np.array(precisions), np.array(recalls)
    verdict = "met" if p.mean() >= 0.6 and r.mean() >= 0.6 else "MISSED"
    line = (
        f"{sim.name}: mistakes with {rate:.0%} of {labelled} labels flipped "
        f"({int(round(rate * labelled))}), first k listed: "
        f"precision {p.mean():.2f} +- {p.std():.2f}, "
        f"recall {r.mean():.2f} +- {r.std():.2f} over {seeds} seeds (target both >= 0.6: {verdict})"
    )
    print(line, flush=True)
    return [line]


# -- part 3: speed at 100,000 items ----------------------------------------------------------


def build_big(home: Path, n: int, dim: int, k: int) -> tuple[int, int]:
    """A classify project of ``n`` items (bulk rows), an active model, ``dim``-d features."""
    import datetime as dt

    from sqlalchemy import insert

    from loupe.db.migrate import upgrade
    from loupe.db.models import Annotation, Item, ModelVersion, Prediction
    from loupe.db.session import session_scope
    from loupe.features.store import FeatureStore
    from loupe.services.auth.core import create_user
    from loupe.services.projects.core import create_project
    from loupe.settings import Settings

    settings = Settings()
    settings.ensure_dirs()
    upgrade(settings.db_url)
    classes = [f"class_{c}" for c in range(k)]
    rng = np.random.default_rng(0)
    with session_scope(settings.db_url) as db:
        user = create_user(db, email="speed@example.org", password="x" * 12)
        project = create_project(
            db,
            name="speed",
            task="classify",
            schema={"classes": [{"name": c} for c in classes]},
            owner_id=user.id,
            settings={"ensemble": ["effnet-lite0"]},
        )
        version = ModelVersion(
            project_id=project.id, number=1, status="ready", active=True, members=["effnet-lite0"]
        )
        db.add(version)
        db.flush()
        pid, uid, vid = project.id, user.id, version.id
    when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    truth = rng.integers(0, k, n)
    centres = rng.normal(size=(k, dim)).astype(np.float32)
    store = FeatureStore(settings.features_dir, pid, "effnet-lite0", dim)
    chunk = 10_000
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        logits = rng.normal(size=(stop - start, k)) + 3.0 * np.eye(k)[truth[start:stop]]
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        with session_scope(settings.db_url) as db:
            rows = [
                {
                    "project_id": pid,
                    "sha256": f"{i:064x}",
                    "uri": f"/data/{i:06d}.png",
                    "filename": f"{i:06d}.png",
                    "format": "png",
                    "shape": [64, 64, 3],
                    "axes": "YXC",
                    "created_by": uid,
                    "created_at": when,
                }
                for i in range(start, stop)
            ]
            ids = list(db.scalars(insert(Item).returning(Item.id), rows))
            db.execute(
                insert(Prediction),
                [
                    {
                        "project_id": pid,
                        "item_id": item_id,
                        "model_version_id": vid,
                        "label": classes[int(p.argmax())],
                        "confidence": float(p.max()),
                        "uncertainty": float(1.0 - p.max()),
                        "flagged": bool(p.max() < 0.5),
                        "output": {
                            "probs": {
                                c: round(float(v), 5) for c, v in zip(classes, p, strict=True)
                            }
                        },
                        "members": {},
                    }
                    for item_id, p in zip(ids, probs, strict=True)
                ],
            )
            if start == 0:  # 1,000 human labels
                db.execute(
                    insert(Annotation),
                    [
                        {
                            "item_id": item_id,
                            "project_id": pid,
                            "kind": "class",
                            "label": classes[int(truth[r])],
                            "origin": "human",
                            "version": 1,
                            "updated_by": uid,
                            "updated_at": when,
                        }
                        for r, item_id in enumerate(ids[:1000])
                    ],
                )
        noise = rng.normal(size=(stop - start, dim)).astype(np.float32)
        store.add(ids, np.abs(centres[truth[start:stop]] * 0.3 + noise))
    return pid, uid


def _median_ms(fn: Any, repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
        if times[-1] > 2.0:  # a slow call is not repeated: its figure is clear enough
            break
    return 1000.0 * float(np.median(times)), out


def naive_rank(scores: np.ndarray, pool: np.ndarray, n: int) -> list[int]:
    """The naive queue: a Python loop over every row, then a full sort."""
    candidates = [(-float(scores[r]), r) for r in range(len(scores)) if pool[r]]
    candidates.sort()
    return [r for _, r in candidates[:n]]


def naive_k_center(x: np.ndarray, labelled: np.ndarray, n: int) -> list[int]:
    """Exact k-center greedy at full dimension with sklearn's pairwise distances."""
    from sklearn.metrics import pairwise_distances

    best = pairwise_distances(x, x[labelled]).min(axis=1)
    best[labelled] = -1
    picked = []
    for _ in range(n):
        row = int(np.argmax(best))
        picked.append(row)
        best = np.minimum(best, pairwise_distances(x, x[row : row + 1])[:, 0])
        best[picked] = -1
    return picked


def first_request_after_version(settings: Any, pid: int, service: Any, repeats: int) -> list[str]:
    """The first queue request of a web process after a new model version: before
    (every process decodes the version's JSON outputs) and after (it reads the
    version's ``queue_arrays.npz``, written once by the job that stored them)."""
    from sqlalchemy import select

    from loupe.db.models import ModelVersion, Project
    from loupe.db.session import session_scope
    from loupe.services.queues import arrays as queue_arrays
    from loupe.tasks.prediction_arrays import output_rows, sidecar_path, write_after_insert
    from loupe.tasks.types import PredictionRow

    def forget() -> None:  # a process that has not seen this version yet
        queue_arrays._OUTPUTS.clear()

    def arrays_ms(with_file: bool) -> float:
        def once() -> Any:
            forget()
            with session_scope(settings.db_url, write=False) as db:
                project = db.get(Project, pid)
                assert project is not None
                return queue_arrays.load_arrays(db, project, settings if with_file else None)

        return _median_ms(once, repeats)[0]

    def first_ms(path: Path | None) -> float:
        def once() -> Any:
            if path is not None:
                path.unlink(missing_ok=True)
            forget()
            return service("uncertain")

        return _median_ms(once, repeats)[0]

    with session_scope(settings.db_url, write=False) as db:
        version = db.scalar(
            select(ModelVersion).where(ModelVersion.project_id == pid, ModelVersion.active)
        )
        assert version is not None
        vid = version.id
        rows = [
            PredictionRow(item, None, None, u, bool(f), None, o or {}, {})
            for item, o, u, f in output_rows(db, version)[0]
        ]
    path = sidecar_path(settings, pid, vid)
    path.unlink(missing_ok=True)
    decode_ms = arrays_ms(with_file=False)  # the code before the file: decode only
    no_file_ms = first_ms(path)  # no file: decode, then write it for the next process
    start = time.perf_counter()
    write_after_insert(settings, pid, vid, rows)  # what the predicting job adds
    job_ms = 1000.0 * (time.perf_counter() - start)
    size_mb = path.stat().st_size / 1e6
    read_ms = arrays_ms(with_file=True)
    with_file_ms = first_ms(None)
    warm_ms, _ = _median_ms(lambda: service("uncertain"), repeats)
    n = len(rows)
    out = [
        f"First queue request after a new model version ({n:,} predictions, "
        f"`uncertain`, next 50; median of {repeats}):",
        "",
        "| | before: each process decodes the JSON | after: reads queue_arrays.npz | ratio |",
        "|---|---|---|---|",
        f"| load_arrays (ms) | {decode_ms:.0f} | {read_ms:.0f} | {decode_ms / read_ms:.1f}x |",
        f"| first next_items (ms) | {no_file_ms:.0f} (+ writes the file) | "
        f"{with_file_ms:.0f} | {no_file_ms / with_file_ms:.1f}x |",
        "",
        f"The job that stores the predictions writes the file in {job_ms:.0f} ms "
        f"({size_mb:.1f} MB); a warm next_items is {warm_ms:.0f} ms.",
    ]
    for line in out:
        print(line, flush=True)
    return out


SPEED_PARAMS: dict[str, dict[str, Any]] = {
    "band": {"band_class": "class_0", "band_lo": 0.3, "band_hi": 0.8},
}


def speed(home: Path, n: int, dim: int, repeats: int) -> list[str]:
    """Time ``next_items`` (50) for every strategy and a kNN query at ``n`` items."""
    from loupe.db.models import Project, User
    from loupe.db.session import session_scope
    from loupe.select import registry
    from loupe.select.knn import cosine_knn, row_norms
    from loupe.select.uncertain import uncertainty_scores
    from loupe.services.queues import next_items
    from loupe.services.queues.arrays import load_arrays
    from loupe.services.queues.core import _aligned_features, _request, _uses_features
    from loupe.settings import Settings

    start = time.perf_counter()
    pid, uid = build_big(home, n, dim, 10)
    print(f"built a {n:,}-item project ({dim}-d features) in {time.perf_counter() - start:.0f} s")
    settings = Settings()
    lines = [
        "| queue | next 50 via `next_items` (ms) | DB + arrays (ms) | strategy alone (ms) "
        "| naive (ms) | speed-up vs naive |",
        "|---|---|---|---|---|---|",
    ]

    def service(name: str) -> Any:
        with session_scope(settings.db_url) as db:
            project, user = db.get(Project, pid), db.get(User, uid)
            assert project is not None and user is not None
            return next_items(
                db, settings, project, user, name, n=50, params=SPEED_PARAMS.get(name)
            )

    first_lines = first_request_after_version(settings, pid, service, repeats)
    lines = [*first_lines, "", *lines]

    def db_part() -> Any:
        with session_scope(settings.db_url, write=False) as db:
            project = db.get(Project, pid)
            assert project is not None
            arrays = load_arrays(db, project)
            return arrays, _aligned_features(settings, db, project, arrays.ids)

    db_ms, (arrays, (_, features, rows)) = _median_ms(db_part, repeats)
    naive_ms: dict[str, float] = {}
    probs = np.asarray(arrays.probs)
    naive_ms["uncertain"], _ = _median_ms(
        lambda: naive_rank(uncertainty_scores(probs, "entropy"), ~arrays.labelled, 50), 1
    )
    flagged = np.asarray(arrays.flagged, dtype=float)
    naive_ms["flagged"], _ = _median_ms(lambda: naive_rank(flagged, ~arrays.labelled, 50), 1)
    x = np.asarray(features)
    naive_ms["diverse"], _ = _median_ms(
        lambda: naive_k_center(x, np.flatnonzero(arrays.labelled), 50), 1
    )
    print(f"DB part (load_arrays + features): {db_ms:.0f} ms")
    for name in registry.names():
        strategy = registry.get(name)
        req = _request(
            arrays,
            features,
            rows if _uses_features(strategy) else None,
            blocked=set(),
            n=50,
            seed=0,
            params=SPEED_PARAMS.get(name, {}),
        )
        alone_ms, _ = _median_ms(lambda s=strategy, r=req: s(r), repeats)
        total_ms, result = _median_ms(lambda nm=name: service(nm), repeats)
        naive = naive_ms.get(name)
        ratio = "n/a" if naive is None else f"{naive / alone_ms:.1f}x"
        verdict = "ok" if total_ms < 300 else "over 300 ms"
        print(
            f"  {name:<10} next 50: {total_ms:7.0f} ms ({verdict}); "
            f"strategy alone {alone_ms:7.1f} ms"
            f"; naive {'-' if naive is None else f'{naive:.0f}'} ms; speed-up {ratio}"
            f"  [served {len(result.items)} via {result.strategy_used}]",
            flush=True,
        )
        lines.append(
            f"| {name} | {total_ms:.0f} | {db_ms:.0f} | {alone_ms:.1f} | "
            f"{'-' if naive is None else f'{naive:.0f}'} | {ratio} |"
        )
    # kNN: one query item against every item
    query = x[123]
    # the service keeps each matrix's row norms (services/queues/similar.py): one pass
    norms = row_norms(x)
    knn_ms, (found, _) = _median_ms(lambda: cosine_knn(x, query, 50, norms=norms), repeats)
    cold_ms, _ = _median_ms(lambda: cosine_knn(x, query, 50), repeats)
    from sklearn.neighbors import NearestNeighbors

    index = NearestNeighbors(n_neighbors=50, metric="cosine", algorithm="brute").fit(x)
    brute_ms, (_, brute) = _median_ms(lambda: index.kneighbors(query[None, :]), repeats)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    argsort_ms, full = _median_ms(
        lambda: np.argsort(-(unit @ (query / np.linalg.norm(query))))[:50], 1
    )
    same = len(set(found.tolist()) & set(brute[0].tolist()))
    knn_line = (
        f"kNN (cosine, 50 neighbours of one item, {n:,} x {dim}): {knn_ms:.1f} ms "
        f"({'ok' if knn_ms < 50 else 'over 50 ms'}; {cold_ms:.1f} ms without kept norms); "
        f"sklearn NearestNeighbors brute "
        f"{brute_ms:.1f} ms ({brute_ms / knn_ms:.1f}x slower); pre-normalised rows + full argsort "
        f"{argsort_ms:.1f} ms ({argsort_ms / knn_ms:.2f}x); "
        f"same neighbours as sklearn: {same}/50"
    )
    print(knn_line, flush=True)
    assert same >= 49 and full[0] == found[0]
    return [*lines, "", knn_line]


# -- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, 120 labels, 20k items")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--budget", type=int, nargs="+", default=[200, 200])
    parser.add_argument("--backbone", choices=("classic", "default"), default="classic")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--skip", nargs="*", default=[], choices=("curves", "mistakes", "speed"))
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.budget, args.items = 2, [120, 120], 20_000
    from loupe.plugins import load_plugins

    members = ["classic"] if args.backbone == "classic" else ["effnet-lite0", "mobilenet_v2"]
    backbone = "+".join(members)
    parts: dict[str, list[str]] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="loupe-al-") as tmp:
        home = Path(tmp)
        _env(home)
        load_plugins()
        for name, budget in zip(args.sets, args.budget * len(args.sets), strict=False):
            if "curves" in args.skip and "mistakes" in args.skip:
                break
            sim = setup(home, name, members)
            print(
                f"{name}: {len(sim.truth)} pool, {len(sim.held_truth)} held out, "
                f"{len(sim.classes)} classes; setup {sim.timings}",
                flush=True,
            )
            if "curves" not in args.skip:
                result = curves_for(sim, tuple(args.strategies), args.seeds, budget)
                parts[f"curves-{name}"] = [*report_curves(name, result, budget, backbone), ""]
                if not args.no_docs:
                    CACHE.mkdir(parents=True, exist_ok=True)
                    np.savez(  # the raw curves, to re-plot or re-read without a rerun
                        CACHE / f"curves-{name}-{backbone}.npz",
                        counts=np.asarray(result["counts"]),
                        full=result["full"],
                        **{f"acc_{k}": v for k, v in result["curves"].items()},
                    )
                    out = DOCS / f"active-learning-{name}.png"
                    plot(name, result["counts"], result["curves"], result["goal"], out)
                    parts[f"curves-{name}"] += [
                        f"![{name} learning curves](active-learning-{name}.png)",
                        "",
                    ]
                per = sim.timings["train"] / max(1, sim.timings["trainings"])
                print(f"  {sim.timings['trainings']} trainings, {per:.2f} s each on average")
            if "mistakes" not in args.skip:
                parts[f"mistakes-{name}"] = [*mistakes_check(sim, args.seeds), ""]
        if "speed" not in args.skip:
            big = home / "speed"
            big.mkdir()
            _env(big)
            parts["speed"] = speed(big, args.items, args.dim, repeats=3)
    elapsed = time.perf_counter() - started
    print(
        f"total {elapsed:.0f} s "
        f"(load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
    )
    if not args.no_docs and not args.quick:
        command = " ".join(argv if argv is not None else sys.argv[1:])
        write_doc(parts, command, elapsed)
    return 0


SECTIONS = {
    "notes": "## What it shows",
    "curves": "## Labels needed per strategy",
    "mistakes": "## Finding flipped labels (`mistakes`)",
    "speed": "## Speed",
}


def write_doc(parts: dict[str, list[str]], command: str, elapsed: float) -> None:
    """Keep each part's latest run (``.cache``) and assemble ``docs/active-learning.md``."""
    CACHE.mkdir(parents=True, exist_ok=True)
    for part, lines in parts.items():
        if lines:
            note = f"_Run: `nice .venv/bin/python benchmarks/active_learning.py {command}`_"
            (CACHE / f"doc-{part}.md").write_text("\n".join([note, "", *lines]))
    out = [
        "# Active learning: what the queues save, measured",
        "",
        "Produced by `benchmarks/active_learning.py`; its docstring describes the method.",
        "In short: a simulated annotator answers with the true labels of two real image",
        "sets shipped in wheels (scikit-learn `load_digits`; 32 x 32 patches of six",
        "`skimage.data` photographs: brick, grass, gravel, moon, cell,",
        "immunohistochemistry), through the real services on SQLite: ingest, feature",
        "store, `labels.set_label`, `queues.next_items` (10 per round), `train_project`",
        "after every round, accuracy of each saved model on a fixed 30% held-out split",
        "that is never labelled. 2 labels per class to start, 5 seeds.",
        "",
        "Backbone: `classic` (colour/HOG/LBP/GLCM, no torch). Measured on digits on",
        "this 2-core machine: a retrain after a round took about 0.2 s with `classic` and",
        "0.8-1.3 s with the default effnet-lite0 + mobilenet_v2 ensemble (at 20-50 labels,",
        "idle machine); 5 seeds x 4 strategies x 2 sets is about 900 trainings, which",
        "with the default ensemble would not fit in 15 minutes on 2 cores.",
        "`--backbone default` runs the same benchmark on the default ensemble.",
        "",
    ]
    for section, title in SECTIONS.items():
        saved = sorted(CACHE.glob(f"doc-{section}*.md"))
        if saved:
            out += [title, ""]
            out += [line for path in saved for line in [path.read_text().rstrip(), ""]]
    (DOCS / "active-learning.md").write_text("\n".join(out).rstrip() + "\n")


if __name__ == "__main__":
    sys.exit(main())
