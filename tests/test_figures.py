"""Figures are written, and Figure 2 draws the lab's own specs, each on the side of the property lab.audit measures;
legends speak math and name the spec, failures cannot be read as values, and neighbouring training curves can be told
apart."""
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgb

import lab
from lab import ablations, figures
from lab.perturb import parse


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
        specs = good_specs + bad_specs
        assert [line.get_label() for line in drawn] == [f"{good}: {figures.legend_label(s)}" for s in good_specs] + \
            [f"{bad}: {figures.legend_label(s)}" for s in bad_specs]
        for line, spec in zip(drawn, specs, strict=True):
            label = line.get_label().split(": ")[0]
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
    used = {name for t in ablations.TABLES for c in ablations.load(t).cells for name, _ in parse(c.spec)[1]}
    assert {name for name, _, _ in figures.TRANSFORM_GALLERY} == used    # every perturbation of Section 3's tables
    curves = {name: figures._gallery_curves(name, base, table) for name, base, table in figures.TRANSFORM_GALLERY}
    assert [label for label, _ in curves["clip"]] == ["0.5", "0.8", "1", "2", "3", "5", "none"]     # Table 2's λu
    assert [label for label, _ in curves["flat"]] == ["0", "0.1", "0.5", "1", "2", "3"]              # Table 5's λ
    assert curves["hshift"][0] == ("−2", "erf|hshift=-2") and len(curves["hshift"]) == 9             # Table 1's λ
    assert curves["neg"] == [("f", "erf"), ("−f", "erf|neg")]
    assert [label for label, _ in curves["blend"]] == ["none", "0.01", "0.1", "0.5"]     # as Table 3 names λb = 0


def test_transform_gallery_says_which_clip_levels_bind_beyond_the_plot_and_draws_the_plain_f_black(drawn):
    figures.transforms()
    panels = {ax.get_title().split(" ")[0]: ax for ax in drawn[0].axes}
    assert panels["clip"].get_title().startswith("clip (Table 2): ")
    clip = [t.get_text() for t in panels["clip"].get_legend().get_texts()]
    assert clip == ["0.5", "0.8", "1", "2", "3 (binds at |x| ≈ 10)", "5 (binds at |x| ≈ 74)", "none"]  # sinh(λ) > 5
    assert figures._reaches("arcsinh", 3) == pytest.approx(np.sinh(3), rel=1e-3)
    for name, plain in (("clip", -1), ("blend", 0), ("flat", 0), ("hshift", 4)):
        colors = [to_rgb(line.get_color()) for line in panels[name].get_lines() if len(line.get_xdata()) > 2]
        assert colors[plain] == to_rgb("0.1"), name                     # the unperturbed f: black
        others = np.delete(np.array(colors), plain % len(colors), axis=0)
        assert np.linalg.norm(others - to_rgb("0.1"), axis=1).min() > 0.3, name    # and no λ looks like it


def test_figures_name_the_papers_figure_they_redraw(drawn):
    assert figures._figure2().get_suptitle().startswith("Figure 2: ")
    figures.figure3(), figures.figure4()
    assert [fig.axes[0].get_title().split(":")[0] for fig in drawn] == ["Figure 3", "Figure 4"]
    figures.training_curves("table5", [fake("erf"), fake("erf|flat=0.5")])
    assert "Figure 7" in drawn[-1].get_suptitle()           # the paper's appendix figure of Table 5's losses
    figures.training_curves("table3", [fake("erf"), fake("erf|blend=0.1")])
    assert "Figure" not in drawn[-1].get_suptitle()         # the paper has none for Table 3


def test_figure3_marks_where_the_first_failing_function_overtakes_the_fastest_that_trains(drawn):
    """On [0, 18] power23 (× in the paper) lies below logquad from x ≈ 1.9 to 9.8: the legend's order is asymptotic,
    and the last crossover is marked."""
    x = np.linspace(0, 18, 18001)
    at = figures._last_crossing(x, np.log(x ** 2 + 1), x ** (2 / 3))
    assert at == pytest.approx(9.76, abs=0.01) and np.log(at ** 2 + 1) == pytest.approx(at ** (2 / 3), rel=1e-4)
    assert figures._last_crossing(x, x, x + 1) is None
    figures.figure3()
    ax = drawn[0].axes[0]
    assert [t.get_text() for t in ax.texts] == ["power23 passes logquad\nfor good at x ≈ 9.8"]
    assert "x → ∞" in ax.get_legend().get_title().get_text()


