/* tstate.h - per-thread shadow stacks.
 *
 * Each thread that runs traced code gets a thread_data on its first event
 * (cold path). The hot path finds it through a thread-local pointer that is
 * trusted only while it was set during the current run, so data freed at the
 * end of a run is never touched by a thread that outlived it. */
#ifndef OCULAR_TSTATE_H
#define OCULAR_TSTATE_H

#include <Python.h>
#include <stdint.h>
#include "codeinfo.h"
#include "engine.h"
#include "trace.h"

/* Above this many frames a thread's slices are not written to the trace, so
 * that nesting (a function slice plus a block slice per frame) stays under
 * Perfetto's depth limit of 512. Profiles are unaffected. */
#define TRACE_MAX_FRAMES 250

/* One Python frame we saw start (or adopted at its first event).
 *
 * A "segment" is the straight-line run of code between two consecutive
 * events of this frame. It is timed in pieces: a callee's start pauses it and
 * the callee's end resumes it; only the top frame's piece is running. Every
 * piece carries the cost of one event, which is taken off as it starts, so
 * that the running segment's ticks are simply `now - origin`. */
typedef struct {
    codeinfo *ci;
    PyObject *code;       /* ci->code, compared first by every event (borrowed from ci) */
    int32_t py_depth;     /* CPython's frame depth: tells recursive frames apart */
    int32_t seg_start;    /* code unit the segment began at; -1 = unknown */
    uint64_t origin;      /* running: the segment's ticks are now - origin */
    int64_t seg_ticks;    /* paused: the segment's ticks so far */
    uint64_t resumed_at;  /* tick the running piece began; kept for traced frames only
                             (precise mode's trace pieces) */
    uint8_t tainted;      /* the segment includes time of frames we did not see */
    uint8_t traced;       /* its slices go to the trace */
} shadow_frame;

static inline void frame_pause(shadow_frame *f, uint64_t now)
{
    f->seg_ticks = (int64_t)(now - f->origin);
}

static inline void frame_resume(shadow_frame *f, uint64_t now)
{
    f->origin = now + (uint64_t)engine.event_cost - (uint64_t)f->seg_ticks;
    f->resumed_at = now;
}

typedef struct thread_data {
    shadow_frame *frames;
    int32_t count;
    int32_t capacity;
    uint64_t native_tid;
    trace_thread *trace;      /* NULL unless exporting */
    struct thread_data *next; /* all threads of this run */
} thread_data;

/* initial-exec: one %fs-relative load instead of a __tls_get_addr call per
 * event (the extension is dlopen'ed; 16 bytes fit glibc's static TLS surplus). */
#define OCULAR_TLS _Thread_local __attribute__((tls_model("initial-exec")))
extern OCULAR_TLS thread_data *tls_thread;
extern OCULAR_TLS uint64_t tls_run;

thread_data *thread_enter(void);
int thread_grow(thread_data *td);
extern thread_data *all_threads;
void threads_clear(void);

/* The calling thread's data, or NULL when not recording. One compare: the
 * run id is 0 whenever the engine is not recording. */
static inline thread_data *thread_current(void)
{
    if (__builtin_expect(tls_run == engine.live_run, 1))
        return tls_thread;
    return thread_enter();
}

static inline shadow_frame *thread_top(thread_data *td)
{
    return td->count ? &td->frames[td->count - 1] : NULL;
}

/* CPython counts the Python frames of a thread for its recursion limit; at
 * any event the count includes the frame delivering it. The thread's
 * PyThreadState is fetched afresh: a thread's state can be replaced (PyGILState
 * in foreign threads), so a stored pointer could dangle. */
static inline int32_t python_depth(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyThreadState *pystate = PyThreadState_GetUnchecked();
#else
    PyThreadState *pystate = _PyThreadState_UncheckedGet();
#endif
    return pystate->py_recursion_limit - pystate->py_recursion_remaining;
}

#endif
