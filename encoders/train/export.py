#!/usr/bin/env python3
"""Export the trained heads (train_head.py) to the ONNX bundle encoders/models/default/.

image.onnx : pixel_values float32 [B,3,S,S] -> embedding float32 [B,256], L2-normalised.
             The frozen EfficientNet-Lite0 (backbone.py), global-pooled to 1280-d, then the
             trained image head (train_head.ImageHead, with its ImageNet prior), L2. Its weights
             are stored as float16 and cast to float32 inside the graph: ONNX Runtime folds the
             casts once when it loads the graph, so the bundle is half the size and every run
             computes in float32 (batch-independent, unlike int8 dynamic quantisation).
text.onnx  : input_ids, attention_mask, token_type_ids int64 [B,T] -> embedding float32 [B,256],
             L2-normalised. MiniLM (frozen) + mean pooling + L2 + trained head + L2, then int8
             dynamic per-channel quantisation (onnxruntime.quantization).

  export.py --heads encoders/train/work/v3/heads.pt --size 160 --version 3
"""
import argparse
import os
import shutil
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402
from backbone import PooledFeatures, load_pretrained  # noqa: E402

OPSET = 17
# Initializers this small stay float32 (biases, norms): casting them saves nothing.
F16_MIN_ELEMENTS = 1024


class ImageExport(nn.Module):
    def __init__(self, backbone, head):
        super().__init__()
        self.features, self.head = PooledFeatures(backbone), head

    def forward(self, pixel_values):
        return F.normalize(self.head(self.features(pixel_values)), dim=-1)


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


def store_weights_f16(path):
    """Rewrites the large float32 initializers of `path` as float16 plus a Cast to float32."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(path)
    graph = model.graph
    kept, casts = [], []
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT and int(np.prod(init.dims)) >= F16_MIN_ELEMENTS:
            half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name + "_f16")
            kept.append(half)
            casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT))
        else:
            kept.append(init)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, path)


def export_image(heads, size, out):
    from train_head import ImageHead
    net = ImageExport(load_pretrained(size), ImageHead.from_state(heads["image_head"])).eval()
    x = torch.zeros(2, 3, size, size)
    with torch.no_grad():
        torch.onnx.export(net, (x,), out, dynamo=False, opset_version=OPSET, input_names=["pixel_values"],
                          output_names=["embedding"],
                          dynamic_axes={"pixel_values": {0: "batch"}, "embedding": {0: "batch"}})
    store_weights_f16(out)


def export_text(heads, out, work):
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from transformers import AutoModel

    head = C.TextHead()
    head.load_state_dict(heads["text_head"])
    bert = AutoModel.from_pretrained(C.minilm_dir()).eval()
    ids = torch.ones(2, 8, dtype=torch.long)
    fp32 = os.path.join(work, "text_fp32.onnx")
    dyn = {n: {0: "batch", 1: "seq"} for n in ("input_ids", "attention_mask", "token_type_ids")}
    dyn["embedding"] = {0: "batch"}
    with torch.no_grad():
        torch.onnx.export(TextExport(bert, head.eval()), (ids, torch.ones_like(ids), torch.zeros_like(ids)), fp32,
                          dynamo=False, opset_version=OPSET,
                          input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["embedding"], dynamic_axes=dyn)
    pre = os.path.join(work, "text_fp32_pre.onnx")
    try:
        quant_pre_process(fp32, pre, skip_symbolic_shape=True)
    except Exception as e:  # pre-processing is an optimisation only
        print("quant_pre_process failed, quantising the raw graph:", e)
        shutil.copy(fp32, pre)
    # Gemm (the trained head) is not quantised by quantize_dynamic; MiniLM's MatMul/Gather weights are.
    quantize_dynamic(pre, out, per_channel=True, weight_type=QuantType.QInt8)


def model_toml(version, size):
    return f'''name = "hivlp-default"
version = "{version}"
fine_dim = {C.FINE_DIM}
coarse_dim = {C.COARSE_DIM}
layout = "matryoshka"
metric = "cosine"

[image]
onnx = "image.onnx"
input = "pixel_values"
output = "embedding"
size = {size}
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--heads", default="encoders/train/work/v3/heads.pt")
    ap.add_argument("--size", type=int, default=C.IMAGE_SIZE)
    ap.add_argument("--out", default="encoders/models/default")
    ap.add_argument("--work", default="encoders/train/work")
    ap.add_argument("--version", default="3")
    a = ap.parse_args()
    torch.set_num_threads(2)
    os.makedirs(a.out, exist_ok=True)
    heads = torch.load(a.heads, map_location="cpu")
    export_image(heads, a.size, os.path.join(a.out, "image.onnx"))
    export_text(heads, os.path.join(a.out, "text.onnx"), a.work)
    shutil.copy(os.path.join(C.minilm_dir(), "tokenizer.json"), os.path.join(a.out, "tokenizer.json"))
    open(os.path.join(a.out, "model.toml"), "w").write(model_toml(a.version, a.size))
    for f in sorted(os.listdir(a.out)):
        print(f, os.path.getsize(os.path.join(a.out, f)))


if __name__ == "__main__":
    main()
