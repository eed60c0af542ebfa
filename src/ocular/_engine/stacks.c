/* stacks.c - shadow stacks from the real ones, at a sampling window's edges.
 *
 * A window opens while every thread is somewhere deep in its calls. Without
 * help, its shadow stack would learn its frames one event at a time, and every
 * piece before a frame's first event would belong to no block. With the GIL
 * held (the windows switch at a safe point), each thread's Python frames are
 * read instead (PyThreadState_GetFrame, PyFrame_GetBack: public API): the
 * shadow stack starts as the real one, each frame's segment at the
 * instruction it is at. When the window closes, each open segment ends at the
 * instruction its frame is at, and is charged to its blocks like any other.
 *
 * Only the top STACK_DEPTH frames are read (reading frames makes CPython
 * create frame objects); deeper ones are learnt from their events, as before. */
#include "frames.h"
#include "stacks.h"

#define STACK_DEPTH 64

typedef struct {
    PyObject *code;  /* strong */
    int32_t unit;    /* the instruction the frame is at, -1 if unknown */
} real_frame;

/* The thread's top frames, top first. Returns how many; *depth = CPython's
 * frame count of the thread (the top frame's py_depth). */
static int read_frames(PyThreadState *ts, real_frame *out, int32_t *depth)
{
    int n = 0;
    *depth = ts->py_recursion_limit - ts->py_recursion_remaining;
    PyFrameObject *frame = PyThreadState_GetFrame(ts);
    while (frame && n < STACK_DEPTH) {
        out[n].code = (PyObject *)PyFrame_GetCode(frame);
        int lasti = PyFrame_GetLasti(frame);
        out[n].unit = lasti >= 0 ? lasti / 2 : -1;
        n++;
        PyFrameObject *back = PyFrame_GetBack(frame);
        Py_DECREF(frame);
        frame = back;
    }
    Py_XDECREF(frame);
    return n;
}

static void release_frames(real_frame *frames, int n)
{
    for (int i = 0; i < n; i++)
        Py_XDECREF(frames[i].code);
}

static codeinfo *traced_info(PyObject *code)
{
    if (!PyCode_Check(code))
        return NULL;
    void *extra = NULL;
    if (PyUnstable_Code_GetExtra(code, engine.extra_index, &extra) < 0) {
        PyErr_Clear();
        return NULL;
    }
    codeinfo *ci = extra ? (codeinfo *)extra : codeinfo_build(code);
    return ci && ci->state == CI_TRACED && !ci->is_calibration ? ci : NULL;
}

/* One thread's top frames, read before the clock starts. */
typedef struct {
    PyThreadState *ts;
    int32_t top_depth;
    int n;
    real_frame frames[STACK_DEPTH];
} thread_frames;

uint64_t stacks_adopt_all(void)
{
    /* Read every thread's frames first (that is Ocular's own work: it makes
     * CPython create frame objects, and builds per-code data), then start
     * every stretch at one tick taken after it. */
    PyInterpreterState *interp = PyInterpreterState_Get();
    size_t n_threads = 0;
    for (PyThreadState *ts = PyInterpreterState_ThreadHead(interp); ts; ts = PyThreadState_Next(ts))
        n_threads++;
    thread_frames *all = PyMem_RawCalloc(n_threads ? n_threads : 1, sizeof(thread_frames));
    if (!all)
        return clock_now();
    size_t i = 0;
    for (PyThreadState *ts = PyInterpreterState_ThreadHead(interp); ts && i < n_threads;
         ts = PyThreadState_Next(ts), i++) {
        all[i].ts = ts;
        all[i].n = read_frames(ts, all[i].frames, &all[i].top_depth);
        for (int k = 0; k < all[i].n; k++)
            traced_info(all[i].frames[k].code); /* built now, not on the clock */
    }
    uint64_t now = clock_now();
    for (i = 0; i < n_threads; i++) {
        thread_frames *t = &all[i];
        thread_data *td = t->n ? thread_of(t->ts->native_thread_id) : NULL;
        if (td && td->count == 1) {
            thread_begin_stretch(td, now);
            /* bottom (deepest read) first; frames of code not traced are
             * skipped: their time is their caller's, as always */
            for (int k = t->n - 1; k >= 0; k--) {
                codeinfo *ci = traced_info(t->frames[k].code);
                if (!ci)
                    continue;
                int32_t unit = t->frames[k].unit < ci->n_units ? t->frames[k].unit : -1;
                shadow_frame *f = frame_push(td, ci, t->top_depth - k, -1, now, 0, 0, 0);
                if (!f)
                    break;
                /* the segment begins where the frame is, mid-block: no split
                 * (it is charged from that block on) */
                f->seg_start = unit;
            }
        }
        release_frames(t->frames, t->n);
    }
    PyMem_RawFree(all);
    return now;
}

void stacks_close_all(void)
{
    real_frame frames[STACK_DEPTH];
    PyInterpreterState *interp = PyInterpreterState_Get();
    for (PyThreadState *ts = PyInterpreterState_ThreadHead(interp); ts; ts = PyThreadState_Next(ts)) {
        int32_t top_depth;
        int n = read_frames(ts, frames, &top_depth);
        thread_data *td = NULL;
        for (thread_data *t = all_threads; t; t = t->next)
            if (t->native_tid == ts->native_thread_id && t->covered_from)
                td = t;
        if (td) {
            /* each open frame that is where the real stack says ends its
             * segment at its instruction; the rest end unknown (-1) */
            for (int32_t index = td->count - 1; index > 0; index--) {
                shadow_frame *f = &td->frames[index];
                int k = top_depth - f->py_depth;
                f->close_unit = -1;
                if (k >= 0 && k < n && frames[k].code == f->code && frames[k].unit < f->ci->n_units)
                    f->close_unit = frames[k].unit;
            }
        }
        release_frames(frames, n);
    }
}
