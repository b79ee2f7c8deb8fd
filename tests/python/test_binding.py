"""The Python module against Captum (on the fixtures' weights), against the CLI's
.npy output, and its argument checking, tensor inputs, progress and Ctrl-C."""
import json
import os
import re
import signal
import subprocess
import threading
import time

import numpy as np
import pytest
import torch

import ipna_fast

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FASHION = os.path.join(ROOT, "models", "fashion_cnn.onnx")


def rel(a, b):
    return np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b))


def case(fixtures, name):
    d = os.path.join(fixtures, name)
    meta = json.load(open(os.path.join(d, "meta.json")))
    return d, meta, np.load(os.path.join(d, "x.npy")), np.load(os.path.join(d, "baseline.npy"))


# Nets whose formulas are well conditioned in float64 (meta.json's kappa), so 1e-9 holds.
@pytest.mark.parametrize("name", ["lenet", "vgg_avg", "resnet18", "mbv2_block"])
@pytest.mark.parametrize("target", ["prob", "logit"])
def test_ig_and_conductance_equal_captum(fixtures, name, target):
    d, meta, x, x0 = case(fixtures, name)
    a = ipna_fast.Attributor(ipna_fast.load(os.path.join(d, "model.onnx"), split=meta["split"]), precision="f64")
    r = a.run(x, x0, target_class=meta["class"], steps=meta["steps"], target=target)
    assert rel(r.ig, np.load(os.path.join(d, f"captum_ig_{target}.npy"))) < 1e-9
    assert rel(r.conductance, np.load(os.path.join(d, f"captum_cond_{target}.npy"))) < 1e-9
    # SPEC.md: completeness, as the gap the result reports
    assert r.ig_gap == pytest.approx(r.ig.sum() - (r.f_input - r.f_baseline), abs=1e-12)


def test_ipna_equals_the_cli_bit_for_bit(fixtures, tmp_path):
    d, meta, x, x0 = case(fixtures, "lenet")
    box = meta["boxes"][0]
    out = tmp_path / "cli"
    subprocess.run([os.environ["IPNA_FAST"], "attribute", "--model", os.path.join(d, "model.onnx"), "--split",
                    meta["split"], "--input", os.path.join(d, "x.npy"), "--baseline", os.path.join(d, "baseline.npy"),
                    "--class", str(meta["class"]), "--box", *map(str, box), "-n", "16", "--chunk", "16",
                    "--precision", "f64", "-o", str(out), "--json"], check=True, capture_output=True)
    a = ipna_fast.Attributor(ipna_fast.load(os.path.join(d, "model.onnx"), split=meta["split"]), precision="f64")
    r = a.run(x, x0, target_class=meta["class"], steps=16, boxes=[box], chunk=16)
    assert np.array_equal(r.ipna, np.load(out / "ipna.npy"))
    assert np.array_equal(r.ig, np.load(out / "ig.npy"))
    assert np.array_equal(r.conductance, np.load(out / "conductance.npy"))


def test_box_batches_give_the_maps_of_one_box_a_pass(fixtures):
    # A 4x4 grid on the VGG fixture: its inner boxes' cones share their geometry and run in groups.
    d, meta, x, x0 = case(fixtures, "vgg_avg")
    a = ipna_fast.Attributor(ipna_fast.load(os.path.join(d, "model.onnx"), split=meta["split"]), precision="f64")
    alone = a.run(x, x0, target_class=meta["class"], steps=8, grid="4x4", ipna_form="tangent", box_batch=1)
    grouped = a.run(x, x0, target_class=meta["class"], steps=8, grid="4x4", ipna_form="tangent", box_batch=4)
    assert alone.patch_passes == 16 and grouped.patch_passes == 9
    for b in range(16):
        assert rel(grouped.ipna[b], alone.ipna[b]) < 1e-12
    with pytest.raises(ValueError, match="box_batch: must be >= 0"):
        a.run(x, x0, target_class=meta["class"], steps=8, grid="4x4", box_batch=-1)


