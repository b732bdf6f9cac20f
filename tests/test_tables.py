"""Rendering Tables 1–6 from records: golden files, failure kinds, seeds, missing cells and the agreement summary.

Regenerate the golden files after an intended change with LAB_UPDATE_GOLDEN=1 (and read the diff).
"""
import csv
import io
import math
import os
from pathlib import Path

import pytest

from lab import sweep, tables

GOLDEN = Path(__file__).parent / "golden"


def rec(spec, top1=None, seed=0, kind=None, protocol="smoke", config_hash="aaaa"):
    failure = {"step": 7, "reason": "test", "kind": kind} if kind else None
    return {"spec": spec, "table": "table3", "protocol": protocol, "status": "failed" if kind else "ok",
            "failure": failure, "top1": top1, "top1_ema": None if top1 is None else top1 - 1, "seed": seed,
            "config_hash": config_hash, "history": [], "device": "cpu"}


FAKE = [
    rec("erf", 60.0), rec("erf", 62.0, seed=1), rec("tanh", 58.0), rec("arctan", 57.0), rec("isru", 59.0),
    rec("erf|blend=0.01", 55.0), rec("tanh|blend=0.01", kind="nan"),
    rec("arctan|blend=0.01", 54.0), rec("arctan|blend=0.01", seed=1, kind="diverged"),
    rec("erf|blend=0.1", 50.0), rec("arctan|blend=0.1", 52.0),
    rec("erf|blend=0.5", kind="diverged"), rec("tanh|blend=0.5", 10.0), rec("arctan|blend=0.5", kind="no_learning"),
    rec("layernorm", 63.0),
    rec("tanh", 99.0, config_hash="bbbb"),               # another config of the same protocol: ignored, noted
    rec("erf", 30.0, protocol="proxy"),                  # another protocol
    rec("sin", 40.0),                                    # not a cell of Table 3
]


@pytest.mark.parametrize("name, records, fmt", [(n, FAKE, f) for n in ["table3"] for f in tables.FORMATS]
                         + [("table6", [], "md"), ("table1", [], "tex")])
def test_golden(name, records, fmt):
    text = tables.render(name, records, fmt, protocol="smoke" if records else None)
    path = GOLDEN / f"{name}_{'fake' if records else 'empty'}.{fmt}"
    if os.environ.get("LAB_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")


def texts(records=FAKE, **kw):
    table = tables.collect("table3", records, "smoke", **kw)
    return {(r.cell.row, r.cell.col): r.measured_text() for r in table.results}


def test_cells_show_seeds_failures_by_kind_and_missing():
    t = texts()
    assert t[("none", "erf")] == f"61.0 ± {math.sqrt(2):.2f}"                  # two seeds: mean ± sample std
    assert t[("0.01", "tanh")] == "×nan"
    assert t[("0.5", "erf")] == "×div"
    assert t[("0.5", "arctan")] == "×chance"
    assert t[("0.01", "arctan")] == "54.0 [1/2 ×div]"                        # one seed of two diverged
    assert t[("0.01", "isru")] == t[("0.5", "isru")] == tables.MISSING
    assert t[("none", "tanh")] == "58.0"                                      # config bbbb (99.0) ignored
    assert texts(metric="top1_ema")[("none", "tanh")] == "57.0"


def test_agreement_summary_matches_hand_count():
    a = tables.collect("table3", FAKE, "smoke").agreement()
    # run: 4 + 3 + 2 + 3 = 12; disagree: tanh 0.01 (×nan), arctan 0.01 (a seed diverged), tanh 0.5 (trained)
    assert (a["cells"], a["run"], a["agree"], a["paper_failed"], a["measured_failed"]) == (16, 12, 9, 3, 4)
    # trained in both: 7 cells; ranks (measured, paper) with paper ties at 82.3 -> 3.5:
    # erf (7,7) tanh (5,6) arctan (4,3.5) isru (6,2) erf.01 (3,5) erf.1 (1,3.5) arctan.1 (2,1)
    # Pearson on ranks: 13.5 / sqrt(28 * 27.5)
    assert a["spearman_n"] == 7
    assert a["spearman_rho"] == pytest.approx(13.5 / math.sqrt(28 * 27.5))
    md = tables.render("table3", FAKE, "md", "smoke")
    assert "12 of 16 cells run; train/fail agrees on 9/12 (paper ×: 3, measured ×: 4); Spearman ρ = 0.49" in md
    assert "LayerNorm baseline (same protocol and config): 63.0" in md
    assert "ignored records of other configs of this protocol: bbbb (1 record)" in md
    assert md.index("only exercise the machinery") < md.index("| λb |")       # the smoke caveat comes first


