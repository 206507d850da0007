"""report: the per-run markdown report and its plot."""

from __future__ import annotations

import numpy as np

from recjobs.evaluation import metrics
from recjobs.evaluation.report import write_report
from recjobs.jobs import evaluate as ev
from recjobs.settings import Settings


def test_report_has_every_model_interval_and_segment(tmp_path):
    rng = np.random.default_rng(3)
    n = 200
    targets = rng.integers(0, 50, n)
    tops = {name: rng.integers(0, 50, (n, 10)) for name in metrics.MODELS}
    tops["model"][: n // 2, 0] = targets[: n // 2]  # half the users get their item first
    per_user = {name: metrics.per_user_metrics(top, targets) for name, top in tops.items()}
    segments = ev.history_segment(rng.integers(1, 400, n))
    rows = ev.summarize(per_user, tops, segments, rng.integers(1, 100, 50).astype(float))
    path = write_report(tmp_path, "r1", rows, Settings())

    text = path.read_text()
    values = {m: v for m, s, v in rows if s == "all"}
    assert values["mrr_at_10"] >= 0.5 and values["ndcg_at_10"] >= 0.5
    model_line = next(line for line in text.splitlines() if line.startswith("| chosen model |"))
    assert (
        f"{values['recall_at_10']:.4f} [{values['recall_at_10_ci_low']:.4f}, {values['recall_at_10_ci_high']:.4f}]"
    ) in model_line
    assert "| reference recipe |" in text and "| popularity |" in text
    for segment in set(segments):
        assert f"| {segment.split(':')[1]} | {int((segments == segment).sum())} |" in text
    assert "Recall@10 over reference recipe: +" in text
    assert (tmp_path / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![metrics](metrics.png)" in text