def test_two_part_models_and_info(fixtures):
    d, meta, x, x0 = case(fixtures, "lenet")
    one = ipna_fast.Attributor(ipna_fast.load(os.path.join(d, "model.onnx"), split=meta["split"]), precision="f64")
    two = ipna_fast.Attributor(ipna_fast.load(os.path.join(d, "first.onnx"), second=os.path.join(d, "second.onnx")),
                               precision="f64")
    r1 = one.run(x, x0, target_class=meta["class"], steps=16)
    r2 = two.run(x, x0, target_class=meta["class"], steps=16)
    assert rel(r2.ig, r1.ig) < 1e-12
    names = [t["name"] for t in ipna_fast.info(os.path.join(d, "model.onnx"))]
    assert meta["split"] in names


def test_a_tensor_gives_the_result_of_its_numpy_copy():
    a = ipna_fast.Attributor(ipna_fast.load(FASHION, split="hidden"))
    t = torch.rand(1, 28, 28, generator=torch.Generator().manual_seed(3))
    rt = a.run(t, torch.zeros(28, 28).view(1, 28, 28), target_class=2, steps=32, boxes=[(0, 0, 14, 14)])
    rn = a.run(t.numpy().copy(), np.zeros((1, 28, 28)), target_class=2, steps=32, boxes=[(0, 0, 14, 14)])
    assert np.array_equal(rt.ig, rn.ig) and np.array_equal(rt.ipna, rn.ipna)
    rd = a.run(t.double(), "zeros", target_class=2, steps=32, boxes=[(0, 0, 14, 14)])  # float64 tensor, 'zeros'
    assert np.array_equal(rd.ig, rn.ig)


def test_a_dlpack_producer_without_array_is_read():
    class OnlyDlpack:  # what a framework tensor offers when it has no __array__
        def __init__(self, t):
            self.t = t

        def __dlpack__(self, stream=None):
            return self.t.__dlpack__()

        def __dlpack_device__(self):
            return self.t.__dlpack_device__()

    a = ipna_fast.Attributor(ipna_fast.load(FASHION, split="hidden"))
    t = torch.rand(1, 28, 28, generator=torch.Generator().manual_seed(5))
    r1 = a.run(OnlyDlpack(t), "zeros", target_class=4, steps=16)
    r2 = a.run(t.numpy(), "zeros", target_class=4, steps=16)
    assert np.array_equal(r1.ig, r2.ig)


def test_pruning_and_the_experiments_match_the_engine():
    m = ipna_fast.load(FASHION, split="hidden")
    a = ipna_fast.Attributor(m, precision="f64")
    x = np.random.default_rng(0).random((1, 28, 28))
    r = a.run(x, "zeros", target_class=1, steps=16, boxes=[(0, 0, 14, 14)])
    mask = ipna_fast.prune_mask(r.ipna[0], m.split_shape, percent=25)
    assert mask.shape == (64,) and int((mask == 0).sum()) == 16
    p = a.run(x, "zeros", target_class=1, steps=16, split_mask=mask, conductance=False)
    ar = ipna_fast.attribute(a, x, "zeros", target_class=1, steps=16, boxes=[(0, 0, 14, 14)], prune_percent=25)
    assert np.array_equal(ar.prune_mask, mask)
    assert ar.pruned.ig_sum == p.ig_sum
    z = a.logits(x, split_mask=mask)
    assert ar.pruned.f_input == pytest.approx(np.exp(z[1] - z.max()) / np.exp(z - z.max()).sum(), abs=1e-12)
    curve = ipna_fast.pruning_curve(a, x, "zeros", target_class=1, box=(0, 0, 14, 14), fractions=[0, 1], steps=16)
    assert len(curve.rows) == 4 and curve.rows[0]["ig_total"] == pytest.approx(r.ig_sum, abs=1e-12)
    assert curve.to_csv().startswith("fraction,ranking")


