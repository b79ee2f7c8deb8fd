# PyTorch baselines for the grid workload of the GPU check: IG + conductance + IPNA
# (the original's difference form) of every box of a ROWS x COLS grid, ResNet-152
# split after layer2, 224 x 224, 256 steps, tf32 convolutions, chunks of 64 steps.
#   one_by_one  the original's way, batched over steps: a whole IPNA + conductance
#               pass per box (f1 at x_{k-1}, x_k and the patched point, f2 forward
#               and backward), then one IG pass
#   shared      what a careful PyTorch user would write: per chunk, the base pass
#               once (f1 at x_{k-1} and x_k, f2 forward and backward), then f1 at
#               each box's patched point; then one IG pass
# Medians of --runs timed runs after a warm-up; writes JSON to --out.
import argparse, json, time
import torch, torch.nn as nn, torch.nn.functional as F, torchvision

ap = argparse.ArgumentParser()
ap.add_argument("--grid", default="7x7")
ap.add_argument("--steps", type=int, default=256)
ap.add_argument("--chunk", type=int, default=64)
ap.add_argument("--runs", type=int, default=1)
ap.add_argument("--variants", default="shared,one_by_one")
ap.add_argument("--out", required=True)
ap.add_argument("--device", default="cuda", help="cuda, or cpu to try the script out on a tiny grid")
a = ap.parse_args()

dev = torch.device(a.device)
sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
torch.backends.cudnn.benchmark = True
torch.manual_seed(0)
m = torchvision.models.resnet152().eval().to(dev)
for p in m.parameters():
    p.requires_grad_(False)
s = list(m.children())
f1 = nn.Sequential(*s[:6]).eval()
f2 = nn.Sequential(s[6], s[7], s[8], nn.Flatten(), s[9]).eval()
cls, steps, chunk = 920, a.steps, a.chunk
X = torch.randn(1, 3, 224, 224, device=dev)
X0 = torch.zeros_like(X)
R, C = (int(v) for v in a.grid.split("x"))
H = W = 224
rows = [(i * (H // R), H if i == R - 1 else (i + 1) * (H // R)) for i in range(R)]
cols = [(j * (W // C), W if j == C - 1 else (j + 1) * (W // C)) for j in range(C)]
masks = []
for r0, r1 in rows:
    for c0, c1 in cols:
        mk = torch.zeros_like(X)
        mk[:, :, r0:r1, c0:c1] = 1
        masks.append(mk)
delta = (X - X0) / steps


def chunks():
    for k in range(0, steps, chunk):
        yield torch.arange(k, min(k + chunk, steps), device=dev, dtype=torch.float32).view(-1, 1, 1, 1)


def base_pass(i):
    xprev = X0 + i * delta
    xcur = xprev + delta
    n = i.shape[0]
    with torch.no_grad():
        g = f1(torch.cat([xprev, xcur]))
    gp, gc = g[:n], g[n:]
    t = gc.detach().requires_grad_(True)
    pr = F.softmax(f2(t), 1)[:, cls].sum()
    grad, = torch.autograd.grad(pr, t)
    return xprev, gp, gc, grad


def ig_pass():
    acc = torch.zeros_like(X)
    for i in chunks():
        xp = (X0 + (i + 1) * delta).requires_grad_(True)
        pr = F.softmax(f2(f1(xp)), 1)[:, cls].sum()
        g, = torch.autograd.grad(pr, xp)
        acc += g.sum(0, keepdim=True)
    return acc * (X - X0) / steps


def one_by_one():
    ipna = [None] * len(masks)
    cond = None
    for b, mk in enumerate(masks):
        cond = None
        for i in chunks():
            xprev, gp, gc, grad = base_pass(i)
            with torch.no_grad():
                gq = f1(xprev + delta * mk)
            ci = (grad * (gq - gp)).sum(0)
            cc = (grad * (gc - gp)).sum(0)
            ipna[b] = ci if ipna[b] is None else ipna[b] + ci
            cond = cc if cond is None else cond + cc
    return ipna, cond, ig_pass()


def shared():
    ipna = [None] * len(masks)
    cond = None
    for i in chunks():
        xprev, gp, gc, grad = base_pass(i)
        cc = (grad * (gc - gp)).sum(0)
        cond = cc if cond is None else cond + cc
        for b, mk in enumerate(masks):
            with torch.no_grad():
                gq = f1(xprev + delta * mk)
            ci = (grad * (gq - gp)).sum(0)
            ipna[b] = ci if ipna[b] is None else ipna[b] + ci
    return ipna, cond, ig_pass()


res = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu", "grid": a.grid, "boxes": len(masks),
       "steps": steps, "chunk": chunk}
for name in a.variants.split(","):
    fn = {"shared": shared, "one_by_one": one_by_one}[name]
    t0 = time.perf_counter()
    fn()
    sync()
    warm = time.perf_counter() - t0
    ts = []
    for _ in range(a.runs):
        t0 = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    res[name + "_s"] = ts[len(ts) // 2]
    res[name + "_warmup_s"] = warm
    print("%-12s median %.3f s (warm-up %.3f s, runs %s)" % (name, ts[len(ts) // 2], warm,
                                                            ["%.3f" % t for t in ts]), flush=True)
json.dump(res, open(a.out, "w"), indent=1)
