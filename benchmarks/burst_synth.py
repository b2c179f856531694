"""Does burst scoring work? Baselines vs. burst students and their teacher on held-out scenes.

    .venv/bin/python benchmarks/burst_synth.py                 # the full run (about 30 min on 2 cores)
    .venv/bin/python benchmarks/burst_synth.py --quick         # minutes: checks the pipeline only

The benchmark of issue 13 §5, following the protocol of the burst IQA paper (Liang et al.,
"Burst Image Quality Assessment: A New Benchmark and Unified Framework for Multiple
Downstream Tasks"; ``edge_iqa.burst_eval``). On the embedded burst dataset (``edge-iqa data
synth --kind burst``: Δ-PSNR labels from real merges, split by scene, never by frame) it
scores the test split's bursts, for each task (denoise, sr2), with:

- ``random`` (one seeded draw per seed) and ``sharpness`` (variance of the Laplacian,
  deterministic), the baselines of :data:`edge_iqa.burst_eval.BASELINES`;
- ``photo``: a photo student (``demo-student`` on ``fragments:4x16`` views, i.e. the whole
  64 px frame at native pixels) trained per seed on the embedded *photo* data (``edge-iqa
  data synth``, SSIM labels) and scoring each frame alone;
- ``scratch``: ``demo-burst-student`` trained on the labels (``edge-iqa train``);
- ``distilled``: ``demo-burst-student`` distilled from that seed's teacher (``edge-iqa
  distill``, the burst defaults: burst_rank + burst_relational + kd_mse);
- ``teacher``: ``demo-burst-teacher`` trained on the labels (``edge-iqa train``);

all from random init (no ImageNet weights for these backbones on this machine), 3 training
seeds, one dataset (seed 0). Metrics: R0, R0.02, R0.05, R0.1, pairwise accuracy, top-3/top-5
PSNR gain of the real merge vs random-M and its share of the oracle's gain
(:func:`edge_iqa.burst_eval.burst_evaluation`), mean ± sample std over seeds. Cost: GMAC of
an 8-frame 3840×2160 burst for the UHD presets of the same families (``burst-student``,
``burst-teacher``; ``edge-iqa profile --frames 8``), the demo models' own count at 8×64×64,
parameters, and latency per frame in ONNX Runtime (1 thread) of the artifacts made by
``edge-iqa export``; INT8 exports of each distilled student are checked against FP32 by the
export's burst parity (per-burst Spearman, top-1 agreement).

Phases are cached in ``--work``: a finished training run (``metrics.json``), evaluation,
profile, export or latency result is not redone, and a stopped training run continues with
``--resume``. The issue's goals are reported as met / missed with the numbers; nothing here
asserts them.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TASKS = ("denoise", "sr2")
STUDENT, TEACHER, PHOTO = "demo-burst-student", "demo-burst-teacher", "demo-student"
PHOTO_VIEW = "fragments:4x16"  # 16 native-pixel patches of 16 px: a 64 px burst frame seen whole
UHD_FAMILY = {"scratch": "burst-student", "distilled": "burst-student", "teacher": "burst-teacher"}
METHODS = ("random", "sharpness", "photo", "scratch", "distilled", "teacher")
LABELS = {"random": "random", "sharpness": "sharpness (var. of Laplacian)", "photo": "photo student, frame alone",
          "scratch": "burst student, scratch", "distilled": "burst student, distilled", "teacher": "burst teacher"}
BASELINE_METHODS = ("random", "sharpness", "photo")
RANK_KEYS = ("srcc_r0", "srcc_r0.02", "srcc_r0.05", "srcc_r0.1", "pairwise_accuracy_mean", "pairwise_accuracy_std")
SPEARMAN_GOAL, R0_GAIN_GOAL, ORACLE_SHARE_GOAL = 0.98, 0.02, 0.5
LATENCY_RUNS, LATENCY_WARMUP = 30, 5
# INT8 recipes: the export's default (minmax ranges), the README's photo recipe (quantile ranges, every train
# frame), and the default with the export's own search for layers to leave in float (on the calibration bursts)
INT8_RECIPES = {"minmax": (), "quantile": ("--calib-method", "quantile", "--percentile", "99.99", "--calib-images", "1000"),
                "float-auto": ("--float-layer", "auto")}
EXPORT_FILES = ("export/burst.py",)  # E's burst export; its absence at HEAD means it has not landed


# ---------------------------------------------------------------- running edge-iqa commands


@dataclass
class Job:
    name: str
    argv: list[str]
    out: Path
    needs: list[str] = field(default_factory=list)


def edge_iqa(*args: str) -> list[str]:
    """An ``edge-iqa`` command line, as recorded (run with this interpreter's entry point)."""
    return ["edge-iqa", *args]


def executable(argv: list[str]) -> list[str]:
    return [str(Path(sys.executable).with_name(argv[0])), *argv[1:]] if argv[0] == "edge-iqa" else argv


def thread_env(threads: int) -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))


def run_command(argv: list[str], log: Path, threads: int, check: bool = True) -> int:
    with open(log, "a") as handle:
        code = subprocess.run(executable(argv), cwd=ROOT, env=thread_env(threads), stdout=handle,
                              stderr=subprocess.STDOUT).returncode
    if check and code != 0:
        raise RuntimeError(f"{shlex.join(argv)} failed (exit {code}); see {log}")
    return code


def run_job(job: Job, threads: int) -> dict:
    metrics, wall = job.out / "metrics.json", job.out.with_name(job.out.name + ".wall.json")
    if metrics.is_file() and wall.is_file():
        print(f"  [skip] {job.name}: finished before", flush=True)
        return {"metrics": json.loads(metrics.read_text()), **json.loads(wall.read_text())}
    argv = job.argv + (["--resume"] if (job.out / "last.pt").is_file() else [])
    print(f"  [run ] {job.name}: {shlex.join(argv)}", flush=True)
    started = time.time()
    run_command(argv, job.out.with_name(job.out.name + ".log"), threads)
    record = {"wall_seconds": round(time.time() - started, 1), "command": shlex.join(job.argv),
              "resumed": "--resume" in argv}
    wall.write_text(json.dumps(record))
    print(f"  [done] {job.name} in {record['wall_seconds']:.0f} s", flush=True)
    return {"metrics": json.loads(metrics.read_text()), **record}


