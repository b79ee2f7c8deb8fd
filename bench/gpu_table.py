#!/usr/bin/env python3
"""Renders the GPU check's results as the markdown table committed under
bench/results/gpu-YYYY-MM-DD.md. Standard library only (it runs on the device).

    python3 bench/gpu_table.py RESULTS_DIR > table.md

RESULTS_DIR holds what bench/gpu_check.sh wrote: env.json (device, driver,
libraries), steps.json (each step's exit code and seconds), gtest.json and
gtest_r152.json (GoogleTest's JSON), ours_*.json (bench/gpu_bench), torch_anchor.json
(the PyTorch anchor of the same call), anchor_on_file.json (the batch-1 loops
timed earlier) and memcheck.txt. Missing pieces show as "not run"."""
import json
import os
import sys

GOALS = {"ig_tf32": 0.035, "ipna_cond_tf32": 0.035, "main_tf32": 0.12}


def load(d, name):
    try:
        with open(os.path.join(d, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def ours(d, math):
    rows = load(d, "ours_%s.json" % math) or []
    return {r["workload"]: r for r in rows}


def gtest_summary(g):
    if not g:
        return "not run", []
    failed, skipped, passed = [], [], 0
    for suite in g.get("testsuites", []):
        for t in suite.get("testsuite", []):
            name = suite["name"] + "." + t["name"]
            if t.get("failures"):
                failed.append(name)
            elif t.get("result") == "SKIPPED" or t.get("status") == "NOTRUN":
                skipped.append(name)
            else:
                passed += 1
    return "%d passed, %d failed, %d skipped" % (passed, len(failed), len(skipped)), failed + ["(skipped) " + s for s in skipped]


def fmt(v, spec="%.4f"):
    return "-" if v is None else spec % v


def main():
    d = sys.argv[1]
    env = load(d, "env.json") or {}
    steps = load(d, "steps.json") or {}
    tf32, fp32 = ours(d, "tf32"), ours(d, "fp32")
    main_rows = ours(d, "main")
    t = load(d, "torch_anchor.json") or {}
    on_file = load(d, "anchor_on_file.json") or {}
    out = []
    p = out.append
    p("# GPU check %s" % env.get("date", "?"))
    p("")
    p("- device: %s, driver %s, %s" % (env.get("gpu", "?"), env.get("driver", "?"), env.get("nvcc", "?")))
    p("- libraries our binaries loaded: %s" % env.get("libraries", "?"))
    p("- PyTorch %s (cuDNN %s) for the anchor, same call" % (t.get("torch", "?"), t.get("cudnn", "?")))
    p("- what ran (exit code, seconds): " + ", ".join("%s %s (%ss)" % (k, v.get("rc"), v.get("s")) for k, v in steps.items()))
    p("")
    p("## Correctness")
    p("")
    s, lst = gtest_summary(load(d, "gtest.json"))
    p("- GPU tests (per op, reference models; CUDA fp32 and tf32 against the CPU in float64): " + s)
    for name in lst:
        p("  - " + name)
    s, lst = gtest_summary(load(d, "gtest_r152.json"))
    p("- ResNet-152 split after layer2, 224x224, 16 steps, IG + conductance + IPNA against the CPU in float64: " + s)
    for name in lst:
        p("  - " + name)
    try:
        with open(os.path.join(d, "memcheck.txt")) as f:
            p("- compute-sanitizer memcheck (LeNet, fp32, IG + conductance + IPNA + pruning): " + f.read().strip())
    except OSError:
        p("- compute-sanitizer memcheck: not run")
    p("")
    p("## ResNet-152 split after layer2, 224x224, 256 steps, class 920")
    p("")
    p("Ours: median of the timed runs after a warm-up run; the warm-up pays cuDNN's algorithm search, shown "
      "apart. PyTorch: ../shared/anchors/torch_anchor.py in the same call (median of 3). TFLOP/s from "
      "2 FLOP per MAC, an input-gradient backward counted as one forward.")
    p("")
    p("| workload | ours s | PyTorch s | ours / PyTorch | goal s | ours TFLOP/s | chunk | algorithm search s |")
    p("| --- | --- | --- | --- | --- | --- | --- | --- |")

    def row(label, r, torch_s, goal):
        o = r.get("median_s") if r else None
        ratio = o / torch_s if o and torch_s else None
        p("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            label, fmt(o), fmt(torch_s), fmt(ratio, "%.2f"), fmt(goal, "<= %.3g"),
            fmt(r.get("tflop_per_s") if r else None, "%.1f"), r.get("chunk", "-") if r else "-",
            fmt(r.get("algorithm_search_s") if r else None, "%.2f")))

    row("IG, tf32", tf32.get("ig"), t.get("batched_ig_fp32tf32_chunk128"), GOALS["ig_tf32"])
    row("IPNA + conductance, tf32", tf32.get("ipna_cond"), t.get("batched_ipna_cond_fp32tf32_chunk64"),
        GOALS["ipna_cond_tf32"])
    batched_main = None
    if t.get("batched_ipna_cond_fp32tf32_chunk64") and t.get("batched_ig_fp32tf32_chunk128"):
        batched_main = t["batched_ipna_cond_fp32tf32_chunk64"] + 2 * t["batched_ig_fp32tf32_chunk128"]
    row("main.py workload, tf32 (vs batched PyTorch: IPNA pass + 2 IG passes)", main_rows.get("main"), batched_main,
        GOALS["main_tf32"])
    seed = None
    if on_file.get("seed_ipna_loop_b1") and on_file.get("seed_ig_loop_b1"):
        seed = on_file["seed_ipna_loop_b1"] + 2 * on_file["seed_ig_loop_b1"]
    row("main.py workload, tf32 (vs the original's batch-1 loops, on file)", main_rows.get("main"), seed, None)
    row("IG, strict fp32", fp32.get("ig"), t.get("batched_ig_strict_fp32_chunk64"), None)
    p("")
    p("PyTorch bf16 (channels-last) for reference: IG %s s, IPNA + conductance %s s." % (
        fmt(t.get("batched_ig_bf16_cl_chunk64")), fmt(t.get("batched_ipna_cond_bf16_cl_chunk64"))))
    print("\n".join(out))


if __name__ == "__main__":
    main()
