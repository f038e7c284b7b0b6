"""studies/reproduce.py: the papers' data files (every number cites its table and section), the refusal
of datasets whose shape is not the paper's, and the command a user types on fixtures in the real MMSA
and MERBench layouts, printing our numbers next to the published ones."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from affectune.reproduce import ShapeMismatch, condition_subset, format_side_by_side, load_paper, load_papers, \
    side_by_side
from affectune.store import open_store
from test_data_loaders import meld_like, write_merbench, write_merbench_corpus, write_mmsa

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = REPO / "studies" / "published"
TINY = ["--smoke-test", "--local", "--quiet", "--batch-size", "8"]


@pytest.fixture(scope="module")
def reproduce():
    spec = importlib.util.spec_from_file_location("reproduce_script", REPO / "studies" / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Fixtures in the users' layouts: MMSA pickles under corpus-named folders, MERBench directories."""
    root = tmp_path_factory.mktemp("repro")
    for folder, aligned in (("mosi", True), ("mosi_unaligned", False), ("iemocap", True), ("data", True)):
        (root / folder).mkdir()
        write_mmsa(root / folder / ("aligned_50.pkl" if aligned else "unaligned_50.pkl"), aligned,
                   np.random.default_rng(0))
    (root / "mer_seq").mkdir()
    write_merbench(root / "mer_seq", np.random.default_rng(1), emo=False, frame_text=True)  # valence, frames
    rng = np.random.default_rng(2)
    write_merbench_corpus(root / "meld_utt", rng, meld_like(rng))  # as MERBench ships MELD: utterance level
    return root


# --------------------------------------------------------------------------- the data files
def test_every_published_number_cites_its_table_and_section():
    from affectune.metrics import metric_info
    from affectune.models import list_models

    papers = load_papers(str(PUBLISHED))
    assert set(papers) == {"dqf", "umdf", "cider", "mitr_dnet", "mculora"}
    for key, paper in papers.items():
        assert paper.method == key and paper.method in list_models()
        assert paper.datasets and all(r.section for r in paper.datasets.values())
        assert bool(paper.entries()) != bool(paper.no_numbers)  # numbers, or why there are none
        for e in paper.entries():
            assert e["table"].strip() and e["section"].strip() and e["dataset"].strip(), e
            assert math.isfinite(e["value"]) and metric_info(e["metric"])
            assert 0 < e["value"] <= (100 if e["scale"] == 100 else 3), e  # percentages and MAE/Corr as printed
    # the summaries of MITR-DNet and MCULoRA print no table values: no numbers were made up for them
    assert not papers["mitr_dnet"].entries() and not papers["mculora"].entries()
    assert len(papers["dqf"].entries()) == 21 * 1 + 14 + 3 + 2 and len(papers["umdf"].entries()) == 28


def test_published_values_are_the_printed_ones():
    """Spot checks against the papers (shared/papers/004 Table 1-3, 001 Table 1) and methods.md."""
    def value(paper, table, dataset, condition, column):
        (hit,) = [e["value"] for e in load_paper(str(PUBLISHED / f"{paper}.toml")).entries()
                  if (e["table"], e["dataset"], e["condition"], e["column"]) == (table, dataset, condition, column)]
        return hit

    assert value("dqf", "2", "CMU-MOSEI", "{v, a, t}", "Acc.7") == 52.9
    assert value("dqf", "2", "CMU-MOSEI", "{v, a, t}", "MAE") == 0.568
    assert value("dqf", "1", "CMU-MOSEI", "{v, a, t}", "Acc.2") == 86.9
    assert value("dqf", "3", "MELD", "{a, t}", "UAR") == 35.0
    assert value("umdf", "1", "MOSI", "{l, a, v}", "MAE") == 0.782
    assert value("umdf", "1", "MOSI", "{l, a, v}", "F1") == 83.36
    assert value("umdf", "1", "MOSEI", "{l}", "F1") == 81.57


def test_conditions_map_to_our_subsets_and_a_file_without_a_section_is_refused(tmp_path):
    assert [condition_subset(c) for c in ("{v}", "{l}", "{v, a}", "{a, t}", "{l, a, v}")] == \
        ["v", "t", "av", "ta", "tav"]
    with pytest.raises(ValueError, match="modality letters"):
        condition_subset("{x}")
    bad = (PUBLISHED / "umdf.toml").read_text().replace(
        'section = "Experiments: Comparison with State-of-the-Art Methods, Robustness to Inter-modality Missingness"',
        'section = ""', 1)
    (tmp_path / "umdf.toml").write_text(bad)
    with pytest.raises(ValueError, match=r"umdf\.toml.*table number and section"):
        load_paper(str(tmp_path / "umdf.toml"))