def test_bad_arguments_raise_the_documented_exceptions():
    m = ipna_fast.load(FASHION, split="hidden")
    a = ipna_fast.Attributor(m)
    x = np.zeros((1, 28, 28))
    with pytest.raises(ValueError, match=r"x: shape \(3, 28, 28\)"):
        a.run(np.zeros((3, 28, 28)), target_class=0)
    with pytest.raises(TypeError, match="x: expected an array"):
        a.run("image.png", target_class=0)
    with pytest.raises(TypeError, match="x: expected real numbers"):
        a.run(np.zeros((1, 28, 28), dtype=complex), target_class=0)
    with pytest.raises(ValueError, match="baseline: shape"):
        a.run(x, np.zeros(5), target_class=0)
    with pytest.raises(ValueError, match="target: expected one of prob, logit"):
        a.run(x, target_class=0, target="probability")
    with pytest.raises(ValueError, match="steps: expected a positive count"):
        a.run(x, target_class=0, steps=0)
    with pytest.raises(ValueError, match="boxes: each box is"):
        a.run(x, target_class=0, boxes=[(0, 0, 14)])
    with pytest.raises(ValueError, match="split_mask: 3 values, expected 64"):
        a.run(x, target_class=0, split_mask=[1, 0, 1])
    with pytest.raises(ipna_fast.Error, match="class 12 is out of range"):
        a.run(x, target_class=12)
    with pytest.raises(ipna_fast.Error, match="box 0"):
        a.run(x, target_class=0, boxes=[(0, 0, 40, 40)])
    with pytest.raises(ipna_fast.Error, match="no_such_tensor"):
        ipna_fast.load(FASHION, split="no_such_tensor")
    with pytest.raises(ipna_fast.Error, match="missing.onnx"):
        ipna_fast.load("missing.onnx", split="x")
    with pytest.raises(ValueError, match="split"):
        ipna_fast.load(FASHION)
    with pytest.raises(ValueError, match="percent= and count="):
        ipna_fast.prune_mask(np.zeros(64), [64])
    assert issubclass(ipna_fast.Error, RuntimeError)


