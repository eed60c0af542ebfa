/* module.c - ocular._engine: the Python-facing side of the C engine.
 *
 * The Python layer (ocular/__init__.py) validates arguments, owns the
 * sys.monitoring tool id and registers the callables from callbacks(); this
 * module sets up and tears down a run and hands back raw counters. */
#include <Python.h>
#include <errno.h>
#include <string.h>
#include "calibrate.h"
#include "codeinfo.h"
#include "collect.h"
#include "retired.h"
#include "engine.h"
#include "monitor.h"
#include "phase.h"
#include "sampler.h"
#include "stacks.h"
#include "testclock.h"
#include "tstate.h"

engine_state engine = {.extra_index = -1};
static PyObject *engine_refresher; /* the calibration refresh callable */
static PyObject *engine_set_events; /* sys.monitoring.set_events, for the windows */
static PyObject *last_balance;     /* collect_balance() at the last stop, for tests */

static int run_active;   /* between start() and reset() */
static clock_anchor stopped;

void engine_fail(const char *why)
{
    if (!engine.failure)
        engine.failure = why;
    engine_set_recording(0);
}

/* set_opcode_table(caches: bytes[256], flags: list[int] of 256) */
static PyObject *set_opcode_table(PyObject *module, PyObject *args)
{
    (void)module;
    Py_buffer caches;
    PyObject *flags;
    if (!PyArg_ParseTuple(args, "y*O!", &caches, &PyList_Type, &flags))
        return NULL;
    if (caches.len != 256 || PyList_GET_SIZE(flags) != 256) {
        PyBuffer_Release(&caches);
        PyErr_SetString(PyExc_ValueError, "opcode tables must have 256 entries");
        return NULL;
    }
    for (int op = 0; op < 256; op++) {
        long flag = PyLong_AsLong(PyList_GET_ITEM(flags, op));
        if (flag == -1 && PyErr_Occurred()) {
            PyBuffer_Release(&caches);
            return NULL;
        }
        opcode_caches[op] = ((const uint8_t *)caches.buf)[op];
        opcode_flags[op] = (uint16_t)flag;
    }
    PyBuffer_Release(&caches);
    Py_RETURN_NONE;
}

static PyObject *callbacks(PyObject *module, PyObject *mode_obj)
{
    (void)module;
    long mode = PyLong_AsLong(mode_obj);
    if (mode == -1 && PyErr_Occurred())
        return NULL;
    return clock_test.on ? monitor_test_callbacks((int)mode) : monitor_callbacks((int)mode);
}

static void release_run(void)
{
    sampler_stop(clock_now());
    engine_set_recording(0);
    monitor_forget_code();
    codeinfo_registry_clear();
    retired_release();
    threads_clear();
    /* every thread's tls_thread now dangles: no run id may match it again */
    engine.run_id++;
    filter_set_clear(&engine.filters);
    Py_CLEAR(engine.disable);
    Py_CLEAR(engine.calibration);
    Py_CLEAR(engine.twins);
    Py_CLEAR(engine_refresher);
    Py_CLEAR(engine_set_events);
    engine.sampling = 0;
    if (engine.exporting) {
        trace_stats ignored;
        trace_close(&ignored);
        engine.exporting = 0;
    }
    run_active = 0;
}

/* start(mode, threshold, exclude, include_only, own_dir, disable,
 *       calibration, twins, output, max_buffer_bytes)
 * Recording begins in calibration: the caller runs the calibration kernels
 * (ocular/_calibration.py), installs the corrections, then end_calibration(). */
