/* calibrate.c - what the calibration (ocular/_calibration.py) needs from C.
 *
 * The calibration times small kernels twice, traced and as an untraced twin,
 * with the tick counter; the difference per event is what each kind of event
 * costs the program (engine.h's corrections). During a run it is repeated
 * (the machine's speed drifts), and the time that takes is Ocular's own: a
 * sentinel frame on the calling thread's shadow stack holds it, so that it is
 * neither the interrupted function's nor lost. */
#include "calibrate.h"
#include "frames.h"
#include "phase.h"
#include "tstate.h"

static double current_phase(void)
{
    thread_data *td = tls_run == engine.run_id ? tls_thread : NULL;
    return td ? (double)td->phase_q8 / PHASE_ONE : 1.0;
}

/* time_calls(functions, argument, repeats) -> ([[ticks]], [[phase]]) per function
 * Calls the functions round-robin, `repeats` times, so that a drift of the
 * machine's speed hits each of them alike; after each call, the calling
 * thread's phase (phase.h) as its probes saw it. */
PyObject *calibrate_time_calls(PyObject *module, PyObject *args)
{
    (void)module;
    PyObject *functions, *argument;
    int repeats;
    if (!PyArg_ParseTuple(args, "O!Oi", &PyTuple_Type, &functions, &argument, &repeats))
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(functions);
    if (repeats < 1 || n < 1) {
        PyErr_SetString(PyExc_ValueError, "time_calls needs functions and repeats >= 1");
        return NULL;
    }
    PyObject *times = PyList_New(n), *phases = PyList_New(n);
    if (!times || !phases)
        goto error;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *a = PyList_New(repeats), *b = PyList_New(repeats);
        if (!a || !b) {
            Py_XDECREF(a);
            Py_XDECREF(b);
            goto error;
        }
        PyList_SET_ITEM(times, i, a);
        PyList_SET_ITEM(phases, i, b);
    }
    for (int r = 0; r < repeats; r++) {
        for (Py_ssize_t k = 0; k < n; k++) {
            /* alternate the order, so neither of a pair always runs first */
            Py_ssize_t i = (r & 1) ? n - 1 - k : k;
            PyObject *function = PyTuple_GET_ITEM(functions, i);
            uint64_t before = clock_tsc();
            PyObject *value = PyObject_CallOneArg(function, argument);
            uint64_t after = clock_tsc();
            if (!value)
                goto error;
            Py_DECREF(value);
            PyObject *ticks = PyLong_FromUnsignedLongLong(after - before);
            PyObject *phase = PyFloat_FromDouble(current_phase());
            if (!ticks || !phase) {
                Py_XDECREF(ticks);
                Py_XDECREF(phase);
                goto error;
            }
            PyList_SET_ITEM(PyList_GET_ITEM(times, i), r, ticks);
            PyList_SET_ITEM(PyList_GET_ITEM(phases, i), r, phase);
        }
    }
    return Py_BuildValue("(NN)", times, phases);
error:
    Py_XDECREF(times);
    Py_XDECREF(phases);
    return NULL;
}

/* box_split() -> (alloc, free) ticks: what CPython does for an offset past
 * 256 bytes, timed in parts. It boxes the int before calling the callback and
 * frees it after: the share of the allocation is the share of that extra cost
 * that falls in the interval ending at the event (its head). */
PyObject *calibrate_box_split(PyObject *module, PyObject *unused)
{
    (void)module, (void)unused;
    enum { REPS = 2000 };
    uint64_t empty = 0, alloc = 0, release = 0;
    for (int r = 0; r < REPS; r++) {
        uint64_t t0 = clock_tsc();
        uint64_t t1 = clock_tsc();
        empty += t1 - t0;
    }
    for (int r = 0; r < REPS; r++) {
        uint64_t t0 = clock_tsc();
        PyObject *value = PyLong_FromLong(258 + 2 * (r & 255));
        uint64_t t1 = clock_tsc();
        Py_XDECREF(value);
        uint64_t t2 = clock_tsc();
        alloc += t1 - t0;
        release += t2 - t1;
    }
    double base = (double)empty / REPS;
    double a = (double)alloc / REPS - base, f = (double)release / REPS - base;
    return Py_BuildValue("(dd)", a > 0 ? a : 0.0, f > 0 ? f : 0.0);
}

