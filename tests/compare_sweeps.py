#!/usr/bin/env python3
"""Exits 0 when two sweep files hold the same items with the same values in every
dataset (the per-item seconds aside) and the same configuration, else prints the
first difference and exits 1. Reads them with h5py, independently of ipna-fast."""
import json
import sys

import h5py
import numpy as np


def main(a_path, b_path):
    with h5py.File(a_path, "r") as a, h5py.File(b_path, "r") as b:
        if json.loads(a.attrs["config"]) != json.loads(b.attrs["config"]):
            sys.exit("FAIL: the configurations differ")
        names = []
        a.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        other = []
        b.visititems(lambda n, o: other.append(n) if isinstance(o, h5py.Dataset) else None)
        if sorted(names) != sorted(other):
            sys.exit(f"FAIL: datasets differ: {sorted(set(names) ^ set(other))}")
        for n in names:
            if n == "items/seconds":
                continue
            x, y = a[n][()], b[n][()]
            if x.dtype != y.dtype or x.shape != y.shape:
                sys.exit(f"FAIL: {n}: {x.dtype}{x.shape} vs {y.dtype}{y.shape}")
            same = list(x) == list(y) if x.dtype == object else np.array_equal(x, y, equal_nan=True)
            if not same:
                sys.exit(f"FAIL: {n} differs")
        print(f"same: {len(names)} datasets, {a['items/index'].shape[0]} items")


if __name__ == "__main__":
    main(*sys.argv[1:3])
