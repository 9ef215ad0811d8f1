"""Packaging for ai-writer. `pip install .` carries the shipped model in model/ with it."""

from setuptools import find_packages, setup

setup(
    name="ai-writer",
    version="0.1.0",
    description="Continue novels with a local RWKV language model, offline",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=[*find_packages(include=["ai_writer", "ai_writer.*"]), "ai_writer.model", "ai_writer.web_client"],
    # the top-level model/ and web-client/ folders ship inside the package
    package_dir={"ai_writer.model": "model", "ai_writer.web_client": "web-client"},
    package_data={"ai_writer.model": ["*.safetensors", "*.onnx", "*.json", "*.md"],
                  "ai_writer.web_client": ["*.html", "*.js", "*.css", "*.svg"]},
    install_requires=[
        "click>=8.1",
        "rich>=13",
        "prompt_toolkit>=3.0.36",
        "numpy>=1.24",
        "psutil>=5.9",  # the memory available, for --precision auto
        "platformdirs>=3",  # the user's own cache folder, where ONNX exports are kept by default
        "safetensors>=0.4",
        "pyrwkv-tokenizer>=0.9.1,<0.10",  # the RWKV world tokenizer: its vocabulary file and a Rust encoder
        "onnx>=1.16",  # exporting models to ONNX (once per model, cached); the runtime is onnxruntime
        # the two install the same module: exactly one of them, by platform
        # 1.22: the 8-bit MatMulNBits kernel of the int8 export
        "onnxruntime>=1.22; sys_platform != 'win32'",
        "onnxruntime-directml>=1.22; sys_platform == 'win32'",
    ],
    extras_require={
        # optional: the torch backends (cuda, torch-cpu), `ai-writer train` and the original AI-Writer .pth
        # releases; the default cpu backend (ONNX Runtime) reads .safetensors and .pth files without it
        "torch": ["torch>=2.1"],
        # the test environment: the official rwkv package is the correctness oracle;
        # torch is pinned to the CPU build the CI machine holds; playwright drives the system's
        # chromium in the web page's tests (never its own browser downloads)
        "dev": ["pytest>=7", "pexpect>=4.8", "rwkv==0.8.32", "torch==2.13.0", "playwright>=1.40,<2",
                "hypothesis>=6.100"],  # hypothesis: the fuzz tests of hostile files and requests
    },
    entry_points={"console_scripts": ["ai-writer=ai_writer.cli.main:main"]},
)