static PyObject *start(PyObject *module, PyObject *args)
{
    (void)module;
    int mode;
    unsigned long threshold;
    unsigned long long max_buffer_bytes, max_trace_bytes = 0;
    int trace_detail = TRACE_DETAIL_BLOCKS;
    PyObject *exclude, *include_only, *own_dir, *disable, *calibration, *twins, *output;
    if (!PyArg_ParseTuple(args, "ikOOOOO!O!OK|Ki", &mode, &threshold, &exclude, &include_only, &own_dir,
                          &disable, &PyTuple_Type, &calibration, &PyTuple_Type, &twins, &output,
                          &max_buffer_bytes, &max_trace_bytes, &trace_detail))
        return NULL;
    if (run_active) {
        PyErr_SetString(PyExc_RuntimeError, "the engine is already running");
        return NULL;
    }
    if (codeinfo_init_extra_index() < 0) {
        PyErr_SetString(PyExc_RuntimeError, "no co_extra slot left for Ocular");
        return NULL;
    }
    if (filter_set_from_python(&engine.filters, exclude, include_only, own_dir) < 0)
        return NULL;
    if (output != Py_None) {
        PyObject *encoded;
        if (!PyUnicode_FSConverter(output, &encoded)) {
            filter_set_clear(&engine.filters);
            return NULL;
        }
        clock_anchor origin = clock_anchor_now();
        clock_converter conv = clock_converter_make(origin, clock_estimate_hz(5000000));
        int failed = trace_open(PyBytes_AS_STRING(encoded), (size_t)max_buffer_bytes, conv,
                                max_trace_bytes, trace_detail) < 0;
        Py_DECREF(encoded);
        if (failed) {
            PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, output);
            filter_set_clear(&engine.filters);
            return NULL;
        }
        engine.exporting = 1;
    }
    engine.mode = mode;
    engine.threshold = (uint32_t)threshold;
    engine.disable = Py_NewRef(disable);
    engine.calibration = Py_NewRef(calibration);
    engine.twins = Py_NewRef(twins);
    memset(&engine.corr, 0, sizeof(engine.corr));
    engine.global_events = engine.disabled_sites = engine.lost_frames = 0;
    engine.failure = NULL;
    engine.run_id++;
    engine.stamp++;
    engine.begun = clock_anchor_now();
    run_active = 1;
    engine_set_recording(1);
    Py_RETURN_NONE;
}

/* The calibration has run: start the traced interval with every counter at
 * zero and every thread's account empty. */
static PyObject *end_calibration(PyObject *module, PyObject *unused)
{
    (void)module, (void)unused;
    uint64_t now = clock_now();
    threads_close_all(now, NULL, 0);
    threads_reset();
    codeinfo_registry_zero();
    sampler_window_id = 0; /* the warm-up (or a whole exact run) is window 0: no window of a function's */
    engine.global_events = engine.disabled_sites = engine.lost_frames = 0;
    /* The frames already running (the caller of start_tracing and its
     * callers) are learnt from their events: the profile begins at
     * start_tracing. Sampling windows read the real stacks instead
     * (stacks.c): there every window begins mid-run. */
    engine_new_stretch();
    engine.started = clock_anchor_now();
    engine.tsc_hz_estimate = clock_hz_between(engine.begun, engine.started);
    sampler_begin(engine.started.tsc);
    Py_RETURN_NONE;
}

/* start_clock(refresher, refresh_ms, set_events, tool, events, interval_ms,
 *             window_ms): recalibrate every ~refresh_ms (0: never) and, if
 * interval_ms > 0, sample in windows of window_ms every ~interval_ms by
 * switching `events` of `tool` on and off with set_events. */
static PyObject *start_clock(PyObject *module, PyObject *args)
{
    (void)module;
    PyObject *refresher, *set_events;
    double refresh_ms, interval_ms, window_ms, warmup_ms = 0;
    int tool;
    unsigned long events;
    if (!PyArg_ParseTuple(args, "OdOikdd|d", &refresher, &refresh_ms, &set_events, &tool, &events,
                          &interval_ms, &window_ms, &warmup_ms))
        return NULL;
    Py_XSETREF(engine_refresher, Py_NewRef(refresher));
    Py_XSETREF(engine_set_events, Py_NewRef(set_events));
    sampler_config config = {
        .refresh_ns = (uint64_t)(refresh_ms * 1e6),
        .refresher = engine_refresher,
        .interval_ns = (uint64_t)(interval_ms * 1e6),
        .window_ns = (uint64_t)(window_ms * 1e6),
        .set_events = engine_set_events,
        .tool = tool,
        .events = events,
        .warmup_ns = (uint64_t)(warmup_ms * 1e6),
    };
    engine.sampling = config.interval_ns > 0;
    if (sampler_start(&config) < 0) {
        PyErr_SetString(PyExc_RuntimeError, "could not start Ocular's clock thread");
        return NULL;
    }
    Py_RETURN_NONE;
}

/* stop() -> the run's totals. Threads that have ended finish their time
 * account at their last event. */
