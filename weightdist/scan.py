"""`weightdist scan`: many models, one tensor per unit of work, on a local pool, Ray or Dask, into a Parquet store.

The driver only plans and records: workers open each model themselves from its spec (so no
tensor crosses the driver), first to list its layers (a plan), then one layer per unit, the
largest first. A unit's numbers depend on the options, the layer's values and its name only
(:func:`weightdist.pipeline.layer_seed`), so 1 or N workers on any engine, and `weightdist fit`,
give identical rows. Each finished unit is committed to the store at once; a rerun of the same
command skips what is there, so a killed scan resumes where it stopped.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import sys
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from .errors import WeightdistError, one_line
from .pipeline import FitOptions, default_workers, fit_layers, layer_table
from .stores.parquet import KEY_COLUMNS, ParquetStore, run_id, table_bytes

if TYPE_CHECKING:
    from .engines import Engine


class ZooFileError(WeightdistError):
    """A --from file that cannot be read or holds a line that is not a model spec."""


ZOO_FILE_LIMIT = 16 * 2**20  # a list of a hundred thousand specs


@dataclass(frozen=True)
class ScanModel:
    """One model to scan: a spec as the user wrote it, and whether to analyse its initialisation instead."""

    spec: str
    init: bool = False

    @property
    def key(self) -> str:
        """The model's identity in the store (what a rerun looks for)."""
        return f"{self.spec} --init" if self.init else self.spec


def read_zoo(path: str | os.PathLike) -> list[ScanModel]:
    """Models from a --from file: one ``SPEC [--init]`` per line; ``#`` starts a comment."""
    from .untrusted import read_capped

    path = Path(path)
    data = read_capped(path, ZOO_FILE_LIMIT, fix="pass --from a text file with one model spec per line")  # not a FIFO, not huge
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ZooFileError(f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start}); pass a file with one model spec per line") from None
    models = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            words = shlex.split(line, comments=True)
        except ValueError as exc:
            raise ZooFileError(f"{path}:{number}: {exc}; write one model spec per line, quoting paths with spaces") from None
        if not words:
            continue
        init = "--init" in words
        rest = [w for w in words if w != "--init"]
        if len(rest) != 1 or any(w.startswith("-") for w in rest) or any(not c.isprintable() for c in rest[0]):
            raise ZooFileError(f"{path}:{number}: expected one model spec and optionally --init, got {shlex.join(words)!r}; "
                               "write one model per line ('#' starts a comment)")
        models.append(ScanModel(rest[0], init))
    return models


# --- worker side ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class PlanTask:
    model: ScanModel
    target: str  # what the worker opens: the spec, or its absolute path when it names a file here
    options: FitOptions


@dataclass(frozen=True)
class Plan:
    """A model's layers as known from its headers, and its provenance; or the one-line reason it did not open."""

    task: PlanTask
    name: str = ""
    source: str = ""
    path: str | None = None
    sha256: str | None = None
    info: dict = dataclasses.field(default_factory=dict)
    layers: tuple = ()  # LayerInfo, in the model's order (the index `fit` gives them)
    skipped: dict = dataclasses.field(default_factory=dict)
    error: str | None = None
    trace: str | None = None  # a bug's traceback (not a user error), printed by the driver

    @property
    def label(self) -> str:
        return f"{self.name} (init)" if self.task.model.init else self.name


@dataclass(frozen=True)
class Unit:
    """One tensor of one model: what a worker needs to open, read, fit and tabulate it."""

    task: PlanTask
    label: str
    run_id: str
    layer: object  # a sources.extract.LayerInfo
    index: int
    n_layers: int


@dataclass(frozen=True)
class UnitResult:
    parquet: bytes | None = None  # the unit's rows as one Parquet file
    error: str | None = None
    trace: str | None = None


# Per worker process: the models opened lately, by (target, init, seed, file version), with the bytes they hold.
# Units run largest first across all models, so a worker alternates between models; reopening one costs more
# than fitting a small tensor of it. Models stay open while what they hold fits the budget (the newest always).
_OPENED: OrderedDict = OrderedDict()
_OPENED_MAX = 8
_OPENED_BYTES = 256 * 2**20


def _held_bytes(opened) -> int:
    """Roughly what an opened model keeps in memory: its tensors once loaded, nothing for a lazy file view."""
    tensors = getattr(opened, "tensors", None)
    if isinstance(tensors, dict):  # a state dict: built-ins, torchvision, .pth files
        return sum(getattr(t, "nbytes", 0) for t in tensors.values())
    if tensors is not None:  # .safetensors and shards: values are read per access
        return 0
    return 4 * sum(t.numel for t in opened.tensor_infos())  # other formats: as if every value were held (an upper bound)


