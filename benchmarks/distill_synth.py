"""Does distillation help? Teacher vs. scratch student vs. distilled student on the embedded data.

    .venv/bin/python benchmarks/distill_synth.py                       # the demo presets at full size
    .venv/bin/python benchmarks/distill_synth.py --max-side 256 --view-scale 0.5 --select
    .venv/bin/python benchmarks/distill_synth.py --smoke               # minutes: checks the pipeline only
    .venv/bin/python benchmarks/distill_synth.py --teacher demo-teacher-mobilenetv2 --student demo-student-mobilenetv2 \
        --weights-dir ../shared/weights --name distill_synth_imagenet   # ImageNet-initialised backbones

On the embedded synthetic dataset (``edge-iqa data synth``; SSIM labels, split by reference
photo) it trains, for each seed, the ``demo-teacher`` preset, the ``demo-student`` preset from
scratch and the same student distilled from that seed's teacher, all through the ``edge-iqa``
CLI, and writes ``benchmarks/results/distill_synth.{json,md}``: test SRCC/PLCC (mean ± std over
seeds), MACs at 3840×2160, training time, and every exact command.

Views come from the preset registry; ``--view-scale`` shrinks every view (resize/crop sizes,
fragment patches) by one factor for a dataset built at a smaller ``--max-side``, so a slow
machine can run the same architectures on proportionally smaller photos.

``--select`` first trains one distilled student per candidate loss mix of :data:`MIXES` on
seed 0 and keeps the mix with the best *validation* SRCC (the test split is never used to
choose). Mixes marked ``unlabeled`` also train on pseudo-labeled images: new distortion
combinations of the *training* references (never of val/test photos), made by
:func:`make_unlabeled`, scored by the teacher.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
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
STUDENT, TEACHER = "demo-student", "demo-teacher"  # the defaults of --student / --teacher
UHD = (2160, 3840)

# name -> (loss terms, train on pseudo-labeled images too)
MIXES: dict[str, tuple[tuple[str, ...], bool]] = {
    "score": (("mse=1", "plcc=0.5", "kd_mse=1"), False),
    "score+fidelity": (("mse=1", "plcc=0.5", "kd_mse=1", "kd_fidelity=0.5"), False),
    "score+hint": (("mse=1", "plcc=0.5", "kd_mse=1", "hint=0.5"), False),
    "score+head+relational": (("mse=1", "plcc=0.5", "kd_mse=1", "head_mse=0.5", "relational=1"), False),
    "score+hetero_relational": (("mse=1", "plcc=0.5", "kd_mse=1", "hetero_relational=1"), False),
    "score+pseudo": (("mse=1", "plcc=0.5", "kd_mse=1"), True),
    "score+hint+pseudo": (("mse=1", "plcc=0.5", "kd_mse=1", "hint=0.5"), True),
}
SCRATCH_LOSSES = ("mse=1", "plcc=0.5")  # edge-iqa train's default
SMALL_GAP = 0.05  # a teacher–scratch SRCC gap below this makes "share of the gap closed" meaningless


@dataclass
class Job:
    name: str
    argv: list[str]
    out: Path
    needs: list[str] = field(default_factory=list)


def edge_iqa(*args: str) -> list[str]:
    """An ``edge-iqa`` command line, as recorded (the runner puts this interpreter's script first)."""
    return ["edge-iqa", *args]


def executable(argv: list[str]) -> list[str]:
    return [str(Path(sys.executable).with_name(argv[0])), *argv[1:]] if argv[0] == "edge-iqa" else argv


def scaled_view_specs(preset: str, factor: float) -> list[str]:
    """``--view`` values for the preset's views scaled by ``factor`` (none at 1.0)."""
    from edge_iqa.presets import get_preset

    return [] if factor == 1.0 else [view.scaled(factor).spec() for view in get_preset(preset).views]


def view_args(specs: list[str]) -> list[str]:
    return [a for spec in specs for a in ("--view", spec)]


def make_unlabeled(data: Path, out: Path, per_ref: int, seed: int = 1) -> int:
    """Unlabeled images: ``per_ref`` new two-distortion variants of each *training* reference.

    The dataset holds every single distortion at 5 levels and 6 pairs at level 3; these are
    other ordered pairs at other levels (a level-2 and a level-4 distortion), drawn with a
    seeded generator. No label is computed: the teacher's scores become their targets.
    """
    import numpy as np
    from PIL import Image

    from edge_iqa.data.manifest import read_manifest
    from edge_iqa.data.synth import DISTORTIONS, _to_uint8, distort, read_png_float, variant_rng

    out.mkdir(parents=True, exist_ok=True)
    refs = sorted({r.extra["ref"] for r in read_manifest(data, split="train")})
    names = sorted(DISTORTIONS)
    pairs = [(a, b, la, lb) for a in names for b in names if a != b for la, lb in ((2, 4), (4, 2))]
    rng = np.random.default_rng(seed)
    made = 0
    for ref in refs:
        image = read_png_float(data / "refs" / f"{ref}.png")
        for index in rng.choice(len(pairs), size=min(per_ref, len(pairs)), replace=False):
            a, b, la, lb = pairs[index]
            path = out / f"{ref}__{a}{la}+{b}{lb}.png"
            if not path.is_file():
                pixels = distort(image, a, la, variant_rng(seed, ref, a, la))
                pixels = distort(pixels, b, lb, variant_rng(seed, ref, b, lb))
                Image.fromarray(_to_uint8(pixels)).save(path, format="PNG", compress_level=1)
            made += 1
    return made


def run_jobs(jobs: list[Job], parallel: int, threads: int) -> dict[str, dict]:
    """Run jobs (skipping finished ones, resuming stopped ones), ``parallel`` at a time."""
    done: dict[str, dict] = {}
    pending = list(jobs)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        running: dict[concurrent.futures.Future, Job] = {}
        while pending or running:
            for job in [j for j in pending if all(n in done for n in j.needs)][: parallel - len(running)]:
                pending.remove(job)
                running[pool.submit(run_job, job, env)] = job
            if not running:
                raise RuntimeError(f"jobs wait on jobs that failed: {[j.name for j in pending]}")
            finished, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in finished:
                job = running.pop(future)
                done[job.name] = future.result()
    return done


def run_job(job: Job, env: dict[str, str]) -> dict:
    metrics, wall = job.out / "metrics.json", job.out.with_name(job.out.name + ".wall.json")
    if metrics.is_file() and wall.is_file():
        print(f"  [skip] {job.name}: finished before", flush=True)
        return {"metrics": json.loads(metrics.read_text()), **json.loads(wall.read_text())}
    argv = job.argv + (["--resume"] if (job.out / "last.pt").is_file() else [])
    print(f"  [run ] {job.name}: {shlex.join(argv)}", flush=True)
    started = time.time()
    with open(job.out.with_name(job.out.name + ".log"), "a") as log:
        code = subprocess.run(executable(argv), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    if code != 0:
        raise RuntimeError(f"{job.name} failed (exit {code}); see {job.out.name}.log")
    record = {"wall_seconds": round(time.time() - started, 1), "command": shlex.join(job.argv)}
    wall.write_text(json.dumps(record))
    print(f"  [done] {job.name} in {record['wall_seconds']:.0f} s", flush=True)
    return {"metrics": json.loads(metrics.read_text()), **record}


def common_args(args: argparse.Namespace, seed: int) -> list[str]:
    """Every run's options; ``--weights-dir``: every backbone (teacher, scratch and distilled student) from ImageNet."""
    return ["--seed", str(seed), "--batch-size", str(args.batch_size), "--workers", str(args.workers),
            "--device", "cpu", "--quiet", "--json", *(["--weights-dir", str(args.weights_dir)] if args.weights_dir else [])]


def teacher_job(args, data: Path, seed: int) -> Job:
    out = args.work / f"teacher-s{seed}"
    return Job(out.name, edge_iqa("train", "--model", args.teacher, *view_args(scaled_view_specs(args.teacher, args.view_scale)),
                                  "--data", str(data), "--out", str(out), "--epochs", str(args.teacher_epochs),
                                  *common_args(args, seed)), out)


def scratch_job(args, data: Path, seed: int) -> Job:
    out = args.work / f"scratch-s{seed}"
    return Job(out.name, edge_iqa("train", "--model", args.student, *view_args(scaled_view_specs(args.student, args.view_scale)),
                                  "--data", str(data), "--out", str(out), "--epochs", str(args.student_epochs),
                                  *[a for loss in SCRATCH_LOSSES for a in ("--loss", loss)], *common_args(args, seed)),
               out)


def distill_job(args, data: Path, seed: int, mix: str, unlabeled: Path) -> Job:
    losses, use_unlabeled = MIXES[mix]
    out = args.work / f"distill-{mix}-s{seed}"
    argv = edge_iqa("distill", "--teacher", str(args.work / f"teacher-s{seed}" / "best.pt"), "--student", args.student,
                    *view_args(scaled_view_specs(args.student, args.view_scale)), "--data", str(data), "--out", str(out),
                    "--epochs", str(args.student_epochs), *[a for loss in losses for a in ("--loss", loss)],
                    *(["--unlabeled", str(unlabeled)] if use_unlabeled else []), *common_args(args, seed))
    return Job(out.name, argv, out, needs=[f"teacher-s{seed}"])


def macs_at_uhd(preset: str, specs: list[str]) -> dict:
    from edge_iqa.commands.common import resolve_model
    from profiling.report import profile_config

    config = resolve_model(preset, specs or None)
    report = profile_config(config, UHD, fvcore=False, details=False)
    return {"model": preset, "views": [v.spec() for v in config.views], "backbone": config.backbone,
            "gmac_3840x2160": round(report.macs / 1e9, 3), "params_m": round(report.params / 1e6, 3),
            "within_50_gmac": report.macs <= 50e9}


def summarise(results: list[dict]) -> dict:
    def stats(key: str) -> dict:
        values = [r["metrics"]["test"][key] for r in results]
        return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "values": values}

    return {"srcc": stats("srcc"), "plcc": stats("plcc"),
            "val_srcc": [r["metrics"]["best_val_srcc"] for r in results],
            "train_seconds": [r["metrics"]["train_seconds"] for r in results],
            "wall_seconds": [r["wall_seconds"] for r in results],
            "commands": [r["command"] for r in results],
            "notes": [f"{r['metrics']['model']} seed {r['metrics']['train_config']['seed']}: {r['note']}"
                      for r in results if r.get("note")]}


def versions() -> dict:
    import importlib.metadata as md

    return {"python": platform.python_version(), **{p: md.version(p) for p in ("torch", "timm", "numpy", "pillow",
                                                                              "scikit-image")}}


def write_markdown(path: Path, result: dict) -> None:
    groups = result["groups"]
    lines = [f"# Distillation on the embedded synthetic data ({result['date']})", "",
             f"Benchmark command: `{result['benchmark_command']}`", "",
             f"Data: `{result['data_command']}` ({result['data']['train']} train / {result['data']['val']} val / "
             f"{result['data']['test']} test images, split by reference photo; SSIM labels — a proxy, not human "
             "opinion).", f"Teacher `{result['settings'].get('teacher', TEACHER)}`, student "
             f"`{result['settings'].get('student', STUDENT)}`, "
             + (f"every backbone from ImageNet weights (`--weights-dir {result['settings']['weights_dir']}`)"
                if result['settings'].get('weights_dir') else "random init") + ".",
             f"View scale {result['settings']['view_scale']} of the registry presets' views; seeds "
             f"{result['settings']['seeds']}; teacher {result['settings']['teacher_epochs']} epochs, students "
             f"{result['settings']['student_epochs']} epochs; distilled mix `{result['mix']}`: "
             f"`{' '.join(result['mix_losses'])}`" + (f" + {result['unlabeled_images']} pseudo-labeled images"
                                                       if result['mix_unlabeled'] else "") + ".", "",
             "| model | test SRCC | test PLCC | GMAC @ 3840×2160 | params | train time / seed |",
             "|---|---|---|---|---|---|"]
    for name, key in (("teacher", "teacher"), ("student, scratch", "scratch"), ("student, distilled", "distill")):
        g = groups[key]
        macs = result["macs"]["teacher" if key == "teacher" else "student"]
        lines.append(f"| {name} | {g['srcc']['mean']:.4f} ± {g['srcc']['std']:.4f} | {g['plcc']['mean']:.4f} ± "
                     f"{g['plcc']['std']:.4f} | {macs['gmac_3840x2160']:.2f} | {macs['params_m']:.2f} M | "
                     f"{statistics.fmean(g['wall_seconds']) / 60:.1f} min |")
    v = result["verdict"]
    gains = v["paired_gains"]
    lines += ["", f"Distilled − scratch (mean of seeds): SRCC **{v['srcc_gain']:+.4f}**; paired by seed: "
                  f"{', '.join(f'{g:+.4f}' for g in gains)} ({sum(g > 0 for g in gains)} of {len(gains)} positive).",
              f"Teacher − scratch: SRCC {v['gap']:+.4f}" + (
                  f"; share of that gap closed: {v['gap_closed']:.0%}" if v["gap"] >= SMALL_GAP else
                  f" — smaller than {SMALL_GAP}, so the share of the gap closed means nothing here: from random init "
                  "on 11 training photos the bigger teacher is barely better than the student, and what the student "
                  "gains is mostly the teacher's labels on extra images and its smoother targets."),
              f"Goal (gain ≥ 0.02 or ≥ 50 % of the gap): **{'met' if v['met'] else 'not met'}** — the seed-to-seed "
              f"spread (std ≈ {groups['scratch']['srcc']['std']:.2f}) is larger than the gain, so the paired per-seed "
              "gains are the firmer evidence; three test photos make a noisy test split.", ""]
    if result.get("selection"):
        lines += ["Loss-mix selection on seed 0 (best validation SRCC; the test split was not used):", "",
                  "| mix | losses | pseudo-labels | best val SRCC |", "|---|---|---|---|"]
        for mix, item in result["selection"].items():
            lines.append(f"| {mix} | `{' '.join(item['losses'])}` | {'yes' if item['unlabeled'] else 'no'} | "
                         f"{item['val_srcc']:.4f} |")
        lines.append("")
    lines += ["Per-seed test SRCC: " + "; ".join(f"{k} {', '.join(f'{x:.4f}' for x in g['srcc']['values'])}"
                                                   for k, g in groups.items()), "",
              "MACs count conv + linear + matmul multiply-accumulates through the views at a 3840×2160 source "
              "(profiling.report.profile_config). Train time is the wall time of each command on this machine "
              f"({result['machine']['cpus']} CPUs, shared; {result['settings']['threads']} thread(s) per run, "
              f"{result['settings']['parallel']} runs at a time), including the teacher's one pass for distillation; a run stopped and continued with "
              "`--resume` counts only its last part (its train_seconds in the JSON count all epochs).",
              "", "Commands:", ""]
    lines += [f"    {c}" for g in groups.values() for c in g["commands"]]
    if result.get("selection"):
        lines += [f"    {item['command']}" for item in result["selection"].values() if item["command"] not in
                  groups["distill"]["commands"]]
    notes = [n for g in groups.values() for n in g.get("notes", [])]
    if notes:
        lines += ["", "Notes:", "", *[f"- {n}" for n in notes]]
    lines += ["", f"Versions: {json.dumps(result['versions'])}; machine: {json.dumps(result['machine'])}", ""]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="folder for data and runs (default runs/bench/...)")
    parser.add_argument("--max-side", type=int, default=512, help="longer side of the synthetic references")
    parser.add_argument("--view-scale", type=float, default=1.0, help="scale of the presets' views")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--teacher-epochs", type=int, default=12)
    parser.add_argument("--student-epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--mix", default="score+hint+pseudo", choices=sorted(MIXES),
                        help="the distillation loss mix (with --select: the fallback)")
    parser.add_argument("--select", action="store_true", help="choose the mix on seed 0's validation SRCC first")
    parser.add_argument("--unlabeled-per-ref", type=int, default=40, help="pseudo-labeled images per train reference")
    parser.add_argument("--parallel", type=int, default=2, help="runs at a time")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where NAME.{json,md} go")
    parser.add_argument("--teacher", default=TEACHER, help="teacher preset")
    parser.add_argument("--student", default=STUDENT, help="student preset")
    parser.add_argument("--weights-dir", type=Path, default=None,
                        help="ImageNet weights folder: every backbone starts from it (default: random init)")
    parser.add_argument("--name", default="distill_synth", help="results file stem in --results")
    parser.add_argument("--smoke", action="store_true", help="tiny and fast: checks the pipeline, not distillation")
    args = parser.parse_args(argv)
    if args.smoke:
        args.max_side, args.view_scale, args.seeds = 128, 0.25, [0, 1]
        args.teacher_epochs = args.student_epochs = 1
        args.unlabeled_per_ref = 2
    args.results = args.results.resolve()
    models = "" if (args.teacher, args.student) == (TEACHER, STUDENT) else f"-{args.teacher}-{args.student}"
    init = "-imagenet" if args.weights_dir else ""
    default_work = Path("runs") / "bench" / f"distill_synth-{args.max_side}-x{args.view_scale:g}{models}{init}"
    args.work = args.work.resolve() if args.work else default_work
    os.chdir(ROOT)  # commands are recorded with paths relative to the repository
    if args.smoke:
        args.results = args.work  # a smoke run checks the pipeline; its numbers are no result
    args.work.mkdir(parents=True, exist_ok=True)
    args.results.mkdir(parents=True, exist_ok=True)
    started = time.time()

    data = args.work.parent / f"data{args.max_side}"
    data_argv = edge_iqa("data", "synth", str(data), "--max-side", str(args.max_side), "--json")
    if not (data / "manifest.csv").is_file():
        print(f"building the data: {shlex.join(data_argv)}", flush=True)
        subprocess.run(executable(data_argv), cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    from edge_iqa.data.manifest import read_manifest

    counts = {split: len(read_manifest(data, split=split)) for split in ("train", "val", "test")}
    unlabeled = args.work / "unlabeled"
    mixes = sorted(MIXES) if args.select else [args.mix]
    n_unlabeled = make_unlabeled(data, unlabeled, args.unlabeled_per_ref) if any(MIXES[m][1] for m in mixes) else 0

    jobs = [teacher_job(args, data, s) for s in args.seeds] + [scratch_job(args, data, s) for s in args.seeds]
    selection = {}
    if args.select:
        jobs += [distill_job(args, data, args.seeds[0], m, unlabeled) for m in mixes]
        done = run_jobs(jobs, args.parallel, args.threads)
        for m in mixes:
            run = done[f"distill-{m}-s{args.seeds[0]}"]
            selection[m] = {"losses": list(MIXES[m][0]), "unlabeled": MIXES[m][1],
                            "val_srcc": run["metrics"]["best_val_srcc"], "command": run["command"]}
        args.mix = max(selection, key=lambda m: selection[m]["val_srcc"])
        print(f"selected mix {args.mix} (val SRCC {selection[args.mix]['val_srcc']:.4f})", flush=True)
    jobs += [distill_job(args, data, s, args.mix, unlabeled) for s in args.seeds]
    jobs = list({j.name: j for j in jobs}.values())
    done = run_jobs(jobs, args.parallel, args.threads)

    groups = {"teacher": summarise([done[f"teacher-s{s}"] for s in args.seeds]),
              "scratch": summarise([done[f"scratch-s{s}"] for s in args.seeds]),
              "distill": summarise([done[f"distill-{args.mix}-s{s}"] for s in args.seeds])}
    gain = groups["distill"]["srcc"]["mean"] - groups["scratch"]["srcc"]["mean"]
    gap = groups["teacher"]["srcc"]["mean"] - groups["scratch"]["srcc"]["mean"]
    closed = gain / gap if gap > 0 else None
    paired = [d - c for d, c in zip(groups["distill"]["srcc"]["values"], groups["scratch"]["srcc"]["values"])]
    result = {
        "date": datetime.date.today().isoformat(),
        "benchmark_command": shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(argv),
        "data_command": shlex.join(data_argv), "data": counts,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "mix": args.mix, "mix_losses": list(MIXES[args.mix][0]), "mix_unlabeled": MIXES[args.mix][1],
        "unlabeled_images": n_unlabeled if MIXES[args.mix][1] else 0,
        "macs": {"teacher": macs_at_uhd(args.teacher, scaled_view_specs(args.teacher, args.view_scale)),
                 "student": macs_at_uhd(args.student, scaled_view_specs(args.student, args.view_scale))},
        "groups": groups, "selection": selection,
        "verdict": {"srcc_gain": gain, "gap": gap, "gap_closed": closed, "paired_gains": paired,
                    "met": gain >= 0.02 or (closed is not None and closed >= 0.5)},
        "total_wall_seconds": round(time.time() - started, 1),
        "versions": versions(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "processor": platform.processor()},
    }
    (args.results / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(args.results / f"{args.name}.md", result)
    print((args.results / f"{args.name}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