static PyObject *stop(PyObject *module, PyObject *unused)
{
    (void)module, (void)unused;
    if (!run_active)
        Py_RETURN_NONE;
    stopped = clock_anchor_now();
    int was_recording = engine.recording;
    engine_set_recording(0);
    sampler_stop(stopped.tsc);
    size_t n_alive = 0;
    uint64_t *alive = threads_alive(&n_alive);
    if (was_recording)
        stacks_close_all();
    threads_close_all(stopped.tsc, alive, alive ? n_alive : 0);
    PyMem_RawFree(alive);
    Py_XSETREF(last_balance, collect_balance());
    PyErr_Clear();
    double tsc_hz = clock_hz_between(engine.started, stopped);
    uint64_t events = engine.global_events + codeinfo_registry_site_hits();
    sampler_stats clock = sampler_totals();
    double run_ticks = (double)(stopped.tsc - engine.started.tsc);
    double scale = clock.warmup_done ? collect_sampling_scale(run_ticks, (double)clock.warmup_ticks,
                                                              (double)clock.window_ticks) : 1.0;
    return Py_BuildValue("{s:d,s:K,s:K,s:K,s:K,s:z,s:s,s:K,s:K,s:K,s:K,s:i,s:K,s:i,s:K,s:d}",
                         "tsc_hz", tsc_hz,
                         "duration_ns", (unsigned long long)(stopped.mono_ns - engine.started.mono_ns),
                         "events", (unsigned long long)events,
                         "disabled_sites", (unsigned long long)engine.disabled_sites,
                         "lost_frames", (unsigned long long)engine.lost_frames,
                         "failure", engine.failure,
                         "clock_source", OCULAR_CLOCK_SOURCE,
                         "refreshes", (unsigned long long)clock.refreshes,
                         "windows", (unsigned long long)clock.windows,
                         "window_ticks", (unsigned long long)clock.window_ticks,
                         "version_bumps", (unsigned long long)clock.version_bumps,
                         "budget_exhausted", clock.budget_exhausted,
                         "gil_switches", (unsigned long long)clock.gil_switches,
                         "warmup_done", clock.warmup_done,
                         "warmup_ticks", (unsigned long long)clock.warmup_ticks,
                         "scale", scale);
}

/* collect(scale=1.0): the run's results, every figure times `scale`. */
static PyObject *collect(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    double scale = 1.0;
    if (nargs > 0 && (scale = PyFloat_AsDouble(args[0])) == -1.0 && PyErr_Occurred())
        return NULL;
    return collect_results(scale);
}

/* site_hits(code) -> (edge hits, instruction hits, frame start/end hits) of
 * a code object in this run, (0, 0, 0) if it delivered nothing. */
static PyObject *site_hits(PyObject *module, PyObject *code)
{
    (void)module;
    unsigned long long edges = 0, insns = 0, frame_events = 0;
    void *extra = NULL;
    if (PyCode_Check(code) && engine.extra_index >= 0 &&
        PyUnstable_Code_GetExtra(code, engine.extra_index, &extra) == 0 && extra) {
        const codeinfo *ci = extra;
        for (int32_t unit = 0; unit < ci->n_units && ci->site_hits; unit++) {
            uint16_t flags = opcode_flags[ci->opcodes[unit]];
            uint64_t hits = ci->site_hits[unit] + (ci->site_hits_alt ? ci->site_hits_alt[unit] : 0);
            if (flags & (OPF_RESUME | OPF_TERMINATOR))
                frame_events += hits;
            else
                edges += hits;
            if (ci->insn_hits)
                insns += ci->insn_hits[unit];
        }
    }
    PyErr_Clear();
    return Py_BuildValue("(KKK)", edges, insns, frame_events);
}

/* Per thread, what its account missed at the last stop (0 when it balances). */
static PyObject *balance(PyObject *module, PyObject *unused)
{
    (void)module, (void)unused;
    return last_balance ? Py_NewRef(last_balance) : PyList_New(0);
}

