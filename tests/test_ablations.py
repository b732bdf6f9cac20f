"""The ablation grids are exactly the paper's: cell counts, specs and reference values of Tables 1–6."""
import pytest

import lab
from lab import ablations

X = None   # the paper's "×"


def grid(name):
    return {(c.panel, c.row, c.col): (c.spec, c.paper) for c in ablations.load(name).cells}


def test_tables_listed():
    assert ablations.TABLES == ("table1", "table2", "table3", "table4", "table5", "table6")


def test_the_papers_grid_is_the_table_n_files_and_other_yaml_beside_them_is_not_a_table(tmp_path):
    """A researcher's ablations/table_gd.yaml used to crash every command (int('_gd'))."""
    for stem in ("table2", "table10", "table1", "table_gd", "tables", "notes", "table0", "table01"):
        (tmp_path / f"{stem}.yaml").write_text("title: T\n", encoding="utf-8")
    assert ablations.paper_tables(tmp_path) == ("table1", "table2", "table10")


@pytest.mark.parametrize("name, shapes", [
    ("table1", [(6, 9)]), ("table2", [(7, 3)]), ("table3", [(4, 4)]), ("table4", [(1, 5)]), ("table5", [(3, 6)]),
    ("table6", [(3, 2), (1, 3)]),
])
def test_cell_counts_match_the_paper(name, shapes):
    ab = ablations.load(name)
    assert [(len(p.rows), len(p.columns)) for p in ab.panels] == shapes
    assert len(ab.cells) == sum(r * c for r, c in shapes)
    assert ab.title.startswith(f"Table {name[-1]}") and ab.caption


@pytest.mark.parametrize("name", ablations.TABLES)
def test_specs_are_canonical_unique_and_cover_every_cell(name):
    ab = ablations.load(name)
    specs = ab.specs()
    assert len(specs) == len(set(specs))
    assert all(lab.canonical(s) == s for s in specs)
    assert set(specs) == {c.spec for c in ab.cells}
    assert all(c.paper is None or 70 < c.paper < 90 for c in ab.cells)


def test_table1_grid():
    g = grid("table1")
    assert g[("", "erf, horizontal", "−2")] == ("erf|hshift=-2", X)
    assert g[("", "erf, horizontal", "+0.1")] == ("erf|hshift=0.1", 82.7)
    assert g[("", "tanh, vertical", "−0.5")] == ("tanh|vshift=-0.5", 81.9)
    assert g[("", "arctan, vertical", "+1")] == ("arctan|vshift=1", 81.2)
    assert g[("", "erf, vertical", "0")] == g[("", "erf, horizontal", "0")] == ("erf", 82.6)
    paper = [c.paper for c in ablations.load("table1").cells]
    assert paper.count(X) == 12 and sum(p for p in paper if p) == pytest.approx(3452.0)
    assert len(ablations.load("table1").specs()) == 51          # the λ = 0 column is the plain base, shared


def test_table2_to_4_grids():
    g2, g3, g4 = grid("table2"), grid("table3"), grid("table4")
    assert g2[("", "none", "linear")] == ("linear", X)
    assert g2[("", "0.5", "logsign")] == ("logsign|clip=0.5", 82.4)
    assert g2[("", "5.0", "linear")] == ("linear|clip=5", 82.0)
    assert sum(p for _, p in g2.values() if p) == pytest.approx(1645.4)
    assert g3[("", "none", "isru")] == ("isru", 82.2)
    assert g3[("", "0.01", "erf")] == ("erf|blend=0.01", 82.4)
    assert [g3[("", "0.5", f)] for f in ("erf", "tanh", "arctan", "isru")] == [
        ("erf|blend=0.5", X), ("tanh|blend=0.5", X), ("arctan|blend=0.5", X), ("isru|blend=0.5", X)]
    assert sum(p for _, p in g3.values() if p) == pytest.approx(987.5)
    assert list(g4.values()) == [("logsign", 82.2), ("arcsinh", 82.2), ("logquad", 82.1), ("power23", X),
                                 ("linear", X)]


