"""Regenerate the notebooks (outputs stripped): python notebooks/make_notebooks.py. Logic lives in lab/, not here."""
from pathlib import Path

import nbformat.v4 as nbf
from nbformat import write

HERE = Path(__file__).parent
TITLES = {1: "Zero-centeredness: horizontal and vertical shifts (Eq. 5)",
          2: "Boundedness: clipping unbounded functions (Eq. 6)",
          3: "Boundedness: linear blending of bounded functions (Eq. 7)",
          4: "Boundedness: growth rate of unbounded functions",
          5: "Center sensitivity: a flat zone of half-width λ",
          6: "Monotonicity: decreasing and non-monotonic functions"}
RUN = '''protocol = "smoke"        # paper | proxy | smoke (configs/protocols/)
results_dir = "results"   # one JSON per cell, shared by all tables; finished cells are skipped
out_dir = "reproduction"  # rendered tables (md, tex, csv) and figures
device = None             # None: the protocol's default; or "cpu", "cuda"
overrides = {}            # config overrides, e.g. {"epochs": 1, "lr": 0.002}
data_path = None          # ImageNet folder (train/, val/) for the paper protocol
train = True              # False: render the records present (a grid trained elsewhere), train nothing'''
TABLE = RUN + '''
jobs = 1                  # cells at once (a process pool; several share one GPU)
seeds = None              # a list such as 0, 1, 2: the table shows mean ± std; None: the protocol's seed
limit = None              # only the first N cells (a quick look)'''


def notebook(title, intro, params, *code):
    cells = [nbf.new_markdown_cell(f"# {title}\n\n{intro}"), nbf.new_code_cell(params, metadata={"tags": ["parameters"]})]
    cells += [nbf.new_markdown_cell(c) if c.startswith("#") else nbf.new_code_cell(c) for c in code]
    return nbf.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                  "language": "python"}})


