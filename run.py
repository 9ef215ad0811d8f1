"""The classic AI-Writer entry point: `python run.py ...` is `ai-writer continue ...`."""

import sys

from ai_writer.cli.main import main

if __name__ == "__main__":
    main(["continue", *sys.argv[1:]])
