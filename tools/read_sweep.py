#!/usr/bin/env python3
"""Reading a sweep file with h5py: the README's example, also run by the tests.
   /usr/bin/python3 tools/read_sweep.py SWEEP.h5"""
import json
import sys

import h5py
import numpy as np

with h5py.File(sys.argv[1], "r") as f:
    config = json.loads(f.attrs["config"])
    items = {name: f["items"][name][()] for name in f["items"]}  # one row per item
    ok = items["ok"].astype(bool)
    print(f"{len(ok)} items, {int((~ok).sum())} failed; steps {config['steps']}, split {config['split']}")
    for source, error in zip(items["source"][~ok], items["error"][~ok]):
        print(f"failed: {source.decode()}: {error.decode()}")
    gap = np.abs(items["ig_gap"][ok]) / np.abs(items["f_input"][ok] - items["f_baseline"][ok])
    print(f"IG completeness gap relative to |F(x) - F(x')|: median {np.median(gap):.3g}, max {gap.max():.3g}")
    if "ipna_sum" in items:  # one column per box
        print("mean IPNA sum per box:", np.round(items["ipna_sum"][ok].mean(axis=0), 4))
    if "maps" in f and "ipna" in f["maps"]:
        first = int(np.flatnonzero(ok)[0])
        ipna = f["maps/ipna"][first]  # [box, split...] of one item, read alone (chunked per item)
        top = np.argsort(ipna[0].ravel())[::-1][:5]
        print(f"item {first}, box 0: top split neurons {top.tolist()}")
