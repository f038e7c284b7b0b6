"""The study store: a Parquet dataset under one root (local path or ``s3://...``), partitioned by study.

Layout (one directory per table, one partition directory per study, one set of files per trial)::

    <root>/studies/study=<name>/study.parquet
    <root>/trials/study=<name>/trial=<trial_id>.parquet
    <root>/curves/study=<name>/trial=<trial_id>__<splits>.parquet
    <root>/summary/study=<name>/trial=<trial_id>__<splits>.parquet

A comparison (several methods retrained over seeds on one protocol, `affectune.compare`) has its own
five tables, partitioned by comparison; its lineage to the studies its configs came from is in
`comparisons.sources` and in every run row (source, source_study, source_trial)::

    <root>/comparisons/comparison=<name>/comparison.parquet             one row
    <root>/comparison_runs/comparison=<name>/run=<method>__seed<s>.parquet  one row per (method, train seed)
    <root>/comparison_curves/comparison=<name>/run=<method>__seed<s>.parquet robustness grid of that run
    <root>/comparison_tables/comparison=<name>/tables.parquet          the printed tables' cells
    <root>/comparison_significance/comparison=<name>/significance.parquet each method against the best

Every file is written to a hidden temporary name and then renamed, so a reader never sees a half
written file and concurrent trials on many nodes never lose each other's rows (each trial owns its
files; writing the same trial again replaces its file, which makes writes idempotent per trial id).
On object stores a single PUT is already atomic, so the file is written in place there.

Every file carries ``SCHEMA_VERSION`` in its Parquet metadata and as a column. Readers skip files that
cannot be read (corrupt, partial, written by a newer schema) and list them in ``StudyStore.problems``.
The dashboard reads the store only through ``open_store(root).studies() / trials() / curves() /
summary()`` and, for comparisons, ``comparisons() / comparison_runs() / comparison_curves() /
comparison_tables() / comparison_significance()`` (each optionally for one comparison name).
"""

from __future__ import annotations

import json
import os
import re
import uuid
from typing import Any, Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

SCHEMA_VERSION = 1
"""Version of the store's table layout; stored in each file's metadata and as a column."""

_META_KEY = b"affectune.schema_version"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")

TRIAL_STATUSES = ("completed", "stopped", "failed")
LINEAGE = ("method", "dataset", "fingerprint", "code_version")
"""Lineage columns every trial, curve and summary row carries (plus seed and config)."""

JSON_COLUMNS = ("params", "config", "learning_curve", "search_space", "objective")
"""Columns stored as JSON strings (decode with ``json.loads``)."""

STUDY_COLUMNS = ("study", "method", "dataset", "fingerprint", "search_space", "objective",
                 "code_version", "created", "schema_version", "config")
TRIAL_COLUMNS = ("study", "trial_id", "status", "params", "config", "seed", "epochs_run",
                 "wall_time_s", "num_parameters", "error", "learning_curve", "pareto", "selected",
                 "node_id", *LINEAGE, "schema_version")
CURVE_COLUMNS = ("study", "trial_id", "split", "pattern", "fill", "condition", "subset", "rate",
                 "seed", "train_seed", "metric", "value", *LINEAGE, "config", "schema_version")
SUMMARY_COLUMNS = ("study", "trial_id", "split", "pattern", "fill", "subset", "metric", "auilc",
                   "auilc_std", "n_seeds", *LINEAGE, "config", "schema_version")

# ---- comparisons (affectune.compare): every method on one protocol, retrained over train seeds
COMPARISON_COLUMNS = ("comparison", "dataset", "fingerprint", "task", "primary_metric", "methods",
                      "train_seeds", "mask_seeds", "splits", "sources", "protocol", "code_version",
                      "created", "schema_version")
"""One row per comparison. methods, train_seeds, mask_seeds, splits: JSON lists; sources: JSON
{method: {"source": "study" | "preset" | "defaults", "study", "trial_id", "preset"}} (the lineage);
protocol: JSON (patterns, fills, rates, subsets, headline column, seed test, bootstrap size)."""
COMPARISON_RUN_COLUMNS = ("comparison", "method", "train_seed", "source", "source_study", "source_trial",
                          "config", "num_parameters", "best_epoch", "wall_time_s", "dataset", "fingerprint",
                          "code_version", "schema_version")
