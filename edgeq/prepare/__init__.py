"""Make any real-world ONNX graph quantizable: passes that run before calibration."""
