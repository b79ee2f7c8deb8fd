#!/usr/bin/python3
"""Small models as ONNX plus PyTorch and Captum references on the same weights.

For each model: model.onnx (one file, split tensor named 'split' or 'layer2'),
x.npy, baseline.npy, and float64 references computed two independent ways:
  ref_*.npy     a batched PyTorch implementation of the SPEC.md formulas
  captum_*.npy  Captum's IntegratedGradients(method="riemann_right") and
                LayerConductance (see captum_conductance for the path trick)
meta.json says the split, class, target, steps, boxes and pruning specs.
Runs with Debian's python3-torch (call /usr/bin/python3) and captum from PyPI.
"""
import argparse
import copy
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_onnx import export_split, randomize_batchnorm  # noqa: E402

torch.set_default_dtype(torch.float64)  # so Captum's alphas (torch.linspace) are float64 too
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def lenet():
    # The original's Fashion-MNIST net; split after the second pool (10x4x4 neurons).
    f1 = nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 10, 5), nn.ReLU(), nn.MaxPool2d(2))
    f2 = nn.Sequential(nn.Flatten(), nn.Linear(160, 64), nn.ReLU(), nn.Linear(64, 10))
    return f1, f2, (1, 28, 28), "split"


def vgg_avg():
    f1 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                       nn.ReLU(), nn.AvgPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
    f2 = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                       nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), nn.Conv2d(16, 16, 3, padding=1),
                       nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    return f1, f2, (3, 32, 32), "split"


def resnet18():
    import torchvision
    m = torchvision.models.resnet18()
    randomize_batchnorm(m, 0)
    f1 = nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2)
    f2 = nn.Sequential(m.layer3, m.layer4, m.avgpool, nn.Flatten(), m.fc)
    return f1, f2, (3, 64, 64), "layer2"


def mbv2_block():
    from torchvision.models.mobilenetv2 import InvertedResidual
    stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
    f1 = nn.Sequential(stem, InvertedResidual(16, 16, 1, 6))  # depthwise + ReLU6 + residual
    f2 = nn.Sequential(InvertedResidual(16, 24, 2, 6), nn.Conv2d(24, 32, 1), nn.BatchNorm2d(32), nn.ReLU6(),
                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(32, 10))
    m = nn.Sequential(f1, f2)
    randomize_batchnorm(m, 1)
    return f1, f2, (3, 32, 32), "split"


def tiny224():
    # A small ImageNet-shaped net (3x224x224 in, 10 classes) for the CLI's image tests.
    f1 = nn.Sequential(nn.Conv2d(3, 4, 7, stride=4, padding=3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2))
    f2 = nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                       nn.Linear(8, 10))
    m = nn.Sequential(f1, f2)
    randomize_batchnorm(m, 5)
    return f1, f2, (3, 224, 224), "split"


def torchvision_family(name, split, size):
    """A torchvision architecture with random weights, split at one of its stages (export_onnx.stages_of)."""
    def build():
        import torchvision
        from export_onnx import family_of, split_stages, stages_of
        kwargs = {"aux_logits": False, "transform_input": False, "init_weights": True} if name == "googlenet" else {}
        m = getattr(torchvision.models, name)(**kwargs)
        randomize_batchnorm(m, 11)
        f1, f2 = split_stages(stages_of(m, family_of(name)), split)
        return f1, f2, (3, size, size), split
    return build


# The CNN families beyond ResNet/VGG/MobileNetV2, at small inputs: squeeze-excitation gates (Sigmoid,
# HardSigmoid, SiLU, HardSwish), Concat, Split/Slice and channel shuffles, LayerNorm and GELU in
# channels-last blocks, ReduceMean.
FAMILIES = {"mobilenet_v3_small": ("features.6", 64), "efficientnet_b0": ("features.4", 64),
            "regnet_y_400mf": ("trunk_output.block2", 64), "densenet121": ("features.transition2", 64),
            "googlenet": ("inception4a", 64), "squeezenet1_1": ("features.6", 64),
            "shufflenet_v2_x0_5": ("stage3", 64), "convnext_tiny": ("features.3", 32)}

