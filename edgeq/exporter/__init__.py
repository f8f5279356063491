"""PyTorch -> ONNX export (dynamo first, TorchScript fallback), checked against torch."""
