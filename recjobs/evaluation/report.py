"""The human-readable evaluation report of a run: report.md and its plot metrics.png."""

from __future__ import annotations

from pathlib import Path

from ..settings import Settings
from ..storage import artifacts
from .metrics import BOOTSTRAP_SAMPLES, prefix

LABELS = {
    "model": "chosen model",
    "reference": "reference recipe",
    "popularity": "popularity",
    "recent_popularity": "recent popularity",
}
METRICS = ("recall_at_10", "ndcg_at_10", "mrr_at_10")
TITLES = {"recall_at_10": "Recall@10", "ndcg_at_10": "NDCG@10", "mrr_at_10": "MRR@10"}


def present(values: dict) -> list[str]:
    """The models a run measured (the reference recipe only on a full night)."""
    return [name for name in LABELS if prefix(name) + "recall_at_10" in values]


def plot(path: Path, values: dict, segments: dict) -> Path:
    """Bars with 95% intervals per metric and model; Recall@10 by history segment."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    models = present(values)
    width = 0.8 / len(models)
    for i, name in enumerate(models):
        means = [values[prefix(name) + m] for m in METRICS]
        errors = [
            [means[j] - values[prefix(name) + m + "_ci_low"] for j, m in enumerate(METRICS)],
            [values[prefix(name) + m + "_ci_high"] - means[j] for j, m in enumerate(METRICS)],
        ]
        left.bar(
            [j + (i - (len(models) - 1) / 2) * width for j in range(len(METRICS))],
            means,
            width,
            yerr=errors,
            capsize=3,
            label=LABELS[name],
        )
    left.set_xticks(range(len(METRICS)), [TITLES[m] for m in METRICS])
    left.set_title("Test metrics with 95% bootstrap intervals")
    left.legend()
    names = sorted(segments, key=lambda s: int(s.split(":")[1].split("-")[0].rstrip("+")))
    for i, name in enumerate(models):
        right.bar(
            [j + (i - (len(models) - 1) / 2) * width for j in range(len(names))],
            [segments[s].get(prefix(name) + "recall_at_10", 0.0) for s in names],
            width,
            label=LABELS[name],
        )
    right.set_xticks(range(len(names)), [f"{s.split(':')[1]}\n({int(segments[s]['n_users'])} users)" for s in names])
    right.set_xlabel("ratings before the test item")
    right.set_title("Recall@10 by history length")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def blend_lines(blend: dict | None, temporal: dict | None) -> list[str]:
    """The report's section on the night's blend: the weights, where they come from, and the
    chosen blend's figures on the temporal windows beside the baselines there."""
    if not blend:
        return []
    lines = [
        "",
        "## The night's blend",
        "",
        f"trend_weight {blend['trend_weight']:g}, trend_days {blend['trend_days']:g}, "
        f"blend_weight {blend['blend_weight']:g}, sequence_weight {blend['sequence_weight']:g}: "
        f"{blend['source']} ({blend['reason']}). The quality gate used the {blend['protocol']} figures.",
    ]
    if temporal:
        lines += [
            "",
            f"On the {int(temporal['n_users'])} user-windows the weights were chosen on (what each user rated "
            "in the days after a fit on the ratings before them):",
            "",
            "| lists | Recall@10 | NDCG@10 |",
            "|---|---|---|",
            f"| the chosen blend | {temporal['recall_at_10']:.4f} | {temporal['ndcg_at_10']:.4f} |",
            f"| the configured weights | {temporal['configured_recall_at_10']:.4f} | |",
            f"| {LABELS['popularity']} | {temporal['popularity_recall_at_10']:.4f} | "
            f"{temporal['popularity_ndcg_at_10']:.4f} |",
            f"| {LABELS['recent_popularity']} | {temporal['recent_popularity_recall_at_10']:.4f} | "
            f"{temporal['recent_popularity_ndcg_at_10']:.4f} |",
        ]
    return lines


def write_report(
    directory: Path,
    run_id: str,
    metric_rows: list[tuple[str, str, float]],
    settings: Settings,
    blend: dict | None = None,
    temporal: dict | None = None,
) -> Path:
    values = {m: v for m, s, v in metric_rows if s == "all"}
    segments: dict[str, dict[str, float]] = {}
    for metric, segment, value in metric_rows:
        if segment != "all":
            segments.setdefault(segment, {})[metric] = value
    picture = plot(Path(directory) / artifacts.PLOT, values, segments)

    def cell(name, metric):
        key = prefix(name) + metric
        return f"{values[key]:.4f} [{values[key + '_ci_low']:.4f}, {values[key + '_ci_high']:.4f}]"

    lines = [
        f"# Evaluation of run {run_id}",
        "",
        "## Next-item accuracy (leave-last-out)",
        "",
        f"{int(values['n_users'])} users, each evaluated on their last positive rating (the test item). "
        "The night's one fit saw only what each of them rated before it; every movie rated before it "
        "is filtered. The reference recipe is fitted on full nights only. "
        f"Intervals: 95% bootstrap over users ({BOOTSTRAP_SAMPLES} resamples). "
        "Coverage@10: share of the catalog in "
        "any top-10 list; mean popularity@10: how many users had rated a recommended movie, on average.",
        "",
        "| model | Recall@10 | NDCG@10 | MRR@10 | coverage@10 | mean popularity@10 |",
        "|---|---|---|---|---|---|",
    ]
    models = present(values)
    for name in models:
        p = prefix(name)
        lines.append(
            f"| {LABELS[name]} | {cell(name, 'recall_at_10')} | {cell(name, 'ndcg_at_10')} | "
            f"{cell(name, 'mrr_at_10')} | {values[p + 'coverage_at_10']:.3f} | "
            f"{values[p + 'mean_popularity_at_10']:.1f} |"
        )
    lines += ["", "Gain of the chosen model (paired bootstrap):", ""]
    for baseline in models[1:]:
        for metric in ("recall_at_10", "ndcg_at_10"):
            key = f"{metric}_gain_over_{baseline}"
            lines.append(
                f"- {TITLES[metric]} over {LABELS[baseline]}: {values[key]:+.4f} "
                f"[{values[key + '_ci_low']:+.4f}, {values[key + '_ci_high']:+.4f}]"
            )
    lines += [
        "",
        "## By history length (ratings before the test item)",
        "",
        "| segment | users | Recall@10 model | " + " | ".join(LABELS[m] for m in models[1:]) + " | NDCG@10 model |",
        "|---|---|---|" + "---|" * len(models[1:]) + "---|",
    ]
    for segment in sorted(segments, key=lambda s: int(s.split(":")[1].split("-")[0].rstrip("+"))):
        seg = segments[segment]
        lines.append(
            f"| {segment.split(':')[1]} | {int(seg['n_users'])} | {seg['recall_at_10']:.4f} | "
            + "".join(f"{seg[prefix(m) + 'recall_at_10']:.4f} | " for m in models[1:])
            + f"{seg['ndcg_at_10']:.4f} |"
        )
    lines += blend_lines(blend, temporal)
    lines += [
        "",
        f"![metrics]({picture.name})",
        "",
        "## Settings",
        "",
        "```",
        *[f"{k} = {v}" for k, v in settings.model_params().items()],
        "```",
        "",
    ]
    text = "\n".join(lines)
    return artifacts.write_atomically(Path(directory) / artifacts.REPORT, lambda temp: temp.write_text(text))