def _open(task: PlanTask):
    from .sources import open_model

    try:  # a file rewritten since it was opened (a long-lived engine) is opened again
        stat = os.stat(task.target)
        version = (stat.st_mtime_ns, stat.st_size)
    except OSError:
        version = None
    key = (task.target, task.model.init, task.options.seed, version)
    if key in _OPENED:
        _OPENED.move_to_end(key)
        return _OPENED[key][0]
    opened = open_model(task.target, init=task.model.init, seed=task.options.seed)
    _OPENED[key] = (opened, _held_bytes(opened))
    while len(_OPENED) > 1 and (len(_OPENED) > _OPENED_MAX or sum(held for _, held in _OPENED.values()) > _OPENED_BYTES):
        _OPENED.popitem(last=False)
    return opened


def _failure(exc: BaseException) -> tuple[str, str | None]:
    """A user error's one line; a bug's line plus its traceback (the scan records both and goes on)."""
    if isinstance(exc, WeightdistError):
        return one_line(exc, 300), None
    return f"internal error ({type(exc).__name__}: {one_line(exc, 200)}); please report it", traceback.format_exc()


def plan_model(task: PlanTask) -> Plan:
    """Worker: open the model and list the layers the options select, reading no values."""
    from collections import Counter

    from .sources.extract import layer_infos

    try:
        opened = _open(task)
        skipped: Counter = Counter()
        o = task.options
        layers = layer_infos(opened, o.kinds, o.include, o.exclude, o.min_size, skipped)
        info = opened.info.as_dict() if hasattr(opened.info, "as_dict") else {}
        return Plan(task, opened.name, opened.source, opened.path, opened.sha256, info, tuple(layers), dict(skipped))
    except Exception as exc:  # recorded against the model; the scan goes on
        error, trace = _failure(exc)
        return Plan(task, error=error, trace=trace)


def fit_unit(unit: Unit) -> UnitResult:
    """Worker: read one layer, fit and assess it exactly as `fit` does, and return its rows as Parquet bytes."""
    from .sources.extract import read_layer

    try:
        opened = _open(unit.task)
        o = unit.task.options
        layer = read_layer(opened, unit.layer, o.max_per_layer, o.seed)
        result = dataclasses.replace(next(fit_layers([layer], o)), index=unit.index)
        table = layer_table([result], n_layers=unit.n_layers)
        return UnitResult(table_bytes(table, dict(zip(KEY_COLUMNS, (unit.label, unit.task.model.key, unit.run_id)))))
    except Exception as exc:
        error, trace = _failure(exc)
        return UnitResult(error=error, trace=trace)


# --- driver --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ScanSummary:
    """What a scan did; ``failed_units`` and ``failed_models`` decide the exit code."""

    store: Path
    run_id: str
    models: int
    failed_models: int  # could not be opened
    units: int  # layers the models hold under these options
    skipped_units: int  # already in the store from an earlier run
    failed_units: int
    seconds: float

    @property
    def ok(self) -> bool:
        return not (self.failed_models or self.failed_units)


def _target(spec: str) -> str:
    """Workers may run in another folder (Ray): a spec naming a file here is passed as an absolute path."""
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec


