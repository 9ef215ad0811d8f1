"""The classic entry: `python server.py` serves the AI-Writer web page, as the original did.

It is `ai-writer serve` with the same options (`python server.py --help`): the web page at
http://127.0.0.1:8266/ and the HTTP API, on the shipped model unless --model says otherwise.
"""

import sys

from ai_writer.cli.main import main

if __name__ == "__main__":
    main(["serve", *sys.argv[1:]])
