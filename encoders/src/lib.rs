//! `hivlp-encoders`: image and text towers run with ONNX Runtime.
