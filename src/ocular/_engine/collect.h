/* collect.h - the run's raw results for the Python layer (collect.c). */
#ifndef OCULAR_COLLECT_H
#define OCULAR_COLLECT_H

#include <Python.h>

/* {"codes": [...], "threads": [...]}: see collect.c for the tuples; every
 * figure multiplied by `scale` (1: as observed). */
PyObject *collect_results(double scale);

/* Per thread, what its account misses in subticks (0 when it balances). */
PyObject *collect_balance(void);

/* Hand over the results of code objects only Ocular holds, and free their
 * data (see collect.c). */
PyObject *collect_retire_dead(void);

/* What the sampling windows' figures are multiplied by (collect.c). */
double collect_sampling_scale(double run_ticks, double warmup_ticks, double window_ticks);

#endif
