"""Figures are written, and Figure 2 draws the lab's own specs, each on the side of the property lab.audit measures."""
import numpy as np
import torch

import lab
from lab import figures


def test_write_figures(tmp_path):
    paths = figures.write_figures(tmp_path / "figs")
    assert sorted(p.name for p in paths) == sorted(f"figure{i}.{ext}" for i in (2, 3, 4) for ext in ("png", "pdf"))
    for path in paths:
        head = path.read_bytes()[:8]
        assert path.stat().st_size > 10_000 and head.startswith(b"\x89PNG" if path.suffix == ".png" else b"%PDF")


def test_figure2_curves_are_the_specs_and_satisfy_or_violate_their_panels_property():
    fig = figures._figure2()
    assert [ax.get_title() for ax in fig.axes] == ["Zero-centered", "Bounded", "Center Sensitive", "Monotonic"]
    for ax, (prop, (_, good, bad, good_specs, bad_specs, _)) in zip(fig.axes, figures.FIGURE2.items()):
        drawn = [line for line in ax.get_lines() if ":" in line.get_label()]
        assert [line.get_label() for line in drawn] == [f"{good}: {s}" for s in good_specs] + \
            [f"{bad}: {s}" for s in bad_specs]
        for line in drawn:
            label, spec = line.get_label().split(": ")
            x = np.asarray(line.get_xdata())
            assert np.allclose(line.get_ydata(), lab.pointwise(spec).value(torch.from_numpy(x)).numpy())
            assert lab.audit(spec)[prop] is (label == good), (prop, spec)
            assert line.get_color() == (figures.BLUE if label == good else figures.RED)


def fake(spec, seed=0, top1=50.0, kind=None):
    history = [{"epoch": e, "step": 10 * e, "train_loss": 7.0 - e, "val_top1": top1, "val_top1_ema": top1,
                "lr": 1e-3} for e in (1, 2, 3)]
    return {"spec": spec, "protocol": "smoke", "status": "failed" if kind else "ok", "seed": seed,
            "failure": {"step": 25, "reason": "x", "kind": kind} if kind else None, "top1": None if kind else top1,
            "top1_ema": None, "config_hash": "h", "history": history[:2] if kind else history,
            "loss_curve": [[5 * i, 7.0 - 0.5 * i] for i in range(1, 7)]}


def test_result_figures(tmp_path):
    """Table 6: two panels, a one-row panel, two seeds, a diverged and a never-learned cell."""
    records = [fake("erf"), fake("erf", seed=1, top1=52.0), fake("erf|neg"), fake("dampx", kind="diverged"),
               fake("sin", kind="no_learning")]
    paths = figures.training_curves("table6", records, tmp_path)
    paths += figures.accuracy_vs_lambda("table6", records, tmp_path)
    assert [p.name for p in paths] == [f"table6_{kind}.{ext}" for kind in ("training_curves", "accuracy_vs_lambda")
                                       for ext in ("png", "pdf")]
    assert all(p.stat().st_size > 10_000 for p in paths)


def test_result_figures_without_results(tmp_path):
    assert figures.training_curves("table2", [], tmp_path) == []
    assert [p.name for p in figures.accuracy_vs_lambda("table2", [], tmp_path)] == [
        "table2_accuracy_vs_lambda.png", "table2_accuracy_vs_lambda.pdf"]


def test_transform_gallery_draws_every_transform_with_its_tables_values(tmp_path):
    paths = figures.transforms(tmp_path)
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 10_000 for p in paths)
    assert {name for name, _, _ in figures.TRANSFORM_GALLERY} == set(lab.TRANSFORMS)
