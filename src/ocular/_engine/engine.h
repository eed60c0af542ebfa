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

/* Every accumulated time is kept in subticks, 1/16 of a tick: the per-event
 * corrections are calibrated to a fraction of a tick, and rounding each of
 * millions of them to whole ticks would bias cheap blocks and instructions. */
#define SUB_SHIFT 4
#define SUB_ONE (1 << SUB_SHIFT)

/* The kinds of event whose cost Ocular removes from the intervals around them
 * (calibrate.c measures them). */
enum {
    EV_EDGE,      /* JUMP, BRANCH (BRANCH_LEFT/RIGHT) */
    EV_INSN,      /* INSTRUCTION */
    EV_START,     /* PY_START */
    EV_RETURN,    /* PY_RETURN */
    EV_RESUME,    /* PY_RESUME, PY_THROW */
    EV_YIELD,     /* PY_YIELD */
    EV_RAISE,     /* RAISE, RERAISE */
    EV_HANDLED,   /* EXCEPTION_HANDLED */
    EV_UNWIND,    /* PY_UNWIND */
    EV_KINDS
};

/* Their names, in the enum's order: the module exports them as
 * EVENT_KIND_NAMES and the Python layer checks its own order against them
 * at import (_calibration.py). */
#define EV_KIND_NAMES {"edge", "instruction", "start", "return", "resume", "yield", "raise", "handled", "unwind"}

/* What an event costs the thread's timeline, split between the interval that
 * ends at the event (head: CPython's dispatch up to Ocular's clock read) and
 * the one that begins there (tail: the rest of the callback and CPython's
 * return to the program). Offsets past 256 bytes are passed as freshly
 * allocated ints: each such argument adds far_head + far_tail. */
typedef struct {
    int64_t head[EV_KINDS];
    int64_t tail[EV_KINDS];
    int64_t far_head;
    int64_t far_tail;
} corrections;

/* sys.monitoring passes offsets 0..256 as cached small ints, larger ones boxed. */
#define FAR_UNIT 128

typedef struct {
    int recording;            /* callbacks record only while set (engine_set_recording) */
    uint64_t live_stamp;      /* stamp while recording, else 0: the hot path's one check */
    uint64_t stamp;           /* bumped per start and per stretch (sampling window): a
                                 thread whose stamp differs begins a stretch (tstate.c) */
    int mode;
    uint32_t threshold;       /* hits per site before DISABLE; 0 = never */
    uint64_t run_id;          /* bumped per start: stale thread data is recognised by it */
    int extra_index;          /* our co_extra slot, -1 until requested */
    PyObject *disable;        /* sys.monitoring.DISABLE (strong reference) */
    PyObject *calibration;    /* tuple of the calibration kernels' code objects, or NULL */
    PyObject *twins;          /* tuple of their untraced twins' code objects, or NULL */
    filter_set filters;

    corrections corr;         /* in subticks; replaced by each calibration */
    uint64_t global_events;   /* recorded events of global (never DISABLEd) kinds; local
                                 ones are counted per site, summed at stop */
    uint64_t disabled_sites;  /* DISABLE returned because a site reached the threshold */
    uint64_t lost_frames;     /* frames that left without an event we saw */
    const char *failure;      /* first internal failure (a static string), or NULL */

    clock_anchor begun;       /* when start() ran */
    clock_anchor started;     /* start of the traced interval (after calibration) */
    double tsc_hz_estimate;   /* ticks per second from begun to started (~20 ms) */
    int exporting;            /* a trace file is being written (trace.h) */
    int sampling;             /* events are on only in windows (sampler.h) */
} engine_state;

extern engine_state engine;

static inline void engine_set_recording(int on)
{
    engine.recording = on;
    engine.live_stamp = on ? engine.stamp : 0;
}

/* Every thread's next event begins a new stretch of its time account. */
static inline void engine_new_stretch(void)
{
    engine.stamp++;
    engine_set_recording(engine.recording);
}

static inline double engine_tsc_hz(void)
{
    return engine.tsc_hz_estimate > 0 ? engine.tsc_hz_estimate : 1e9;
}

/* An internal failure: stop recording, remember why (reported at stop). */
void engine_fail(const char *why);

#endif