def run_jobs(jobs: list[Job], parallel: int, threads: int) -> dict[str, dict]:
    """Run jobs in list order as their needs finish, ``parallel`` at a time, ``threads`` each."""
    done: dict[str, dict] = {}
    pending = list(jobs)
    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        running: dict[concurrent.futures.Future, Job] = {}
        while pending or running:
            for job in [j for j in pending if all(n in done for n in j.needs)][: parallel - len(running)]:
                pending.remove(job)
                running[pool.submit(run_job, job, threads)] = job
            if not running:
                raise RuntimeError(f"jobs wait on jobs that failed: {[j.name for j in pending]}")
            finished, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in finished:
                done[running.pop(future).name] = future.result()
    return done


# ---------------------------------------------------------------- phase 1: data and training


def build_data(argv: list[str], out: Path, threads: int) -> dict:
    """Build a dataset once (skipped when its manifest exists); the command and its wall time."""
    record_path = out.with_name(out.name + ".build.json")
    if (out / "manifest.csv").is_file() and record_path.is_file():
        return json.loads(record_path.read_text())
    print(f"building data: {shlex.join(argv)}", flush=True)
    started = time.time()
    run_command(argv, out.with_name(out.name + ".log"), threads)
    record = {"command": shlex.join(argv), "wall_seconds": round(time.time() - started, 1)}
    record_path.write_text(json.dumps(record))
    return record


def photo_sources(bursts: Path, out: Path) -> dict:
    """The package photos of the burst data's train and val scenes, copied into ``out``: the photo
    student never sees a burst test scene, not even under other distortions."""
    import shutil

    from edge_iqa.data.manifest import read_dataset_info
    from edge_iqa.data.synth import package_photos

    splits = read_dataset_info(bursts).extra["splits"]
    allowed = set(splits["train"]) | set(splits["val"])
    out.mkdir(parents=True, exist_ok=True)
    kept = []
    for source in package_photos():
        if source.scene in allowed:
            target = out / f"{source.name}{source.path.suffix.lower()}"
            if not target.is_file():
                shutil.copyfile(source.path, target)
            kept.append(source.name)
    return {"photos": sorted(kept), "left_out_scenes": sorted(splits["test"]),
            "how": "package photos (edge_iqa.data.synth.package_photos) of the burst data's train + val scenes"}


def common_args(args: argparse.Namespace, seed: int, batch_size: int) -> list[str]:
    return ["--seed", str(seed), "--batch-size", str(batch_size), "--workers", "0", "--device", "cpu", "--quiet",
            "--json"]


def training_jobs(args: argparse.Namespace, bursts: Path, photos: Path) -> list[Job]:
    """Teachers first (the longest runs), then the students, the photo students, the distillations."""
    w, jobs = args.work, []
    for s in args.seeds:
        jobs.append(Job(f"teacher-s{s}", edge_iqa("train", "--model", TEACHER, "--data", str(bursts), "--out",
                                                  str(w / f"teacher-s{s}"), "--epochs", str(args.teacher_epochs),
                                                  *common_args(args, s, args.batch_size)), w / f"teacher-s{s}"))
    for s in args.seeds:
        jobs.append(Job(f"scratch-s{s}", edge_iqa("train", "--model", STUDENT, "--data", str(bursts), "--out",
                                                  str(w / f"scratch-s{s}"), "--epochs", str(args.student_epochs),
                                                  *common_args(args, s, args.batch_size)), w / f"scratch-s{s}"))
    for s in args.seeds:
        jobs.append(Job(f"photo-s{s}", edge_iqa("train", "--model", PHOTO, "--view", PHOTO_VIEW, "--data", str(photos),
                                                "--out", str(w / f"photo-s{s}"), "--epochs", str(args.photo_epochs),
                                                *common_args(args, s, 16)), w / f"photo-s{s}"))
    for s in args.seeds:
        jobs.append(Job(f"distilled-s{s}", edge_iqa("distill", "--teacher", str(w / f"teacher-s{s}" / "best.pt"),
                                                    "--student", STUDENT, "--data", str(bursts), "--out",
                                                    str(w / f"distilled-s{s}"), "--epochs", str(args.student_epochs),
                                                    *common_args(args, s, args.batch_size)),
                        w / f"distilled-s{s}", needs=[f"teacher-s{s}"]))
    return jobs


# ---------------------------------------------------------------- phase 2: evaluation