MODELS = {"lenet": lenet, "vgg_avg": vgg_avg, "resnet18": resnet18, "mbv2_block": mbv2_block, "tiny224": tiny224}
MODELS.update({name: torchvision_family(name, split, size) for name, (split, size) in FAMILIES.items()})


def target_fn(f2, target, y, mask=None):
    def fn(h):
        z = f2(h * mask if mask is not None else h)
        return F.softmax(z, 1)[:, y] if target == "prob" else z[:, y]
    return fn


def ref_attributions(f1, f2, x, x0, y, m, boxes, target, mask=None, kappa=None, schedule=None):
    """SPEC.md formulas, batched over the m+1 path points, in the dtype of x
    (float64 for the references, float32 to measure what float32 costs).
    With a dict `kappa`, also the condition numbers of conductance and of each
    box's IPNA as sums of differences: ||sum_k |g| (|h_a| + |h_b|)|| / ||sum_k g (h_a - h_b)||,
    the factor by which rounding of h is magnified in them. With a `schedule`
    a_0..a_m, the non-uniform path x_k = x0 + a_k (x - x0) and steps d_k."""
    if schedule is None:
        d = (x - x0) / m
        k = torch.arange(0, m + 1, dtype=x.dtype).view(-1, 1, 1, 1)
        X = x0 + k * d
    else:
        a = schedule.to(x.dtype).view(-1, 1, 1, 1)
        X = x0 + a * (x - x0)
        d = (a[1:] - a[:-1]) * (x - x0)  # d_k, one per step
    tf = target_fn(f2, target, y, mask)
    with torch.no_grad():
        H = f1(X)
    Hk = H[1:].clone().requires_grad_(True)
    g, = torch.autograd.grad(tf(Hk).sum(), Hk)
    cond = (g * (H[1:] - H[:-1])).sum(0)
    if kappa is not None:
        kappa["cond"] = ((g.abs() * (H[1:].abs() + H[:-1].abs())).sum(0).norm() / cond.norm()).item()
        kappa["ipna"] = []
    ipna = []
    for (r0, c0, r1, c1) in boxes:
        box = torch.zeros_like(x)
        box[:, :, r0:r1, c0:c1] = 1
        with torch.no_grad():
            Hp = f1(X[:-1] + d * box)
        ipna.append((g * (Hp - H[:-1])).sum(0))
        if kappa is not None:
            kappa["ipna"].append(((g.abs() * (Hp.abs() + H[:-1].abs())).sum(0).norm() / ipna[-1].norm()).item())
    Xk = X[1:].clone().requires_grad_(True)
    gx, = torch.autograd.grad(tf(f1(Xk)).sum(), Xk)
    ig = (gx.sum(0, keepdim=True) * d)[0] if schedule is None else (gx * d).sum(0)
    with torch.no_grad():
        fx = tf(f1(x)).item()
        fx0 = tf(f1(x0)).item()
    return ig, cond, ipna, fx, fx0


def captum_ig(f1, f2, x, x0, y, m, target, method="riemann_right"):
    from captum.attr import IntegratedGradients
    full = nn.Sequential(f1, f2)
    fwd = (lambda inp: F.softmax(full(inp), 1)) if target == "prob" else full
    return IntegratedGradients(fwd).attribute(x, baselines=x0, target=y, n_steps=m, method=method)[0]


def nonuniform_schedule(m):
    """A fixed non-uniform schedule for the references: a_k = (1 - cos(pi k/m)) / 2, dense at both ends."""
    return 0.5 - 0.5 * torch.cos(torch.pi * torch.arange(0, m + 1, dtype=torch.float64) / m)