@pytest.fixture
def drawn(monkeypatch):
    """The figures the module draws, in order, instead of writing them."""
    figs = []
    monkeypatch.setattr(figures, "_save", lambda fig, out_dir, stem: figs.append(fig) or [])
    return figs


@pytest.mark.parametrize("spec, label", [
    ("erf", "erf(x)"), ("erf|neg", "−erf(x)"), ("erf|hshift=1", "erf(x + 1)"), ("erf|hshift=-0.5", "erf(x − 0.5)"),
    ("erf|vshift=0.5", "erf(x) + 0.5"), ("arcsinh|clip=2", "clip(arcsinh(x), −2, 2)"), ("dampx", "dampx = 2x/(1+x²)"),
    ("dampx|hshift=1", "2(x + 1)/(1+(x + 1)²)"), ("erf|vshift=0.5|neg", "−(erf(x) + 0.5)"), ("linear", "linear = x"),
    ("tanh|neg|blend=0.5", "(1 − 0.5)·(−tanh(x)) + 0.5·x"), ("erf|neg|vshift=0.5", "−erf(x) + 0.5"),
])
def test_math_label_writes_the_function_a_spec_names(spec, label):
    assert figures.math_label(spec) == label


def test_legend_label_is_the_math_and_the_spec_to_train_it_by():
    assert figures.legend_label("erf|hshift=1") == "erf(x + 1)\n[erf|hshift=1]"
    assert figures.legend_label("erf") == "erf(x)" and figures.legend_label("dampx") == "dampx = 2x/(1+x²)"


def test_figures_3_and_4_legends_are_math_and_say_where_the_paper_fails(drawn):
    figures.figure3(), figures.figure4()
    fig3, fig4 = ([line.get_label() for line in fig.axes[0].get_lines()] for fig in drawn)
    assert fig4 == ["erf(x)", "−erf(x)\n[erf|neg]", "sin(x)", "dampx = 2x/(1+x²)", "dampexp = e·x·e^(−|x|)"]
    assert [label for label in fig3 if label.endswith("(× in paper)")] == [
        "power23 = sign(x)·|x|^(2/3) (× in paper)", "linear = x (× in paper)"]


def test_accuracy_failures_lie_below_the_data_area_and_categories_are_not_joined(drawn):
    """Table 6: (a) three series of f / −f, (b) one series of functions, with a failure among them."""
    records = [fake("erf"), fake("erf|neg"), fake("tanh"), fake("dampx", kind="diverged"), fake("sin")]
    figures.accuracy_vs_lambda("table6", records)
    (fig,) = drawn
    fig.draw_without_rendering()
    ax_a_measured, ax_a_paper, ax_b_measured, ax_b_paper = fig.axes
    crosses = [line for line in ax_b_measured.get_lines() if line.get_marker() == "X"]
    assert crosses and all(line.get_transform().transform(line.get_xydata())[:, 1].max() < ax_b_measured.bbox.y0
                           for line in crosses)
    assert ax_a_paper.get_legend() is not None and ax_b_paper.get_legend() is None    # one series: no legend
    assert [ax.get_title() for ax in fig.axes] == [
        "(a) increasing vs decreasing — measured (smoke)", "(a) increasing vs decreasing — paper (ViT-B, ImageNet-1K)",
        "(b) non-monotonic — measured (smoke)", "(b) non-monotonic — paper (ViT-B, ImageNet-1K)"]
    # the strip takes room only in the row with a failure: (a)'s tick labels sit at the axes as usual
    tick_top = [ax.get_xticklabels()[0].get_window_extent().y1 for ax in fig.axes]
    assert ax_a_measured.bbox.y0 - tick_top[0] < ax_b_measured.bbox.y0 - tick_top[2]
    assert all(bar.lines[0].get_linestyle() == "None" for ax in fig.axes for bar in ax.containers)