def test_side_by_side_converts_percentages_and_marks_cells_we_lack():
    tables = pd.DataFrame([{"table": "inter", "split": "test", "method": "m", "subset": "tav", "metric": "mae",
                            "mean": 0.8, "std": 0.02, "n_seeds": 2, "best": True},
                           {"table": "inter", "split": "test", "method": "m", "subset": "tav", "metric": "non0_f1",
                            "mean": 0.8, "std": 0.01, "n_seeds": 2, "best": True}])
    paper = load_paper(str(PUBLISHED / "umdf.toml"))
    other = tables.assign(method="other", mean=0.1)  # another method's cells are not ours
    frame = side_by_side(pd.concat([other, tables]), [t for t in paper.tables if t.dataset.key == "mosi"], "m")
    full = frame[frame["subset"] == "tav"].set_index("column")
    assert full.loc["MAE", "ours_mean"] == pytest.approx(0.8) and full.loc["MAE", "diff"] == pytest.approx(0.018)
    assert full.loc["F1", "ours_mean"] == pytest.approx(80.0) and full.loc["F1", "diff"] == pytest.approx(-3.36)
    assert full.loc["F1", "ours_std"] == pytest.approx(1.0)
    text = format_side_by_side(frame)
    assert "| {l, a, v} | F1 | 83.36 | 80.00 ± 1.00 | -3.36 |" in text
    assert "| {l} | MAE | 0.832 | not measured |  |" in text and "**Table 1** (section Experiments" in text


# --------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("paper, data, expected", [
    ("dqf", "mmsa:{root}/data/aligned_50.pkl", r"need CMU-MOSEI: merbench format.*Found for CMU-MOSEI: format mmsa"),
    ("dqf", "merbench:{root}/meld_utt?text=features/Baichuan-13B-Base-UTT&audio=features/chinese-hubert-large-UTT"
            "&vision=features/clip-vit-large-patch14-UTT",
     r"utterance features \(frames per modality: text 1, audio 1, vision 1\), not sequence"),
    ("umdf", "merbench:{root}/mer_seq?val_scale=0.6", r"need MOSI: mmsa format.*format merbench, not mmsa"),
    ("umdf", "mmsa:{root}/mosi/aligned_50.pkl?task=classification", r"MOSI: task classification, not regression"),
    ("cider", "mmsa:{root}/mosi/aligned_50.pkl", r"MOSI: aligned data, not unaligned"),
    ("mitr_dnet", "mmsa:{root}/data/aligned_50.pkl?task=classification", r"task classification, not regression"),
    ("mculora", "mmsa:{root}/iemocap/aligned_50.pkl", r"need IEMOCAP: classification.*task regression"),
    ("umdf", "synthetic:mosi", r"synthetic data is not one of the UMDF paper's datasets.*--allow-synthetic"),
    ("umdf", "mmsa:{root}/data/aligned_50.pkl", r"fits the UMDF tables of MOSI, MOSEI; name the corpus with --corpus"),
])
def test_a_dataset_of_another_shape_is_refused_with_what_was_expected_and_found(reproduce, files, paper, data,
                                                                                 expected, capsys):
    source = data.format(root=files)
    with pytest.raises(SystemExit, match=expected) as info:
        reproduce.main(["--paper", paper, "--data", source, *TINY, "--storage", str(files / "refused")])
    assert str(info.value).startswith("error: ") and source.split("?")[0].split(":", 1)[1] in str(info.value)
    assert not (files / "refused").exists()  # refused before anything ran


def test_corpus_flag_picks_the_table_when_the_path_names_none(files):
    from affectune.data import load

    paper = load_paper(str(PUBLISHED / "umdf.toml"))
    requirement, tables = paper.select(load(f"mmsa:{files}/data/aligned_50.pkl"), corpus="mosei")
    assert requirement.corpus == "MOSEI" and {t.dataset.key for t in tables} == {"mosei"}
    with pytest.raises(ShapeMismatch, match="--corpus 'sims'.*MOSI, MOSEI"):
        paper.select(load(f"mmsa:{files}/data/aligned_50.pkl"), corpus="sims")
    # --allow-synthetic: the format is not checked, the rest is (synthetic MOSI is a regression sequence set)
    requirement, _ = paper.select(load("synthetic:mosi?scale=0.02"), allow_synthetic=True)
    assert requirement.corpus == "MOSI"
    with pytest.raises(ShapeMismatch, match="iemocap.*MOSI: task classification, not regression"):
        paper.select(load("synthetic:iemocap?scale=0.02"), corpus="mosi", allow_synthetic=True)


