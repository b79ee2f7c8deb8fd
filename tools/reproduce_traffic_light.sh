#!/usr/bin/env bash
# The original's traffic-light experiment with the pretrained EfficientNet-Lite0
# (split after blocks.7): IG maps before and after pruning the top 1% by IPNA and
# by conductance, and the progressive pruning curve. About 5 minutes on 2 cores.
# Run tools/setup.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
M=build/models/efficientnet_lite0.onnx
IMG=tests/data/traffic_light.JPEG
COMMON=(--model $M --split blocks.7 --image $IMG --class 920 --box 45 100 90 130)
./build/ipna-fast attribute "${COMMON[@]}" -n 256 -p 1 --ranking ipna -o out/traffic_light_ipna
./build/ipna-fast attribute "${COMMON[@]}" -n 256 -p 1 --ranking conductance -o out/traffic_light_conductance
./build/ipna-fast curve "${COMMON[@]}" -n 128 -o out/traffic_light_curve