def test_accuracy_along_lambda_joins_points(drawn):
    """λ is joined along its values, which are the table's, evenly spaced (0.5 is as far from 0.1 as 2 from 3)."""
    figures.accuracy_vs_lambda("table5", [fake("erf"), fake("erf|flat=0.5")])
    assert all(bar.lines[0].get_linestyle() != "None" for ax in drawn[0].axes for bar in ax.containers)
    assert {ax.get_xlabel() for ax in drawn[0].axes} == {"λ (the table's values, evenly spaced)"}


def test_training_curves_are_smoothed_and_neighbouring_lambdas_differ_in_colour(drawn):
    """Table 1, erf horizontal: nine λ (the 0 one a zig-zag loss), each curve a colour of its own."""
    lams = (-2, -1, -0.5, -0.1, 0, 0.1, 0.5, 1, 2)
    records = [fake(lab.canonical(f"erf|hshift={lam}")) for lam in lams]
    records[4]["loss_curve"] = [[i, 2.0 + 0.5 * (-1) ** i] for i in range(1, 41)]
    figures.training_curves("table1", records)
    ax = drawn[0].axes[0]       # (the λ = 0 record, plain erf, also draws on the "erf, vertical" panel)
    assert ax.get_title() == "erf, horizontal"
    curves = [line for line in ax.get_lines() if len(line.get_xdata())]       # (not the legend's empty proxies)
    colors = np.array([to_rgb(line.get_color()) for line in curves])
    assert len(curves) == len(lams) and np.linalg.norm(np.diff(colors, axis=0), axis=1).min() > 0.15
    zigzag = np.asarray(curves[4].get_ydata())
    assert np.ptp(zigzag[5:-5]) < 0.5 and "running mean" in drawn[0].get_suptitle()


def test_accuracy_measured_is_the_seeds_mean_and_spread_beside_the_papers_values(drawn):
    """Left the lab's numbers (mean, ± std error bars over seeds), right the paper's: a mix-up would show the paper's
    values as if measured."""
    records = [fake("erf"), fake("erf", seed=1, top1=52.0), fake("erf|neg", top1=40.0)]
    figures.accuracy_vs_lambda("table6", records)
    measured, paper = (ax.containers[0] for ax in drawn[0].axes[:2])         # panel (a), series erf
    assert list(measured.lines[0].get_ydata()) == [51.0, 40.0] and list(paper.lines[0].get_ydata()) == [82.6, 82.5]
    low, high = measured.lines[2][0].get_segments()[0][:, 1]        # erf's error bar at f(x)
    assert high - low == pytest.approx(2 * np.std([50.0, 52.0], ddof=1))
    assert not paper.lines[2]                       # the paper's values carry no error bar
    assert [t.get_text() for t in drawn[0].axes[1].get_legend().get_texts()] == ["erf", "tanh", "arctan"]


def test_training_curves_are_per_epoch_from_the_fine_loss_curve_scaled_to_the_runs_that_trained(drawn):
    """x in epochs (steps / updates an epoch), from each record's loss curve (not its 3 epoch means), non-finite
    points dropped, and the y axis fitted to the runs that trained: a diverged run's loss would squash them flat."""
    records = [fake("erf"), fake("erf|hshift=1", kind="diverged")]
    records[0]["loss_curve"][2][1] = float("nan")
    records[1]["loss_curve"] = [[5 * i, 20.0] for i in range(1, 7)]
    figures.training_curves("table1", records)
    ax = drawn[0].axes[0]
    ok, failed = (line for line in ax.get_lines() if len(line.get_xdata()) > 1)
    assert ax.get_xlabel() == "epoch" and list(ok.get_xdata()) == [0.5, 1.0, 2.0, 2.5, 3.0]
    assert list(failed.get_xdata()) == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0] and np.isfinite(ok.get_ydata()).all()
    assert ax.get_ylim()[1] == pytest.approx(max(ok.get_ydata()) * 1.05)


