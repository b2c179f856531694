"""The probe behind "why the test split was the hard one" in the README (int8_demo_float.md): the
FP32 score spread and the INT8 error per split, for INT8 artifacts of the demo student.

    OMP_NUM_THREADS=2 python benchmarks/results/int8_split_error_probe.py \\
        runs/int8_demo_ada/seed0/tensorrt-ptq-ada-float/model_int8_qdq.onnx \\
        runs/int8_demo_ada/seed0/onnx-ptq-ada-float/model_int8.onnx

Output of that command (2026-12-06, AMD EPYC, AVX-512 VNNI) is in int8_split_error_probe.txt.
"""
import csv
import sys

import numpy as np
from scipy.stats import spearmanr

import edge_iqa

DATA = "runs/demo_mnv2/data"
rows = list(csv.DictReader(open(f"{DATA}/manifest.csv")))
fp32 = edge_iqa.load("runs/demo_mnv2/student/best.pt", threads=1)
artifacts = {a: edge_iqa.load(a, threads=1) for a in sys.argv[1:]}
for split in ("val", "test"):
    chosen = [r for r in rows if r["split"] == split]
    paths = [f"{DATA}/{r['path']}" for r in chosen]
    labels = np.array([float(r["score"]) for r in chosen])
    f = np.array([r.score for r in fp32.score_paths(paths)])
    print(split, len(chosen), "fp32 std %.4f srcc %.4f" % (f.std(), spearmanr(f, labels)[0]))
    for name, scorer in artifacts.items():
        q = np.array([r.score for r in scorer.score_paths(paths)])
        e = q - f
        print("  ", name.split("/")[-2], "err mean %.4f std %.4f  spearman %.4f drop %+.4f"
              % (e.mean(), e.std(), spearmanr(f, q)[0], spearmanr(f, labels)[0] - spearmanr(q, labels)[0]))
