/* monitor.h - the callbacks (monitor.c) as seen from the bindings. */
#ifndef OCULAR_MONITOR_H
#define OCULAR_MONITOR_H

#include <Python.h>
#include <stdint.h>

/* {event name: callable} for MODE_ADAPTIVE or MODE_PRECISE. */
PyObject *monitor_callbacks(int mode);

/* Drop the one-entry code cache (the registry is about to be freed). */
void monitor_forget_code(void);

/* Close every open frame of every thread (tracing stops). */
void monitor_close_all(uint64_t now);

/* Calibration: the pop of the empty function records its ticks here. */
void monitor_calibration_sample(int64_t ticks);
int64_t monitor_calibration_result(void);

#endif
