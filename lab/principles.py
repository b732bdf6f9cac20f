"""Measure the paper's four design principles for any point-wise spec, with the numbers behind each verdict.

Definitions (float64, on the function f itself, before α, γ, β):
- zero-centered: |f(0)| <= ZERO_TOL. Horizontal shifts move the zero crossing off 0 and vertical shifts lift the
  output, and both show up as f(0) != 0; `zero_crossing` is reported too (the root nearest 0, if any).
- bounded: the output stops growing with the input: the sup ratio `growth` = max|f| on [-1e6, 1e6] / max|f| on
  [-1e3, 1e3] is at most BOUND_GROWTH. A saturating f gives ~1, log-type growth ~2, power and linear growth 1e2..1e3.
  The ratio tells bounded from unbounded; it does not rank growth rates within a class: constant factors cancel
  (logquad ~ 2·logsign for large x, and both read 2; arcsinh reads 1.91), so Table 4's order logsign < arcsinh <
  logquad is not this ratio's order (it is Figure 3's).
- center-sensitive: f responds to inputs around 0, i.e. it is not constant on any interval [-δ, δ]:
  `flat_halfwidth` (the largest δ, on a grid of step FINE_STEP within ±0.01 and GRID_STEP beyond, with
  |f(x) - f(0)| <= FLAT_TOL on [-δ, δ]) must be 0. Any flat zone breaks the principle; its width says how badly
  (Table 5). A zero slope at 0 does not (cos, i.e. "sin|hshift=1.5707963267948966", logquad and cubsign respond to
  any input off 0); `slope_at_0` is reported as the secant over ±GRID_STEP.
- monotonic: f never reverses direction on [-MONO_RANGE, MONO_RANGE] (grid step GRID_STEP): all steps
  f(x+h) - f(x) are >= -MONO_TOL, or all are <= MONO_TOL. `direction` says which, or "non-monotonic".
The verdicts are read off finite windows and grids: a bound reached only beyond ±1e3 reads unbounded
(linear|clip=2000), growth too small to show within ±1e6 reads bounded (erf|blend=1e-9), and a flat zone narrower than
FINE_STEP escapes the grid; every spec of Tables 1–6 is far from these limits.
"""
import numpy as np

from .perturb import pointwise

ZERO_TOL = 1e-6
BOUND_GROWTH = 1.25
GRID_STEP = 1e-3
FINE_STEP = 1e-6
MONO_RANGE = 20.0
MONO_TOL = 1e-9
FLAT_TOL = 0.0    # constant means equal in float64: x² is 1e-12 at the fine grid's first step, and not flat
PROPERTIES = ("zero_centered", "bounded", "center_sensitive", "monotonic")