/* finish_trace({native_id: name}) -> stats dict, or None if not exporting. */
static PyObject *finish_trace(PyObject *module, PyObject *names)
{
    (void)module;
    if (!engine.exporting)
        Py_RETURN_NONE;
    if (PyDict_Check(names)) {
        PyObject *key, *value;
        Py_ssize_t pos = 0;
        while (PyDict_Next(names, &pos, &key, &value)) {
            unsigned long long tid = PyLong_AsUnsignedLongLong(key);
            const char *name = PyUnicode_Check(value) ? PyUnicode_AsUTF8(value) : NULL;
            if (PyErr_Occurred())
                PyErr_Clear();
            else if (name)
                trace_thread_set_name(tid, name);
        }
    }
    trace_stats stats = {0};
    int failed;
    Py_BEGIN_ALLOW_THREADS
    failed = trace_close(&stats);
    Py_END_ALLOW_THREADS
    engine.exporting = 0;
    return Py_BuildValue("{s:K,s:K,s:K,s:K,s:K,s:i,s:K,s:K,s:K,s:i,s:s,s:O}",
                         "events_written", (unsigned long long)stats.events_written,
                         "events_dropped", (unsigned long long)stats.events_dropped,
                         "bytes_written", (unsigned long long)stats.bytes_written,
                         "block_slices", (unsigned long long)stats.block_slices,
                         "function_slices", (unsigned long long)stats.function_slices,
                         "budget_stage", stats.budget_stage,
                         "budget_skipped", (unsigned long long)stats.budget_skipped,
                         "functions_only_from_ns", (unsigned long long)stats.functions_only_from_ns,
                         "nothing_from_ns", (unsigned long long)stats.nothing_from_ns,
                         "error_errno", stats.error_errno,
                         "error_message", stats.error_message,
                         "failed", failed ? Py_True : Py_False);
}

/* In a child forked while tracing: stop recording and drop the trace, which
 * belongs to the parent (its writer thread was not copied into the child). */
static PyObject *abandon_after_fork(PyObject *module, PyObject *unused)
{
    (void)module, (void)unused;
    sampler_forget();
    engine_set_recording(0);
    if (engine.exporting) {
        trace_abandon();
        engine.exporting = 0;
    }
    for (thread_data *td = all_threads; td; td = td->next)
        td->trace = NULL;
    Py_RETURN_NONE;
}

static PyObject *reset(PyObject *module, PyObject *unused)
{
    (void)module, (void)unused;
    release_run();
    Py_RETURN_NONE;
}

static PyObject *retire_dead(PyObject *module, PyObject *unused)
{
    (void)module, (void)unused;
    return collect_retire_dead();
}

static PyObject *code_ids(PyObject *module, PyObject *unused)
{
    (void)module, (void)unused;
    return PyLong_FromUnsignedLong(codeinfo_count);
}

static PyObject *registry_size(PyObject *module, PyObject *unused)
{
    (void)module, (void)unused;
    return PyLong_FromUnsignedLongLong(codeinfo_built);
}

static PyObject *clock_running(PyObject *module, PyObject *unused)
{
    (void)module, (void)unused;
    return PyBool_FromLong(sampler_running());
}

static PyObject *window_id(PyObject *module, PyObject *unused)
{
    (void)module, (void)unused;
    return PyLong_FromUnsignedLongLong(sampler_window_id);
}

static PyObject *is_recording(PyObject *module, PyObject *unused)
{
    (void)module, (void)unused;
    return PyBool_FromLong(engine.recording);
}

/* Introspection for tests: frames on the calling thread's shadow stack. */
static PyObject *stack_depth(PyObject *module, PyObject *unused)
{
    (void)module, (void)unused;
    return PyLong_FromLong(tls_run == engine.run_id && tls_thread ? tls_thread->count - 1 : 0);
}

/* Test hook: behave as if the engine hit an internal failure. */
static PyObject *simulate_failure(PyObject *module, PyObject *unused)
{
    (void)module, (void)unused;
    engine_fail("simulated internal failure (test hook)");
    Py_RETURN_NONE;
}