@pytest.mark.parametrize("specs, shape", [
    (("erf", "erf|neg", "tanh", "tanh|neg", "arctan", "arctan|neg", "sin", "dampx"), (2, 2)),    # Table 6: 3 + 1
    (("erf|hshift=1", "erf|vshift=1", "tanh|hshift=1", "tanh|vshift=1", "arctan|hshift=1"), (2, 3)),  # 5 of Table 1's
])
def test_training_curves_leave_no_blank_panel(drawn, specs, shape):
    """The grid is sized to the panels that have curves, and a slot it cannot fill is removed, not left blank."""
    table = "table6" if "erf|neg" in specs else "table1"
    figures.training_curves(table, [fake(spec) for spec in specs])
    axes = drawn[0].axes
    assert axes[0].get_subplotspec().get_gridspec().get_geometry() == shape
    assert len(axes) == len({ax.get_title() for ax in axes}) and all(ax.get_lines() for ax in axes)


@pytest.mark.parametrize("specs, shared", [
    (("erf", "erf|hshift=1", "erf|vshift=1", "tanh", "tanh|hshift=1", "tanh|vshift=1"), True),
    (("erf", "erf|hshift=1", "erf|vshift=1", "tanh", "tanh|hshift=1", "tanh|vshift=2"), False),
    (("erf", "erf|hshift=1", "erf|vshift=1", "tanh", "tanh|hshift=1", "tanh|vshift=1|x"), False),
])
def test_training_curves_share_one_legend_when_every_panel_has_the_same_curves(drawn, specs, shared):
    """Table 1's six panels all sweep the same λ: one legend beside them, not six; a panel with other curves (another
    λ, or a failure marked in its label) keeps each panel's own."""
    records = [fake(s.removesuffix("|x"), kind="diverged" if s.endswith("|x") else None) for s in specs]
    figures.training_curves("table1", records)
    fig = drawn[0]
    own = [[t.get_text() for t in ax.get_legend().get_texts()] for ax in fig.axes if ax.get_legend()]
    if shared:
        assert not own and [t.get_text() for t in fig.legends[0].get_texts()] == ["0", "+1"]
        assert fig.legends[0].get_title().get_text() == "λ"
    else:
        assert not fig.legends and len(own) == len(fig.axes) == 4


def reference_labels(ax) -> list[str]:
    return [t.get_text() for t in ax.texts if t.get_text().startswith(f"{figures.REFERENCE}: ")]


def test_accuracy_of_other_functions_is_drawn_against_plain_erf(drawn):
    """Table 6(b)'s functions are read against erf's top-1 from the records (the mean of its seeds) and the paper's
    erf from the tables; (a), where erf is a point, has no line."""
    records = [fake("erf"), fake("erf", seed=1, top1=52.0), fake("tanh"), fake("sin", top1=40.0)]
    figures.accuracy_vs_lambda("table6", records)
    a_measured, a_paper, b_measured, b_paper = drawn[0].axes
    assert reference_labels(a_measured) == reference_labels(a_paper) == []
    assert reference_labels(b_measured) == ["erf: 51.0"] and reference_labels(b_paper) == ["erf: 82.6"]
    for ax, value in ((b_measured, 51.0), (b_paper, 82.6)):
        assert [list(line.get_ydata()) for line in ax.get_lines() if line.get_linestyle() == ":"] == [[value, value]]


def test_accuracy_reference_is_drawn_only_where_erf_was_run(drawn):
    """Table 4 has no erf cell: its measured side has erf's line only if erf's records (same protocol) are given."""
    figures.accuracy_vs_lambda("table4", [fake("linear"), {**fake("erf", top1=45.0), "protocol": "proxy"}],
                               protocol="smoke")
    figures.accuracy_vs_lambda("table4", [fake("linear"), fake("erf", top1=45.0)])
    (without_erf, paper), (with_erf, _) = (fig.axes for fig in drawn)
    assert reference_labels(without_erf) == [] and reference_labels(with_erf) == ["erf: 45.0"]
    assert reference_labels(paper) == ["erf: 82.6"]