def test_table5_and_6_grids():
    g5, g6 = grid("table5"), grid("table6")
    assert g5[("", "erf", "0")] == ("erf", 82.6)
    assert g5[("", "tanh", "2.0")] == ("tanh|flat=2", 81.1)
    assert g5[("", "arctan", "3.0")] == ("arctan|flat=3", X)
    assert sum(p for _, p in g5.values() if p) == pytest.approx(1231.0)
    a, b = (p.title for p in ablations.load("table6").panels)
    assert g6[(a, "erf", "−f(x)")] == ("erf|neg", 82.5)
    assert g6[(a, "arctan", "f(x)")] == ("arctan", 82.3)
    assert [g6[(b, "top-1", f)] for f in ("sin", "dampx", "dampexp")] == [("sin", 81.6), ("dampx", 80.7),
                                                                          ("dampexp", 81.2)]


@pytest.mark.parametrize("name, message", [
    ("table7", r"unknown table 'table7'.*: neither a table of the paper \(table1, table2, .*table6\) nor the path of "
               r"a \.yaml table of your own"),
    ("tabel1", r"unknown table 'tabel1' \(did you mean 'table1'\?\)"),
    ("my/absent.yaml", r"table 'my/absent.yaml': no such file \(/.*/my/absent\.yaml\)"),
    ("notes.md", r"unknown table '.*notes.md'"),                    # a file, but not a .yaml table
    ("broken.yaml", r"broken\.yaml: not valid YAML \(line 3, column 1\)"),   # the parser's error, named, not raised
])
def test_unknown_table_names_the_choices(name, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.md").write_text("# notes\n")
    (tmp_path / "broken.yaml").write_text('title: "x\npanels: [\n')
    with pytest.raises(ValueError, match=message):
        ablations.load(name)


def test_a_table_of_your_own_may_be_named_from_home(own_table, monkeypatch):
    monkeypatch.setenv("HOME", str(own_table.parent.parent))
    assert ablations.load("~/my/table_gd.yaml").name == "table_gd"


def test_a_table_of_your_own_is_a_yaml_file_named_by_its_stem_and_its_paper_values_are_optional(own_table):
    path = own_table
    ab = ablations.load(str(path))
    assert ab.name == "table_gd" and not ab.of_paper and ablations.load(path) == ab
    assert [(c.spec, c.paper, c.has_paper, c.paper_failed, c.paper_text()) for c in ab.cells] == [
        ("erf", 82.6, True, False, "82.6"), ("erf|hshift=0.3", None, False, False, "–"),
        ("erf|hshift=3", None, True, True, "×"),
        ("tanh", None, False, False, "–"), ("tanh|hshift=0.3", None, False, False, "–"),
        ("tanh|hshift=3", None, False, False, "–")]
    path.write_text(path.read_text(encoding="utf-8").replace("0.3", "0.4"), encoding="utf-8")
    assert "erf|hshift=0.4" in ablations.load(path).specs()             # read afresh: an edit shows at once
    assert ablations.load(ablations.ABLATIONS_DIR / "table1.yaml") is ablations.load("table1")


def test_a_table_of_your_owns_principle_is_judged_on_its_functions_not_its_norms(tmp_path):
    path = tmp_path / "derf_parts.yaml"
    path.write_text('title: Derf\nprinciple: center_sensitive\npanels:\n- row_header: [f]\n  columns: [top-1]\n'
                    '  spec: "{row}"\n'
                    '  rows: [{label: layernorm}, {label: erf}, {label: derf}, {label: "erf|flat=1"}]\n',
                    encoding="utf-8")
    assert ablations.load(path).verdicts() == {"erf": True, "erf|flat=1": False}


def test_a_table_of_your_own_cannot_take_a_paper_tables_name(own_table):
    with pytest.raises(ValueError, match=r"'table1' is the name of a table of the paper; give your table another"):
        ablations.load(own_table.rename(own_table.with_name("table1.yaml")))


def test_the_papers_tables_still_need_a_value_or_failure_in_every_cell(tmp_path, own_table, monkeypatch):
    """Only a table of your own may leave a paper value out: the paper reports one for each of its cells."""
    own = own_table.read_text(encoding="utf-8")
    (tmp_path / "table9.yaml").write_text(own, encoding="utf-8")
    monkeypatch.setattr(ablations, "ABLATIONS_DIR", tmp_path)
    monkeypatch.setattr(ablations, "TABLES", ("table9",))
    ablations._paper_table.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"paper value None must be a number or '×' \(training failure\)$"):
            ablations.load("table9")
        (tmp_path / "table9.yaml").write_text(own.replace("null", "80"), encoding="utf-8")
        with pytest.raises(ValueError, match=r"row 2 \(tanh\): 'paper' must list one value per column \(3\)"):
            ablations.load("table9")
        assert len(ablations.load(own_table).cells) == 6
    finally:
        ablations._paper_table.cache_clear()


