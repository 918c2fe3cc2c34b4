"""The report: rendered from a hand-made results.json with every table kind, real (tiny) PNG
figures and one missing figure; HTML structure, ordering, number formats, banners, escaping."""

from __future__ import annotations

import copy
import json
import re
from html.parser import HTMLParser

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from frad.errors import DataError
from frad.evaluation import paper
from frad.evaluation.plots import save_figure
from frad.pipeline.report import (
    DEMO_BANNER,
    SYNTHETIC_BANNER,
    format_cell,
    ordered_tables,
    read_results,
    render_html,
    render_markdown,
    write_report,
)

_VOID = {"meta", "img", "br", "hr", "link", "input", "col", "wbr"}


class _Checker(HTMLParser):
    """Fails on unbalanced tags; collects ids, image sources and the visible text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.ids: list[str] = []
        self.imgs: list[str] = []
        self.text: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "img":
            self.imgs.append(a["src"])
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}>, open: {self.stack[-3:]}"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def _parse(page: str) -> _Checker:
    c = _Checker()
    c.feed(page)
    c.close()
    assert c.stack == [], f"unclosed tags: {c.stack}"
    assert len(c.ids) == len(set(c.ids)), "duplicate ids"
    return c


def _png(path) -> None:
    fig = Figure(figsize=(1, 1))
    FigureCanvasAgg(fig)
    fig.add_subplot().plot([0, 1], [0, 1])
    save_figure(fig, path, dpi=20)


def _results() -> dict:
    t1_paper = paper.paper_table("table1")
    return {
        "frad_version": "0.1.0",
        "created": "2026-01-02T03:04:05+00:00",
        "run": {"name": "demo <run>", "config_file": "configs/demo.yaml",
                "config": {"data": {"dataset": "lfw", "n_natural": 3}, "attacks": [{"attack": "bim"}]}},
        "dataset": {"name": "LFW", "variant": "aligned", "synthetic": False, "identities": 12, "images": 240},
        "scale": {"demo": True, "note": "12 identities, 2 attack sources each."},
        "stages": {
            "data": {"seconds": 1.25, "skipped": False, "status": "done"},
            "attacks": {"seconds": 65.0, "skipped": True, "status": "done"},
            "report": {"seconds": 3725.0, "skipped": False, "status": "done"},
        },
        # deliberately out of order: the report orders them
        "tables": {
            "extra": {"title": "An extra table", "columns": ["Name", "Value"], "rows": [["x|y", 1.23456]]},
            "df_success": {"columns": ["δ", "Targeted", "Untargeted"], "rows": [["δ = 5", 95.0, None]],
                           "formats": ["", ".1f", ".1f"], "paper": paper.paper_table("df_success")},
            "table1": {
                "title": "Table 1: AUC per targeted attack <family>",
                "columns": ["Configuration", "BIM", "MI-FGSM", "CW", "Macro-AUC"],
                # rows as mappings, the form frad.evaluation.detection writes
                "rows": [{"Configuration": "LSTM + M + L2", "key": "lstm-medoid-euclidean", "BIM": 0.97749,
                          "MI-FGSM": 0.9811, "CW": 0.8712, "Macro-AUC": 0.9432, "ci": {}}],
                "paper": t1_paper,
            },
            "fr_system": {"columns": ["Measure", "Value"], "formats": ["", "pct1"],
                          "rows": [["Head accuracy", 0.956],
                                   ["Verification AUC", {"value": 0.99031, "ci": [0.98, 0.995]}]],
                          "paper": paper.paper_table("fr_system")},
            "attack_success": {"columns": ["Attack", "Success", "Sources"], "formats": ["", "pct1", "d"],
                               "rows": [["bim-T-eps0.03", 1.0, 40.0], ["cw_l2-U", 0.5, 40]], "paper": None},
            "table3": {"columns": ["Attack", "Targeted Original", "Targeted Adversarial"],
                       "formats": ["", ".1f", ".1f"], "rows": [["δ = 5", 4.04, 92.76]],
                       "paper": paper.paper_table("table3"), "notes": ["Successful adversarials only."]},
            "table2": {"columns": ["Configuration", "BIM"], "rows": [["MLP + C + cos", 0.5]]},
            "table4": {"columns": ["Attack", "Targeted Original"], "rows": [["CW", 4.0]]},
            "table5": {"columns": ["Configuration", "δ = 5"], "rows": [["LSTM + M + cos", 0.9]],
                       "paper": paper.paper_table("table5")},
            "table6": {"columns": ["Configuration", "δ = 5"], "rows": [["LSTM + M + cos", 0.6]]},
        },
        "figures": {
            "figure6": {"title": "Figure 6: distances", "file": "figures/figure6.png", "caption": "Caption six.",
                        "data": {"groups": {}}},
            "figure2": {"title": "Figure 2: ROC", "file": "figures/figure2.png", "caption": "Caption <two> & more."},
            "figure10": {"title": "Figure 10", "file": "figures/figure10.png", "caption": "This file is missing."},
        },
        "examples": {"bim-T-eps0.03": {"file": "figures/examples-bim-T-eps0.03.png",
                                       "caption": "Perturbation amplified x12."}},
        "summary": {"best_targeted_macro_auc": 0.9432, "identities": 12},
    }


@pytest.fixture()
def run_dir(tmp_path):
    r = _results()
    for f in ("figures/figure6.png", "figures/figure2.png", "figures/examples-bim-T-eps0.03.png"):
        _png(tmp_path / f)
    (tmp_path / "results.json").write_text(json.dumps(r), encoding="utf-8")
    return tmp_path


def test_write_report_html(run_dir):
    paths = write_report(run_dir)
    assert set(paths) == {"html", "markdown"}
    page = paths["html"].read_text(encoding="utf-8")
    c = _parse(page)
    text = " ".join(c.text)

    # every table, in the paper's order, then the others
    want = ["fr_system", "attack_success", "table1", "table2", "table3", "table4", "table5", "table6",
            "df_success", "extra"]
    table_ids = [i.removeprefix("table-") for i in c.ids if i.startswith("table-")]
    assert table_ids == want
    # figures in the paper's order; examples; every image that exists is linked, the missing one is not
    fig_ids = [i for i in c.ids if i.startswith("figure-")]
    assert fig_ids == ["figure-figure2", "figure-figure6", "figure-figure10"]
    assert "example-bim-T-eps0-03" in c.ids and "[bim-T-eps0.03]" in text
    assert c.imgs == ["figures/figure2.png", "figures/figure6.png", "figures/examples-bim-T-eps0.03.png"]
    for src in c.imgs:
        assert (run_dir / src).is_file()
    assert "the file figures/figure10.png is missing" in text
    assert "missing file figures/figure10.png" in text  # also listed among the problems

    # numbers formatted
    assert "0.977" in text and "0.97749" not in text  # automatic: 3 decimals below 1
    assert "95.6%" in text and "100.0%" in text  # pct1
    assert "99.0% [98.0%, 99.5%]" in text  # a value with its interval
    assert "40" in text and "40.0" not in text  # "d"
    assert "92.8" in text and "4.0" in text  # .1f, measured and paper
    assert "0.9903" in text and "0.448" in text  # the paper's FR system, its own format
    assert "1.2" in text  # automatic: 1 decimal above 1
    # null cell -> n/a with its footnote
    assert "n/a" in text and "this run produced no value" in text
    # paper tables beside the measured ones, labelled
    assert text.count("SE-ResNet-50 on VGGFace2") >= 5
    assert "MLP + C + cos" in text and "0.720" in text  # from the paper's Table 1

    # banner: demo only
    assert DEMO_BANNER in text and "12 identities, 2 attack sources each." in text
    assert SYNTHETIC_BANNER not in text
    # escaping
    assert "<family>" not in page and "&lt;family&gt;" in page
    assert "demo &lt;run&gt;" in page
    assert "Caption &lt;two&gt; &amp; more." in page
    # config collapsed, stage timings
    assert "<details>" in page and "n_natural: 3" in text
    assert "1.2 s" in text and "1 min 05 s" in text and "1 h 02 min" in text
    assert "skipped: inputs unchanged" in text
    assert "Total" in text


def test_banners_exactly_when_flagged(run_dir):
    r = _results()
    r["scale"]["demo"] = False
    page = render_html(r, run_dir)
    _parse(page)
    text = " ".join(_parse(page).text)
    assert DEMO_BANNER not in text and SYNTHETIC_BANNER not in text and 'class="banner"' not in page
    assert "Warning" not in render_markdown(r, run_dir)

    r["dataset"]["synthetic"] = True
    page = render_html(r, run_dir)
    text = " ".join(_parse(page).text)
    assert page.count('class="banner"') == 1 and SYNTHETIC_BANNER in text and DEMO_BANNER not in text

    r["scale"]["demo"] = True
    page = render_html(r, run_dir)
    assert page.count('class="banner"') == 2
    md = render_markdown(r, run_dir)
    assert md.count("> **Warning:**") == 2

    # no scale / dataset at all: no banner, no crash
    bare = {"tables": {"table1": {"columns": ["a"], "rows": [[1]]}}}
    page = render_html(bare)
    _parse(page)
    assert 'class="banner"' not in page


def test_markdown(run_dir):
    write_report(run_dir)
    md = (run_dir / "report.md").read_text(encoding="utf-8")
    assert md.startswith("# frad report: demo \\<run\\>")
    assert "![Figure 2: ROC](figures/figure2.png)" in md
    assert "![Examples: bim-T-eps0.03](figures/examples-bim-T-eps0.03.png)" in md
    assert "figures/figure10.png" in md and "**Not shown:**" in md
    assert "](figures/figure10.png)" not in md
    # pipe tables: header, alignment row; a '|' inside a cell is escaped
    assert "| Configuration | BIM | MI-FGSM | CW | Macro-AUC |" in md
    assert "| LSTM + M + L2 | 0.977 | 0.981 | 0.871 | 0.943 |" in md
    assert "| x\\|y | 1.2 |" in md
    for line in md.splitlines():
        if line.startswith("| "):
            cells = re.split(r"(?<!\\)\|", line)[1:-1]
            assert len(cells) >= 2
    # tables in order
    ids = ("fr\\_system", "attack\\_success", "table1", "table6", "df\\_success", "extra")
    pos = [md.index(f"\\[{t}\\]") for t in ids]
    assert pos == sorted(pos)
    assert "```yaml" in md and "n_natural: 3" in md
    assert "> **Warning:**" in md and "Demo-scale run" in md


def test_format_cell():
    assert format_cell(0.97749, ".3f") == "0.977"
    assert format_cell(0.956, "pct1") == "95.6%"
    assert format_cell(0.5, "pct0") == "50%"
    assert format_cell(None) == "n/a"
    assert format_cell(float("nan"), ".3f") == "n/a"
    assert format_cell(5.0, "d") == "5"
    assert format_cell(0.5) == "0.500"
    assert format_cell(12.345) == "12.3"
    assert format_cell(7) == "7"
    assert format_cell(7.0) == "7"
    assert format_cell({"value": 0.97, "ci": [0.95, 0.99]}, ".2f") == "0.97 [0.95, 0.99]"
    assert format_cell(True) == "yes"
    assert format_cell("δ = 5", ".3f") == "δ = 5"
    assert format_cell(float("inf")) == "∞"


def test_order_and_errors(tmp_path):
    order = [k for k, _ in ordered_tables({"z": {}, "table2": {}, "fr_system": {}, "a": {}})]
    assert order == ["fr_system", "table2", "z", "a"]
    with pytest.raises(DataError, match="no results file"):
        read_results(tmp_path)
    (tmp_path / "results.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match="not valid JSON"):
        write_report(tmp_path)
    (tmp_path / "results.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(DataError, match="JSON object"):
        read_results(tmp_path)


def test_malformed_entries_are_reported_not_fatal(tmp_path):
    r = copy.deepcopy(_results())
    r["tables"]["broken"] = {"rows": [[1, 2]]}  # no columns
    r["tables"]["table2"]["rows"].append([1, 2, 3])  # too many cells
    r["figures"]["figure3"] = {"title": "no file"}
    page = render_html(r, tmp_path)
    _parse(page)
    assert "table &#x27;broken&#x27; has no columns" in page
    assert "extra cells dropped" in page
    assert "no file is named in results.json" in page
