"""The probe behind the "tried and not kept" paragraph of int8_calibration_memory.md; it imports
export.calibration.GraphStatistics, which exists only at commit d8cc67b (reverted after it):

    git worktree add /tmp/d8 d8cc67b && cd /tmp/d8 && for m in graph stream; do
      OMP_NUM_THREADS=1 python benchmarks/results/int8_graph_statistics_probe.py MODEL_FP32.onnx $m; done

Run 2026-12-03 on runs/int8_calibration_memory/lean-256-fp32/model_fp32.onnx (aim-baseline, 720x1280):
    graph extremes s/img 0.41 histograms s/img 3.0 peak growth MB 706
    stream extremes s/img 0.72 histograms s/img 1.44 peak growth MB 1336
"""
import sys, time, numpy as np, onnx
from pathlib import Path
from export.calibration import GraphStatistics, TensorStream, _histogram_calibrator, _spans
def mem():
    return {l.split(":")[0]: int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith(("VmHWM", "VmRSS"))}
class R:
    def __init__(self, feeds): self.feeds, self.images = feeds, 0
    def rewind(self): self.images = 0
    def __iter__(self):
        for f in self.feeds:
            self.images += 1; yield f
path, mode = sys.argv[1], sys.argv[2]
g = onnx.load(path, load_external_data=False).graph
shapes = {i.name: [d.dim_value or 1 for d in i.type.tensor_type.shape.dim] for i in g.input}
rng = np.random.default_rng(0)
feeds = [{n: rng.random(s, dtype=np.float32) for n, s in shapes.items()} for _ in range(3)]
def go(st):
    Path("/proc/self/clear_refs").write_text("5"); m0 = mem(); t = time.perf_counter()
    ext = st.extremes(); t1 = time.perf_counter()
    st.histograms({("span", 4096): _spans("span", ext)}); t2 = time.perf_counter(); m1 = mem()
    print(mode, "extremes s/img", round((t1 - t) / 3, 2), "histograms s/img", round((t2 - t1) / 3, 2), "peak growth MB", round(m1["VmHWM"] - m0["VmRSS"]))
if mode == "graph":
    go(GraphStatistics(path, R(feeds), 1))
else:
    with _histogram_calibrator(path) as c:
        go(TensorStream(c, R(feeds), 1))
