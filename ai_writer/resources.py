"""Where the files that ship with ai-writer are: the default model and the web page.

An installed package holds them inside itself (`ai_writer/model`, `ai_writer/web_client`); an
editable install of a source checkout finds them beside the package (`model/`, `web-client/`).
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
DEFAULT_MODEL_NAME = "default.safetensors"


def default_model_path() -> Path | None:
    """The model shipped with ai-writer, wherever the package was installed from."""
    for folder in (PACKAGE / "model", PACKAGE.parent / "model"):
        if (folder / DEFAULT_MODEL_NAME).is_file():
            return folder / DEFAULT_MODEL_NAME
    return None


def web_client_root() -> Path | None:
    """The web page's files (index.html, scripts, styles)."""
    for folder in (PACKAGE / "web_client", PACKAGE.parent / "web-client"):
        if (folder / "index.html").is_file():
            return folder
    return None
