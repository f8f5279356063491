"""A light layer over onnxruntime for apps: sessions, run, bench. Imports neither torch nor onnx_ir."""
