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
        "Section 3 of arXiv 2512.10938 asks which properties let y = γ·f(αx)+β replace LayerNorm in a ViT: f must be "
        "**zero-centered**, **bounded**, **center-sensitive** and **monotonic**. Each table (1–6) breaks one property "
        "with a family of perturbations of erf, tanh, arctan, … This notebook shows the properties, measures them for "
        "one variant from each table, and trains two functions side by side: erf, and linear(x) = x, which the paper "
        "marks × (a training failure of ViT-B on ImageNet). At the smoke protocol's size (a 3-block ViT, seconds on "
        "a CPU) both usually train: failures from unboundedness need the paper's depth, learning rate and length.",
        RUN + '\ndemo_specs = ["erf", "linear"]  # erf trains in the paper; linear is × there',
        "## The Section-3 perturbations, one panel each (the λ values of their tables)",
        "from lab.reproduce import figures_report\nfigures_report(out_dir, which=[\"transforms\"])",
        "## Figure 2: each property, satisfied and violated",
        "from lab.reproduce import figures_report\nfigures_report(out_dir, which=[\"figure2\"])",
        "## The four verdicts, measured (lab.audit)",
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
    books["07_figures"] = notebook("Figures 2–4", "The paper's function plots: the four properties (Figure 2), the "
                                   "growth of unbounded functions (Figure 3) and non-monotonic functions (Figure 4).",
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
