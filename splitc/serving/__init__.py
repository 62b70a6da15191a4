"""splitc's server: the stages of compiled plans that do not run on the device, under the Open Inference Protocol v2.

Built on KServe's Python model server (``pip install 'splitc[serve]'``): each plan is a ``kserve.Model``
(splitc/serving/model.py); splitc/serving/server.py runs them with KServe's REST and gRPC servers, bound where
``--host`` says, behind a guard for tokens, request sizes and the endpoints it exposes.
"""

from __future__ import annotations

import sys

from splitc.errors import SplitcError


def import_kserve():
    """kserve parses sys.argv when its model server module is imported: hide splitc's own arguments from it."""
    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        import kserve  # noqa: F401
        import kserve.model_server  # noqa: F401
    except ImportError as e:
        raise SplitcError(f"splitc serve needs KServe's model server ({e.name} is missing): pip install 'splitc[serve]'") from None
    finally:
        sys.argv = argv
