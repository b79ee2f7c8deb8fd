"""The table of bench/gpu_grid.sh from its results folder: ours and PyTorch side by side."""
import json, os, sys

R = sys.argv[1]


def load(name):
    p = os.path.join(R, name)
    return json.load(open(p)) if os.path.exists(p) else None


env = load("env.json") or {}
steps = load("steps.json") or {}
ran = ", ".join("%s %d (%ds)" % (k, v["rc"], v["s"]) for k, v in steps.items())
print("# 7x7 grid on the GPU, %s\n" % env.get("date", "?"))
print("- device: %s, driver %s, %s" % (env.get("gpu", "?"), env.get("driver", "?"), env.get("nvcc", "?")))
print("- what ran (exit code, seconds): %s\n" % ran)
print("ResNet-152 (random weights) split after layer2, 224x224, 256 steps, class 920, tf32; 49 boxes of 32x32.")
print("Ours: bench/gpu_bench (a warm-up run, which pays cuDNN's algorithm search, then the median of the timed")
print("runs); PyTorch: bench/grid_torch.py, chunks of 64 steps, cudnn.benchmark, after a warm-up run.\n")
ig = load("ours_ig.json")
ig_s = ig[0]["median_s"] if ig else None
print("| what | s | / our IG alone | first run s | chunk |")
print("| --- | --- | --- | --- | --- |")
if ig:
    print("| ours: IG alone | %.3f | 1.0 | %.3f | %d |" % (ig_s, ig[0]["first_run_s"], ig[0]["chunk"]))
for w, what in (("grid_cone_tangent", "tangent form, cones"),
                ("grid_cone_tangent_alone", "tangent form, cones, one box a pass"),
                ("grid_cone_difference", "difference form, cones"),
                ("grid_full_tangent", "tangent form, whole planes"),
                ("grid_full_difference", "difference form, whole planes")):
    r = load("ours_%s.json" % w)
    if r:
        r = r[0]
        what += " (%d patch passes a step)" % r["patch_passes"] if "patch_passes" in r else ""
        print("| ours: IG + conductance + IPNA, %s | %.3f | %s | %.3f | %d |" %
              (what, r["median_s"], "%.1f" % (r["median_s"] / ig_s) if ig_s else "-", r["first_run_s"], r["chunk"]))
    else:
        print("| ours: IG + conductance + IPNA, %s | not run | | | |" % what)
for v, what in (("shared", "sharing the base pass, f1 per box"), ("one_by_one", "boxes one by one")):
    r = load("torch_%s.json" % v)
    if r:
        s = r[v + "_s"]
        print("| PyTorch %s: IG + conductance + IPNA (difference form), %s | %.3f | %s | %.3f | %d |" %
              (r["torch"], what, s, "%.1f" % (s / ig_s) if ig_s else "-", r[v + "_warmup_s"], r["chunk"]))
    else:
        print("| PyTorch: %s | not run | | | |" % what)