def build() -> dict:
    """Every notebook by name (a test checks the committed ones against this)."""
    books = {"00_four_principles": notebook(
        "The four principles of a point-wise normalization replacement",
        "Section 3 of arXiv 2512.10938 asks which properties let y = γ·f(αx)+β replace LayerNorm in a ViT: f should be "
        "**zero-centered**, **bounded**, **center-sensitive** and **monotonic**. Tables 1–6 each test one property on "
        "variants of erf, tanh, arctan, …: most variants break it (shifts, blending in x, a flat zone, non-monotonic "
        "functions), while Table 2 goes the other way and clips unbounded functions to make them bounded. This "
        "notebook names functions by their spec, shows the properties, measures them for one or two variants from each "
        "table, and trains two functions side by side: erf, and linear(x) = x, which the paper marks × (a training "
        "failure of ViT-B on ImageNet). At the smoke protocol's size (a 3-block ViT, seconds on a CPU) both usually "
        "train: failures from unboundedness need the paper's depth, learning rate and length.",
        RUN + '\ndemo_specs = ["erf", "linear"]  # erf trains in the paper; linear is × there',
        "## One name for a function: the spec\n\n"
        "A spec is a base function followed by transforms applied left to right, e.g. `erf|hshift=0.5` is "
        "erf(x + 0.5). The same string is a config value, a result file's name, a table cell and a figure legend. "
        "`lab.pointwise` builds the function, `lab.canonical` gives the one name its results are filed under, "
        "`lab.audit` measures the four properties.",
        "import lab\nimport torch\n\n"
        "f = lab.pointwise(\"erf|hshift=0.5\")                # erf(x + 0.5): Table 1's horizontal shift\n"
        "x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0])\n"
        "print(f.spec, f(x))                                # 0 at x = −0.5: the zero crossing moved off 0\n"
        "print(lab.canonical(\"erf|hshift=.50|vshift=0\"))     # one name; identity transforms drop out\n"
        "print(lab.audit(\"erf|hshift=0.5\")[\"zero_centered\"])",
        "## The four principles and the tables that test them\n\n"
        "| principle | meaning | tested by | the paper finds (ViT-B, ImageNet-1K) |\n"
        "|---|---|---|---|\n"
        "| zero-centered | f(0) = 0: outputs centered on 0 | Table 1: horizontal f(x + λ) and vertical f(x) + λ "
        "shifts | λ = ±2 fails (×) for erf, tanh and arctan; λ = ±1 costs 0.3–1.1 points, vertical shifts more than "
        "horizontal ones |\n"
        "| bounded | f stays within a finite range however large x is | Table 2: clipping makes unbounded functions "
        "bounded; Table 3: blending in x makes bounded ones unbounded; Table 4: how fast unbounded ones grow | "
        "clipping never hurts arcsinh or logsign and lets linear train; blending λb = 0.5 fails for every f; logsign, "
        "arcsinh and logquad train, the faster power23 and linear fail early with large gradient norms |\n"
        "| center-sensitive | f responds to small inputs around 0: no flat zone | Table 5: f = 0 on a flat zone "
        "[−λ, λ], its branches shifted outward | λ ≤ 0.5 costs ≤ 0.2 points, λ = 2 about 1.3–1.4, λ = 3 fails |\n"
        "| monotonic | f never reverses direction; decreasing counts | Table 6: (a) −f, (b) the non-monotonic sin, "
        "dampx, dampexp | −f trains as well as f (within 0.1 points); the non-monotonic ones train but lose 1.0–1.9 "
        "points against erf |\n\n"
        "So: pushing f off center or flattening it near 0 costs accuracy and, pushed far, training; unbounded f train "
        "while they grow slowly (log-type, or blended with ≤ 0.1·x) and fail when they grow fast; the direction of a "
        "monotonic f does not matter.",
        "## The Section-3 perturbations, one panel each (the λ values of their tables)\n\n"
        "Each panel is one transform of the spec applied to its table's base; in a λ legend, black is the unperturbed "
        "f: the λ = 1 curve of the hshift panel is `erf|hshift=1`.",
        "from lab.reproduce import figures_report\nfigures_report(out_dir, which=[\"transforms\"])",
        "## Figure 2: each property, satisfied and violated\n\n"
        "Blue curves satisfy the panel's property, red ones violate it; each legend gives the function and, in "
        "brackets, its spec.",
        "from lab.reproduce import figures_report\nfigures_report(out_dir, which=[\"figure2\"])",
        "## The four verdicts, measured (lab.audit)\n\n"
        "Measured on f itself (before α, γ, β), each column a ✓/✗ verdict and the number behind it; the lines under "
        "the table say what each number measures and when it passes.",
        "from lab.principles import audit_table\nprint(audit_table())",
        "## A tiny training run: erf against linear(x) = x (× in the paper)",
        "from lab.reproduce import demo_report\n"
        "demo_report(demo_specs, protocol, results_dir, device=device, overrides=overrides, data_path=data_path, "
        "train=train)")}
    for i, title in TITLES.items():
        books[f"0{i}_table{i}"] = notebook(
            f"Table {i} — {title}",
            f"Trains every cell of Table {i} (plus a LayerNorm baseline) under `protocol`, then renders the table "
            "beside the paper's values and its figures. Each cell reads *measured (paper)*: this run's top-1, then "
            "the paper's ViT-B/ImageNet value (× = training failure); the notes under the table say what was trained "
            "and how large a difference must be to mean something. Run with papermill, e.g. "
            f"`papermill notebooks/0{i}_table{i}.ipynb out.ipynb -p protocol proxy -p jobs 4`.",
            TABLE,
            f"from lab.reproduce import table_report\ntable_report(\"table{i}\", protocol, results_dir, out_dir, "
            "jobs=jobs, device=device, data_path=data_path, seeds=seeds, overrides=overrides, limit=limit, "
            "train=train)")
    books["07_figures"] = notebook("Figures 2–4", "The paper's function plots, drawn from the lab's specs: the four "
                                   "properties, each satisfied and violated (Figure 2); the unbounded functions of "
                                   "Table 4, slowest to fastest growth as x → ∞ (Figure 3, which marks where power23 "
                                   "overtakes logquad for good); erf, −erf and the non-monotonic functions of Table 6 "
                                   "(Figure 4). The training losses of the paper's appendix Figures 6–8 are drawn in "
                                   "the notebooks of Tables 1, 5 and 6.",
                                   'out_dir = "reproduction"  # figures/ is written here',
                                   "from lab.reproduce import figures_report\nfigures_report(out_dir)")
    for nb in books.values():
        for i, cell in enumerate(nb.cells):
            cell.id = f"cell-{i}"  # stable ids: regenerating changes only what changed
    return books


def main():
    for name, nb in build().items():
        write(nb, HERE / f"{name}.ipynb")


if __name__ == "__main__":
    main()
