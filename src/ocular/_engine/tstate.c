/* tstate.c - creating, growing and freeing per-thread shadow stacks. */
#include "tstate.h"

OCULAR_TLS thread_data *tls_thread;
OCULAR_TLS uint64_t tls_run;
thread_data *all_threads;

/* The first event of a thread in this run (or any event while not recording). */
thread_data *thread_enter(void)
{
    if (!engine.recording)
        return NULL;
    thread_data *td = PyMem_RawCalloc(1, sizeof(thread_data));
    if (!td) {
        engine_fail("out of memory for a thread's shadow stack");
        return NULL;
    }
    td->capacity = 256;
    td->frames = PyMem_RawMalloc(sizeof(shadow_frame) * (size_t)td->capacity);
    if (!td->frames) {
        PyMem_RawFree(td);
        engine_fail("out of memory for a thread's shadow stack");
        return NULL;
    }
    td->native_tid = PyThread_get_thread_native_id();
    if (engine.exporting)
        td->trace = trace_thread_new(td->native_tid);
    td->next = all_threads;
    all_threads = td;
    tls_thread = td;
    tls_run = engine.run_id;
    return td;
}

/* Recursion can go as deep as the program's recursion limit allows. */
int thread_grow(thread_data *td)
{
    int32_t capacity = td->capacity * 2;
    shadow_frame *grown = PyMem_RawRealloc(td->frames, sizeof(shadow_frame) * (size_t)capacity);
    if (!grown) {
        engine_fail("out of memory growing a shadow stack");
        return -1;
    }
    td->frames = grown;
    td->capacity = capacity;
    return 0;
}

void threads_clear(void)
{
    while (all_threads) {
        thread_data *td = all_threads;
        all_threads = td->next;
        PyMem_RawFree(td->frames);
        PyMem_RawFree(td);
    }
}
