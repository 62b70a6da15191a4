"""splitc: split an ONNX model between an edge device and the cloud.

The compiler (``splitc.compile_model``) needs the ``compiler`` extra; the runtime
(``splitc.runtimes``) needs only numpy, onnxruntime and zstandard.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "compile_model", "SplitcError"]

from splitc.errors import SplitcError


def __getattr__(name: str):  # lazy: importing splitc must not pull in the compiler
    if name == "compile_model":
        from splitc.compiler import compile_model

        return compile_model
    raise AttributeError(name)