def captum_conductance(f1, f2, x, x0, y, m, target):
    """Captum's LayerConductance pairs the gradient at the earlier point of each
    step with the step's change in h. Walking the path backwards (inputs and
    baselines swapped, trapezoid alphas = k/m for k = 0..m) makes that earlier
    point x_k and the change h(x_{k-1}) - h(x_k), i.e. exactly minus SPEC.md's
    right-gradient conductance, through the public API."""
    from captum.attr import LayerConductance
    full = nn.Sequential(f1, f2)
    fwd = (lambda inp: F.softmax(full(inp), 1)) if target == "prob" else full
    lc = LayerConductance(fwd, f1)
    return -lc.attribute(x0, baselines=x, target=y, n_steps=m, method="riemann_trapezoid")[0]


def captum_deeplift_steps(f1, f2, x, x0, y, m):
    """The secant rule's IG and conductance (logit target) through Captum's DeepLift (Rescale rule) applied to
    each of m equal steps, x_{k-1} as the baseline of x_k, and summed: the whole net for IG, f2 from h(x_{k-1})
    to h(x_k) for conductance. Nets of ReLUs and linear ops only (Captum's max pool rule routes differently)."""
    import warnings
    from captum.attr import DeepLift
    warnings.filterwarnings("ignore", module="captum")  # its notes on the hooks it sets, on every call
    full = nn.Sequential(f1, f2)
    ig, cond = torch.zeros_like(x[0]), None
    for k in range(1, m + 1):
        a, b = x0 + (k - 1) / m * (x - x0), x0 + k / m * (x - x0)
        ig += DeepLift(full).attribute(b, baselines=a, target=y)[0]
        with torch.no_grad():
            ha, hb = f1(a), f1(b)
        c = DeepLift(f2).attribute(hb, baselines=ha, target=y)[0]
        cond = c if cond is None else cond + c
    return ig, cond


class ExactHardsigmoid(nn.Module):
    """relu6(x + 3) / 6 through autograd of its parts: ATen's own hardsigmoid backward
    multiplies by float32(1/6) even in float64, off the exact derivative by 3e-8."""

    def forward(self, x):
        return (x + 3).clamp(0, 6) / 6


def exact_hardsigmoid(module):
    for name, child in module.named_children():
        if isinstance(child, nn.Hardsigmoid):
            setattr(module, name, ExactHardsigmoid())
        else:
            exact_hardsigmoid(child)
    # torchvision's SqueezeExcitation calls its scale_activation attribute
    if hasattr(module, "scale_activation") and isinstance(module.scale_activation, nn.Hardsigmoid):
        module.scale_activation = ExactHardsigmoid()


def prune_mask(scores, percent=None, count=None, channel=False):
    s = scores.detach().numpy()
    shape = s.shape
    units = s.reshape(shape[0], -1).sum(1) if channel else s.reshape(-1)
    k = count if count is not None else int(math.floor(percent / 100.0 * units.size + 0.5))
    order = np.argsort(-units, kind="stable")
    mask = np.ones(units.size)
    mask[order[:k]] = 0
    if channel:
        mask = np.repeat(mask, int(np.prod(shape[1:])))
    return torch.from_numpy(mask.reshape(shape))


def save(path, t):
    np.save(path, t.detach().numpy().astype(np.float64))


