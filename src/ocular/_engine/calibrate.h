/* calibrate.h - calibration support (calibrate.c). */
#ifndef OCULAR_CALIBRATE_H
#define OCULAR_CALIBRATE_H

#include <Python.h>
#include <stdint.h>

PyObject *calibrate_time_calls(PyObject *module, PyObject *args);
PyObject *calibrate_set_corrections(PyObject *module, PyObject *args);
PyObject *calibrate_probe_collect(PyObject *module, PyObject *on);
PyObject *calibrate_box_split(PyObject *module, PyObject *unused);
PyObject *calibrate_py_own_begin(PyObject *module, PyObject *unused);
PyObject *calibrate_py_own_end(PyObject *module, PyObject *unused);

/* Ocular's own time on the calling thread begins / ends (a sentinel frame). */
int calibrate_own_begin(void);
void calibrate_own_end(void);

/* The program's code starts / ends inside Ocular's own time (frames.c): its
 * trace records go to the thread's trace, not the kernels' scratch. */
struct thread_data;
void calibrate_program_enters(struct thread_data *td);
void calibrate_program_leaves(struct thread_data *td);

#endif
