"""The Parquet study store: atomic per-trial files, schema version, lineage, concurrency, corruption."""

from __future__ import annotations

import json
import multiprocessing as mp
import os

import pandas as pd
import pyarrow.parquet as pq
import pytest

from affectune.store import SCHEMA_VERSION, StoreError, open_store

LINEAGE = {"method": "dqf", "dataset": "synthetic:mosi", "fingerprint": "fp123",
           "code_version": "0.1.0+gabc"}


def trial_row(trial_id: str, objective: float = 0.5, **extra) -> dict:
    return {"trial_id": trial_id, "status": "completed", "params": {"layers": 2, "lr": 1e-3},
            "config": {"model": "dqf", "epochs": 2}, "seed": 7, "epochs_run": 2,
            "wall_time_s": 1.5, "num_parameters": 1234, "objective": objective,
            "val_acc2": objective, "valmask_acc2": objective - 0.1,
            "learning_curve": [{"epoch": 1, "objective": objective}], **LINEAGE, **extra}


def grid_frame(n_rates: int = 3) -> pd.DataFrame:
    rows = [{"subset": "t", "rate": r / 10, "seed": 0, "train_seed": 1, "pattern": "random",
             "fill": "zero", "condition": "intra", "metric": "acc2", "value": 0.8 - r / 100}
            for r in range(n_rates)]
    return pd.DataFrame(rows)


def test_roundtrip_all_tables_with_lineage_and_schema_version(tmp_path):
    store = open_store(str(tmp_path))
    store.write_study({"study": "s1", **{k: LINEAGE[k] for k in ("method", "dataset", "fingerprint")},
                       "search_space": {"layers": [2, 4]},
                       "objective": [{"metric": "objective", "mode": "max"}],
                       "config": {"epochs": 2}})
    store.write_trial("s1", trial_row("t1", 0.6))
    store.write_curves("s1", "t1", grid_frame(), lineage={**LINEAGE, "config": {"epochs": 2}})
    summary = pd.DataFrame([{"subset": "t", "pattern": "random", "fill": "zero", "metric": "acc2",
                             "auilc": 0.79, "auilc_std": 0.01, "n_seeds": 3}])
    store.write_summary("s1", "t1", summary, lineage={**LINEAGE, "config": {"epochs": 2}})

    studies = store.studies()
    assert list(studies["study"]) == ["s1"]
    assert json.loads(studies["search_space"][0]) == {"layers": [2, 4]}
    assert studies["created"][0].tzinfo is not None
    assert studies["code_version"][0]  # filled from the package when not given

    trials = store.trials("s1")
    assert len(trials) == 1
    row = trials.iloc[0]
    assert row["trial_id"] == "t1" and row["status"] == "completed"
    assert row["schema_version"] == SCHEMA_VERSION
    assert row["fingerprint"] == "fp123" and row["seed"] == 7
    assert json.loads(row["config"]) == {"model": "dqf", "epochs": 2}
    assert json.loads(row["params"]) == {"layers": 2, "lr": 1e-3}
    assert row["valmask_acc2"] == pytest.approx(0.5)
    assert not row["selected"] and not row["pareto"]

    curves = store.curves("s1")
    assert len(curves) == 3 and set(curves["split"]) == {"test"}
    assert curves["value"].tolist() == pytest.approx([0.8, 0.79, 0.78])
    assert (curves["fingerprint"] == "fp123").all() and (curves["study"] == "s1").all()
    assert store.summary("s1")["auilc"].tolist() == [0.79]

    # The version is in every file's Parquet metadata too.
    for path in store._files("trials", None) + store._files("curves", None):
        assert pq.read_schema(path).metadata[b"affectune.schema_version"] == b"1"
    assert store.problems == []


def test_writes_are_idempotent_per_trial_and_filter_by_study(tmp_path):
    store = open_store(str(tmp_path))
    store.write_trial("a", trial_row("t1", 0.1))
    store.write_trial("a", trial_row("t1", 0.9))  # a retried trial replaces its row
    store.write_trial("b", trial_row("t1", 0.3))
    assert store.trials("a")["objective"].tolist() == [0.9]
    assert sorted(store.trials()["study"]) == ["a", "b"]
    store.mark_trials("a", selected=["t1"], pareto=["t1"])
    row = store.trials("a").iloc[0]
    assert row["selected"] and row["pareto"] and row["objective"] == 0.9
    assert len(store.trials("a")) == 1


