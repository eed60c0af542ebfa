/* retired.h - the ids of code objects that died during the run (retired.c). */
#ifndef OCULAR_RETIRED_H
#define OCULAR_RETIRED_H

#include <Python.h>
#include <stdint.h>

#define RETIRED_NONE UINT32_MAX

/* Room to retire `id` (and a new key). Returns 0, or -1 with no memory. */
int retired_reserve(uint32_t id);

/* After retired_reserve(id), as the code object of id `id` retires at a safe
 * point: keep `key` (filename, qualname, firstlineno; borrowed) unless the id
 * has one, and make the id free for a later code object of that key. */
void retired_keep(uint32_t id, PyObject *key);

/* The key of a retired id (borrowed), or NULL. */
PyObject *retired_key(uint32_t id);

/* A free retired id of co's key, taken (the caller puts co's data there), or
 * RETIRED_NONE. No Python code runs: it is called in a callback, on a code
 * object's first event. */
uint32_t retired_take(PyCodeObject *co);

/* A taken id its code object could not use after all: free again. */
void retired_put_back(uint32_t id);

/* {id: key} of every retired id, for the results; NULL on error. */
PyObject *retired_dict(void);

/* The run is over. */
void retired_release(void);

#endif