def make(name, out, steps):
    torch.manual_seed(list(MODELS).index(name) + 1)
    f1, f2, shape, split = MODELS[name]()
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    f1.float().eval()
    f2.float().eval()
    export_split(f1, f2, shape, split, os.path.join(d, "model.onnx"), torchscript=False)
    if name in ("lenet", "tiny224"):  # the original's two-file form too
        import io
        import onnx
        for mod, arg, i, o, fn in ((f1, torch.zeros(1, *shape, dtype=torch.float32), "input", "split", "first.onnx"),
                                   (f2, f1(torch.zeros(1, *shape, dtype=torch.float32)), "split", "logits",
                                    "second.onnx")):
            torch.onnx.export(mod, arg, os.path.join(d, fn), input_names=[i], output_names=[o], opset_version=13,
                              dynamic_axes={i: {0: "N"}, o: {0: "N"}})
    exact_hardsigmoid(f1)
    exact_hardsigmoid(f2)
    f1_32 = copy.deepcopy(f1).float().eval()
    f2_32 = copy.deepcopy(f2).float().eval()
    f1 = f1.double().eval()
    f2 = f2.double().eval()
    for p in list(f1.parameters()) + list(f2.parameters()) + list(f1_32.parameters()) + list(f2_32.parameters()):
        p.requires_grad_(False)

    g = torch.Generator().manual_seed(7)
    x = torch.randn(1, *shape, generator=g)
    if shape[0] == 3:
        x0 = torch.tensor([-mu / sd for mu, sd in zip(IMAGENET_MEAN, IMAGENET_STD)]).view(1, 3, 1, 1).expand(1, *shape)
        x0 = x0.clone()
    else:
        x = x.abs().clamp(0, 1)  # Fashion-MNIST style inputs in [0,1], black baseline
        x0 = torch.zeros(1, *shape)
    H, W = shape[1], shape[2]
    boxes = [[H // 4, W // 3, H // 2 + 2, W - 2], [0, 0, H // 2, W // 2]]
    with torch.no_grad():
        p = F.softmax(f2(f1(x)), 1)[0]
    y = int(torch.argsort(p, descending=True)[1])  # second most likely: a probability away from 0 and 1
    meta = {"split": split, "input_shape": list(shape), "class": y, "steps": steps, "boxes": boxes, "cases": []}
    save(os.path.join(d, "x.npy"), x[0])
    save(os.path.join(d, "baseline.npy"), x0[0])
    for target in ("prob", "logit"):
        kappa = {}
        ig, cond, ipna, fx, fx0 = ref_attributions(f1, f2, x, x0, y, steps, boxes, target, kappa=kappa)
        # What float32 costs on these formulas in PyTorch itself (deep random nets can be badly conditioned).
        ig32, cond32, ipna32, _, _ = ref_attributions(f1_32, f2_32, x.float(), x0.float(), y, steps, boxes, target)
        rel = lambda a, b: ((a.double() - b).norm() / b.norm()).item()
        float32_error = {"ig": rel(ig32, ig), "cond": rel(cond32, cond), "ipna": [rel(a, b) for a, b in zip(ipna32, ipna)]}
        save(os.path.join(d, "ref_ig_%s.npy" % target), ig)
        save(os.path.join(d, "ref_cond_%s.npy" % target), cond)
        for i, a in enumerate(ipna):
            save(os.path.join(d, "ref_ipna%d_%s.npy" % (i, target)), a)
        save(os.path.join(d, "captum_ig_%s.npy" % target), captum_ig(f1, f2, x, x0, y, steps, target))
        save(os.path.join(d, "captum_cond_%s.npy" % target), captum_conductance(f1, f2, x, x0, y, steps, target))
        meta["cases"].append({"target": target, "F_x": fx, "F_x0": fx0, "kappa": kappa, "float32_error": float32_error})
    if name == "vgg_avg":  # ReLUs, convolutions, average pools: Captum's Rescale rule is the secant rule there
        dl_ig, dl_cond = captum_deeplift_steps(f1, f2, x, x0, y, 4)
        save(os.path.join(d, "captum_deeplift4_ig_logit.npy"), dl_ig)
        save(os.path.join(d, "captum_deeplift4_cond_logit.npy"), dl_cond)
    # A non-uniform schedule (SPEC.md "Non-uniform paths"), and Captum's other IG rules, probability target.
    # The trapezoid rule over m steps has Captum's n = m + 1 points; Captum weighs them 1/n (halved at the
    # ends) where the rule has 1/m, so its result is m/(m+1) times the rule's.
    sched = nonuniform_schedule(steps)
    save(os.path.join(d, "schedule.npy"), sched)
    ig_s, cond_s, ipna_s, _, _ = ref_attributions(f1, f2, x, x0, y, steps, boxes, "prob", schedule=sched)
    save(os.path.join(d, "ref_ig_schedule.npy"), ig_s)
    save(os.path.join(d, "ref_cond_schedule.npy"), cond_s)
    for i, a in enumerate(ipna_s):
        save(os.path.join(d, "ref_ipna%d_schedule.npy" % i), a)
    # The left and trapezoid rules take a gradient at the baseline itself, where the black image's constant
    # planes leave max-pool windows with ties that rounding breaks differently in each implementation:
    # these references start from a baseline off such ties, saved beside them.
    x0r = x0 + 0.1 * torch.randn(x0.shape, generator=g)
    save(os.path.join(d, "baseline_random.npy"), x0r[0])
    for rule in ("left", "middle", "trapezoid"):
        n = steps + 1 if rule == "trapezoid" else steps
        save(os.path.join(d, "captum_ig_%s_prob.npy" % rule), captum_ig(f1, f2, x, x0r, y, n, "prob", "riemann_" + rule))
    # Pruning: top 10% neurons by IPNA of box 0, and top 25% channels by conductance; IG of each pruned model.
    _, cond, ipna, _, _ = ref_attributions(f1, f2, x, x0, y, steps, boxes, "prob")
    prunes = [("neuron_ipna", ipna[0], dict(percent=10.0)), ("channel_cond", cond, dict(percent=25.0, channel=True))]
    meta["prune"] = []
    for tag, scores, spec in prunes:
        mask = prune_mask(scores, **spec)
        ig_p, _, _, fx_p, _ = ref_attributions(f1, f2, x, x0, y, steps, [], "prob", mask=mask)
        save(os.path.join(d, "ref_ig_pruned_%s.npy" % tag), ig_p)
        save(os.path.join(d, "mask_%s.npy" % tag), mask)
        meta["prune"].append({"tag": tag, "percent": spec["percent"], "channel": bool(spec.get("channel")),
                              "F_x": fx_p})
    with open(os.path.join(d, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print("fixture %-10s split %s class %d F(x)=%.4f" % (name, split, y, meta["cases"][0]["F_x"]), flush=True)


def make_images(out):
    """torchvision's preprocessing of the seed JPEG and of images made here
    (odd sizes, gray, RGBA, 16-bit, portrait), before normalisation, in [0,1]."""
    from PIL import Image
    import torchvision.transforms as T
    d = os.path.join(out, "images")
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(3)
    here = os.path.dirname(os.path.abspath(__file__))
    files = {"traffic_light.jpg": os.path.join(here, "..", "tests", "data", "traffic_light.JPEG")}
    smooth = (np.linspace(0, 255, 301)[None, :, None] * np.linspace(0.2, 1, 257)[:, None, None]
              + rng.integers(0, 40, (257, 301, 3))).clip(0, 255).astype(np.uint8)
    Image.fromarray(smooth).save(os.path.join(d, "landscape.png"))
    Image.fromarray(smooth).save(os.path.join(d, "landscape_q90.jpg"), quality=90)
    Image.fromarray(smooth.transpose(1, 0, 2).copy()).save(os.path.join(d, "portrait.png"))
    gray = smooth[:, :, 0]
    Image.fromarray(gray).save(os.path.join(d, "gray.png"))
    rgba = np.concatenate([smooth, rng.integers(0, 255, (257, 301, 1)).astype(np.uint8)], 2)
    Image.fromarray(rgba, "RGBA").save(os.path.join(d, "rgba.png"))
    Image.fromarray(gray.astype(np.uint16) * 257).save(os.path.join(d, "gray16.png"))  # 16-bit, same levels
    for name in ("landscape.png", "landscape_q90.jpg", "portrait.png", "gray.png", "rgba.png"):
        files[name] = os.path.join(d, name)
    tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor()])
    for name, path in files.items():
        img = Image.open(path).convert("RGB")
        np.save(os.path.join(d, name + ".npy"), tf(img).numpy().astype(np.float64))
    with open(os.path.join(d, "files.json"), "w") as f:
        json.dump({k: os.path.abspath(v) for k, v in files.items()}, f, indent=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=16,
                    help="a power of two: Captum rounds its step size 1/m to float32, exact only then")
    ap.add_argument("--models", default=",".join(MODELS))
    a = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    for name in a.models.split(","):
        make(name, a.out, a.steps)
    make_images(a.out)
    open(os.path.join(a.out, "DONE"), "w").write("ok\n")


if __name__ == "__main__":
    main()