def test_spearman_needs_three_cells():
    a = tables.collect("table3", [rec("erf", 60.0), rec("tanh", 50.0)], "smoke").agreement()
    assert a["spearman_rho"] is None and a["spearman_n"] == 2
    assert "Spearman ρ: n/a" in tables.render("table3", [rec("erf", 60.0), rec("tanh", 50.0)])


def test_empty_layout_shows_the_paper_values():
    md = tables.render("table1", [])
    assert "| erf | horizontal | – (×) | – (82.0) |" in md
    assert "No results yet" in md and "smoke" not in md


def test_protocols():
    with pytest.raises(ValueError, match=r"several protocols \(proxy, smoke\).*--protocol"):
        tables.render("table3", FAKE)
    proxy = tables.collect("table3", FAKE, "proxy")
    assert [r.measured_text() for r in proxy.results if r.ran] == ["30.0"]
    assert "not the paper's recipe" in tables.render("table3", FAKE, "md", "proxy")


def test_csv_is_the_layout_and_parses():
    rows = [r for r in csv.reader(io.StringIO(tables.render("table3", FAKE, "csv", "smoke"))) if r[0][:1] != "#"]
    assert rows[0] == ["λb", "erf", "erf paper", "tanh", "tanh paper", "arctan", "arctan paper", "isru", "isru paper"]
    assert rows[4] == ["0.5", "×div", "×", "10.0", "×", "×chance", "×", "–", "×"]


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown format 'pdf'; choose one of: md, tex, csv, html"):
        tables.render("table3", [], "pdf")
    with pytest.raises(ValueError, match="unknown metric"):
        tables.render("table3", [], metric="top5")
    with pytest.raises(ValueError, match="unknown table"):
        tables.render("table0", [])


def test_notes_say_what_each_cell_trained_and_the_noise_of_its_top1():
    from lab import config
    records = [{**r, "config": config.load("smoke")} for r in FAKE]
    text = tables.render("table3", records, "md", protocol="smoke")
    assert ("Each cell: a depth-3, width-48 ViT trained for 8 epochs on 1,024 embedded 20-px images of 10 classes; "
            "top-1 on 500 validation images, whose binomial standard error is up to 2.2 points") in text
    assert "Each cell:" not in tables.render("table3", FAKE, "md", protocol="smoke")    # no config: nothing claimed


def test_render_and_fidelity_refuse_a_results_folder_that_does_not_exist(tmp_path, capsys):
    from lab.cli import main
    for command in (["render", "table6"], ["fidelity", "--protocol", "smoke"]):
        assert main([*command, "--results", str(tmp_path / "nope")]) == 2
        assert "nope: no such directory" in capsys.readouterr().err


def test_frame():
    df = tables.frame("table3", FAKE, "smoke")
    assert len(df) == 16
    row = df[(df["row"] == "0.01") & (df["col"] == "arctan")].iloc[0]
    assert (row["spec"], row["n_ok"], row["n_failed"], row["trained"]) == ("arctan|blend=0.01", 1, 1, False)


def dated(record, created):
    return {**record, "created": created}


def test_cell_mean_keeps_one_decimal():
    t = texts([rec("erf", 61.44), rec("tanh", 58.96)])
    assert t[("none", "erf")] == "61.4" and t[("none", "tanh")] == "59.0"
    assert "| none | 61.4 (82.6) |" in tables.render("table3", [rec("erf", 61.44)], "md", "smoke")


def test_latest_record_of_a_seed_wins():
    """A seed re-run replaces its older record; list order must not matter."""
    records = [dated(rec("erf", 60.0), "2026-01-02T00:00:00"), dated(rec("erf", 50.0), "2026-01-01T00:00:00")]
    assert texts(records)[("none", "erf")] == "60.0"
    assert texts(records[::-1])[("none", "erf")] == "60.0"