def test_no_temporary_files_remain_and_empty_store_reads_empty(tmp_path):
    store = open_store(str(tmp_path / "new"))
    assert store.trials().empty and "trial_id" in store.trials().columns
    store.write_trial("s", trial_row("x"))
    names = os.listdir(tmp_path / "new" / "trials" / "study=s")
    assert names == ["trial=x.parquet"]


def test_bad_input_is_rejected_with_clear_messages(tmp_path):
    store = open_store(str(tmp_path))
    with pytest.raises(StoreError, match="status must be one of"):
        store.write_trial("s", trial_row("t", status="done"))
    bad = trial_row("t")
    del bad["fingerprint"]
    with pytest.raises(StoreError, match=r"trials/s/t: lineage fields \['fingerprint'\]"):
        store.write_trial("s", bad)
    with pytest.raises(StoreError, match="study name '../x'"):
        store.write_trial("../x", trial_row("t"))
    with pytest.raises(StoreError, match="missing columns"):
        store.write_curves("s", "t", grid_frame().drop(columns=["metric"]), lineage={**LINEAGE, "config": {}})
    with pytest.raises(StoreError, match="lineage"):
        store.write_curves("s", "t", grid_frame(), lineage={"config": {}})


def test_corrupt_and_foreign_version_files_are_skipped_and_reported(tmp_path):
    store = open_store(str(tmp_path))
    store.write_trial("s", trial_row("good"))
    bad = tmp_path / "trials" / "study=s" / "trial=broken.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    # A file from a future schema version is skipped, not misread.
    import pyarrow as pa
    table = pa.Table.from_pandas(pd.DataFrame([{"study": "s", "trial_id": "future"}]))
    table = table.replace_schema_metadata({b"affectune.schema_version": b"99"})
    pq.write_table(table, tmp_path / "trials" / "study=s" / "trial=future.parquet")

    trials = store.trials("s")
    assert trials["trial_id"].tolist() == ["good"]
    problems = dict(store.problems)
    assert set(os.path.basename(p) for p in problems) == {"trial=broken.parquet", "trial=future.parquet"}
    assert "schema version 99" in problems[str(tmp_path / "trials" / "study=s" / "trial=future.parquet")]
    bad.unlink()
    (tmp_path / "trials" / "study=s" / "trial=future.parquet").unlink()
    store.trials("s")
    assert store.problems == []


def _writer(root: str, worker: int, n: int) -> None:
    store = open_store(root)
    for i in range(n):
        store.write_trial("conc", trial_row(f"w{worker}_{i}", objective=worker + i / 100))
        # every writer also rewrites one shared trial: last writer wins, never a torn file
        store.write_trial("conc", trial_row("shared", objective=float(worker)))


def test_concurrent_writers_from_several_processes_lose_nothing(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, 15)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    store = open_store(str(tmp_path))
    trials = store.trials("conc")
    expected = {f"w{w}_{i}" for w in range(4) for i in range(15)} | {"shared"}
    assert set(trials["trial_id"]) == expected and len(trials) == len(expected)
    assert trials.set_index("trial_id").loc["shared", "objective"] in {0.0, 1.0, 2.0, 3.0}
    assert store.problems == []
    assert not [n for n in os.listdir(tmp_path / "trials" / "study=conc") if n.startswith(".")]


def test_uri_roots_go_through_pyarrow_filesystems(tmp_path):
    store = open_store(f"file://{tmp_path}")
    store.write_trial("s", trial_row("t"))
    assert open_store(str(tmp_path)).trials("s")["trial_id"].tolist() == ["t"]
    with pytest.raises(StoreError):
        open_store("")


def test_read_trial_and_artifacts(tmp_path):
    store = open_store(str(tmp_path / "store"))
    assert store.read_trial("s", "t") is None
    store.write_trial("s", trial_row("t", 0.25))
    assert store.read_trial("s", "t")["objective"] == 0.25
    local = tmp_path / "best.pt"
    local.write_bytes(b"weights")
    path = store.put_artifact(str(local), "s", "t", "best.pt")
    out = store.fetch_artifact(path, str(tmp_path / "copy.pt"))
    assert open(out, "rb").read() == b"weights"
    # artifacts never show up as table rows
    assert store.trials("s")["trial_id"].tolist() == ["t"] and store.problems == []
