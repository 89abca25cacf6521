#!/usr/bin/env python3
"""Writes tiny_image.onnx and tiny_text.onnx: two-output graphs with fixed weights, for the
`separate` layout tests (encoders/tests/layouts.rs). Needs torch and onnx; not run by the tests.

image: pixel_values [N,3,S,S] -> m = per-channel mean [N,3];
       fine = m @ W_FINE [N,8], coarse = m @ W_COARSE [N,4]
text:  input_ids, attention_mask [N,L] -> t = [sum(mask), sum(ids*mask) / 1000] [N,2];
       fine = t @ T_FINE [N,8], coarse = t @ T_COARSE [N,4]
"""
import os

import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
W_FINE = torch.arange(24, dtype=torch.float32).reshape(3, 8) / 10 - 1
W_COARSE = torch.arange(12, dtype=torch.float32).reshape(3, 4) / 5 - 1
T_FINE = torch.arange(16, dtype=torch.float32).reshape(2, 8) / 8 - 1
T_COARSE = torch.arange(8, dtype=torch.float32).reshape(2, 4) / 4 - 1


class Image(nn.Module):
    def forward(self, pixel_values):
        m = pixel_values.mean(dim=(2, 3))
        return m @ W_COARSE, m @ W_FINE


class Text(nn.Module):
    def forward(self, input_ids, attention_mask):
        mask = attention_mask.float()
        t = torch.stack([mask.sum(1), (input_ids.float() * mask).sum(1) / 1000], dim=1)
        return t @ T_COARSE, t @ T_FINE


def main():
    batch = {0: "batch"}
    torch.onnx.export(Image(), (torch.zeros(2, 3, 16, 16),), os.path.join(HERE, "tiny_image.onnx"),
                      dynamo=False, opset_version=17, input_names=["pixels"],
                      output_names=["coarse", "fine"],
                      dynamic_axes={"pixels": {0: "batch", 2: "h", 3: "w"}, "coarse": batch, "fine": batch})
    ids = torch.ones(2, 5, dtype=torch.long)
    seq = {0: "batch", 1: "seq"}
    torch.onnx.export(Text(), (ids, torch.ones_like(ids)), os.path.join(HERE, "tiny_text.onnx"),
                      dynamo=False, opset_version=17, input_names=["ids", "mask"],
                      output_names=["coarse", "fine"],
                      dynamic_axes={"ids": seq, "mask": seq, "coarse": batch, "fine": batch})


if __name__ == "__main__":
    main()
