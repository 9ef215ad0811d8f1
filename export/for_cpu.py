"""Make a CPU model file: the model exported to ONNX with int8 weights (about 4x smaller, faster).

    python export/for_cpu.py model/default.safetensors      # -> model/default.int8.onnx

Run it with `ai-writer continue --backend cpu --precision int8`. The same as
`ai-writer export onnx MODEL --precision int8`; use `--precision fp32` there for full precision.
"""

import sys

from ai_writer.cli.main import main

if __name__ == "__main__":
    main(["export", "onnx", *sys.argv[1:], "--precision", "int8"])
