"""bench/router.py draws its deferral curves with matplotlib: a real PNG of the size asked for,
with the axes labelled and one legend entry per curve."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from bench.router import DEFERRAL_LABELS, write_plot  # noqa: E402


def test_the_deferral_plot_is_a_labelled_png(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib import image, pyplot

    drawn = {}
    save = pyplot.Figure.savefig

    def keep(figure, path, *args, **kwargs):
        axes = figure.axes[0]
        drawn.update(
            x=axes.get_xlabel(), y=axes.get_ylabel(), title=axes.get_title(),
            legend=[text.get_text() for text in axes.get_legend().get_texts()],
        )
        return save(figure, path, *args, **kwargs)

    monkeypatch.setattr(pyplot.Figure, "savefig", keep)
    target = tmp_path / "nested" / "deferral.png"
    curves = {
        "router": [(0.0, 0.3), (0.5, 0.8), (1.0, 1.0)],
        "mean_logprob": [(0.0, 0.3), (0.5, 0.6), (1.0, 1.0)],
        "random": [(0.0, 0.3), (1.0, 1.0)],
    }
    write_plot(target, curves, "Router deferral on a test set")

    pixels = image.imread(target)
    assert pixels.shape[0] > 300 and pixels.shape[1] > 300
    assert "escalated" in drawn["x"] and "answered well" in drawn["y"]
    assert drawn["title"] == "Router deferral on a test set"
    assert drawn["legend"] == [DEFERRAL_LABELS[name] for name in curves]