def test_accuracy_puts_no_clip_after_the_loosest_clip(drawn):
    """Table 2's "none" is λu = ∞: it is drawn after 5.0, not joined to the tightest clip; Table 3's "none" is
    λb = 0 and stays first."""
    figures.accuracy_vs_lambda("table2", [fake("arcsinh", top1=60.0), fake("arcsinh|clip=0.5", top1=40.0)])
    figures.accuracy_vs_lambda("table3", [fake("erf"), fake("erf|blend=0.1")])
    clip, blend = ([t.get_text() for t in fig.axes[0].get_xticklabels()] for fig in drawn)
    assert clip == ["0.5", "0.8", "1.0", "2.0", "3.0", "5.0", "none"] and blend == ["none", "0.01", "0.1", "0.5"]
    arcsinh = np.asarray(drawn[0].axes[0].containers[0].lines[0].get_ydata(), float)     # measured, by label
    assert (arcsinh[0], arcsinh[-1]) == (40.0, 60.0) and np.isnan(arcsinh[1:-1]).all()


def test_a_table_of_your_own_has_paper_points_and_crosses_only_where_it_gives_a_value(own_table, drawn):
    records = [fake("erf"), fake("erf|hshift=0.3"), fake("erf|hshift=3", kind="diverged"), fake("tanh")]
    figures.accuracy_vs_lambda(own_table, records)
    (fig,) = drawn
    measured, paper = fig.axes
    assert paper.get_title() == "paper (as the table gives it)"
    erf, tanh = (np.asarray(bar.lines[0].get_xydata(), dtype=float) for bar in paper.containers)
    assert np.array_equal(erf[:, 1], [82.6, np.nan, np.nan], equal_nan=True) and np.isnan(tanh[:, 1]).all()
    crosses = [line.get_xdata() for line in paper.get_lines() if line.get_marker() == "X"]
    assert len(crosses) == 1 and list(crosses[0]) == [erf[2, 0]]      # erf's × at λ = 3; none for "no value"
    drawn.clear()
    own_table.write_text(own_table.read_text(encoding="utf-8").replace(", paper: [82.6, null, ×]", ""),
                         encoding="utf-8")
    figures.accuracy_vs_lambda(own_table, records)
    assert [t.get_text() for t in drawn[0].axes[1].texts] == ["no paper values"]


def test_a_table_of_your_owns_figures_are_files_named_by_the_table(own_table, tmp_path):
    records = [fake("erf"), fake("erf|hshift=3", kind="diverged"), fake("tanh")]
    paths = figures.training_curves(str(own_table), records, tmp_path / "figs")
    paths += figures.accuracy_vs_lambda(str(own_table), records, tmp_path / "figs")
    assert [p.relative_to(tmp_path) for p in paths] == [
        Path("figs", f"table_gd_{kind}.{ext}") for kind in ("training_curves", "accuracy_vs_lambda")
        for ext in ("png", "pdf")]


def test_a_table_of_your_own_reads_its_functions_against_the_measured_erf_not_the_papers(tmp_path, drawn):
    path = tmp_path / "table_fs.yaml"
    path.write_text('title: "Two functions"\npanels:\n- row_header: [""]\n  col_header: f\n  spec: "{col}"\n'
                    '  columns: [tanh, sin]\n  rows:\n    - {label: top-1}\n', encoding="utf-8")
    figures.accuracy_vs_lambda(path, [fake("tanh"), fake("sin"), fake("erf", top1=45.0)])
    measured, paper = drawn[0].axes
    assert reference_labels(measured) == ["erf: 45.0"] and reference_labels(paper) == []


def test_a_table_of_your_own_may_compare_against_norm_names(tmp_path, drawn):
    """Derf and the baselines are norm names, not point-wise specs: a table of your own can hold them as cells."""
    path = tmp_path / "table_derf.yaml"
    path.write_text('title: "Derf against its parts"\npanels:\n- row_header: [""]\n  col_header: norm\n'
                    '  spec: "{col}"\n  columns: [LayerNorm, erf, derf]\n  rows:\n    - {label: top-1}\n',
                    encoding="utf-8")
    assert ablations.load(path).specs() == ["layernorm", "erf", "derf"]
    figures.accuracy_vs_lambda(path, [fake("layernorm", top1=60.0), fake("erf"), fake("derf", top1=55.0)])
    measured = drawn[0].axes[0]
    assert [t.get_text() for t in measured.get_xticklabels()] == ["LayerNorm", "erf", "derf"]
    assert list(np.asarray(measured.containers[0].lines[0].get_ydata(), float)) == [60.0, 50.0, 55.0]


