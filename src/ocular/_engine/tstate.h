/* tstate.h - per-thread shadow stacks and the thread's time account.
 *
 * Each thread that runs traced code gets a thread_data on its first event
 * (cold path). The hot path finds it through a thread-local pointer that is
 * trusted only while it was set during the current run, so data freed at the
 * end of a run is never touched by a thread that outlived it.
 *
 * The account: consecutive events of a thread cut its timeline into pieces,
 * and every piece belongs to exactly one shadow frame. frames[0] is the root,
 * standing for whatever runs below the frames Ocular saw (code that started
 * before tracing, excluded or untraced code); it is never popped. At every
 * event, the event's calibrated cost is taken off the pieces on either side
 * of it and added to `removed`, so that for every thread, in subticks,
 *     covered = sum of its frames' times + removed + own,
 * exactly, where the root's time is the thread's time outside traced code. */
#ifndef OCULAR_TSTATE_H
#define OCULAR_TSTATE_H

#include <Python.h>
#include <stdint.h>
#include "calltree.h"
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
 * the callee's end resumes it; only the top frame's piece is running. */
typedef struct {
    codeinfo *ci;         /* NULL for the root */
    PyObject *code;       /* ci->code, compared first by every event (borrowed from ci) */
    int32_t py_depth;     /* CPython's frame depth: tells recursive frames apart */
    int32_t seg_start;    /* code unit the segment began at; -1 = unknown */
    uint64_t origin;      /* running: the segment's subticks are (now << SUB_SHIFT) - origin
                             - the head of the event that ends it */
    int64_t seg;          /* paused: the segment's subticks so far */
    int64_t self;         /* this activation's time in its own code, subticks */
    int64_t child;        /* its callees' inclusive time, subticks */
    uint32_t edge;        /* (caller, this code) in the thread's edge table */
    uint8_t tainted;      /* the segment includes time of frames we did not see */
    uint8_t traced;       /* its slices go to the trace */
    uint8_t started;      /* pushed by its PY_START (not adopted, not resumed) */
    uint8_t raised;       /* the segment began where an exception was raised */
    int32_t close_unit;   /* where its segment ends when tracing stops with it open
                             (stacks.c), -1 if unknown */
    uint8_t own;          /* Ocular's own time: the sentinel of calibrate.c (no code) */
    uint8_t over_own;     /* the program's code run inside Ocular's own time (a signal
                             handler, a finalizer): the program's, as if called by the
                             program's frame below the sentinel */
    uint64_t piece_tsc;   /* tick the running piece began, and the tail taken off */
    int64_t piece_tail;   /*   it: precise mode's trace pieces (traced frames only) */
} shadow_frame;

typedef struct thread_data {
    shadow_frame *frames;     /* frames[0] is the root */
    int32_t count;            /* frames in use, the root included */
    int32_t capacity;
    uint64_t native_tid;
    trace_thread *trace;      /* NULL unless exporting */
    struct thread_data *next; /* all threads of this run */
    call_tables calls;
    /* the account, in subticks unless said otherwise */
    uint64_t covered_from;    /* tick of the first event of the current stretch, 0 = none */
    uint64_t covered;         /* subticks of finished stretches */
    int64_t removed;          /* event costs taken off its pieces */
    int64_t own;              /* Ocular's own time (calibration during the run) */
    int64_t outside;          /* the root's time (flushed from frames[0].self) */
    int64_t lost;             /* time of frames that vanished unseen */
    /* the account at the end of a sampled run's warm-up (threads_snapshot) */
    uint64_t covered_base;
    int64_t removed_base, own_base, outside_base, lost_base;
    uint8_t fresh;            /* its stretch began at the event being handled: that
                                 event's head lies before the stretch */
    /* the machine's speed as this thread sees it (phase.h) */
    corrections corr;         /* engine.corr times phase_q8, in subticks */
    int32_t phase_q8;
    uint32_t probe_countdown;
    uint32_t probe_seed;
    uint64_t run_id;          /* the run it belongs to */
    uint64_t stretch_stamp;   /* engine.stamp of its current stretch */
} thread_data;

/* initial-exec: one %fs-relative load instead of a __tls_get_addr call per
 * event (the extension is dlopen'ed; 24 bytes fit glibc's static TLS surplus). */
#define OCULAR_TLS _Thread_local __attribute__((tls_model("initial-exec")))
extern OCULAR_TLS thread_data *tls_thread;
extern OCULAR_TLS uint64_t tls_stamp;   /* engine.stamp when the thread's stretch began */
extern OCULAR_TLS uint64_t tls_run;     /* the run tls_thread belongs to */

/* The first event of a thread in this stretch (cold path). */
thread_data *thread_enter(uint64_t now);

/* The data of the thread with this native id, created if new (GIL held). */
thread_data *thread_of(uint64_t native_tid);

/* The thread's account begins a stretch at `now` (its root running). */
void thread_begin_stretch(thread_data *td, uint64_t now);
int thread_grow(thread_data *td);
extern thread_data *all_threads;
void threads_clear(void);

/* Empty every thread's account and tables (their stacks must be closed). */
void threads_reset(void);

/* Keep every thread's account and tables as their base (their stacks must be
 * closed): the end of a sampled run's warm-up. */
void threads_snapshot(void);

/* The native ids of the interpreter's live threads (GIL held; PyMem_RawFree
 * the result; NULL without memory). */
uint64_t *threads_alive(size_t *count);

/* The calling thread's data, or NULL when not recording. One compare: the
 * run id is 0 whenever the engine is not recording. */
static inline thread_data *thread_current(uint64_t now)
{
    if (__builtin_expect(tls_stamp == engine.live_stamp, 1))
        return tls_thread;
    return thread_enter(now);
}

/* The head to take off at the event being handled: none if the thread's
 * stretch began with it. */
static inline int64_t thread_head(thread_data *td, int64_t head)
{
    if (__builtin_expect(td->fresh, 0)) {
        td->fresh = 0;
        return 0;
    }
    return head;
}

/* The top frame Ocular saw, or NULL when only the root is left. */
static inline shadow_frame *thread_top(thread_data *td)
{
    return td->count > 1 ? &td->frames[td->count - 1] : NULL;
}

static inline uint64_t sub_of(uint64_t tsc) { return tsc << SUB_SHIFT; }

/* A piece of `f`'s segment begins at `now`; `tail` of the event is taken off. */
static inline void piece_begin(shadow_frame *f, uint64_t now, int64_t tail)
{
    f->origin = sub_of(now) + (uint64_t)tail - (uint64_t)f->seg;
    f->piece_tsc = now;
    f->piece_tail = tail;
}

/* The running piece ends at an event whose head is `head`: its segment's
 * subticks so far. */
static inline int64_t piece_value(const shadow_frame *f, uint64_t now, int64_t head)
{
    return (int64_t)(sub_of(now) - f->origin) - head;
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

/* Stop the clock of every thread at `now`: close every open frame (their
 * running segments have no end event), flush them and end the threads'
 * stretches. A thread whose native id is not in `alive` (NULL: all are) and
 * that left all its frames has ended: its stretch ends at its last event. */
void threads_close_all(uint64_t now, const uint64_t *alive, size_t n_alive);

#endif