def sign_changes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The x at which y changes sign between neighbouring grid points, in grid order, by linear interpolation. A grid
    point where y is exactly 0 is not one (nor is a change through it): callers that want roots add x[y == 0]."""
    i = np.nonzero(np.sign(y[:-1]) * np.sign(y[1:]) < 0)[0]
    return x[i] - y[i] * (x[i + 1] - x[i]) / (y[i + 1] - y[i])


def _zero_crossing(x: np.ndarray, y: np.ndarray) -> float | None:
    """The grid root of f nearest 0 (linear interpolation), or None if f never changes sign or hits 0."""
    roots = list(x[y == 0]) + list(sign_changes(x, y))
    return float(min(roots, key=abs)) if roots else None


def _flat_halfwidth(fn, f0: float) -> float:
    """The largest distance δ from 0 on the grids (FINE_STEP up to 0.01, GRID_STEP beyond, to MONO_RANGE) with
    |f(x) - f(0)| <= FLAT_TOL on [-δ, δ]."""
    d = np.unique(np.concatenate([np.arange(round(0.01 / FINE_STEP) + 1) * FINE_STEP,
                                  np.arange(round(MONO_RANGE / GRID_STEP) + 1) * GRID_STEP]))
    moving = (np.abs(fn.at(d) - f0) > FLAT_TOL) | (np.abs(fn.at(-d) - f0) > FLAT_TOL)
    return float(d[np.argmax(moving) - 1]) if moving.any() else float(d[-1])


def audit(spec: str) -> dict:
    """The four verdicts for `spec` and the measured quantities behind them (see the module docstring)."""
    fn = pointwise(spec)
    half = round(MONO_RANGE / GRID_STEP)
    x = np.linspace(-MONO_RANGE, MONO_RANGE, 2 * half + 1)          # x[half] == 0 exactly
    y = fn.at(x)
    f0 = float(y[half]) + 0.0
    small, large = (np.abs(fn.at(np.linspace(-r, r, 200_001))) for r in (1e3, 1e6))
    if not all(np.isfinite(v).all() for v in (y, small, large)):      # a NaN would read as bounded or unbounded
        raise ValueError(f"audit {spec!r}: f is not finite everywhere on [−1e6, 1e6] (an overflow in its formula?)")
    sup_small = float(small.max())
    sup_large = max(sup_small, float(large.max()))       # ±1e3 ⊂ ±1e6, on another grid
    growth = sup_large / sup_small if sup_small > 0 else float("inf")

    flat = _flat_halfwidth(fn, f0)
    slope0 = float((fn.at(np.array([GRID_STEP]))[0] - fn.at(np.array([-GRID_STEP]))[0]) / (2 * GRID_STEP))

    steps = np.diff(y)
    increasing, decreasing = bool((steps >= -MONO_TOL).all()), bool((steps <= MONO_TOL).all())
    direction = ("constant" if increasing and decreasing else "increasing" if increasing
                 else "decreasing" if decreasing else "non-monotonic")
    reversal = float(min(-steps.min(), steps.max())) if direction == "non-monotonic" else 0.0

    return {
        "spec": fn.spec,
        "zero_centered": abs(f0) <= ZERO_TOL,
        "bounded": growth <= BOUND_GROWTH,
        "center_sensitive": flat == 0.0,
        "monotonic": direction in ("increasing", "decreasing"),
        "f0": f0,
        "zero_crossing": _zero_crossing(x, y),
        "sup_abs_1e3": sup_small,
        "sup_abs_1e6": sup_large,
        "growth": growth,
        "slope_at_0": slope0,
        "flat_halfwidth": flat,
        "direction": direction,
        "largest_reversal_step": reversal,
    }


SECTION3_EXAMPLES = (
    "erf", "erf|hshift=0.5", "erf|vshift=0.5", "erf|hshift=2", "erf|vshift=2",
    "arcsinh", "arcsinh|clip=1", "logsign", "logquad", "power23", "linear", "linear|clip=1",
    "erf|blend=0.1", "erf|blend=0.5", "erf|flat=0.5", "erf|flat=1", "erf|neg", "sin", "dampx", "dampexp",
)
"""One or two variants from each of Tables 1–6, the default list of `lab audit`."""


LEGEND = (
    f"zero-centered: f(0), ✓ when |f(0)| <= {ZERO_TOL:g}.",
    f"bounded: max|f| ratio = max|f| on ±1e6 / on ±1e3, ✓ when <= {BOUND_GROWTH} (1: saturates; ≈2: log-type "
    "growth; 1e2–1e3: power, linear).",
    "  It tells bounded from unbounded but does not rank growth rates: constant factors cancel (logquad ≈ 2·logsign, "
    "both read 2).",
    "center-sensitive: flat=±δ, the half-width of the zone around 0 on which f is constant, ✓ when 0 (no flat zone).",
    f"monotonic: the direction of f on ±{MONO_RANGE:g}, ✓ when increasing or decreasing (−f counts), ✗ when it "
    "reverses.",
)
"""What each column of audit_table measures, one line per column (printed under the table)."""


def audit_table(specs=SECTION3_EXAMPLES) -> str:
    """A plain-text table of the verdicts (✓/✗) with the main number behind each, and LEGEND under it."""
    columns = ("zero-centered", "bounded", "center-sensitive", "monotonic")
    rows = []
    for spec in specs:
        a = audit(spec)
        rows.append((a["spec"], *(("✓ " if a[p] else "✗ ") + text for p, text in zip(PROPERTIES, (
            f"f(0)={a['f0']:+.3g}", f"max|f| ratio {a['growth']:.3g}", f"flat=±{a['flat_halfwidth']:.3g}",
            a["direction"])))))
    widths = [max(len(r[i]) for r in rows + [("spec", *columns)]) for i in range(5)]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths))
    return "\n".join([fmt(("spec", *columns)), fmt(["-" * w for w in widths]), *map(fmt, rows), "", *LEGEND])