def test_a_panel_where_no_cell_trained_says_so(drawn):
    figures.accuracy_vs_lambda("table4", [fake(f, kind="diverged") for f in ("logsign", "linear")])
    measured, _ = drawn[0].axes
    assert [t.get_text() for t in measured.texts if t.get_text() != "failed"] == ["no cell trained"]
    assert list(measured.get_yticks()) == []


def test_a_figure_drawn_twice_is_the_same_bytes(tmp_path, monkeypatch):
    """figures/ is committed: a PDF carries no creation date, so regenerating an unchanged figure changes no file."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")            # matplotlib's clock for the date, a day apart
    first = figures.figure4(tmp_path / "a")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "86400")
    again = figures.figure4(tmp_path / "b")
    assert [p.suffix for p in first] == [".png", ".pdf"]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(first, again))


def test_the_committed_figures_are_what_lab_figures_draws(tmp_path):
    """figures/ must not go stale as the code changes (it once kept titles two sessions old). Bytes compare only under
    the matplotlib that drew them (it names itself in each PNG); regenerate with `lab figures`."""
    import matplotlib
    from PIL import Image
    committed = Path(figures.__file__).parent.parent / "figures"
    drew = Image.open(committed / "figure2.png").text.get("Software", "")
    if f"version{matplotlib.__version__}," not in drew:
        pytest.skip(f"figures/ was drawn by {drew!r}, not matplotlib {matplotlib.__version__}")
    stale = [p.name for p in figures.write_figures(tmp_path) if p.read_bytes() != (committed / p.name).read_bytes()]
    assert stale == [], f"run `lab figures` to redraw {stale}"


def test_accuracy_draws_a_cell_not_run_as_nothing_and_one_where_a_seed_failed_as_a_failure_only(drawn):
    """Table 6(a), series erf: erf trained, erf|neg has a seed that diverged beside one that trained, and tanh / arctan
    were not run. The measured side shows erf's point, a × (no point) for erf|neg, and nothing for the cells not run:
    a cell not run drawn as a ×, or a failed cell as the mean of its seeds that trained, reads as a result."""
    records = [fake("erf"), fake("erf|neg", top1=40.0), fake("erf|neg", seed=1, kind="diverged")]
    figures.accuracy_vs_lambda("table6", records)
    measured = drawn[0].axes[0]
    erf = measured.containers[0].lines[0]             # the erf series at f(x), −f(x)
    assert np.array_equal(np.asarray(erf.get_ydata(), float), [50.0, np.nan], equal_nan=True)
    crosses = [list(line.get_xdata()) for line in measured.get_lines() if line.get_marker() == "X"]
    assert len(crosses) == 1 and len(crosses[0]) == 1 and crosses[0][0] == pytest.approx(erf.get_xdata()[1])


def test_accuracy_reads_functions_against_the_erf_of_the_tables_own_config(drawn):
    """Table 4 has no erf cell: its line is erf's record of the same protocol and config hash only."""
    figures.accuracy_vs_lambda("table4", [fake("linear"), {**fake("erf", top1=99.0), "config_hash": "other"}])
    assert reference_labels(drawn[0].axes[0]) == []


def test_training_curves_smooth_each_seed_apart(drawn):
    """The running mean runs along each run: two seeds whose losses are flat at 1 and 3 stay flat, not mixed where one
    run's points end and the next one's begin."""
    records = [fake("erf"), fake("erf", seed=1)]
    records[0]["loss_curve"] = [[5 * i, 1.0] for i in range(1, 7)]
    records[1]["loss_curve"] = [[5 * i, 3.0] for i in range(1, 7)]
    from lab import tables
    data = figures._loss_frame(tables.collect("table6", records))[0]
    assert sorted(set(data["loss"])) == [1.0, 3.0]
