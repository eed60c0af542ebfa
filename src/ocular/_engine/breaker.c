/* breaker.c - CPython 3.12: make the main thread run a pending call now.
 *
 * 3.12's Py_AddPendingCall, called from a thread other than the main one,
 * queues the call but leaves the interpreter's eval breaker alone (it is
 * computed for the calling thread, which cannot run pending calls), so the
 * call waits for something else to trip the breaker: a GIL hand-over, up to
 * the 5 ms switch interval away. A sampling window timed in half a
 * millisecond then lasts 5 ms or more. Tripping the breaker here makes the
 * main thread, at its next check, run _Py_HandlePending: the pending calls,
 * then a recomputation of the breaker, as 3.13 does by itself.
 *
 * The breaker is one flag per interpreter in 3.12: if another thread holds
 * the GIL, its own check clears the flag without running the call (only the
 * main thread runs them). The caller therefore keeps its fallback (taking
 * the GIL). This is the only file that reads an internal header, and only
 * for 3.12, whose structure layout does not change between patch releases. */
#include <patchlevel.h>
#if PY_VERSION_HEX < 0x030D0000
#define Py_BUILD_CORE_MODULE 1
#include <Python.h>
#include "internal/pycore_interp.h"
#include "breaker.h"

void breaker_trip(PyInterpreterState *interp)
{
    _Py_atomic_store_relaxed(&interp->ceval.eval_breaker, 1);
}
#else
typedef int breaker_unused; /* ISO C forbids an empty translation unit */
#endif
