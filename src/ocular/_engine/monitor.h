/* monitor.h - the callbacks (monitor.c) as seen from the bindings. */
#ifndef OCULAR_MONITOR_H
#define OCULAR_MONITOR_H

#include <Python.h>
#include <stdint.h>

/* {event name: callable} for MODE_ADAPTIVE or MODE_PRECISE. */
PyObject *monitor_callbacks(int mode);

/* Drop the code cache (the registry is about to be freed). */
void monitor_forget_code(void);

/* The same callbacks on the test clock (monitor_test.c, testclock.h). */
PyObject *monitor_test_callbacks(int mode);
void monitor_test_forget_code(void);

#endif