def _model_row(plan: Plan, rid: str, options: dict, versions: dict, status: str, error: str | None, n_failed: int) -> dict:
    import json

    return {
        "model": plan.label or plan.task.model.spec, "spec": plan.task.model.key, "run_id": rid, "init": plan.task.model.init,
        "name": plan.name or plan.task.model.spec,
        "status": status, "error": error or "", "source": plan.source, "path": plan.path, "sha256": plan.sha256,
        "training_data": plan.info.get("training_data", ""), "licence": plan.info.get("licence", ""),
        "init_law": plan.info.get("init", ""), "provenance": plan.info.get("provenance", ""),
        "n_layers": len(plan.layers), "n_weights": int(sum(layer.numel for layer in plan.layers)), "failed_units": n_failed,
        "skipped": json.dumps(plan.skipped, sort_keys=True), "options": json.dumps(options, sort_keys=True),
        "versions": json.dumps(versions, sort_keys=True), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def scan(models: Sequence[ScanModel], store: str | os.PathLike, *, options: FitOptions = FitOptions(),
         engine: str | Engine = "local", workers: int | None = None, address: str | None = None,
         progress: bool = True, command: str = "") -> ScanSummary:
    """Fit every selected layer of every model into the store at ``store``; resumes an earlier run of the same options.

    ``engine``: a name (started and stopped here, with ``workers`` and ``address``) or a started
    :class:`~weightdist.engines.Engine`, which is used as it is and left running (notebooks, tests).
    """
    from .engines import Engine, WorkerDied, get_engine
    from .reporting.report import options_dict, package_versions

    if not models:
        raise WeightdistError("scan needs at least one model: pass specs or --from FILE")
    models = list(dict.fromkeys(models))  # a model listed twice is scanned once
    t0 = time.perf_counter()
    st = ParquetStore.create(store)
    opts = options_dict(options)
    rid, versions = run_id(opts), package_versions()
    runner = engine if isinstance(engine, Engine) else get_engine(engine, workers or default_workers(), address)
    with st.writing(), (contextlib.nullcontext(runner) if runner is engine else runner), _progress(progress) as bar:
        st.write_run(rid, opts, command)
        tasks = [PlanTask(m, _target(m.spec), options) for m in models]
        bar.set_description("planning")
        plans: dict[ScanModel, Plan] = {}
        units: list[Unit] = []
        failed_models = skipped_units = 0
        for task, plan in runner.map_unordered(plan_model, tasks):
            if isinstance(plan, WorkerDied):
                plan = Plan(task, error=f"opening the model: {plan.detail}")
            plans[task.model] = plan
            if plan.error:
                failed_models += 1
                _report_trace(plan.task.model.key, plan.trace)
                st.commit_model(rid, task.model.key, _model_row(plan, rid, opts, versions, "failed", plan.error, 0))
                continue
            done = st.done_layers(rid, task.model.key, [layer.name for layer in plan.layers])
            skipped_units += len(done)
            missing = [Unit(task, plan.label, rid, layer, i, len(plan.layers)) for i, layer in enumerate(plan.layers) if layer.name not in done]
            units += missing
            status = "incomplete" if missing else "ok"
            st.commit_model(rid, task.model.key, _model_row(plan, rid, opts, versions, status, None, 0))
        units.sort(key=lambda u: -u.layer.numel)  # largest first: the long units start early, the short ones fill in
        remaining = {m: 0 for m in plans}
        for u in units:
            remaining[u.task.model] += 1
        failed: dict[ScanModel, list[str]] = {m: [] for m in plans}
        finished = sum(1 for m, plan in plans.items() if plan.error or not remaining[m])
        bar.reset(total=len(units))
        bar.set_description("scan")
        bar.set_postfix_str(f"models {finished}/{len(plans)} done, {failed_models} failed to open")
        for unit, result in runner.map_unordered(fit_unit, units):
            model = unit.task.model
            if isinstance(result, WorkerDied):
                result = UnitResult(error=result.detail)
            if result.error:
                failed[model].append(f"layer {unit.layer.name}: {result.error}")
                _report_trace(f"{model.key} {unit.layer.name}", result.trace)
            else:
                st.commit_unit(rid, model.key, unit.layer.name, result.parquet)
            remaining[model] -= 1
            if remaining[model] == 0:
                finished += 1
                errors = failed[model]
                status = f"{len(errors)} units failed" if errors else "ok"
                st.commit_model(rid, model.key, _model_row(plans[model], rid, opts, versions, status, errors[0] if errors else None, len(errors)))
            bar.update(1)
            bar.set_postfix_str(f"models {finished}/{len(plans)} done, {failed_models} failed to open, "
                                f"{sum(map(len, failed.values()))} units failed")
    return ScanSummary(st.root, rid, len(plans), failed_models, len(units) + skipped_units, skipped_units,
                       sum(map(len, failed.values())), round(time.perf_counter() - t0, 3))


def _report_trace(what: str, trace: str | None) -> None:
    """A bug in a worker is recorded and the scan goes on, but its traceback must not be lost."""
    if trace:
        print(f"weightdist scan: internal error while scanning {what} (recorded in the store; please report it):\n{trace}",
              file=sys.stderr)


def _progress(enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=0, unit="layer", disable=not enabled, dynamic_ncols=True)


def summary_line(summary: ScanSummary, store_arg: str) -> str:
    """One line for the end of a scan: what is in the store, and what to do about failures."""
    done = summary.units - summary.failed_units
    line = (f"{summary.store}: run {summary.run_id}, {summary.models} models, {done} of {summary.units} layers stored"
            f" ({summary.skipped_units} from an earlier run) in {summary.seconds:.1f} s")
    if summary.ok:
        return line
    failures = []
    if summary.failed_models:
        failures.append(f"{summary.failed_models} models did not open")
    if summary.failed_units:
        failures.append(f"{summary.failed_units} layers failed")
    query = shlex.join(["weightdist", "query", store_arg, "SELECT model, status, error FROM models WHERE status <> 'ok'"])
    return f"{line}; {' and '.join(failures)}: see {query}; rerun the same scan to retry them"


def scan_models(specs: Iterable[str], from_file: str | None, init: bool) -> list[ScanModel]:
    """The models a scan command names: its specs, then the --from file's lines."""
    models = [ScanModel(str(s), init) for s in specs]
    if from_file:
        models += [dataclasses.replace(m, init=m.init or init) for m in read_zoo(from_file)]
    return models