def test_progress_is_reported_and_its_exceptions_propagate():
    a = ipna_fast.Attributor(ipna_fast.load(FASHION, split="hidden"))
    calls = []
    a.run(np.zeros((1, 28, 28)), target_class=0, steps=64, chunk=8, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (64, 64) and len(calls) == 8 and calls == sorted(calls)

    def stop(done, total):
        raise RuntimeError("stopped by the callback")

    with pytest.raises(RuntimeError, match="stopped by the callback"):
        a.run(np.zeros((1, 28, 28)), target_class=0, steps=64, chunk=8, progress=stop)


def test_ctrl_c_raises_keyboard_interrupt_within_a_chunk():
    a = ipna_fast.Attributor(ipna_fast.load(FASHION, split="hidden"))
    timer = threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        a.run(np.random.rand(1, 28, 28), target_class=0, steps=2_000_000, chunk=64)  # minutes if not stopped
    assert time.monotonic() - t0 < 10
    timer.join()


def test_sweep_from_python(tmp_path):
    import h5py

    s = ipna_fast.sweep(model=[FASHION], split="hidden", idx=ipna_fast.FASHION_MNIST, limit=5, grid="2x2", steps=16,
                        output=str(tmp_path / "s.h5"))
    assert s["items"] == 5 and s["failed"] == 0
    a = ipna_fast.Attributor(ipna_fast.load(FASHION, split="hidden"))
    with h5py.File(tmp_path / "s.h5") as f:
        label = int(f["items/label"][0])
        x = f  # noqa: F841 (the first image is read below from the IDX file)
        ig_sum = f["items/ig_sum"][0]
    import gzip

    raw = gzip.open(os.path.join(ipna_fast.FASHION_MNIST, "t10k-images-idx3-ubyte.gz")).read()
    x0 = np.frombuffer(raw, np.uint8, offset=16)[:784].reshape(1, 28, 28) / 255.0
    r = a.run(x0, "zeros", target_class=label, steps=16, grid="2x2", memory_budget_mb=256)
    assert r.ig_sum == ig_sum
    # The budget that picks the chunk is the CPU's fixed 256 MiB unless given, and the file records it.
    s = ipna_fast.sweep(model=[FASHION], split="hidden", idx=ipna_fast.FASHION_MNIST, limit=2, steps=16,
                        memory_budget_mb=1, output=str(tmp_path / "small.h5"))
    assert s["items"] == 2 and s["failed"] == 0
    for name, mib in (("s.h5", 256), ("small.h5", 1)):
        with h5py.File(tmp_path / name) as f:
            assert json.loads(f.attrs["config"])["memory_budget"] == mib << 20
    with pytest.raises(ValueError, match="memory_budget_mb"):
        ipna_fast.sweep(model=[FASHION], split="hidden", idx=ipna_fast.FASHION_MNIST, limit=2, memory_budget_mb=-1,
                        output=str(tmp_path / "bad.h5"))


def test_the_readme_example_runs_as_written(tmp_path):
    text = open(os.path.join(ROOT, "README.md")).read()
    code = re.search(r"<!-- python-example -->\s*```python\n(.*?)```", text, re.S).group(1)
    os.symlink(os.path.join(ROOT, "models"), tmp_path / "models")  # the example runs from the repository
    env = dict(os.environ, MPLBACKEND="Agg")
    if os.environ.get("IPNA_PYTHON_DIR"):
        env["PYTHONPATH"] = os.path.abspath(os.environ["IPNA_PYTHON_DIR"])
    subprocess.run(["/usr/bin/python3", "-c", code], cwd=tmp_path, env=env, check=True)
    assert (tmp_path / "ig.png").stat().st_size > 1000


def test_auto_steps_report_their_levels_and_equal_the_fixed_run(fixtures):
    """steps='auto' says where it stopped and what it reused; on uniform steps its maps are those of a fixed run at
    that m."""
    d, meta, x, x0 = case(fixtures, "lenet")
    a = ipna_fast.Attributor(ipna_fast.load(os.path.join(d, "model.onnx"), split=meta["split"]), precision="f64")
    box = meta["boxes"][0]
    r = a.run(x, x0, target_class=meta["class"], steps="auto", schedule="uniform", tol=0.05, max_steps=256,
              boxes=[box])
    sc = r.step_control
    levels = sc["levels"]
    assert r.steps == levels[-1]["steps"] >= 32
    assert [l["steps"] for l in levels] == [16 << i for i in range(len(levels))]
    # every doubling evaluates its new points only (conductance and the difference form included)
    assert [l["reused"] for l in levels] == [0] + [l["steps"] // 2 for l in levels[1:]]
    assert sc["evaluations"] == r.steps
    assert sc["converged"] == ("all under the tolerance" in sc["summary"])
    fixed = a.run(x, x0, target_class=meta["class"], steps=r.steps, boxes=[box])
    assert fixed.step_control is None and fixed.steps == r.steps
    for name in ("ig", "conductance", "ipna"):
        assert rel(getattr(r, name), getattr(fixed, name)) < 1e-12, name


def test_extrapolated_ipna_comes_from_half_the_steps(fixtures):
    """extrapolate=True: the difference form's IPNA as 2 P(m) - P(m / 2), for m gradient evaluations, reported."""
    d, meta, x, x0 = case(fixtures, "lenet")
    a = ipna_fast.Attributor(ipna_fast.load(os.path.join(d, "model.onnx"), split=meta["split"]), precision="f64")
    kw = dict(target_class=meta["class"], boxes=[meta["boxes"][0]])
    r = a.run(x, x0, steps=32, extrapolate=True, **kw)
    half, full = a.run(x, x0, steps=16, **kw), a.run(x, x0, steps=32, **kw)
    assert r.step_control["extrapolated_from"] == 16 and r.step_control["evaluations"] == 32
    want = 2 * np.asarray(full.ipna) - np.asarray(half.ipna)
    assert rel(r.ipna, want) < 1e-12
    assert abs(r.ipna_gap[0] - (want[0].sum() - full.ig_in_box[0])) < 1e-12
    assert rel(r.ig, full.ig) < 1e-12
    with pytest.raises(ipna_fast.Error, match="difference form"):
        a.run(x, x0, steps=32, extrapolate=True, ipna_form="tangent", **kw)


def test_load_image_prepares_as_the_command_line(fixtures, tmp_path):
    """load_image: the --image preprocessing, so IG of its array equals the command line's on the image."""
    d, meta, _, _ = case(fixtures, "tiny224")
    image = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "traffic_light.JPEG")
    x = ipna_fast.load_image(image)
    assert x.shape == (3, 224, 224) and x.dtype == np.float64
    out = tmp_path / "cli"
    subprocess.run([os.environ["IPNA_FAST"], "attribute", "--model", os.path.join(d, "model.onnx"), "--split",
                    meta["split"], "--image", image, "--class", str(meta["class"]), "-n", "4", "--no-conductance",
                    "--precision", "f64", "-o", str(out), "--json"], check=True, capture_output=True)
    a = ipna_fast.Attributor(ipna_fast.load(os.path.join(d, "model.onnx"), split=meta["split"]), precision="f64")
    r = a.run(x, target_class=meta["class"], steps=4, conductance=False)
    assert np.array_equal(r.ig, np.load(out / "ig.npy"))
    with pytest.raises(ipna_fast.Error, match="nope.png"):
        ipna_fast.load_image(str(tmp_path / "nope.png"))


def test_gradient_schedule_beats_uniform_steps_on_the_trained_cnn():
    """schedule='gradient' (steps where the gradient turns) against a uniform m = 4096 reference on the trained
    Fashion-MNIST CNN, whose F saturates along the path: under 0.7x uniform steps' error at m = 32 for IG,
    conductance and IPNA (bench_steps small measures 0.42x, 0.39x and 0.64x); -n auto reports its pilot."""
    import gzip

    raw = gzip.open(os.path.join(ipna_fast.FASHION_MNIST, "t10k-images-idx3-ubyte.gz")).read()
    labels = gzip.open(os.path.join(ipna_fast.FASHION_MNIST, "t10k-labels-idx1-ubyte.gz")).read()[8:]
    i = labels.index(0)
    x = np.frombuffer(raw, np.uint8, offset=16)[i * 784:(i + 1) * 784].reshape(1, 28, 28) / 255.0
    a = ipna_fast.Attributor(ipna_fast.load(FASHION, split="hidden"), precision="f64")
    kw = dict(target_class=0, boxes=[(0, 0, 14, 14)])
    ref = a.run(x, "zeros", steps=4096, **kw)
    uniform = a.run(x, "zeros", steps=32, **kw)
    gradient = a.run(x, "zeros", steps=32, schedule="gradient", **kw)
    for name in ("ig", "conductance", "ipna"):
        got, base = rel(getattr(gradient, name), getattr(ref, name)), rel(getattr(uniform, name), getattr(ref, name))
        assert got < 0.7 * base, (name, got, base)
    auto = a.run(x, "zeros", steps="auto", tol=0.05, max_steps=512, **kw)  # the gradient schedule by default
    assert auto.step_control["schedule"] == "gradient"
    assert auto.step_control["pilot_evaluations"] == 33 and auto.step_control["pilot_forwards"] == 0
    assert "33 pilot gradient evaluations" in auto.step_control["summary"]
    named = a.run(x, "zeros", steps="auto", schedule="uniform", tol=0.05, max_steps=512, **kw)
    assert named.step_control["schedule"] == "uniform" and named.step_control["pilot_evaluations"] == 0
    with pytest.raises(ValueError, match="schedule"):
        a.run(x, "zeros", steps=16, schedule="curvature", **kw)


def test_the_secant_rule_equals_captums_deeplift_per_step(fixtures):
    """quadrature='secant': Captum's DeepLift from each step's start to its end, summed (vgg_avg, 4 steps, logit);
    completeness is rounding; the difference form is refused with the library's message."""
    d, meta, x, x0 = case(fixtures, "vgg_avg")
    a = ipna_fast.Attributor(ipna_fast.load(os.path.join(d, "model.onnx"), split=meta["split"]), precision="f64")
    r = a.run(x, x0, target_class=meta["class"], steps=4, target="logit", quadrature="secant")
    assert rel(r.ig, np.load(os.path.join(d, "captum_deeplift4_ig_logit.npy"))) < 1e-10
    assert rel(r.conductance, np.load(os.path.join(d, "captum_deeplift4_cond_logit.npy"))) < 1e-10
    assert abs(r.ig_gap) < 1e-12 * abs(r.f_input - r.f_baseline)
    with pytest.raises(Exception, match="tangent form only"):
        a.run(x, x0, target_class=meta["class"], steps=4, quadrature="secant", boxes=[meta["boxes"][0]])