def _no_nan(obj):
    """NaN and ±inf as JSON null (strict JSON has neither)."""
    if isinstance(obj, dict):
        return {k: _no_nan(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_no_nan(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_no_nan(obj), indent=2) + "\n")
    tmp.replace(path)


def method_predictions(method: str, seed: int, eval_set, work: Path) -> dict[str, dict]:
    """{task: {burst: scores}} of one method and seed on the evaluation set."""
    import edge_iqa
    from edge_iqa.burst_eval import get_baseline, photo_baseline, score_bursts

    if method in ("random", "sharpness"):
        scorer = get_baseline("random", seed=seed) if method == "random" else get_baseline("sharpness")
        scores = score_bursts(eval_set, scorer)
        return {task: scores for task in TASKS}  # one score per frame, whatever the task
    model = edge_iqa.load(work / f"{method}-s{seed}" / "best.pt")
    if method == "photo":
        scores = score_bursts(eval_set, photo_baseline(model))
        return {task: scores for task in TASKS}
    return {task: {b.name: model.score_burst([str(f.path) for f in b.frames], task) for b in eval_set.bursts}
            for task in TASKS}


def evaluate_all(args: argparse.Namespace, bursts: Path) -> dict[str, dict[int, dict]]:
    """{method: {seed: {task: burst_evaluation result}}}, each cached in work/eval/."""
    from edge_iqa.burst_eval import BurstEvalSet, burst_evaluation

    folder = args.work / "eval"
    folder.mkdir(exist_ok=True)
    eval_set = None
    out: dict[str, dict[int, dict]] = {}
    for method in METHODS:
        out[method] = {}
        for seed in ([args.seeds[0]] if method == "sharpness" else args.seeds):
            path = folder / f"{method}-s{seed}.json"
            if not path.is_file():
                eval_set = eval_set or BurstEvalSet(bursts, "test")
                started = time.time()
                predictions = method_predictions(method, seed, eval_set, args.work)
                result = {task: burst_evaluation(eval_set, "test", task, predictions[task]) for task in TASKS}
                write_json(path, result)
                print(f"  [eval] {method} seed {seed}: " + ", ".join(
                    f"{t} R0 {result[t]['srcc_r0']:.3f}" for t in TASKS) + f" ({time.time() - started:.0f} s)",
                      flush=True)
            out[method][seed] = json.loads(path.read_text())
    return out


def cli_evaluate_check(args: argparse.Namespace, bursts: Path, evals: dict) -> dict:
    """``edge-iqa evaluate`` on the first distilled student: the same R0 as the in-process evaluation?"""
    path = args.work / "evaluate_cli.json"
    seed = args.seeds[0]
    argv = edge_iqa("evaluate", str(args.work / f"distilled-s{seed}" / "best.pt"), "--data", str(bursts),
                    "--split", "test", "--json")
    if not path.is_file():
        result = subprocess.run(executable(argv), cwd=ROOT, env=thread_env(args.threads), capture_output=True,
                                text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{shlex.join(argv)} failed: {result.stderr.strip().splitlines()[-1:]}")
        path.write_text(result.stdout)
    cli = json.loads(path.read_text())
    per_task = {t: {"cli": cli["tasks"][t]["srcc_r0"], "benchmark": evals["distilled"][seed][t]["srcc_r0"]}
                for t in TASKS}
    return {"command": shlex.join(argv), "r0": per_task,
            "agree": all(abs(v["cli"] - v["benchmark"]) < 1e-9 for v in per_task.values())}


# ---------------------------------------------------------------- phase 3: cost (profile, export, latency)


def profile(args: argparse.Namespace) -> dict:
    """GMAC and params: UHD presets for an 8-frame 3840x2160 burst, the demo models at 8x64x64."""
    path = args.work / "profile.json"
    if path.is_file():
        return json.loads(path.read_text())
    rows = {}
    for key, argv in {
        "burst-student@8x3840x2160": edge_iqa("profile", "burst-student", "--frames", "8", "--source", "3840x2160"),
        "burst-teacher@8x3840x2160": edge_iqa("profile", "burst-teacher", "--frames", "8", "--source", "3840x2160"),
        f"{STUDENT}@8x64x64": edge_iqa("profile", STUDENT, "--frames", "8"),
        f"{TEACHER}@8x64x64": edge_iqa("profile", TEACHER, "--frames", "8"),
    }.items():
        full = argv + ["--no-fvcore", "--depth", "0", "--json"]
        result = subprocess.run(executable(full), cwd=ROOT, env=thread_env(args.threads), capture_output=True,
                                text=True)
        if result.returncode not in (0, 1):  # 1: over budget (the teacher), still a count
            raise RuntimeError(f"{shlex.join(full)} failed: {result.stderr.strip()[-300:]}")
        report = json.loads(result.stdout)
        rows[key] = {"command": shlex.join(full), "gmac": report["macs"] / 1e9, "params": report["params"],
                     "within_budget": report["within_budget"], "frames": report["frames"], "source": report["source"]}
    from edge_iqa.commands.common import resolve_model
    from profiling.report import profile_config

    photo = profile_config(resolve_model(PHOTO, [PHOTO_VIEW]), (2160, 3840), fvcore=False, details=False)
    rows["photo@8x3840x2160"] = {
        "command": f"profiling.report.profile_config(resolve_model({PHOTO!r}, [{PHOTO_VIEW!r}]), (2160, 3840)) x 8",
        "gmac": 8 * photo.macs / 1e9, "params": photo.params, "within_budget": 8 * photo.macs <= 50e9, "frames": 8,
        "source": "3840x2160", "note": f"a photo model scores each frame alone: 8 x one frame; {PHOTO_VIEW} is "
                                       "fixed-size, so it costs the same at 64 px and at 3840x2160"}
    write_json(path, rows)
    return rows


def git(*argv: str) -> str:
    return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True).stdout.rstrip("\n")


def export_landed() -> dict:
    """Whether E's burst export is committed at HEAD, and the export files with uncommitted edits."""
    tracked = all(git("ls-files", f) == f for f in EXPORT_FILES)
    dirty = [line[3:] for line in git("status", "--porcelain", "--", "export", "edge_iqa/runtimes").splitlines()]
    return {"head": git("rev-parse", "--short", "HEAD"), "landed": tracked, "uncommitted_export_files": dirty}


def export_specs(args: argparse.Namespace, bursts: Path, photos: Path) -> list[tuple[str, list[str], Path]]:
    """(name, command, out folder): INT8 of each distilled student; FP32 of each model of the first seed
    (``--quick``: of the distilled student only)."""
    s0, specs = args.seeds[0], []
    for recipe, options in INT8_RECIPES.items():
        if args.quick and options:
            continue
        for s in args.seeds:
            name = f"distilled-s{s}-int8" + (f"-{recipe}" if options else "")
            out = args.work / "export" / name
            specs.append((name, edge_iqa(
                "export", str(args.work / f"distilled-s{s}" / "best.pt"), "--format", "onnx", "--precision", "int8",
                "--calib", str(bursts), "--calib-split", "train", *options, "--check", str(bursts), "--check-split",
                "test", "--out", str(out), "--json"), out))
    for method in ("distilled",) if args.quick else ("distilled", "scratch", "teacher", "photo"):
        data = photos if method == "photo" else bursts
        out = args.work / "export" / f"{method}-s{s0}-fp32"
        specs.append((f"{method}-s{s0}-fp32", edge_iqa(
            "export", str(args.work / f"{method}-s{s0}" / "best.pt"), "--format", "onnx", "--precision", "fp32",
            "--check", str(data), "--check-split", "test", "--out", str(out), "--json"), out))
    return specs


def export_all(args: argparse.Namespace, bursts: Path, photos: Path) -> dict:
    """Each export's report (export.json + parity.json), or why there is none."""
    status = export_landed()
    if not status["landed"] and not args.export_unlanded:
        return {"status": status, "skipped": f"the burst ONNX export ({', '.join(EXPORT_FILES)}) is not committed at "
                                             f"HEAD {status['head']}; no artifact, latency or INT8 parity"}
    out: dict = {"status": status, "artifacts": {}}  # status: now; each artifact's "code": when it was made
    for name, argv, folder in export_specs(args, bursts, photos):
        record = folder / "benchmark.json"
        if not record.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            print(f"  [export] {name}: {shlex.join(argv)}", flush=True)
            started = time.time()
            code = run_command(argv, folder / "export.log", args.threads, check=False)
            if not (folder / "export.json").is_file():
                raise RuntimeError(f"{shlex.join(argv)} failed (exit {code}); see {folder / 'export.log'}")
            write_json(record, {"command": shlex.join(argv), "exit": code, "wall_seconds": round(time.time() - started, 1),
                                "code": export_landed()})
        item = json.loads(record.read_text())
        item["export"] = json.loads((folder / "export.json").read_text())
        parity = folder / "parity.json"
        item["parity"] = json.loads(parity.read_text()) if parity.is_file() else None
        out["artifacts"][name] = item
    return out


def accuracy_detail(item: dict) -> dict:
    checks = (item.get("parity") or {}).get("checks", [])
    return next((c.get("detail", {}) for c in checks if c.get("name") == "accuracy"), {})


def latency(args: argparse.Namespace, exports: dict) -> dict:
    """Median ONNX Runtime time per frame, 1 thread: a whole 8-frame burst / 8 (burst models) or one frame."""
    path = args.work / "latency.json"
    if path.is_file():
        return json.loads(path.read_text())
    import numpy as np

    from edge_iqa.runtimes.onnxruntime import config_of_session, onnx_session

    out = {}
    for name, item in exports.get("artifacts", {}).items():
        if not (name.endswith("-fp32") or name.startswith(f"distilled-s{args.seeds[0]}-int8")):
            continue
        artifact = item["export"]["artifact"]
        session = onnx_session(artifact, threads=1)
        config = config_of_session(session, artifact)
        frames = 8 if config.burst is not None else 1
        lead = (1, frames) if config.burst is not None else (1,)
        source = (64, 64)
        rng = np.random.default_rng(0)
        feed = {i.name: rng.random((*lead, 3, *view.output_size(source)), dtype=np.float32)
                for i, view in zip(session.get_inputs(), config.views)}
        for _ in range(LATENCY_WARMUP):
            session.run(None, feed)
        times = []
        for _ in range(LATENCY_RUNS):
            started = time.perf_counter()
            session.run(None, feed)
            times.append(time.perf_counter() - started)
        out[name] = {"artifact": artifact, "ms_per_frame": 1000 * statistics.median(times) / frames,
                     "ms_per_call": 1000 * statistics.median(times), "frames_per_call": frames,
                     "inputs": {i.name: list(v.shape) for i, v in zip(session.get_inputs(), feed.values())},
                     "runs": LATENCY_RUNS, "threads": 1}
    write_json(path, out)
    return out


def int8_noise_vs_spread(args: argparse.Namespace, bursts: Path, exports: dict) -> dict:
    """Per seed and task: the median within-burst std of the distilled student's FP32 scores (what a
    ranking must resolve) beside the mean |INT8 − FP32| score error of its default INT8 export."""
    path = args.work / "int8_noise.json"
    if path.is_file() or not exports.get("artifacts"):
        return json.loads(path.read_text()) if path.is_file() else {}
    import numpy as np

    import edge_iqa
    from edge_iqa.burst_eval import BurstEvalSet

    eval_set, out = BurstEvalSet(bursts, "test"), {}
    for seed in args.seeds:
        item = exports["artifacts"].get(f"distilled-s{seed}-int8")
        if item is None:
            continue
        fp32, int8 = edge_iqa.load(args.work / f"distilled-s{seed}" / "best.pt"), edge_iqa.load(item["export"]["artifact"])
        for task in TASKS:
            spread, error = [], []
            for burst in eval_set.bursts:
                paths = [str(f.path) for f in burst.frames]
                a, b = fp32.score_burst(paths, task)[1:], int8.score_burst(paths, task)[1:]
                spread.append(float(a.std()))
                error.append(float(np.abs(b - a).mean()))
            out[f"s{seed}-{task}"] = {"median_within_burst_std_fp32": float(np.median(spread)),
                                      "mean_abs_int8_error": float(np.mean(error))}
    write_json(path, out)
    return out


# ---------------------------------------------------------------- summary and goals


def mean_std(values: list[float]) -> dict:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return {"mean": math.nan, "std": math.nan, "values": []}
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def summarise(evals: dict) -> dict:
    """{task: {method: {metric: mean_std}}} over seeds; top-M rows give gain, oracle gain and share."""
    out: dict = {}
    for task in TASKS:
        out[task] = {}
        for method, by_seed in evals.items():
            results = [by_seed[s][task] for s in sorted(by_seed)]
            row = {key: mean_std([r[key] for r in results]) for key in RANK_KEYS}
            for m in ("top3", "top5"):
                rows = [r["downstream"][m] for r in results]
                row[f"{m}_gain_db"] = mean_std([d["gain_vs_random_db"] for d in rows])
                row[f"{m}_oracle_share"] = mean_std([d["oracle_share"] for d in rows])
                row[f"{m}_psnr_db"] = mean_std([d["psnr_db"]["model"] for d in rows])
            row["n_bursts"], row["n_frames"] = results[0]["n_bursts"], results[0]["n_frames"]
            out[task][method] = row
        reference = evals["random"][min(evals["random"])][task]["downstream"]
        out[task]["selectors"] = {m: {"random_db": reference[m]["psnr_db"]["random"],
                                      "first_db": reference[m]["psnr_db"]["first"],
                                      "all_db": reference[m]["psnr_db"]["all"],
                                      "oracle_db": reference[m]["psnr_db"]["oracle"],
                                      "oracle_gain_db": reference[m]["oracle_gain_vs_random_db"],
                                      "n_bursts": reference[m]["n_bursts"]} for m in ("top3", "top5")}
    return out


def goals(summary: dict, evals: dict, exports: dict, seeds: list[int]) -> list[dict]:
    """The goals of issue 13 §5, each met or missed with the measured numbers."""
    items = []
    for task in TASKS:
        s = summary[task]
        d = s["distilled"]
        beaten = {m: (d["srcc_r0"]["mean"] - s[m]["srcc_r0"]["mean"], d["top3_gain_db"]["mean"] - s[m]["top3_gain_db"]["mean"])
                  for m in BASELINE_METHODS}
        items.append({
            "goal": f"{task}: distilled beats every baseline (random, sharpness, photo) on R0 and on top-3 gain",
            "met": all(r > 0 and g > 0 for r, g in beaten.values()),
            "measured": "; ".join(f"vs {m}: R0 {r:+.3f}, top-3 gain {g:+.3f} dB" for m, (r, g) in beaten.items())})
        share = d["top3_gain_db"]["mean"] / s["selectors"]["top3"]["oracle_gain_db"]
        items.append({
            "goal": f"{task}: distilled reaches >= {ORACLE_SHARE_GOAL:.0%} of the oracle's top-3 gain over random-M",
            "met": share >= ORACLE_SHARE_GOAL,
            "measured": f"{d['top3_gain_db']['mean']:+.3f} dB of {s['selectors']['top3']['oracle_gain_db']:+.3f} dB "
                        f"= {share:.0%} (per seed: {', '.join(f'{v:.0%}' for v in d['top3_oracle_share']['values'])})"})
    paired = {task: [evals["distilled"][x][task]["srcc_r0"] - evals["scratch"][x][task]["srcc_r0"] for x in seeds]
              for task in TASKS}
    everything = [g for task in TASKS for g in paired[task]]
    gain = statistics.fmean(everything)
    spread = statistics.stdev(everything) if len(everything) > 1 else 0.0
    items.append({
        "goal": f"distilled - scratch >= +{R0_GAIN_GOAL} R0 on average (both tasks, all seeds)",
        "met": gain >= R0_GAIN_GOAL,
        "measured": f"{gain:+.3f} ± {spread:.3f} (std of the {len(everything)} paired seed x task gains); " + "; ".join(
            f"{t}: {', '.join(f'{g:+.3f}' for g in paired[t])}" for t in TASKS)})
    artifacts = exports.get("artifacts", {})
    for recipe, options in INT8_RECIPES.items():
        suffix = "-int8" + (f"-{recipe}" if options else "")
        int8 = {n: accuracy_detail(a) for n, a in artifacts.items() if n.endswith(suffix)}
        goal = (f"INT8 exports ({recipe}{': ' + ' '.join(options) if options else ', the default calibration'}) keep "
                f"per-burst Spearman >= {SPEARMAN_GOAL} against FP32 (mean over test bursts, worst task, every seed)")
        if int8 and all(int8.values()):
            worst = min(dd["mean_burst_spearman"] for dd in int8.values())
            items.append({"goal": goal, "met": worst >= SPEARMAN_GOAL, "measured": "; ".join(
                f"{n}: mean {dd['mean_burst_spearman']:.4f}, min {dd['min_burst_spearman']:.4f}, "
                f"top-1 agreement {dd['top1_agreement']:.3f}" for n, dd in int8.items())})
        elif exports.get("skipped") or int8:  # no export at all, or a report without parity
            items.append({"goal": goal, "met": None, "measured": exports.get("skipped", "no INT8 parity report")})
        # else: a recipe this run did not export (--quick exports the default one only)
    return items


# ---------------------------------------------------------------- writing


def versions() -> dict:
    import importlib.metadata as md

    return {"python": platform.python_version(),
            **{p: md.version(p) for p in ("torch", "timm", "numpy", "scipy", "onnx", "onnxruntime")}}


def _pm(stat: dict, digits: int = 3, signed: bool = False) -> str:
    if not stat["values"]:
        return "—"
    fmt = f"{{:{'+' if signed else ''}.{digits}f}}"
    if len(stat["values"]) == 1:
        return fmt.format(stat["mean"])
    return f"{fmt.format(stat['mean'])} ± {stat['std']:.{digits}f}"


def cost_cells(method: str, result: dict) -> list[str]:
    prof, lat, s0 = result["profile"], result["latency"], result["settings"]["seeds"][0]
    if method in ("random", "sharpness"):
        return (["0", "0", "—", "—"] if method == "random" else
                ["— (a 3×3 filter, no network)", "—", "—", "not exported (numpy)"])
    if method == "photo":
        p = prof["photo@8x3840x2160"]
        uhd, demo, params = f"{p['gmac']:.3f}", f"{p['gmac']:.3f}", f"{p['params'] / 1e6:.2f} M"
    else:
        uhd_row = prof[f"{UHD_FAMILY[method]}@8x3840x2160"]
        demo_row = prof[f"{TEACHER if method == 'teacher' else STUDENT}@8x64x64"]
        uhd = f"{uhd_row['gmac']:.1f} ({UHD_FAMILY[method]})"
        demo, params = f"{demo_row['gmac']:.3f}", f"{demo_row['params'] / 1e6:.2f} M / {uhd_row['params'] / 1e6:.2f} M"
    ms = lat.get(f"{method}-s{s0}-fp32", {}).get("ms_per_frame")
    int8 = lat.get(f"{method}-s{s0}-int8", {}).get("ms_per_frame")
    latency_text = "not exported" if ms is None else f"{ms:.2f}" + (f" (INT8 {int8:.2f})" if int8 is not None else "")
    return [uhd, demo, params, latency_text]


def write_markdown(path: Path, result: dict) -> None:
    st, summary = result["settings"], result["summary"]
    title = "Burst scoring on the embedded burst data"
    lines = [f"# {title} ({result['date']})" if not st["quick"] else
             f"# QUICK SMOKE RUN — not a result: {title} ({result['date']})", ""]
    if st["quick"]:
        lines += ["**`--quick`: 1 seed, 1 epoch, a few bursts — it checks that the pipeline runs, its numbers mean "
                  "nothing.** The full run's command is at the end.", ""]
    data = result["data"]
    lines += [f"Benchmark command: `{result['benchmark_command']}`", "",
              f"Burst data: `{data['bursts']['command']}` — {data['bursts']['counts']['train']} train / "
              f"{data['bursts']['counts']['val']} val / {data['bursts']['counts']['test']} test bursts of "
              f"{data['bursts']['frames']} frames, split by scene (test scenes: {', '.join(data['bursts']['test_scenes'])}); "
              "labels Δ = PSNR(merge(B)) − PSNR(merge(B∖frame)) of the real merges, score = clip((Δ + 1 dB) / 5 dB, 0, 1). "
              "Synthetic labels from classical merges: a proxy, never a substitute for real data.",
              "Label statistics (all splits): " + "; ".join(
                  f"{t}: {v['redundant']:.0%} redundant (|Δ| ≤ 0.1 dB), {v['harmful_to_remove']:.0%} harmful to "
                  f"remove, {v['helpful_to_remove']:.0%} helpful to remove"
                  for t, v in (data["bursts"].get("label_statistics") or {}).items()) + ".",
              f"Photo data (photo student only): `{data['photos']['command']}` (SSIM labels), from the "
              f"{len(data['photos']['sources']['photos'])} package photos of the burst train + val scenes (the test "
              "scenes left out, so the photo student never saw them).", "",
              f"Training: seeds {st['seeds']}, all from random init; teacher `{TEACHER}` {st['teacher_epochs']} epochs, "
              f"students `{STUDENT}` {st['student_epochs']} epochs (scratch: `edge-iqa train`, losses burst_rank=10 mse=1; "
              "distilled: `edge-iqa distill` from the same seed's teacher, burst_rank=10 burst_relational=1 kd_mse=1), "
              f"photo student `{PHOTO} --view {PHOTO_VIEW}` {st['photo_epochs']} epochs; batches of "
              f"{st['batch_size']} whole bursts, Adam lr 1e-3; best.pt by validation R0. Values are mean ± sample "
              "std over the seeds (sharpness is deterministic: one value).", ""]
    for task in TASKS:
        s = summary[task]
        sel = s["selectors"]
        lines += [f"## Task `{task}` — test split ({s['random']['n_bursts']} bursts, {s['random']['n_frames']} "
                  "non-reference frames)", "",
                  "| scorer | R0 | R0.02 | R0.05 | R0.1 | pairwise acc. (σ over bursts) | top-3 gain dB (oracle share) | "
                  "top-5 gain dB (oracle share) | GMAC 8×4K burst | GMAC 8×64² (trained) | params demo / UHD | "
                  "ORT ms / frame, 1 thread |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for method in METHODS:
            r = s[method]
            cells = [LABELS[method], *(_pm(r[k]) for k in ("srcc_r0", "srcc_r0.02", "srcc_r0.05", "srcc_r0.1")),
                     f"{_pm(r['pairwise_accuracy_mean'])} (σ {r['pairwise_accuracy_std']['mean']:.2f})",
                     f"{_pm(r['top3_gain_db'], signed=True)} ({r['top3_oracle_share']['mean']:.0%})",
                     f"{_pm(r['top5_gain_db'], signed=True)} ({r['top5_oracle_share']['mean']:.0%})",
                     *cost_cells(method, result)]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "Merge PSNR of the fixed selectors (dB; gains are against random-M, the reference + M−1 random "
                      "frames, mean of 10 draws): " + "; ".join(
                          f"M={m[3:]}: random {v['random_db']:.2f}, first-M {v['first_db']:.2f} "
                          f"({v['first_db'] - v['random_db']:+.2f}), all frames {v['all_db']:.2f} "
                          f"({v['all_db'] - v['random_db']:+.2f}), oracle {v['oracle_db']:.2f} "
                          f"(**{v['oracle_gain_db']:+.2f}**), {v['n_bursts']} bursts" for m, v in sel.items()), ""]
    lines += ["## Goals of issue 13", "", "| goal | verdict | measured |", "|---|---|---|"]
    for g in result["goals"]:
        verdict = "not measured" if g["met"] is None else ("**met**" if g["met"] else "**missed**")
        lines.append(f"| {g['goal']} | {verdict} | {g['measured']} |")
    lines += [""]
    ex = result["exports"]
    lines += ["## Export and parity", ""]
    if ex.get("skipped"):
        lines += [f"Not run: {ex['skipped']}.", ""]
    else:
        codes = {json.dumps(item.get("code"), sort_keys=True) for item in ex["artifacts"].values()}
        status = next(iter(ex["artifacts"].values())).get("code") or ex["status"]
        lines += [f"`edge-iqa export` at HEAD {status['head']} (burst export committed: "
                  f"{'yes' if status['landed'] else 'NO — run from the working tree'}; export files with uncommitted "
                  f"edits: {', '.join(status['uncommitted_export_files']) or 'none'}"
                  + ("" if len(codes) == 1 else "; NOTE: the artifacts were made at different code states, see the JSON")
                  + ").", "",
                  "| artifact | parity passed | per-burst Spearman vs FP32: mean / min (worst task) | top-1 agreement | "
                  "max abs Δ | ORT ms / frame |", "|---|---|---|---|---|---|"]
        for name, item in ex["artifacts"].items():
            d = accuracy_detail(item)
            lat = result["latency"].get(name, {}).get("ms_per_frame")
            if d.get("burst"):
                rho = f"{d['mean_burst_spearman']:.4f} / {d['min_burst_spearman']:.4f}"
                top1 = f"{d['top1_agreement']:.3f}"
            else:
                rho, top1 = (f"{d['spearman_vs_fp32']:.4f} (photo, all frames)" if d else "—"), "—"
            passed = (item["parity"] or {}).get("passed")
            lines.append(f"| {name} | {passed} | {rho} | {top1} | {d.get('max_abs_delta', math.nan):.2e} | "
                         + (f"{lat:.2f}" if lat is not None else "—") + " |")
        if result.get("int8_noise"):
            lines += ["", "INT8 score error against the spread it must resolve (distilled students, default INT8, "
                          "test bursts, reference frames left out): " + "; ".join(
                              f"{k}: mean |INT8 − FP32| {v['mean_abs_int8_error']:.3f} vs median within-burst std of "
                              f"the FP32 scores {v['median_within_burst_std_fp32']:.3f}"
                              for k, v in result["int8_noise"].items()) + "."]
        lines += ["", "Latency: median of "
                  f"{LATENCY_RUNS} ONNX Runtime runs (CPUExecutionProvider, intra-op threads 1, after "
                  f"{LATENCY_WARMUP} warm-up runs) of a whole 8-frame burst at the demo models' 64×64 frames, divided "
                  "by 8 (the reference frame included); the photo student one 64×64 frame. Measured on this machine "
                  f"({result['machine']['cpus']} CPUs) with nothing else of the benchmark running.", ""]
    c = result["cli_check"]
    lines += [f"Cross-check: `{c['command']}` gives R0 " + ", ".join(
        f"{t} {v['cli']:.4f}" for t, v in c["r0"].items()) + f" — {'the same as' if c['agree'] else 'NOT the same as'} "
        "this benchmark's in-process evaluation.", "",
              "GMAC: `edge-iqa profile MODEL --frames 8 [--source 3840x2160] --no-fvcore` (conv + linear + matmul "
              "MACs, the reference counted once); the UHD presets are the same families as the trained demo models "
              "(`burst-student`: MobileNetV3-Large, `burst-teacher`: ResNet-50, views 1280×720 resize + 15×15×32 "
              "fragments), which are what a phone would run on a 4K burst; the demo models were trained and measured on "
              "64×64 frames. Budget for a student: 50 GMAC per 8-frame 4K burst.", "",
              "## Per-seed values", ""]
    for task in TASKS:
        for method in METHODS:
            r = summary[task][method]
            lines.append(f"- {task} {method}: R0 {', '.join(f'{v:.3f}' for v in r['srcc_r0']['values'])}; top-3 gain "
                         f"{', '.join(f'{v:+.3f}' for v in r['top3_gain_db']['values'])} dB")
    lines += ["", "## Commands", "", f"    {data['bursts']['command']}", f"    {data['photos']['command']}"]
    lines += [f"    {run['command']}" for run in result["runs"].values()]
    lines += [f"    {row['command']}" for row in result["profile"].values()]
    lines += [f"    {item['command']}" for item in result["exports"].get("artifacts", {}).values()]
    lines += [f"    {c['command']}", "", "Training wall time per run (min): " + ", ".join(
        f"{n} {r['wall_seconds'] / 60:.1f}" + (" (resumed: last part only)" if r.get("resumed") else "")
        for n, r in result["runs"].items()), "",
              f"Total wall time {sum(r['wall_seconds'] for r in result['invocations']) / 60:.1f} min over "
              f"{len(result['invocations'])} run(s) of the script ("
              + ", ".join(f"{r['wall_seconds'] / 60:.1f} min" for r in result["invocations"])
              + "; a rerun redoes only the phases not cached in the work folder); "
              f"{st['parallel']} training run(s) at a "
              f"time, {max(1, st['threads'] // st['parallel'])} thread(s) each; evaluation and export with "
              f"{st['threads']} thread(s).", "",
              f"Versions: {json.dumps(result['versions'])}; machine: {json.dumps(result['machine'])}", ""]
    path.write_text("\n".join(lines))


# ---------------------------------------------------------------- main


def dataset_facts(root: Path) -> dict:
    from edge_iqa.data.manifest import read_burst_manifest, read_dataset_info

    info = read_dataset_info(root)
    return {"counts": {s: len(read_burst_manifest(root, s)) for s in ("train", "val", "test")},
            "frames": info.extra.get("frames"), "test_scenes": info.extra.get("splits", {}).get("test", []),
            "label_statistics": info.extra.get("label_statistics")}


def settings_guard(args: argparse.Namespace) -> None:
    """A work folder holds one configuration: refuse to mix cached phases of two."""
    keys = ("quick", "seeds", "bursts_per_scene", "teacher_epochs", "student_epochs", "photo_epochs", "batch_size",
            "photo_max_side", "video")
    wanted = {k: getattr(args, k) for k in keys}
    path = args.work / "settings.json"
    if path.is_file() and json.loads(path.read_text()) != wanted:
        raise SystemExit(f"{args.work} holds a run with other settings ({path.read_text().strip()}); "
                         "give another --work or delete it")
    path.write_text(json.dumps(wanted))


def record_invocation(work: Path, result: dict) -> list[dict]:
    """Every run of the script on this work folder (a rerun redoes only the phases not cached)."""
    path = work / "invocations.json"
    runs = json.loads(path.read_text()) if path.is_file() else []
    runs.append({"command": result["benchmark_command"], "wall_seconds": result["total_wall_seconds"],
                 "load_average_1_5_15min": result["machine"]["load_average_1_5_15min"], "date": result["date"]})
    write_json(path, runs)
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="folder for data, runs and cached phases")
    parser.add_argument("--results", type=Path, default=None,
                        help="where burst_synth.{json,md} go (default benchmarks/results; --quick: the work folder)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--bursts-per-scene", type=int, default=8, help="bursts built from each photo")
    parser.add_argument("--no-video", dest="video", action="store_false", help="leave out the bikes-clip bursts")
    parser.add_argument("--teacher-epochs", type=int, default=15)
    parser.add_argument("--student-epochs", type=int, default=40)
    parser.add_argument("--photo-epochs", type=int, default=12)
    parser.add_argument("--photo-max-side", type=int, default=256, help="longer side of the photo data's references")
    parser.add_argument("--batch-size", type=int, default=4, help="whole bursts per batch")
    parser.add_argument("--threads", type=int, default=2, help="threads in all (torch, OMP, ONNX Runtime builds)")
    parser.add_argument("--parallel", type=int, default=2, help="training runs at a time (threads shared)")
    parser.add_argument("--export-unlanded", action="store_true",
                        help="run the export phase even if the burst export is not committed (recorded as such)")
    parser.add_argument("--quick", action="store_true", help="a few minutes on one thread: checks the pipeline only")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.bursts_per_scene, args.video = args.seeds[:1], 1, False
        args.teacher_epochs = args.student_epochs = args.photo_epochs = 1
        args.photo_max_side, args.batch_size = 128, 4
    default_work = Path("runs") / "bench" / ("burst_synth-quick" if args.quick else "burst_synth")
    args.work = (args.work or default_work).resolve()
    args.results = (args.results or (args.work if args.quick else RESULTS)).resolve()
    os.chdir(ROOT)  # commands are recorded with paths relative to the repository
    args.work.mkdir(parents=True, exist_ok=True)
    args.results.mkdir(parents=True, exist_ok=True)
    settings_guard(args)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    started, load_at_start = time.time(), os.getloadavg()
    work = args.work.relative_to(ROOT) if args.work.is_relative_to(ROOT) else args.work
    bursts, photos = work / "bursts", work / "photos"

    burst_argv = edge_iqa("data", "synth", str(bursts), "--kind", "burst", "--bursts-per-scene",
                          str(args.bursts_per_scene), *([] if args.video else ["--no-video"]), "--json")
    photo_argv = edge_iqa("data", "synth", str(photos), "--photos", str(work / "photo_sources"), "--max-side",
                          str(args.photo_max_side), "--json")
    data = {"bursts": build_data(burst_argv, ROOT / bursts, args.threads)}
    data["bursts"].update(dataset_facts(ROOT / bursts))
    sources = photo_sources(ROOT / bursts, ROOT / work / "photo_sources")
    data["photos"] = build_data(photo_argv, ROOT / photos, args.threads) | {"sources": sources}

    args.work = work  # recorded commands use the relative paths
    per_run = max(1, args.threads // args.parallel)
    runs = run_jobs(training_jobs(args, bursts, photos), args.parallel, per_run)
    print("evaluating on the test split", flush=True)
    evals = evaluate_all(args, bursts)
    cli_check = cli_evaluate_check(args, bursts, evals)
    print("profiling", flush=True)
    prof = profile(args)
    print("exporting", flush=True)
    exports = export_all(args, bursts, photos)
    lat = latency(args, exports) if exports.get("artifacts") else {}
    noise = int8_noise_vs_spread(args, bursts, exports)

    summary = summarise(evals)
    result = {
        "date": datetime.date.today().isoformat(),
        "benchmark_command": shlex.join([Path(sys.executable).relative_to(ROOT).as_posix()
                                         if Path(sys.executable).is_relative_to(ROOT) else sys.executable,
                                         "benchmarks/burst_synth.py", *(sys.argv[1:] if argv is None else argv)]),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "data": data, "runs": {n: {k: r[k] for k in ("command", "wall_seconds", "resumed")} |
                                  {"best_epoch": r["metrics"].get("best_epoch"),
                                   "best_val": r["metrics"].get("best_val_r0", r["metrics"].get("best_val_srcc")),
                                   "train_seconds": r["metrics"].get("train_seconds")}
                               for n, r in runs.items()},
        "evaluations": evals, "summary": summary, "cli_check": cli_check, "profile": prof, "exports": exports,
        "latency": lat, "int8_noise": noise, "total_wall_seconds": round(time.time() - started, 1), "versions": versions(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "processor": platform.processor(),
                    "load_average_1_5_15min": {"start": [round(x, 2) for x in load_at_start],
                                               "end": [round(x, 2) for x in os.getloadavg()]}},
    }
    result["goals"] = goals(summary, evals, exports, args.seeds)
    result["invocations"] = record_invocation(args.work, result)
    write_json(args.results / "burst_synth.json", result)
    write_markdown(args.results / "burst_synth.md", result)
    print((args.results / "burst_synth.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
