/* breaker.h - CPython 3.12: trip the eval breaker for a pending call (breaker.c). */
#ifndef OCULAR_BREAKER_H
#define OCULAR_BREAKER_H
#include <Python.h>

#if PY_VERSION_HEX < 0x030D0000
/* Any thread, GIL or not: the main thread runs its pending calls at its next
 * eval-breaker check, unless another thread's check clears the flag first. */
void breaker_trip(PyInterpreterState *interp);
#endif

#endif