"""One row per (method, train seed): the config trained (JSON), where it came from, its size, the
best epoch chosen on validation, plus that epoch's val_* / valmask_* metric columns."""
COMPARISON_CURVE_COLUMNS = ("comparison", "method", "train_seed", "split", "condition", "subset", "rate",
                            "seed", "pattern", "fill", "metric", "value", "schema_version")
"""The robustness grid of every run, as in `curves` (seed = mask seed; condition intra | inter)."""
COMPARISON_TABLE_COLUMNS = ("comparison", "table", "split", "method", "subset", "metric", "mean", "std",
                            "n_seeds", "best", "schema_version")
"""Cells of the printed tables, mean and std (ddof=1) over train seeds. table "auilc": DQF Table 2
(subset = the missing subset, mean of the AUILC); "inter": UMDF Table 1 (subset = the AVAILABLE
modalities, the metric under that condition). best: the best mean of its (table, split, subset,
metric) column, by the metric's direction."""
COMPARISON_SIGNIFICANCE_COLUMNS = ("comparison", "split", "method", "reference", "table", "subset", "metric",
                                   "diff", "seed_test", "seed_p", "seed_effect", "n_seeds", "bootstrap_p",
                                   "bootstrap_ci_low", "bootstrap_ci_high", "n_boot", "schema_version")
"""Each method against the best (reference) on the headline column (table, subset, metric): diff =
method - reference (mean over seeds); seed_test (e.g. "paired t"), its two-sided p and effect size
(Cohen's d_z) over train seeds; the paired bootstrap over test samples: two-sided p and the 95%
percentile interval of the difference. The reference's own row has NaN tests."""
_COLUMNS = {"studies": STUDY_COLUMNS, "trials": TRIAL_COLUMNS, "curves": CURVE_COLUMNS,
            "summary": SUMMARY_COLUMNS, "comparisons": COMPARISON_COLUMNS,
            "comparison_runs": COMPARISON_RUN_COLUMNS, "comparison_curves": COMPARISON_CURVE_COLUMNS,
            "comparison_tables": COMPARISON_TABLE_COLUMNS,
            "comparison_significance": COMPARISON_SIGNIFICANCE_COLUMNS}
_PARTITION = {table: "comparison" for table in _COLUMNS if table.startswith("comparison")}
"""Partition key of each table ("study" unless named here)."""
_METRIC_PREFIXES = ("val_", "valmask_", "objective", "best_")


class StoreError(ValueError):
    """Bad input to a store writer; the message names the table, study/trial and field."""


def _json(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=_json_default)


def _json_default(value: Any) -> Any:
    # numpy scalars and arrays, paths, tuples: anything with a natural JSON form.
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _check_name(kind: str, name: Any) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise StoreError(f"{kind} name {name!r} must match {_NAME_RE.pattern} "
                         "(it becomes part of a file name)")
    return name


