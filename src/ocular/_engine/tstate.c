/* tstate.c - creating, growing and freeing per-thread shadow stacks. */
#include "phase.h"
#include "tstate.h"

OCULAR_TLS thread_data *tls_thread;
OCULAR_TLS uint64_t tls_stamp;
OCULAR_TLS uint64_t tls_run;
thread_data *all_threads;

static thread_data *thread_new(uint64_t native_tid)
{
    thread_data *td = PyMem_RawCalloc(1, sizeof(thread_data));
    if (!td)
        return NULL;
    td->capacity = 256;
    td->frames = PyMem_RawCalloc((size_t)td->capacity, sizeof(shadow_frame));
    if (!td->frames) {
        PyMem_RawFree(td);
        return NULL;
    }
    td->count = 1; /* the root */
    td->frames[0].py_depth = -1;
    td->frames[0].seg_start = -1;
    td->frames[0].edge = NO_EDGE;
    td->native_tid = native_tid;
    td->run_id = engine.run_id;
    if (engine.exporting)
        td->trace = trace_thread_new(td->native_tid);
    phase_thread_init(td);
    td->next = all_threads;
    all_threads = td;
    return td;
}

thread_data *thread_of(uint64_t native_tid)
{
    for (thread_data *td = all_threads; td; td = td->next)
        if (td->native_tid == native_tid)
            return td;
    thread_data *td = thread_new(native_tid);
    if (!td)
        engine_fail("out of memory for a thread's shadow stack");
    return td;
}

void thread_begin_stretch(thread_data *td, uint64_t now)
{
    td->covered_from = now;
    td->stretch_stamp = engine.stamp;
    piece_begin(&td->frames[0], now, 0);
}

/* The first event of a thread in this run, or in this stretch (or any event
 * while not recording). A stretch a window's start already began for this
 * thread (stacks.c) goes on. */
thread_data *thread_enter(uint64_t now)
{
    if (!engine.recording)
        return NULL;
    thread_data *td = tls_run == engine.run_id ? tls_thread : NULL;
    if (!td && !(td = thread_of(PyThread_get_thread_native_id())))
        return NULL;
    if (td->stretch_stamp != engine.stamp) {
        thread_begin_stretch(td, now);
        td->fresh = 1;
    }
    tls_thread = td;
    tls_run = engine.run_id;
    tls_stamp = engine.stamp;
    return td;
}

/* Recursion can go as deep as the program's recursion limit allows. */
int thread_grow(thread_data *td)
{
    int32_t capacity = td->capacity * 2;
    shadow_frame *grown = PyMem_RawRealloc(td->frames, sizeof(shadow_frame) * (size_t)capacity);
    if (!grown)
        return -1;
    td->frames = grown;
    td->capacity = capacity;
    return 0;
}

void threads_clear(void)
{
    while (all_threads) {
        thread_data *td = all_threads;
        all_threads = td->next;
        calltree_free(&td->calls);
        PyMem_RawFree(td->frames);
        PyMem_RawFree(td);
    }
}

void threads_reset(void)
{
    for (thread_data *td = all_threads; td; td = td->next) {
        calltree_free(&td->calls);
        td->covered_from = td->covered = 0;
        td->removed = td->own = td->outside = td->lost = 0;
        td->count = 1;
        shadow_frame *root = &td->frames[0];
        root->seg = root->self = root->child = 0;
    }
}

uint64_t *threads_alive(size_t *count)
{
    *count = 0;
    PyInterpreterState *interp = PyInterpreterState_Get();
    size_t n = 0;
    for (PyThreadState *ts = PyInterpreterState_ThreadHead(interp); ts; ts = PyThreadState_Next(ts))
        n++;
    uint64_t *ids = PyMem_RawMalloc(sizeof(uint64_t) * (n ? n : 1));
    if (!ids)
        return NULL;
    for (PyThreadState *ts = PyInterpreterState_ThreadHead(interp); ts; ts = PyThreadState_Next(ts))
        ids[(*count)++] = ts->native_thread_id;
    return ids;
}

void threads_snapshot(void)
{
    for (thread_data *td = all_threads; td; td = td->next) {
        td->covered_base = td->covered;
        td->removed_base = td->removed;
        td->own_base = td->own;
        td->outside_base = td->outside;
        td->lost_base = td->lost;
        for (uint32_t id = 0; id < td->calls.n_funcs; id++) {
            func_stat *fs = &td->calls.funcs[id];
            fs->self_base = fs->self;
            fs->inclusive_base = fs->inclusive;
            fs->calls_base = fs->calls;
        }
        for (uint32_t i = 0; i < td->calls.n_edges; i++) {
            edge_stat *edge = &td->calls.edges[i];
            edge->self_base = edge->self;
            edge->inclusive_base = edge->inclusive;
            edge->calls_base = edge->calls;
        }
    }
}