# --------------------------------------------------------------------------- the command end to end
def _stored(store: str, name: str) -> pd.DataFrame:
    tables = open_store(store).comparison_tables(name)
    return tables[tables["split"] == "test"].set_index(["table", "subset", "metric"])


def test_umdf_table1_on_an_mmsa_fixture_prints_ours_next_to_the_paper(reproduce, files, capsys, tmp_path):
    store, out = str(tmp_path / "store"), tmp_path / "out"
    reproduce.main(["--paper", "umdf", "--data", f"mmsa:{files}/mosi/aligned_50.pkl", *TINY, "--hidden", "10",
                    "--set", "layers=1", "--storage", store, "--name", "repro-umdf", "--out", str(out)])
    printed = capsys.readouterr().out
    ours = _stored(store, "repro-umdf")
    full_mae, full_f1 = ours.loc[("inter", "tav", "mae")], ours.loc[("inter", "tav", "non0_f1")]
    assert (f"| {{l, a, v}} | MAE | 0.782 | {full_mae['mean']:.3f} ± {full_mae['std']:.3f} | "
            f"{full_mae['mean'] - 0.782:+.3f} |") in printed
    assert f"| {{l, a, v}} | F1 | 83.36 | {100 * full_f1['mean']:.2f} ± {100 * full_f1['std']:.2f} |" in printed
    assert "**Table 1** (section Experiments: Comparison with State-of-the-Art Methods" in printed
    assert "selected on the validation split" in printed and "evaluated on the test split" in printed
    assert "umdf with its 'paper' preset, changed by --epochs 1, --batch-size 8, --hidden 10, --set layers=1" in printed
    exported = pd.read_csv(out / "repro-umdf-vs-paper.csv")
    assert len(exported) == 14 and exported["n_seeds"].eq(2).all()
    row = exported[(exported["condition"] == "{a, v}") & (exported["column"] == "MAE")].iloc[0]
    assert row["ours_mean"] == pytest.approx(ours.loc[("inter", "av", "mae"), "mean"])
    assert row["diff"] == pytest.approx(row["ours_mean"] - 0.973) and row["table"] == 1
    assert (out / "repro-umdf.md").exists() and (out / "repro-umdf-auilc-test.tex").exists()


def test_dqf_table2_on_a_merbench_fixture_prints_ours_next_to_the_paper(reproduce, files, capsys, tmp_path):
    store = str(tmp_path / "store")
    reproduce.main(["--paper", "dqf", "--data", f"merbench:{files}/mer_seq?val_scale=0.6", *TINY,
                    "--hidden", "8", "--set", "layers=1", "--storage", store, "--name", "repro-dqf"])
    printed = capsys.readouterr().out
    ours = _stored(store, "repro-dqf")
    headline = ours.loc[("auilc", "tav", "acc7")]
    assert (f"| {{v, a, t}} | Acc.7 | 52.90 | {100 * headline['mean']:.2f} ± {100 * headline['std']:.2f} | "
            f"{100 * headline['mean'] - 52.9:+.2f} |") in printed
    assert "**Table 2** (section 4.4 Comparison with SOTA Methods under the Incomplete Modality Setting), " \
           "CMU-MOSEI: AUILC" in printed
    assert "**Table 1** (section 4.3" in printed and "**Table 3**" not in printed  # MELD's table: not this data
    assert "Data: CMU-MOSEI: merbench format, regression, frame sequences in every modality" in printed


def test_the_preset_is_the_one_for_the_corpus_of_the_table(reproduce, files):
    """UMDF's paper preset differs per corpus (batch 128 / 16, heads 10 / 8): --corpus picks it."""
    from affectune.models import model_class

    args = reproduce.parse_args(["--paper", "umdf", "--data", "x", "--corpus", "mosei"])
    paper = load_paper(str(PUBLISHED / "umdf.toml"))
    spec = reproduce.reproduction_spec(args, paper, f"mmsa:{files}/data/aligned_50.pkl", "MOSEI")
    config = spec.configs["umdf"]
    assert config["batch_size"] == 16 and config["model_config"]["heads"] == 8
    assert config == model_class("umdf").presets["paper-mosei"] and spec.sources["umdf"]["source"] == "preset"
    assert spec.train_seeds == (0, 1, 2, 3, 4)


def test_numbers_off_the_test_split_are_refused(reproduce, files):
    with pytest.raises(SystemExit, match="--eval-splits valid: the papers' numbers are on the test split"):
        reproduce.main(["--paper", "umdf", "--data", f"mmsa:{files}/mosi/aligned_50.pkl", *TINY, "--eval-splits",
                        "valid", "--storage", str(files / "refused")])
