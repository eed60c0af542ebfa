/* testclock.h - a clock the tests control (monitor_test.c).
 *
 * With the test clock on, start() hands out the callbacks of monitor_test.c:
 * the same code as monitor.c, compiled a second time to read the test clock
 * instead of the tick counter, each wrapped so that an event first advances
 * the clock by the program's work before it (a rule the test set, per code
 * object, event kind and offset) plus its head, and after the callback by its
 * tail. With the same head and tail installed as the corrections, every
 * figure of the run is known exactly: the tests compare it with a model. */
#ifndef OCULAR_TESTCLOCK_H
#define OCULAR_TESTCLOCK_H

#include <Python.h>

/* test_clock(work, heads, tails, far_head, far_tail, rules) turns it on;
 * test_clock(None) off. */
PyObject *testclock_set(PyObject *module, PyObject *args);

/* test_clock_now() -> the test clock's time, in ticks. */
PyObject *testclock_now(PyObject *module, PyObject *unused);

/* test_clock_advance(ticks): the calling thread's clock moves on by `ticks`
 * (the program running where Ocular sees no event, e.g. between windows). */
PyObject *testclock_advance(PyObject *module, PyObject *arg);

/* test_switch_window() -> whether a window is open after it: ends the open
 * window (the warm-up first) or opens the next (sampler_test_switch). */
PyObject *testclock_switch_window(PyObject *module, PyObject *unused);

#endif