static PyMethodDef engine_methods[] = {
    {"stack_depth", stack_depth, METH_NOARGS, "Frames on this thread's shadow stack."},
    {"simulate_failure", simulate_failure, METH_NOARGS, "Test hook: fail as on an internal error."},
    {"_test_clock", testclock_set, METH_VARARGS, "Tests only: the engine's time on a clock the test advances."},
    {"_test_clock_now", testclock_now, METH_NOARGS, "Tests only: the test clock's time."},
    {"_test_clock_advance", testclock_advance, METH_O, "Tests only: the calling thread's test clock moves on."},
    {"_test_switch_window", testclock_switch_window, METH_NOARGS,
     "Tests only: end the open sampling window, or open the next (test clock)."},
    {"set_opcode_table", set_opcode_table, METH_VARARGS, "Hand over opcode facts (at import)."},
    {"callbacks", callbacks, METH_O, "{event name: callable} for a mode (0 adaptive, 1 precise); "
                                     "on the test clock's while it is on."},
    {"start", start, METH_VARARGS, "Begin a run (in calibration)."},
    {"end_calibration", end_calibration, METH_NOARGS, "End calibration: the traced interval begins."},
    {"start_clock", start_clock, METH_VARARGS, "Recalibrate and sample on a timer thread."},
    {"stop", stop, METH_NOARGS, "Stop recording; returns the run's totals."},
    {"collect", (PyCFunction)(void (*)(void))collect, METH_FASTCALL, "Raw per-code and per-thread results, scaled."},
    {"site_hits", site_hits, METH_O, "(edges, instructions, frame events) a code object delivered."},
    {"last_balance", balance, METH_NOARGS, "Per thread, what its time account missed at the last stop."},
    {"time_calls", calibrate_time_calls, METH_VARARGS, "Tick counts of calls, round-robin."},
    {"set_corrections", calibrate_set_corrections, METH_VARARGS, "Install per-event costs (ticks)."},
    {"probe_collect", calibrate_probe_collect, METH_O, "Collect probe times / set their references."},
    {"box_split", calibrate_box_split, METH_NOARGS, "(alloc, free) ticks of a boxed offset."},
    {"own_begin", calibrate_py_own_begin, METH_NOARGS, "Ocular's own time begins on this thread."},
    {"own_end", calibrate_py_own_end, METH_NOARGS, "Ocular's own time ends on this thread."},
    {"finish_trace", finish_trace, METH_O, "Close the trace file; returns its statistics."},
    {"reset", reset, METH_NOARGS, "Release everything the run holds."},
    {"abandon_after_fork", abandon_after_fork, METH_NOARGS, "In a forked child: stop, leave the trace."},
    {"is_recording", is_recording, METH_NOARGS, "True while callbacks record."},
    {"window_id", window_id, METH_NOARGS, "The number of the sampling window last opened."},
    {"clock_running", clock_running, METH_NOARGS, "True while Ocular's clock thread runs."},
    {"retire_dead", retire_dead, METH_NOARGS, "Results of code only Ocular holds; release it."},
    {"registry_size", registry_size, METH_NOARGS, "Code objects described so far in this run."},
    {"code_ids", code_ids, METH_NOARGS, "Code ids in use or kept for retired code (memory grows with it)."},
    {NULL, NULL, 0, NULL},
};

static void engine_free(void *module)
{
    (void)module;
    if (run_active)
        release_run();
}

static struct PyModuleDef engine_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "ocular._engine",
    .m_doc = "Ocular's C engine: sys.monitoring callbacks, per-code data, trace export.",
    .m_size = -1,
    .m_methods = engine_methods,
    .m_free = engine_free,
};

PyMODINIT_FUNC PyInit__engine(void)
{
    PyObject *module = PyModule_Create(&engine_module);
    if (!module)
        return NULL;
    if (PyModule_AddIntConstant(module, "MODE_ADAPTIVE", MODE_ADAPTIVE) < 0 ||
        PyModule_AddIntConstant(module, "MODE_PRECISE", MODE_PRECISE) < 0 ||
        PyModule_AddStringConstant(module, "CLOCK_SOURCE", OCULAR_CLOCK_SOURCE) < 0 ||
        PyModule_AddIntConstant(module, "TRACE_MAX_FRAMES", TRACE_MAX_FRAMES) < 0 ||
        PyModule_AddIntConstant(module, "WINDOW_TRACK_TID", SAMPLER_WINDOW_TID) < 0 ||
        PyModule_AddIntConstant(module, "FAR_OFFSET", FAR_UNIT * 2) < 0 ||
        PyModule_AddIntConstant(module, "PROBE_EDGE", PROBE_EDGE) < 0 ||
        PyModule_AddIntConstant(module, "PROBE_INSN", PROBE_INSN) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    static const char *const kind_names[] = EV_KIND_NAMES;
    _Static_assert(sizeof(kind_names) / sizeof(kind_names[0]) == EV_KINDS, "a name per event kind");
    PyObject *names = PyTuple_New(EV_KINDS);
    for (int kind = 0; names && kind < EV_KINDS; kind++) {
        PyObject *name = PyUnicode_FromString(kind_names[kind]);
        if (!name)
            Py_CLEAR(names);
        else
            PyTuple_SET_ITEM(names, kind, name);
    }
    if (!names || PyModule_AddObject(module, "EVENT_KIND_NAMES", names) < 0) {
        Py_XDECREF(names);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