@pytest.mark.parametrize("yaml_text, message", [
    ("title: T\npanels: [{row_header: [f], spec: '{row}|hshift={lam}', columns: [{label: a, lam: 1}],"
     " rows: [{label: erff, paper: [80]}]}]", "unknown base function 'erff'"),
    ("title: T\npanels: [{row_header: [f], spec: '{row}', columns: [a, b], rows: [{label: erf, paper: [80]}]}]",
     "one value per column"),
    ("title: T\npanels: [{row_header: [f], spec: '{row}', columns: [a], rows: [{label: erf, paper: [x]}]}]",
     "must be a number or '×'"),
    ("title: T\npanels: [{row_header: [f], spec: '{row}|clip={lam}', columns: [a],"
     " rows: [{label: erf, paper: [80]}]}]", r"uses \['lam'\]"),
    ("title: T\npanels: [{row_header: [f], spec: '{row}', colums: [a], columns: [a],"
     " rows: [{label: erf, paper: [80]}]}]", r"unknown key\(s\) \['colums'\]"),
])
def test_bad_grids_fail_at_load(tmp_path, monkeypatch, yaml_text, message):
    (tmp_path / "table9.yaml").write_text(yaml_text, encoding="utf-8")
    monkeypatch.setattr(ablations, "ABLATIONS_DIR", tmp_path)
    monkeypatch.setattr(ablations, "TABLES", ("table9",))
    ablations._paper_table.cache_clear()
    try:
        with pytest.raises(ValueError, match=message):
            ablations.load("table9")
    finally:
        ablations._paper_table.cache_clear()


def _lam(label):
    return float(label.replace("−", "-").replace("+", ""))


def test_every_cells_spec_is_its_row_and_column_labels():
    """The spec trained under a label is that label's λ and transform (a λ mistyped in a yaml would train, and be
    reported as, another cell than the paper's)."""
    for c in ablations.load("table1").cells:
        f, shift = c.row.split(", ")
        assert c.spec == lab.canonical(f"{f}|{'hshift' if shift == 'horizontal' else 'vshift'}={_lam(c.col)}"), c
    for name, kind in (("table2", "clip"), ("table3", "blend")):
        for c in ablations.load(name).cells:
            assert c.spec == (c.col if c.row == "none" else lab.canonical(f"{c.col}|{kind}={_lam(c.row)}")), c
    for c in ablations.load("table5").cells:
        assert c.spec == lab.canonical(f"{c.row}|flat={_lam(c.col)}"), c


PAPER = {   # the paper's values row by row (arXiv 2512.10938, Tables 1–6), × as X
    "table1": "X 82.0 82.5 82.6 82.6 82.7 82.5 82.1 X / X 81.8 82.3 82.4 82.6 82.5 82.3 81.6 X / "
              "X 82.1 82.5 82.6 82.5 82.6 82.4 82.2 X / X 81.5 81.9 82.4 82.5 82.3 81.9 81.4 X / "
              "X 81.9 82.3 82.3 82.3 82.4 82.2 82.0 X / X 81.4 81.9 82.2 82.3 82.3 82.0 81.2 X",
    "table2": "82.2 82.2 X / 82.3 82.4 82.1 / 82.3 82.4 82.2 / 82.4 82.4 82.2 / 82.4 82.4 82.1 / 82.4 82.3 82.1 / "
              "82.3 82.3 82.0",
    "table3": "82.6 82.5 82.3 82.2 / 82.4 82.4 82.1 82.2 / 82.3 82.3 82.1 82.1 / X X X X",
    "table4": "82.2 82.2 82.1 X X",
    "table5": "82.6 82.5 82.5 82.1 81.3 X / 82.5 82.5 82.4 82.1 81.1 X / 82.3 82.3 82.1 81.8 80.9 X",
    "table6": "82.6 82.5 / 82.5 82.5 / 82.3 82.2 / 81.6 80.7 81.2",
}


