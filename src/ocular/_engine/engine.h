/* engine.h - the state one tracing run shares between its files.
 *
 * There is one engine per process: sys.monitoring tool ids and callbacks are
 * per interpreter, and Ocular is only started from the main interpreter. All
 * fields are read and written with the GIL held. */
#ifndef OCULAR_ENGINE_H
#define OCULAR_ENGINE_H

#include <Python.h>
#include <stdint.h>
#include "clock.h"
#include "filter.h"
#include "trace.h"

enum { MODE_ADAPTIVE = 0, MODE_PRECISE = 1 };

typedef struct {
    int recording;            /* callbacks record only while set (engine_set_recording) */
    uint64_t live_run;        /* run_id while recording, else 0: the hot path's one check */
    int mode;
    uint32_t threshold;       /* hits per site before DISABLE; 0 = never */
    uint64_t run_id;          /* bumped per start: stale thread data is recognised by it */
    int extra_index;          /* our co_extra slot, -1 until requested */
    PyObject *disable;        /* sys.monitoring.DISABLE (strong reference) */
    PyObject *calibration_code; /* strong reference while calibrating, else NULL */
    filter_set filters;

    int64_t event_cost;       /* ticks one event adds to a measured interval */
    uint64_t global_events;   /* recorded events of global (never DISABLEd) kinds; local
                                 ones are counted per site, summed at stop */
    uint64_t disabled_sites;  /* DISABLE returned because a site reached the threshold */
    int64_t unattributed;     /* ticks that belong to no block (see monitor.c) */
    uint64_t lost_frames;     /* frames that left without an event we saw */
    const char *failure;      /* first internal failure (a static string), or NULL */

    clock_anchor started;     /* start of the traced interval (after calibration) */
    int exporting;            /* a trace file is being written (trace.h) */
} engine_state;

extern engine_state engine;

static inline void engine_set_recording(int on)
{
    engine.recording = on;
    engine.live_run = on ? engine.run_id : 0;
}

/* An internal failure: stop recording, remember why (reported at stop). */
void engine_fail(const char *why);

#endif
