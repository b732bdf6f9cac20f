"""The property audit agrees with the paper's classification of every Section-3 variant."""
import math

import numpy as np
import pytest

import lab

P = ("zero_centered", "bounded", "center_sensitive", "monotonic")
PAPER = {  # spec: (zero-centered, bounded, center-sensitive, monotonic) as the paper's Section 3 classifies it
    "erf": (1, 1, 1, 1), "tanh": (1, 1, 1, 1), "arctan": (1, 1, 1, 1), "isru": (1, 1, 1, 1),
    "erf|hshift=0.1": (0, 1, 1, 1), "erf|hshift=-2": (0, 1, 1, 1), "tanh|vshift=0.5": (0, 1, 1, 1),
    "erf|vshift=2": (0, 1, 1, 1), "arctan|vshift=-0.1": (0, 1, 1, 1),
    "arcsinh": (1, 0, 1, 1), "logsign": (1, 0, 1, 1), "logquad": (1, 0, 1, 1), "power23": (1, 0, 1, 1),
    "linear": (1, 0, 1, 1), "arcsinh|clip=0.5": (1, 1, 1, 1), "logsign|clip=5": (1, 1, 1, 1),
    "linear|clip=1": (1, 1, 1, 1),
    "erf|blend=0.01": (1, 0, 1, 1), "erf|blend=0.5": (1, 0, 1, 1), "isru|blend=0.1": (1, 0, 1, 1),
    "erf|flat=0.1": (1, 1, 0, 1), "erf|flat=1": (1, 1, 0, 1), "arctan|flat=3": (1, 1, 0, 1),
    "erf|neg": (1, 1, 1, 1), "tanh|neg": (1, 1, 1, 1),
    "sin": (1, 1, 1, 0), "dampx": (1, 1, 1, 0), "dampexp": (1, 1, 1, 0),
}


@pytest.mark.parametrize("spec", sorted(PAPER))
def test_audit_matches_the_papers_classification(spec):
    result = lab.audit(spec)
    assert tuple(int(result[p]) for p in P) == PAPER[spec], {k: result[k] for k in P}


def test_audit_reports_the_numbers_behind_each_verdict():
    a = lab.audit("erf|hshift=0.5")
    assert a["f0"] == pytest.approx(0.5204998778) and a["zero_crossing"] == pytest.approx(-0.5, abs=1e-3)
    assert lab.audit("erf|vshift=2")["f0"] == 2
    assert lab.audit("erf|flat=1")["flat_halfwidth"] == pytest.approx(1.0)
    narrow = lab.audit("erf|flat=0.0005")                     # narrower than the coarse grid's step: still a zone
    assert narrow["flat_halfwidth"] == pytest.approx(0.0005) and not narrow["center_sensitive"]
    assert lab.audit("erf")["flat_halfwidth"] == 0
    cos = lab.audit("sin|hshift=1.5707963267948966")          # slope 0 at 0, yet it responds to any input off 0
    assert cos["slope_at_0"] == 0 and cos["flat_halfwidth"] == 0 and cos["center_sensitive"]
    assert lab.audit("logsign")["growth"] == pytest.approx(2.0, rel=1e-3)
    assert lab.audit("dampx")["growth"] == 1            # its peak (x = 1) lies between the ±1e6 grid's points
    assert lab.audit("erf|neg")["direction"] == "decreasing"
    assert lab.audit("dampx")["largest_reversal_step"] > 0
    assert lab.audit("erf|hshift=.50")["spec"] == "erf|hshift=0.5"


def test_audit_cli_prints_a_table(capsys):
    from lab.cli import main
    assert main(["audit", "erf", "erf|vshift=2"]) == 0
    out = capsys.readouterr().out
    assert "zero-centered" in out and "✗ f(0)=+2" in out
    assert "growth=" not in out     # the bounded column is a ratio of sups, not a growth rate (Table 4 ranks those)
    assert main(["audit", "erff"]) == 2
    assert "unknown base function 'erff'" in capsys.readouterr().err


def test_audit_table_names_the_bounded_number_a_max_ratio_and_explains_every_column():
    text = lab.principles.audit_table(["arcsinh", "logsign", "logquad", "erf"])
    assert "✗ max|f| ratio 1.91" in text and "✓ max|f| ratio 1" in text
    legend = text.split("\n\n")[1]
    assert legend == "\n".join(lab.principles.LEGEND)
    assert "max|f| on ±1e6 / on ±1e3" in legend and "does not rank growth rates" in legend
    for column in ("zero-centered:", "bounded:", "center-sensitive:", "monotonic:"):
        assert any(line.startswith(column) for line in lab.principles.LEGEND), column