@pytest.mark.parametrize("name", ablations.TABLES)
def test_every_paper_value_is_the_papers_in_its_place(name):
    """Cell by cell, not just sums: two values swapped within a row keep every sum and count."""
    rows = [p.cell(i, j).paper for p in ablations.load(name).panels for i in range(len(p.rows))
            for j in range(len(p.columns))]
    assert rows == [None if v == "X" else float(v) for v in PAPER[name].replace("/", " ").split()]


def test_panels_address_cells_by_row_and_column_and_name_the_swept_axis():
    for name in ablations.TABLES:
        for p in ablations.load(name).panels:
            for i, row in enumerate(p.rows):
                for j, col in enumerate(p.columns):
                    cell = p.cell(i, j)
                    assert (cell.row, cell.col) == (", ".join(row), col), (name, i, j)
    assert ablations.load("table2").panels[0].x_and_series(ablations.load("table2").cells[3]) == ("0.5", "arcsinh")
    assert ablations.load("table5").panels[0].x_and_series(ablations.load("table5").cells[1]) == ("0.1", "erf")


def test_principles_and_training_order_of_the_tables():
    """Each table tests its principle, which lab.audit finds broken exactly where the paper perturbs f (the table
    reports say so); specs train in table order, row-major."""
    assert [ablations.load(t).principle for t in ablations.TABLES] == [
        "zero_centered", "bounded", "bounded", "bounded", "center_sensitive", "monotonic"]
    kept = {t: [s for s, v in ablations.load(t).verdicts().items() if v] for t in ablations.TABLES}
    broken = {t: [s for s, v in ablations.load(t).verdicts().items() if not v] for t in ablations.TABLES}
    assert kept["table1"] == kept["table5"] == ["erf", "tanh", "arctan"]              # the unshifted, unflattened
    assert kept["table3"] == ["erf", "tanh", "arctan", "isru"]                         # nothing blended in
    assert broken["table2"] == ["arcsinh", "logsign", "linear"] and len(kept["table2"]) == 18   # every clip bounds
    assert kept["table4"] == [] and len(broken["table4"]) == 5
    assert broken["table6"] == ["sin", "dampx", "dampexp"]                             # −f is monotonic too
    assert ablations.load("table6").verdicts()["erf|neg"] is True
    assert ablations.load("table2").specs()[:4] == ["arcsinh", "logsign", "linear", "arcsinh|clip=0.5"]
    assert ablations.load("table6").specs() == ["erf", "erf|neg", "tanh", "tanh|neg", "arctan", "arctan|neg", "sin",
                                                "dampx", "dampexp"]


@pytest.mark.parametrize("typo, message", [
    ("{label: erf, paper:", r"panel 1 row 1: key 'paer' \(did you mean 'paper'\?\) is no variable of the spec "
                            r"templates \['\{row\}\|hshift=\{lam\}'\]; valid keys: label, spec, paper, lam"),
    ('{label: "0.3", lam: 0.3}', r"panel 1 column 2: key '3' is no variable"),    # a decimal comma: lam 0, key 3
])
def test_a_key_no_spec_template_uses_is_an_error(own_table, typo, message):
    fixed = {"{label: erf, paper:": "{label: erf, paer:", '{label: "0.3", lam: 0.3}': '{label: "0.3", lam: 0,3}'}
    own_table.write_text(own_table.read_text(encoding="utf-8").replace(typo, fixed[typo]), encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        ablations.load(own_table)


def test_a_misspelt_path_of_your_own_table_suggests_the_file_there(own_table, monkeypatch):
    monkeypatch.chdir(own_table.parent.parent)
    with pytest.raises(ValueError, match=r"no such file \(.*/my/tabel_gd\.yaml\) \(did you mean 'my/table_gd\.yaml'\?\)"):
        ablations.load("my/tabel_gd.yaml")
    with pytest.raises(ValueError, match=r"unknown table 'my/table_gd' \(did you mean 'my/table_gd\.yaml'\?\)"):
        ablations.load("my/table_gd")
