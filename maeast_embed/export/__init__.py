"""Exports that let a model travel: Hugging Face Hub folders (`hub`) and ONNX graphs (`onnx`).

Each module imports its optional dependencies (safetensors, onnx, onnxruntime) when used.
"""