def test_config_hash_tie_goes_to_the_most_recent_config():
    """Equal record counts: the config with the latest record is used, not the first listed nor the smallest name."""
    records = [dated(rec("erf", 50.0, config_hash="aaaa"), "2026-01-01T00:00:00"),
               dated(rec("tanh", 60.0, config_hash="bbbb"), "2026-01-02T00:00:00")]
    table = tables.collect("table3", records, "smoke")
    assert table.config_hash == "bbbb"
    t = texts(records)
    assert t[("none", "tanh")] == "60.0" and t[("none", "erf")] == tables.MISSING


def test_records_neither_ok_nor_failed_are_ignored():
    running = {**rec("erf"), "status": "running", "top1": None, "top1_ema": None}
    records = [dated(rec("erf", 60.0), "2026-01-01T00:00:00"), dated(running, "2026-01-02T00:00:00")]
    assert texts(records)[("none", "erf")] == "60.0"
    other_protocol = {**running, "spec": "tanh", "protocol": "proxy"}
    assert texts([rec("erf", 60.0), other_protocol])[("none", "erf")] == "60.0"     # not "several protocols"


def test_measured_failed_counts_only_cells_that_failed():
    a = tables.collect("table3", [rec("tanh", kind="nan")], "smoke").agreement()    # the first cell (erf) not run
    assert (a["run"], a["measured_failed"]) == (1, 1)


def test_spearman_is_undefined_when_the_papers_accuracies_are_all_equal():
    assert tables.spearman([60.0, 55.0, 50.0], [82.3, 82.3, 82.3]) == (None, None)
    records = [rec("arctan", 60.0), rec("erf|blend=0.1", 55.0), rec("tanh|blend=0.1", 50.0)]   # paper: 82.3 each
    a = tables.collect("table3", records, "smoke").agreement()
    assert a["spearman_n"] == 3 and a["spearman_rho"] is None and a["spearman_p"] is None
    assert "Spearman ρ: n/a (3 cells trained in both" in tables.render("table3", records, "md", "smoke")


def test_noise_note_says_three_standard_errors():
    from lab import config
    records = [{**r, "config": config.load("smoke")} for r in FAKE]
    text = tables.render("table3", records, "md", protocol="smoke")
    # 500 validation images: se = 100·sqrt(0.25/500) = 2.236; 3·se = 6.7 -> "7"
    assert "a difference under ~7 points between two cells is within noise" in text


def test_the_cli_offers_the_librarys_tables_and_formats(own_table, capsys):
    """lab/cli.py spells out formats and launchers (it imports the library lazily, in its handlers): they must stay the
    library's. A table is the library's to judge: a paper table's name or the path of one of your own, else an error
    naming both."""
    from lab import cli
    subcommands = next(a for a in cli.build_parser()._actions if a.choices and "render" in a.choices).choices
    render = {a.dest: a.choices for a in subcommands["render"]._actions}
    assert tuple(render["format"]) == tables.FORMATS
    sweep_args = {a.dest: a.choices for a in subcommands["sweep"]._actions}
    assert tuple(sweep_args["launcher"]) == sweep.LAUNCHERS
    for command in (["render"], ["sweep", "--protocol", "smoke"], ["train", "--protocol", "smoke", "--norm", "erf",
                                                                   "--table"]):
        with pytest.raises(SystemExit) as exit:
            cli.main([*command, "table7"])
        err = capsys.readouterr().err
        assert exit.value.code == 2 and f"lab {command[0]}: error: argument " in err
        assert ("unknown table 'table7' (did you mean 'table6'?): neither a table of the paper (table1, table2, "
                "table3, table4, table5, table6) nor the path of a .yaml table of your own") in err
    assert cli.main(["render", str(own_table), "--results", str(own_table.parent)]) == 0
    assert "| erf | – (82.6) | – (–) | – (×) |" in capsys.readouterr().out


