"""Recipe selection with error bars: each recipe on several validation folds cut between video
sequences (and optionally several seeds), scored by its best-epoch validation mDice@0.5.

    python benchmarks/ablation.py --data ../shared/data/cvc-clinicdb-dev \\
        --recipes reference,tuned --folds 1,2,3 --loss dice --out ablation

Every (recipe, fold, seed) trains with ``train.py`` into ``OUT/<recipe>-f<fold>-s<seed>``; a
finished run is not trained again, so the script can be stopped and restarted. It ends with
markdown tables: each recipe's mean +- standard deviation over folds/seeds and every run's score
(best epoch, last epoch, mean of the last epochs), then each recipe minus the baseline
(``--baseline``, default the first recipe) pair by pair, on the same fold and seed: the mean +- sd
of the differences, how many pairs it wins, and its worst. ``--report-only`` prints the tables
of the runs already finished. ``--against DIR`` adds each recipe minus the same recipe's runs in
another folder, pair by pair: the same recipes at another ``--epochs``, say, or trained on
another CPU.

Flags the script does not know go to train.py: ``--threads 1`` trains each run on one CPU
thread, as the Intel rounds of docs/RESULTS.md did (with OMP_NUM_THREADS=1); on that CPU one
thread and two give different runs, so repeat a figure with the count it was trained with
(``config.json``'s ``run.threads`` since the option exists). A finished run is not trained
again whatever count it had, so check ``run.threads`` before one table mixes two counts.

The folds hold out consecutive whole video sequences of frames 1-428 (see the dataset README)
and train on the rest of 1-428, so no fold validates on a near-duplicate of a training frame.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unet_scratch.data import describe_frames, parse_frames  # noqa: E402
from unet_scratch.errors import BROKEN_PIPE, INTERRUPTED, exit_with  # noqa: E402
from unet_scratch.report import read_metrics  # noqa: E402
from unet_scratch.train import main as train_main  # noqa: E402

# validation folds: whole sequences (frames 1-428 hold 20 of them)
FOLDS = {
    1: "364-428",  # sequences 18-20, the default validation split
    2: "278-363",  # sequences 14-17
    3: "178-277",  # sequences 9-13
    4: "68-151",  # sequences 4-7
}

# recipes: train.py flags (explicit flags win over a preset's values)
RECIPES = {
    "reference": ["--preset", "reference"],
    "adamw-cosine": ["--preset", "reference", "--optimizer", "adamw", "--lr", "1e-3",
                     "--weight-decay", "1e-4", "--schedule", "cosine", "--warmup-epochs", "1"],
    "tuned": ["--preset", "tuned"],
    # one lever each on top of the defaults (accuracy on unseen videos, docs/RESULTS.md)
    "wd05": ["--preset", "tuned", "--weight-decay", "0.05"],
    "droppath02": ["--preset", "tuned", "--drop-path", "0.2"],
    "headdropout01": ["--preset", "tuned", "--head-dropout", "0.1"],
    "nnunet-aug": ["--preset", "tuned", "--augment", "flips,rot90,affine-wide,color,gamma,blur,noise,lowres"],
    "copypaste": ["--preset", "tuned", "--augment", "flips,rot90,affine,color,copypaste"],
    "cutmix": ["--preset", "tuned", "--augment", "flips,rot90,affine,color,cutmix"],
    "deep-supervision": ["--preset", "tuned", "--deep-supervision"],
    "jaccard-log": ["--preset", "tuned", "--jaccard-log"],
    "lovasz": ["--preset", "tuned", "--jaccard-lovasz"],
    "focal-positives": ["--preset", "tuned", "--focal-normalize", "positives"],
    "focal-alpha09": ["--preset", "tuned", "--focal-alpha", "0.9"],
    "lr5e-4": ["--preset", "tuned", "--lr", "5e-4"],
    "lr2e-3": ["--preset", "tuned", "--lr", "2e-3"],
    "light-aug": ["--preset", "tuned", "--augment", "flips,rot90"],
    "no-skips": ["--preset", "tuned", "--skips", "none"],
    "zero-init": ["--preset", "tuned", "--zero-init-residual"],
    "batch-ratio": ["--preset", "tuned", "--loss-reduction", "batch"],
    "ema998": ["--preset", "tuned", "--ema", "0.998"],
    "head-prior": ["--preset", "tuned", "--head-prior", "0.1"],
    "color-wide": ["--preset", "tuned", "--augment", "flips,rot90,affine,color-wide"],
    "gamma": ["--preset", "tuned", "--augment", "flips,rot90,affine,color,gamma"],
    "image-norm": ["--preset", "tuned", "--normalization", "image"],
    "sgd02": ["--preset", "tuned", "--optimizer", "sgd", "--lr", "0.02"],
    "sgd10": ["--preset", "tuned", "--optimizer", "sgd", "--lr", "0.1"],
    "fp32": ["--preset", "tuned", "--amp", "off"],
    "beta2-099": ["--preset", "tuned", "--adam-beta2", "0.99"],
}  # fmt: skip


def train_frames_for(fold: str) -> str:
    held_out = set(parse_frames(fold))
    return describe_frames([n for n in range(1, 429) if n not in held_out])


LAST_EPOCHS = 5  # the steadier score: validation mDice averaged over the run's last epochs


Scores = tuple[float, int, float, float] | None  # what run_scores() returns for one run


def run_scores(run_dir: Path) -> Scores:
    """``(best-epoch val mDice, best epoch, last-epoch val mDice, mean val mDice of the last
    LAST_EPOCHS epochs)`` of a finished run, else None.

    Read from metrics.csv (one row per epoch) and config.json, so a run trained with ``--keep
    best`` (no last.pt) counts too; the best epoch is the one with the best validation IoU, as
    train.py picks it. Validation mDice moves by up to 0.06 between consecutive epochs at the
    end of a run (fold 1), so one epoch's score is a noisy measure of a recipe; the mean of
    the last epochs is less so, and it involves no selection on the validation frames.
    """
    rows, config = read_metrics(run_dir), run_dir / "config.json"
    if not rows or not config.is_file() or len(rows) < json.loads(config.read_text())["epochs"]:
        return None  # unfinished
    best = max(rows, key=lambda r: r["val_iou"])  # the first of equal maxima, as train.py
    tail = statistics.mean(r["val_dice"] for r in rows[-LAST_EPOCHS:])
    return best["val_dice"], int(best["epoch"]), rows[-1]["val_dice"], tail


def run_name(recipe: str, fold: int, seed: int) -> str:
    """The folder of one (recipe, fold, seed) run inside ``--out``: ``tuned-f1-s47``."""
    return f"{recipe}-f{fold}-s{seed}"


def mean_sd(scores: list[float], sign: str = "") -> str:
    """``mean ± sd`` (the mean alone for one score, "—" for none); ``sign="+"`` signs the mean."""
    if len(scores) > 1:
        return f"{statistics.mean(scores):{sign}.3f} ± {statistics.stdev(scores):.3f}"
    return f"{scores[0]:{sign}.3f}" if scores else "—"


SCORES = (
    ("best-epoch", "best epoch", 0),
    ("last-epoch (no selection)", "last epoch", 2),
    (f"mean of the last {LAST_EPOCHS} epochs'", f"last {LAST_EPOCHS} epochs", 3),
)  # (table title, short name, element of run_scores()) of each score


def paired_differences(recipe: list[Scores], baseline: list[Scores], pick: int) -> list[float]:
    """``recipe`` minus ``baseline``, element ``pick`` of :func:`run_scores`, on every (fold, seed)
    where both have finished; the two lists hold the runs' scores in the same (fold, seed) order.

    Paired because the fold is most of the variance: the same recipe scores 0.58 on one fold
    and 0.70 on another, so two recipes' means over folds can differ by less than either's
    spread while one wins on every fold. Both runs of a pair start from the same weights (the
    seed) and validate on the same sequences.
    """
    return [a[pick] - b[pick] for a, b in zip(recipe, baseline) if a is not None and b is not None]


def paired_row(recipe: str, baseline: str, score: str, diffs: list[float]) -> str:
    """One markdown row: mean +- sd of the differences, the pairs the recipe wins, its worst."""
    if not diffs:
        return f"| {recipe} − {baseline} | {score} | — | 0 of 0 | — |"
    won = f"{sum(d > 0 for d in diffs)} of {len(diffs)}"
    return f"| {recipe} − {baseline} | {score} | {mean_sd(diffs, '+')} | {won} | {min(diffs):+.3f} |"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--recipes", default="reference,tuned", help=f"comma list of {', '.join(RECIPES)}")
    p.add_argument("--folds", default="1,2,3", help=f"comma list of {', '.join(map(str, FOLDS))}")
    p.add_argument("--seeds", default="47", help="comma list of seeds")
    p.add_argument("--loss", default="dice")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--out", default="ablation")
    p.add_argument("--report-only", action="store_true", help="print the table of finished runs")
    p.add_argument("--baseline", help="the recipe the others are compared with pair by pair (default: first)")
    p.add_argument("--against", metavar="DIR",
                   help="also print each recipe here minus the same recipe, fold and seed in DIR, "
                        "e.g. trained with another --epochs or on another CPU")  # fmt: skip
    args, extra = p.parse_known_args(argv)  # anything else goes to train.py (e.g. --device)

    recipes = args.recipes.split(",")
    folds = [int(f) for f in args.folds.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.against is not None:  # checked before anything trains: a typo must not cost a grid
        there = Path(args.against)
        names = [run_name(r, f, s) for r in recipes for f in folds for s in seeds]
        problem = (
            "is the --out folder itself" if there.resolve() == Path(args.out).resolve()
            else "holds none of these runs" if not any((there / n).is_dir() for n in names)
            else None
        )  # fmt: skip
        if problem:
            print(f"ablation.py: --against {there} {problem}; give the --out of the runs to compare with "
                  f"(folders {names[0]} ...)", file=sys.stderr)  # fmt: skip
            return 2
    for recipe in recipes:
        for fold in folds:
            for seed in seeds:
                name = run_name(recipe, fold, seed)
                if args.report_only or run_scores(Path(args.out) / name) is not None:
                    continue
                flags = [*RECIPES[recipe], "--loss", args.loss,
                         "--data", args.data, "--train-frames", train_frames_for(FOLDS[fold]),
                         "--val-frames", FOLDS[fold], "--seed", str(seed), "--epochs", str(args.epochs),
                         "--out", args.out, "--name", name, "--overwrite", *extra]  # fmt: skip
                print(f"### {name}", flush=True)
                status = train_main(flags)
                # Ctrl-C: the grid stops, and so does a loop running it; `| head`: quietly
                if status in (INTERRUPTED, BROKEN_PIPE):
                    return status
                if status != 0:
                    return 2

    runs = [(fold, seed) for fold in folds for seed in seeds]
    baseline = args.baseline or recipes[0]
    # every run's scores, read once for all the tables (the baseline may be a folder not trained here)
    results = {
        r: [run_scores(Path(args.out) / run_name(r, f, s)) for f, s in runs]
        for r in dict.fromkeys([*recipes, baseline])
    }
    for label, _, pick in SCORES:
        print(f"\nloss {args.loss}, {label} validation mDice@0.5, folds {args.folds}, seeds {args.seeds}\n")
        print("| recipe | mean ± sd | " + " | ".join(f"f{f}-s{s}" for f, s in runs) + " |")
        print("|---|---|" + "---|" * len(runs))
        for recipe in recipes:
            epoch = [f" (ep {r[1]})" if r is not None and pick == 0 else "" for r in results[recipe]]
            cells = ["—" if r is None else f"{r[pick]:.3f}{e}" for r, e in zip(results[recipe], epoch)]
            scores = [r[pick] for r in results[recipe] if r is not None]
            print(f"| {recipe} | {mean_sd(scores)} | " + " | ".join(cells) + " |")

    others = [r for r in recipes if r != baseline]
    if others:
        print(f"\nloss {args.loss}, each recipe minus {baseline} on the same fold and seed\n")
        print("| recipe − baseline | score | mean ± sd of the differences | pairs won | worst |")
        print("|---|---|---|---|---|")
        for _, score, pick in SCORES:
            for recipe in others:
                diffs = paired_differences(results[recipe], results[baseline], pick)
                print(paired_row(recipe, baseline, score, diffs))

    if args.against is not None:
        theirs = {r: [run_scores(Path(args.against) / run_name(r, f, s)) for f, s in runs] for r in recipes}
        print(f"\nloss {args.loss}, each recipe in {args.out} minus the same recipe, fold and seed in "
              f"{args.against}\n")  # fmt: skip
        print("| recipe here − the same there | score | mean ± sd of the differences | pairs won | worst |")
        print("|---|---|---|---|---|")
        for _, score, pick in SCORES:
            for recipe in recipes:
                diffs = paired_differences(results[recipe], theirs[recipe], pick)
                print(paired_row(f"{recipe} ({args.out})", f"{recipe} ({args.against})", score, diffs))
    return 0


if __name__ == "__main__":
    exit_with(main())
