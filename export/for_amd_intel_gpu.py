"""Make the model file for AMD and Intel graphics cards (A/I cards), as AI-Writer users know it.

The original AI-Writer shipped a separate `.onnx` model for cards run through DirectML. With
ai-writer one model file serves every backend and `--backend auto` exports it on first use;
this script writes that export beside the model once, ahead of time (fp16, for DirectML):

    python export/for_amd_intel_gpu.py model/default.safetensors      # -> model/default.fp16.onnx

It is the same as `ai-writer export onnx MODEL --precision fp16`.
"""

import sys

from ai_writer.cli.main import main

if __name__ == "__main__":
    main(["export", "onnx", *sys.argv[1:], "--precision", "fp16"])