def test_a_table_of_your_own_shows_a_dash_where_it_gives_no_paper_value_and_agreement_skips_those_cells(own_table):
    records = [rec("erf", 60.0), rec("erf|hshift=0.3", 55.0), rec("erf|hshift=3", kind="diverged"),
               rec("tanh", 58.0), rec("tanh|hshift=3", kind="diverged")]
    md = tables.render(str(own_table), records, "md", "smoke")
    assert "| erf | 60.0 (82.6) | 55.0 (–) | ×div (×) |" in md and "| tanh | 58.0 (–) | – (–) | ×div (–) |" in md
    assert ("Agreement with the paper: 5 of 6 cells run, 2 of them with a paper value; train/fail agrees on 2/2 "
            "(paper ×: 1, measured ×: 2); Spearman ρ: n/a (1 cells trained in both") in md
    assert "– in the paper's place: the table gives no paper value (4 of 6 cells)." in md
    assert [r.agrees for r in tables.collect(own_table, records, "smoke").results] == [True, None, True, None, None,
                                                                                        None]
    df = tables.frame(own_table, records, "smoke")
    assert set(df["table"]) == {"table_gd"}
    erf = df[df["row"] == "erf"]      # λ = 0, 0.3, 3: a value, none, the paper's ×
    assert erf["has_paper"].tolist() == [True, False, True] and erf["paper"].isna().tolist() == [False, True, True]
    assert r"\label{tab:table_gd}" in tables.render(own_table, records, "tex", "smoke")

    own_table.write_text(own_table.read_text(encoding="utf-8").replace(", paper: [82.6, null, ×]", ""),
                         encoding="utf-8")
    md = tables.render(own_table, records, "md", "smoke")
    assert "5 of 6 cells run; no paper values to compare them with." in md
    assert "Agreement" not in md and "Spearman" not in md
    assert "No results yet." in tables.render(own_table, []) and "paper's values only" not in tables.render(own_table)


def test_the_analysis_functions_take_a_results_folder_record_paths_or_one_record(tmp_path):
    """A researcher's notebook holds a folder, paths or records: each is the same table, figure and fidelity; a
    mistyped folder is an error naming it, not an empty table saying "no results yet"."""
    from lab import fidelity, figures, results
    paths = [results.write_json_atomic(tmp_path / "res" / ("sub" if i % 2 else "") / f"r{i}.json", r)
             for i, r in enumerate(FAKE)]
    expected = tables.render("table3", FAKE, protocol="smoke")
    for given in (tmp_path / "res", str(tmp_path / "res"), paths, map(str, paths)):
        assert tables.render("table3", given, protocol="smoke") == expected
    assert len(tables.frame("table3", paths[0], "smoke")) == len(tables.frame("table3", [FAKE[0]], "smoke"))
    assert tables.collect("table3", FAKE[0], "smoke").agreement()["run"] == 1
    assert fidelity.measure(tmp_path / "res", "smoke").cells_run == fidelity.measure(FAKE, "smoke").cells_run > 0
    assert figures.accuracy_vs_lambda("table3", tmp_path / "res", tmp_path / "figs", "smoke",
                                      reference_records=paths[:1])
    with pytest.raises(ValueError, match=r"r0\.log: not a record \(a cell's record is the \.json file of its name\)"):
        tables.render("table3", [*paths[1:], paths[0].with_suffix(".log")])     # a glob of a cell's files
    for call in (lambda where: tables.render("table3", where), lambda where: fidelity.measure(where),
                 lambda where: figures.training_curves("table3", where, tmp_path / "figs")):
        with pytest.raises(ValueError, match=r"results .*reslts: no such directory"):
            call(tmp_path / "reslts")


def test_an_ok_record_without_the_metric_is_not_run_not_a_failure():
    """A record can finish with top1_ema null: for that metric its cell is –, not a measured failure."""
    t = tables.collect("table3", [{**rec("erf", 60.0), "top1_ema": None}], "smoke", metric="top1_ema")
    erf = t.results[0]
    assert not erf.ran and erf.measured_text() == tables.MISSING and t.agreement()["measured_failed"] == 0


def test_the_config_with_most_records_wins_over_a_later_one():
    records = [{**rec(s, 50.0), "created": "2026-01-01"} for s in ("erf", "tanh", "arctan")]
    records.append({**rec("isru", 60.0, config_hash="bbbb"), "created": "2026-02-01"})
    assert tables.collect("table3", records, "smoke").config_hash == "aaaa"


def test_the_papers_own_protocol_has_no_caveat():
    assert tables.protocol_caveat("paper") is None and tables.protocol_caveat(None) is None


def test_a_failure_kind_several_seeds_share_is_marked_once():
    """Two seeds that diverged are one ×div, not ×div/×div; kinds that differ are each named once."""
    t = texts([rec("erf", kind="diverged"), rec("erf", seed=1, kind="diverged"), rec("tanh", kind="nan"),
               rec("tanh", seed=1, kind="diverged"), rec("tanh", seed=2, kind="nan")])
    assert t[("none", "erf")] == "×div" and t[("none", "tanh")] == "×nan/×div"
