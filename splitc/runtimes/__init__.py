"""The splitc runtime: runs compiled parts head -> boundary codec -> tail.

Needs only numpy, onnxruntime and zstandard, so it installs on a device without the compiler.
"""

from splitc.runtimes.wire import CodecError, decode, encode
from splitc.runtimes.ort import RunResult, SplitModel, compare_outputs

__all__ = ["CodecError", "RunResult", "SplitModel", "compare_outputs", "decode", "encode"]