def _float_or_none(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class StudyStore:
    """Read and write the four tables of one store root. Not tied to one study."""

    def __init__(self, root: str):
        self.root = root
        uri = root if "://" in root else os.path.abspath(os.path.expanduser(root))
        self.fs, self.base = pafs.FileSystem.from_uri(uri)
        self._atomic_rename = isinstance(self.fs, pafs.LocalFileSystem)
        self._problems: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"StudyStore({self.root!r})"

    # ------------------------------------------------------------------ paths and raw IO
    def _dir(self, table: str, study: str) -> str:
        key = _PARTITION.get(table, "study")
        return f"{self.base.rstrip('/')}/{table}/{key}={_check_name(key, study)}"

    def _write(self, table: str, study: str, filename: str, frame: pd.DataFrame) -> str:
        """Write `frame` to <table>/study=<study>/<filename> atomically; return the path."""
        directory = self._dir(table, study)
        final = f"{directory}/{filename}"
        try:
            self.fs.create_dir(directory, recursive=True)
        except OSError as exc:  # a read-only store fails at its first write: say which
            raise OSError(exc.errno, f"study store {self.root!r} cannot write {final}: "
                                     f"{exc.strerror or exc}") from exc
        arrow = pa.Table.from_pandas(frame, preserve_index=False)
        arrow = arrow.replace_schema_metadata(
            {**(arrow.schema.metadata or {}), _META_KEY: str(SCHEMA_VERSION).encode()})
        if not self._atomic_rename:
            pq.write_table(arrow, final, filesystem=self.fs)
            return final
        tmp = f"{directory}/.tmp-{uuid.uuid4().hex}-{filename}"
        try:
            pq.write_table(arrow, tmp, filesystem=self.fs)
            self.fs.move(tmp, final)  # rename(2): atomic on one filesystem
        except BaseException as exc:
            try:
                self.fs.delete_file(tmp)
            except OSError:
                pass
            if isinstance(exc, OSError):  # read-only, full disk: say which store and file
                raise OSError(exc.errno, f"study store {self.root!r} cannot write {final}: "
                                         f"{exc.strerror or exc}") from exc
            raise
        return final

    def check_writable(self) -> None:
        """Create and delete a probe file under the root: an unwritable store (read-only, full,
        no permission) fails here with a clear OSError, before any study work starts."""
        probe = f"{self.base.rstrip('/')}/.write-probe-{uuid.uuid4().hex}"
        try:
            self.fs.create_dir(self.base, recursive=True)
            with self.fs.open_output_stream(probe) as out:
                out.write(b"affectune")
            self.fs.delete_file(probe)
        except OSError as exc:
            raise OSError(exc.errno, f"study store {self.root!r} is not writable: "
                                     f"{exc.strerror or exc}") from exc

    def _files(self, table: str, study: str | None) -> list[str]:
        base = (self._dir(table, study) if study is not None
                else f"{self.base.rstrip('/')}/{table}")
        infos = self.fs.get_file_info(pafs.FileSelector(base, allow_not_found=True, recursive=True))
        files = [i.path for i in infos if i.type == pafs.FileType.File
                 and i.path.endswith(".parquet")
                 and not os.path.basename(i.path).startswith((".", "_"))]
        return sorted(files)

    def _read(self, table: str, study: str | None) -> pd.DataFrame:
        frames = []
        # Forget earlier problems in the scope being re-read (files may have been fixed or removed).
        scope = (self._dir(table, study) if study is not None else f"{self.base.rstrip('/')}/{table}") + "/"
        self._problems = {p: m for p, m in self._problems.items() if not p.startswith(scope)}
        for path in self._files(table, study):
            try:
                arrow = pq.read_table(path, filesystem=self.fs)
                meta = arrow.schema.metadata or {}
                version = int(meta.get(_META_KEY, b"-1"))
                if version != SCHEMA_VERSION:
                    raise StoreError(f"schema version {version} (this affectune reads "
                                     f"{SCHEMA_VERSION}); written by another affectune version")
                frame = arrow.to_pandas()
                missing = [c for c in _COLUMNS[table] if c not in frame.columns]
                if missing:
                    raise StoreError(f"missing columns {missing}")
            except Exception as exc:  # noqa: BLE001 - any unreadable file is reported, not fatal
                self._problems[path] = f"{table}: skipped unreadable file ({type(exc).__name__}: {exc})"
                continue
            self._problems.pop(path, None)
            frames.append(frame)
        frames = [f for f in frames if len(f)]
        if not frames:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in _COLUMNS[table]})
        out = pd.concat(frames, ignore_index=True, sort=False)
        first = [c for c in _COLUMNS[table] if c in out.columns]
        return out[first + [c for c in out.columns if c not in first]]

    @property
    def problems(self) -> list[tuple[str, str]]:
        """(path, message) for every file the last reads had to skip."""
        return sorted(self._problems.items())

    # ------------------------------------------------------------------ writers
    def write_study(self, row: dict) -> str:
        """Write (or replace) the study's row. Needs study, method, dataset, fingerprint."""
        row = dict(row)
        study = _check_name("study", row.get("study"))
        for key in ("method", "dataset", "fingerprint"):
            if not row.get(key):
                raise StoreError(f"studies/{study}: field {key!r} is required")
        row.setdefault("search_space", None)
        row.setdefault("objective", None)
        row.setdefault("config", None)
        if not row.get("code_version"):
            from affectune import code_version
            row["code_version"] = code_version()
        created = row.get("created") or pd.Timestamp.now(tz="UTC")
        row["created"] = pd.Timestamp(created).tz_convert("UTC") if pd.Timestamp(created).tzinfo \
            else pd.Timestamp(created).tz_localize("UTC")
        for key in JSON_COLUMNS:
            if key in row:
                row[key] = _json(row[key])
        row["schema_version"] = SCHEMA_VERSION
        return self._write("studies", study, "study.parquet", pd.DataFrame([row]))

    def write_trial(self, study: str, row: dict) -> str:
        """Write (or replace) one trial's row; idempotent per trial id.

        Needs trial_id, status, config, seed and the lineage fields (method, dataset,
        fingerprint, code_version). Metric-like fields (val_*, valmask_*, objective*) become floats.
        """
        row = dict(row)
        _check_name("study", study)
        trial_id = _check_name("trial", row.get("trial_id"))
        where = f"trials/{study}/{trial_id}"
        if row.get("study", study) != study:
            raise StoreError(f"{where}: row says study {row['study']!r}")
        row["study"] = study
        if row.get("status") not in TRIAL_STATUSES:
            raise StoreError(f"{where}: status must be one of {TRIAL_STATUSES}, got {row.get('status')!r}")
        missing = [k for k in (*LINEAGE, "config", "seed") if row.get(k) is None]
        if missing:
            raise StoreError(f"{where}: lineage fields {missing} are required")
        defaults = {"params": {}, "epochs_run": 0, "wall_time_s": None, "num_parameters": None,
                    "error": None, "learning_curve": [], "pareto": False, "selected": False,
                    "node_id": None}
        for key, value in defaults.items():
            row.setdefault(key, value)
        for key in JSON_COLUMNS:
            if key in row:
                row[key] = _json(row[key])
        for key in list(row):
            if key.startswith(_METRIC_PREFIXES):
                row[key] = _float_or_none(row[key])
        row["seed"] = int(row["seed"])
        row["epochs_run"] = int(row["epochs_run"] or 0)
        row["wall_time_s"] = _float_or_none(row["wall_time_s"])
        row["num_parameters"] = None if row["num_parameters"] is None else int(row["num_parameters"])
        row["error"] = None if row["error"] is None else str(row["error"])
        row["pareto"], row["selected"] = bool(row["pareto"]), bool(row["selected"])
        row["schema_version"] = SCHEMA_VERSION
        frame = pd.DataFrame([row])
        for key in ("wall_time_s",):
            frame[key] = frame[key].astype("float64")
        return self._write("trials", study, f"trial={trial_id}.parquet", frame)

    def mark_trials(self, study: str, *, selected: Iterable[str] = (), pareto: Iterable[str] = ()) -> None:
        """Set the `selected` / `pareto` flags of a study's trials (rewrites the changed rows)."""
        selected, pareto = set(selected), set(pareto)
        trials = self.trials(study)
        for record in trials.to_dict("records"):
            want_sel, want_par = record["trial_id"] in selected, record["trial_id"] in pareto
            if bool(record["selected"]) == want_sel and bool(record["pareto"]) == want_par:
                continue
            record.update(selected=want_sel, pareto=want_par)
            clean = {k: v for k, v in record.items() if not _is_missing(v) or k in ("error",)}
            self.write_trial(study, clean)

    def _write_grid(self, table: str, study: str, trial_id: str, frame: pd.DataFrame,
                    lineage: dict | None) -> str:
        _check_name("study", study)
        _check_name("trial", trial_id)
        where = f"{table}/{study}/{trial_id}"
        if not isinstance(frame, pd.DataFrame) or frame.empty:
            raise StoreError(f"{where}: expected a non-empty DataFrame")
        frame = frame.copy()
        for key, value in (lineage or {}).items():
            frame[key] = _json(value) if key in JSON_COLUMNS else value
        frame["study"], frame["trial_id"], frame["schema_version"] = study, trial_id, SCHEMA_VERSION
        if "split" not in frame.columns:
            frame["split"] = "test"
        missing = [c for c in _COLUMNS[table] if c not in frame.columns]
        if missing:
            raise StoreError(f"{where}: missing columns {missing} (lineage goes in `lineage=`)")
        if frame[list(LINEAGE)].isna().any().any():
            raise StoreError(f"{where}: lineage columns {list(LINEAGE)} must be set on every row")
        splits = "_".join(sorted(map(str, frame["split"].unique())))
        return self._write(table, study, f"trial={trial_id}__{splits}.parquet", frame)

    def write_curves(self, study: str, trial_id: str, frame: pd.DataFrame, *,
                     lineage: dict | None = None) -> str:
        """Write a trial's robustness curves (one file per trial and split set; idempotent).

        `frame` has subset, rate, seed, pattern, fill, condition, metric, value (and train_seed);
        `lineage` (method, dataset, fingerprint, code_version, config) is added to every row.
        """
        return self._write_grid("curves", study, trial_id, frame, lineage)

    def write_summary(self, study: str, trial_id: str, frame: pd.DataFrame, *,
                      lineage: dict | None = None) -> str:
        """Write a trial's AUILC summary rows (one file per trial and split set; idempotent)."""
        return self._write_grid("summary", study, trial_id, frame, lineage)

    def read_trial(self, study: str, trial_id: str) -> dict | None:
        """One trial's row as a dict, or None when it has not been written (or is unreadable)."""
        path = f"{self._dir('trials', study)}/trial={_check_name('trial', trial_id)}.parquet"
        try:
            frame = pq.read_table(path, filesystem=self.fs).to_pandas()
        except (OSError, pa.ArrowInvalid):
            return None
        return frame.iloc[0].to_dict() if len(frame) else None

    # ------------------------------------------------------------------ comparisons (writers)
    def write_comparison(self, row: dict) -> str:
        """Write (or replace) a comparison's row (see COMPARISON_COLUMNS; JSON fields may be given as
        Python lists/dicts). Needs comparison, dataset, fingerprint, task, primary_metric, methods."""
        row = dict(row)
        name = _check_name("comparison", row.get("comparison"))
        for key in ("dataset", "fingerprint", "task", "primary_metric", "methods"):
            if not row.get(key):
                raise StoreError(f"comparisons/{name}: field {key!r} is required")
        if not row.get("code_version"):
            from affectune import code_version
            row["code_version"] = code_version()
        created = pd.Timestamp(row.get("created") or pd.Timestamp.now(tz="UTC"))
        row["created"] = created.tz_convert("UTC") if created.tzinfo else created.tz_localize("UTC")
        for key in ("methods", "train_seeds", "mask_seeds", "splits", "sources", "protocol"):
            row[key] = _json(row.get(key))
        row["schema_version"] = SCHEMA_VERSION
        return self._write("comparisons", name, "comparison.parquet", pd.DataFrame([row]))

    def write_comparison_run(self, comparison: str, row: dict, curves: pd.DataFrame) -> tuple[str, str]:
        """Write one (method, train seed) run: its row (COMPARISON_RUN_COLUMNS plus val_* metrics)
        and its robustness-grid curves; idempotent per run. Returns the two paths."""
        row = dict(row, comparison=_check_name("comparison", comparison))
        method = _check_name("method", row.get("method"))
        where = f"comparison_runs/{comparison}/{method}"
        missing = [k for k in ("train_seed", "config", "source", "dataset", "fingerprint") if row.get(k) is None]
        if missing:
            raise StoreError(f"{where}: fields {missing} are required")
        seed = int(row["train_seed"])
        row.update(train_seed=seed, config=_json(row["config"]), schema_version=SCHEMA_VERSION)
        for key in ("source_study", "source_trial", "num_parameters", "best_epoch", "wall_time_s"):
            row.setdefault(key, None)
        if not row.get("code_version"):
            from affectune import code_version
            row["code_version"] = code_version()
        for key in list(row):
            if key.startswith(("val_", "valmask_")) or key == "wall_time_s":
                row[key] = _float_or_none(row[key])
        if not isinstance(curves, pd.DataFrame) or curves.empty:
            raise StoreError(f"{where} seed {seed}: expected a non-empty curves DataFrame")
        curves = curves.assign(comparison=comparison, method=method, train_seed=seed,
                               schema_version=SCHEMA_VERSION)
        absent = [c for c in COMPARISON_CURVE_COLUMNS if c not in curves.columns]
        if absent:
            raise StoreError(f"comparison_curves/{comparison}/{method} seed {seed}: missing columns {absent}")
        filename = f"run={method}__seed{seed}.parquet"
        return (self._write("comparison_runs", comparison, filename, pd.DataFrame([row])),
                self._write("comparison_curves", comparison, filename, curves))

    def write_comparison_tables(self, comparison: str, tables: pd.DataFrame,
                                significance: pd.DataFrame) -> tuple[str, str]:
        """Write (replace) a comparison's table cells and significance rows."""
        _check_name("comparison", comparison)
        paths = []
        for table, frame, filename in (("comparison_tables", tables, "tables.parquet"),
                                       ("comparison_significance", significance, "significance.parquet")):
            frame = frame.assign(comparison=comparison, schema_version=SCHEMA_VERSION)
            absent = [c for c in _COLUMNS[table] if c not in frame.columns]
            if absent or frame.empty:
                raise StoreError(f"{table}/{comparison}: " + (f"missing columns {absent}" if absent else "no rows"))
            paths.append(self._write(table, comparison, filename, frame[list(_COLUMNS[table])]))
        return paths[0], paths[1]

    def delete_comparison(self, comparison: str) -> None:
        """Remove every table file of a comparison (before it is run again under the same name)."""
        for table in _PARTITION:
            directory = self._dir(table, comparison)
            if self.fs.get_file_info(directory).type == pafs.FileType.Directory:
                self.fs.delete_dir(directory)

    # ------------------------------------------------------------------ artifacts
    def put_artifact(self, local_path: str, study: str, trial_id: str, name: str) -> str:
        """Copy a local file to <root>/artifacts/study=<study>/<trial_id>/<name> (atomic locally);
        return the path within the store's filesystem (pass it to `fetch_artifact`)."""
        directory = (f"{self.base.rstrip('/')}/artifacts/study={_check_name('study', study)}/"
                     f"{_check_name('trial', trial_id)}")
        self.fs.create_dir(directory, recursive=True)
        final = f"{directory}/{name}"
        target = f"{directory}/.tmp-{uuid.uuid4().hex}-{name}" if self._atomic_rename else final
        pafs.copy_files(local_path, target, destination_filesystem=self.fs)
        if target != final:
            self.fs.move(target, final)
        return final

    def fetch_artifact(self, path: str, local_path: str) -> str:
        """Copy an artifact written by `put_artifact` to a local file; return `local_path`."""
        pafs.copy_files(path, local_path, source_filesystem=self.fs)
        return local_path

    # ------------------------------------------------------------------ readers
    def studies(self, study: str | None = None) -> pd.DataFrame:
        """One row per study (see STUDY_COLUMNS)."""
        return self._read("studies", study)

    def trials(self, study: str | None = None) -> pd.DataFrame:
        """One row per trial (see TRIAL_COLUMNS, plus val_*/valmask_*/objective metric columns)."""
        return self._read("trials", study)

    def curves(self, study: str | None = None) -> pd.DataFrame:
        """Robustness curve points of the evaluated trials (see CURVE_COLUMNS)."""
        return self._read("curves", study)

    def summary(self, study: str | None = None) -> pd.DataFrame:
        """AUILC per subset and metric of the evaluated trials (see SUMMARY_COLUMNS)."""
        return self._read("summary", study)

    def comparisons(self, comparison: str | None = None) -> pd.DataFrame:
        """One row per comparison (see COMPARISON_COLUMNS; decode the JSON fields with json.loads)."""
        return self._read("comparisons", comparison)

    def comparison_runs(self, comparison: str | None = None) -> pd.DataFrame:
        """One row per (comparison, method, train seed) (see COMPARISON_RUN_COLUMNS)."""
        return self._read("comparison_runs", comparison)

    def comparison_curves(self, comparison: str | None = None) -> pd.DataFrame:
        """Robustness-grid points of every run of the comparison(s) (see COMPARISON_CURVE_COLUMNS)."""
        return self._read("comparison_curves", comparison)

    def comparison_tables(self, comparison: str | None = None) -> pd.DataFrame:
        """The tables' cells: mean ± std over train seeds, best per column (COMPARISON_TABLE_COLUMNS)."""
        return self._read("comparison_tables", comparison)

    def comparison_significance(self, comparison: str | None = None) -> pd.DataFrame:
        """Each method against the best on the headline column (COMPARISON_SIGNIFICANCE_COLUMNS)."""
        return self._read("comparison_significance", comparison)


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    return bool(pd.api.types.is_scalar(value) and pd.isna(value))


def open_store(root: str) -> StudyStore:
    """Open (lazily: nothing is created until the first write) the store at `root`."""
    if not root:
        raise StoreError("store root must be a non-empty path or URI")
    return StudyStore(root)
