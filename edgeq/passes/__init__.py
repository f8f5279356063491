"""Graph transforms on onnx_ir models, one pass per file; ``pipeline.py`` lists them in order."""
