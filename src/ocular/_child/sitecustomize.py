# Ocular's: it is first on PYTHONPATH only in the child processes of a program
# profiled with subprocesses=True (--subprocesses), and profiles this one. It
# never stops the process: if Ocular cannot start here (another Python, no
# sys.monitoring), the child runs unprofiled. Then the sitecustomize it
# shadows, if there is one, runs as it would have.
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
try:
    from ocular import subprocesses as _ocular_subprocesses
except Exception:  # noqa: BLE001  (e.g. ImportError on Python < 3.12)
    _ocular_subprocesses = None
if _ocular_subprocesses is not None:
    _ocular_subprocesses.start_spawned_child()

sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != _HERE]
_self = sys.modules.pop(__name__)
try:
    import sitecustomize  # noqa: F401  (the one this shadows, if any)
except ImportError as error:
    # the import system expects this module back in sys.modules
    sys.modules[__name__] = _self
    if error.name != __name__:
        raise  # the shadowed one failed: site reports it as it would have