/* probe_collect(on) -> None, or (off) the probes' reference times per path. */
PyObject *calibrate_probe_collect(PyObject *module, PyObject *on)
{
    (void)module;
    uint32_t bases[PROBE_PATHS];
    int collect = PyObject_IsTrue(on);
    if (collect < 0)
        return NULL;
    phase_collect(collect, bases);
    if (collect)
        Py_RETURN_NONE;
    PyObject *result = PyList_New(PROBE_PATHS);
    for (int path = 0; result && path < PROBE_PATHS; path++)
        PyList_SET_ITEM(result, path, PyLong_FromUnsignedLong(bases[path]));
    return result;
}

static int64_t to_sub(double ticks)
{
    double sub = ticks * SUB_ONE;
    return (int64_t)(sub < 0 ? sub - 0.5 : sub + 0.5);
}

/* set_corrections(heads, tails, far_head, far_tail): ticks (floats), one per
 * event kind in engine.h's order. */
PyObject *calibrate_set_corrections(PyObject *module, PyObject *args)
{
    (void)module;
    PyObject *heads, *tails;
    double far_head, far_tail;
    if (!PyArg_ParseTuple(args, "O!O!dd", &PyList_Type, &heads, &PyList_Type, &tails, &far_head,
                          &far_tail))
        return NULL;
    if (PyList_GET_SIZE(heads) != EV_KINDS || PyList_GET_SIZE(tails) != EV_KINDS) {
        PyErr_Format(PyExc_ValueError, "corrections need %d heads and tails", EV_KINDS);
        return NULL;
    }
    corrections fresh;
    for (int kind = 0; kind < EV_KINDS; kind++) {
        double head = PyFloat_AsDouble(PyList_GET_ITEM(heads, kind));
        double tail = PyFloat_AsDouble(PyList_GET_ITEM(tails, kind));
        if (PyErr_Occurred())
            return NULL;
        fresh.head[kind] = to_sub(head);
        fresh.tail[kind] = to_sub(tail);
    }
    fresh.far_head = to_sub(far_head);
    fresh.far_tail = to_sub(far_tail);
    engine.corr = fresh;
    phase_update_all();
    Py_RETURN_NONE;
}

/* ---- Ocular's own time ------------------------------------------------------ */

static trace_thread *saved_trace;

int calibrate_own_begin(void)
{
    uint64_t now = clock_now();
    thread_data *td = thread_current(now);
    if (!td)
        return -1;
    if (td->count == td->capacity && thread_grow(td) < 0) {
        engine_fail("out of memory growing a shadow stack");
        return -1;
    }
    shadow_frame *top = &td->frames[td->count - 1];
    top->seg = piece_value(top, now, thread_head(td, 0));
    shadow_frame *sentinel = &td->frames[td->count++];
    memset(sentinel, 0, sizeof(*sentinel));
    sentinel->close_unit = -1;
    sentinel->py_depth = python_depth();
    sentinel->seg_start = -1;
    sentinel->edge = NO_EDGE;
    sentinel->own = 1;
    piece_begin(sentinel, now, 0);
    /* the kernels write trace records as real code would, into the scratch */
    saved_trace = td->trace;
    if (td->trace)
        td->trace = trace_scratch();
    return 0;
}

void calibrate_own_end(void)
{
    uint64_t now = clock_now();
    thread_data *td = tls_run == engine.run_id ? tls_thread : NULL;
    if (!td)
        return;
    int32_t index = td->count - 1;
    while (index > 0 && !(td->frames[index].own && !td->frames[index].ci))
        index--; /* the sentinel: own time, no code */
    if (index == 0)
        return; /* the sentinel is gone (tracing stopped meanwhile) */
    /* Kernels still open above it (an exception cut them short) are closed
     * and counted as calibration time. */
    while (td->count - 1 > index) {
        shadow_frame *f = &td->frames[td->count - 1];
        segment_close(td, f, -1, now, 0);
        frames_flush(td, f);
        td->count--;
        piece_begin(&td->frames[td->count - 1], now, 0);
    }
    shadow_frame *sentinel = &td->frames[index];
    td->own += piece_value(sentinel, now, 0) + sentinel->self;
    td->count--;
    piece_begin(&td->frames[td->count - 1], now, 0);
    td->trace = saved_trace;
    saved_trace = NULL;
}

void calibrate_program_enters(thread_data *td)
{
    if (td->trace)
        td->trace = saved_trace;
}

void calibrate_program_leaves(thread_data *td)
{
    if (td->trace)
        td->trace = trace_scratch();
}

PyObject *calibrate_py_own_begin(PyObject *module, PyObject *unused)
{
    (void)module, (void)unused;
    return PyBool_FromLong(calibrate_own_begin() == 0);
}

PyObject *calibrate_py_own_end(PyObject *module, PyObject *unused)
{
    (void)module, (void)unused;
    calibrate_own_end();
    Py_RETURN_NONE;
}