def test_slope_at_0_is_the_derivative_at_0():
    assert lab.audit("tanh")["slope_at_0"] == pytest.approx(1.0, rel=1e-5)                 # tanh'(0) = 1
    assert lab.audit("erf")["slope_at_0"] == pytest.approx(2 / math.sqrt(math.pi), rel=1e-5)   # erf'(0) = 2/√π


def test_largest_reversal_step_is_the_step_against_the_main_direction():
    """0.7·sin x + 0.3·x has slope 0.7·cos x + 0.3 in [−0.4, 1]: it mostly rises, and falls at most 0.4 per unit."""
    a = lab.audit("sin|blend=0.3")
    assert a["direction"] == "non-monotonic"
    assert a["largest_reversal_step"] == pytest.approx(0.4 * 1e-3, rel=1e-3)    # grid step 1e-3


def test_zero_crossing_is_the_root_nearest_0():
    assert lab.audit("sin|hshift=0.5")["zero_crossing"] == pytest.approx(-0.5, abs=1e-6)   # roots kπ − 0.5


def test_flat_zone_must_be_flat_on_both_sides_of_0():
    """flat(x − 0.5) is 0 on [−0.5, 1.5]: flat on [−δ, δ] only up to δ = 0.5."""
    a = lab.audit("erf|flat=1|hshift=-0.5")
    assert a["flat_halfwidth"] == pytest.approx(0.5) and not a["center_sensitive"]


@pytest.mark.parametrize("scale", [2.0, 0.5])      # NaN beyond |x| ≈ 355, or only beyond 1e3 (≈ 1420)
def test_a_function_that_overflows_is_an_error_not_a_verdict(monkeypatch, scale):
    """A tanh written with exp is NaN where exp overflows: the audit says so, rather than give a verdict."""
    import torch
    from lab import functions
    naive = lambda x: (torch.exp(scale * x) - 1) / (torch.exp(scale * x) + 1)     # noqa: E731
    monkeypatch.setitem(functions.BASES, "naivetanh", functions.Base(naive, lambda x: (naive(x), 1 - naive(x) ** 2),
                                                                     "tanh(x)"))
    with pytest.raises(ValueError, match=r"audit 'naivetanh': f is not finite"):
        lab.audit("naivetanh")


def test_zero_centered_means_f0_within_1e_6():
    assert lab.audit("erf|vshift=1e-6")["zero_centered"] and not lab.audit("erf|vshift=2e-6")["zero_centered"]
    assert not lab.audit("erf|hshift=1e-4")["zero_centered"]


def test_bounded_means_growth_below_1_25_from_1e3_to_the_far_end():
    """linear clipped at λ grows λ/1e3 from ±1e3 on: bounded at 1200, not at 1300."""
    assert lab.audit("linear|clip=1200")["bounded"] and not lab.audit("linear|clip=1300")["bounded"]


def test_a_flat_zone_a_few_fine_steps_wide_is_seen():
    a = lab.audit("erf|flat=5e-6")
    assert not a["center_sensitive"] and a["flat_halfwidth"] == pytest.approx(5e-6)


def test_a_function_flat_over_the_whole_window_is_constant_neither_sensitive_nor_monotonic():
    a = lab.audit("erf|flat=25")
    assert a["flat_halfwidth"] == 20 and not a["center_sensitive"]
    assert a["direction"] == "constant" and not a["monotonic"]
    assert lab.audit("erf|flat=10")["flat_halfwidth"] == pytest.approx(10)


def test_a_function_0_on_the_inner_window_that_grows_beyond_is_unbounded():
    a = lab.audit("linear|flat=2000")
    assert a["growth"] == math.inf and not a["bounded"]


def test_no_zero_crossing_reads_none():
    assert lab.audit("erf|vshift=2")["zero_crossing"] is None


def test_an_exact_zero_on_the_grid_is_no_sign_change():
    x = np.array([0.0, 1.0, 2.0, 3.0])
    assert lab.principles.sign_changes(x, np.array([-1.0, 0.0, 0.0, 1.0])).size == 0
    np.testing.assert_allclose(lab.principles.sign_changes(x, np.array([1.0, -1.0, 1.0, 1.0])), [0.5, 1.5])
