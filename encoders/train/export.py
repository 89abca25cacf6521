#!/usr/bin/env python3
"""Export the trained checkpoint to the ONNX bundle encoders/models/default/.

image.onnx : pixel_values float32 [B,3,S,S] -> embedding float32 [B,256], L2-normalised
text.onnx  : input_ids, attention_mask, token_type_ids int64 [B,T] -> embedding float32 [B,256],
             L2-normalised. MiniLM (frozen) + mean pooling + L2 + trained head + L2, then int8
             dynamic per-channel quantisation (onnxruntime.quantization).
"""
import argparse
import os
import shutil
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402


class ImageExport(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, pixel_values):
        return F.normalize(self.m(pixel_values), dim=-1)


class TextExport(nn.Module):
    def __init__(self, bert, head):
        super().__init__()
        self.bert, self.head = bert, head

    def forward(self, input_ids, attention_mask, token_type_ids):
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                      token_type_ids=token_type_ids).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        e = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
        e = F.normalize(e, dim=-1)
        return F.normalize(self.head(e), dim=-1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", default="encoders/train/work/model.pt")
    ap.add_argument("--out", default="encoders/models/default")
    ap.add_argument("--work", default="encoders/train/work")
    ap.add_argument("--version", default="1")
    a = ap.parse_args()
    torch.set_num_threads(2)
    os.makedirs(a.out, exist_ok=True)
    ck = torch.load(a.ckpt, map_location="cpu")
    img = C.ImageTower()
    img.load_state_dict(ck["image"])
    img.eval()
    head = C.TextHead()
    head.load_state_dict(ck["head"])
    head.eval()

    x = torch.zeros(2, 3, C.IMAGE_SIZE, C.IMAGE_SIZE)
    torch.onnx.export(ImageExport(img), (x,), os.path.join(a.out, "image.onnx"), dynamo=False,
                      opset_version=17, input_names=["pixel_values"], output_names=["embedding"],
                      dynamic_axes={"pixel_values": {0: "batch"}, "embedding": {0: "batch"}})

    from transformers import AutoModel
    bert = AutoModel.from_pretrained(C.minilm_dir()).eval()
    ids = torch.ones(2, 8, dtype=torch.long)
    fp32 = os.path.join(a.work, "text_fp32.onnx")
    axes = {"batch": 0, "seq": 1}
    dyn = {n: {0: "batch", 1: "seq"} for n in ("input_ids", "attention_mask", "token_type_ids")}
    dyn["embedding"] = {0: "batch"}
    with torch.no_grad():
        torch.onnx.export(TextExport(bert, head), (ids, torch.ones_like(ids), torch.zeros_like(ids)), fp32,
                          dynamo=False, opset_version=17,
                          input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["embedding"], dynamic_axes=dyn)
    del axes
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process
    pre = os.path.join(a.work, "text_fp32_pre.onnx")
    try:
        quant_pre_process(fp32, pre, skip_symbolic_shape=True)
    except Exception as e:  # pre-processing is an optimisation only
        print("quant_pre_process failed, quantising the raw graph:", e)
        shutil.copy(fp32, pre)
    # Gemm (the trained head) is not quantised by quantize_dynamic; MiniLM's MatMul/Gather weights are.
    quantize_dynamic(pre, os.path.join(a.out, "text.onnx"), per_channel=True, weight_type=QuantType.QInt8)

    shutil.copy(os.path.join(C.minilm_dir(), "tokenizer.json"), os.path.join(a.out, "tokenizer.json"))
    toml = f'''name = "hivlp-default"
version = "{a.version}"
fine_dim = {C.FINE_DIM}
coarse_dim = {C.COARSE_DIM}
layout = "matryoshka"
metric = "cosine"

[image]
onnx = "image.onnx"
input = "pixel_values"
output = "embedding"
size = {C.IMAGE_SIZE}
resize = "shorter_side"
interpolation = "triangle"
mean = [{", ".join(str(v) for v in C.MEAN)}]
std = [{", ".join(str(v) for v in C.STD)}]
channel_order = "rgb"
background = [{", ".join(str(v) for v in C.BACKGROUND)}]

[text]
onnx = "text.onnx"
tokenizer = "tokenizer.json"
input_ids = "input_ids"
attention_mask = "attention_mask"
token_type_ids = "token_type_ids"
output = "embedding"
max_length = {C.MAX_LENGTH}
# The int8 graph quantises activations per run, so a caption's vector would depend on its batch
# mates; one caption per run keeps a stored caption and the same text as a query identical.
max_batch_size = 1
'''
    open(os.path.join(a.out, "model.toml"), "w").write(toml)
    for f in sorted(os.listdir(a.out)):
        print(f, os.path.getsize(os.path.join(a.out, f)))


if __name__ == "__main__":
    main()
