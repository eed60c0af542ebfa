/* module.c - ocular._engine: the Python-facing side of the C engine.
 *
 * The Python layer (ocular/__init__.py) validates arguments, owns the
 * sys.monitoring tool id and registers the callables from callbacks(); this
 * module sets up and tears down a run and hands back raw counters. */
#include <Python.h>
#include <errno.h>
#include "codeinfo.h"
#include "engine.h"
#include "monitor.h"
#include "tstate.h"

engine_state engine = {.extra_index = -1};

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
    return monitor_callbacks((int)mode);
}

static void release_run(void)
{
    engine_set_recording(0);
    monitor_forget_code();
    codeinfo_registry_clear();
    threads_clear();
    filter_set_clear(&engine.filters);
    Py_CLEAR(engine.disable);
    Py_CLEAR(engine.calibration_code);
    if (engine.exporting) {
        trace_stats ignored;
        trace_close(&ignored);
        engine.exporting = 0;
    }
    run_active = 0;
}

/* start(mode, threshold, exclude, include_only, own_dir, disable,
 *       calibration_code, output, max_buffer_bytes)
 * Recording begins in calibration: the caller runs the calibration function,
 * then end_calibration(). */
static PyObject *start(PyObject *module, PyObject *args)
{
    (void)module;
    int mode;
    unsigned long threshold;
    unsigned long long max_buffer_bytes;
    PyObject *exclude, *include_only, *own_dir, *disable, *calibration_code, *output;
    if (!PyArg_ParseTuple(args, "ikOOOOO!OK", &mode, &threshold, &exclude, &include_only, &own_dir,
                          &disable, &PyCode_Type, &calibration_code, &output, &max_buffer_bytes))
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
        int failed = trace_open(PyBytes_AS_STRING(encoded), (size_t)max_buffer_bytes, conv) < 0;
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
    engine.calibration_code = Py_NewRef(calibration_code);
    engine.event_cost = 0;
    engine.global_events = engine.disabled_sites = engine.lost_frames = 0;
    engine.unattributed = 0;
    engine.failure = NULL;
    engine.run_id++;
    run_active = 1;
    engine_set_recording(1);
    Py_RETURN_NONE;
}

/* The calibration function has run: learn the event cost and start the
 * traced interval with every counter at zero. */
static PyObject *end_calibration(PyObject *module, PyObject *unused)
{
    (void)module, (void)unused;
    engine.event_cost = monitor_calibration_result();
    codeinfo_registry_zero();
    engine.global_events = engine.disabled_sites = engine.lost_frames = 0;
    engine.unattributed = 0;
    engine.started = clock_anchor_now();
    return PyLong_FromLongLong(engine.event_cost);
}

static PyObject *stop(PyObject *module, PyObject *unused)
{
    (void)module, (void)unused;
    if (!run_active)
        Py_RETURN_NONE;
    int was_recording = engine.recording;
    engine_set_recording(0);
    stopped = clock_anchor_now();
    if (was_recording || engine.failure)
        monitor_close_all(stopped.tsc);
    double tsc_hz = clock_hz_between(engine.started, stopped);
    uint64_t events = engine.global_events + codeinfo_registry_site_hits();
    return Py_BuildValue("{s:d,s:K,s:K,s:K,s:L,s:K,s:L,s:z,s:s}",
                         "tsc_hz", tsc_hz,
                         "duration_ns", (unsigned long long)(stopped.mono_ns - engine.started.mono_ns),
                         "events", (unsigned long long)events,
                         "disabled_sites", (unsigned long long)engine.disabled_sites,
                         "unattributed_cycles", (long long)engine.unattributed,
                         "lost_frames", (unsigned long long)engine.lost_frames,
                         "event_cost", (long long)engine.event_cost,
                         "failure", engine.failure,
                         "clock_source", OCULAR_CLOCK_SOURCE);
}

/* [(offset, value), ...] for the code units where `values` is non-zero. */
static PyObject *nonzero_units(const codeinfo *ci, const uint64_t *hits, const int64_t *cycles)
{
    PyObject *list = PyList_New(0);
    if (!list || !hits)
        return list;
    for (int32_t unit = 0; unit < ci->n_units; unit++) {
        if (!hits[unit] && !(cycles && cycles[unit]))
            continue;
        PyObject *item = cycles ? Py_BuildValue("(iKL)", unit * 2, (unsigned long long)hits[unit],
                                                (long long)cycles[unit])
                                : Py_BuildValue("(iK)", unit * 2, (unsigned long long)hits[unit]);
        if (!item || PyList_Append(list, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(item);
    }
    return list;
}

static PyObject *collect_one(const codeinfo *ci)
{
    PyObject *blocks = PyList_New(ci->n_blocks);
    if (!blocks)
        return NULL;
    for (int32_t b = 0; b < ci->n_blocks; b++) {
        const block_info *info = &ci->blocks[b];
        PyObject *item = Py_BuildValue("(iIKL)", (int)info->start * 2, info->n_instr,
                                       (unsigned long long)info->hits, (long long)info->cycles);
        if (!item) {
            Py_DECREF(blocks);
            return NULL;
        }
        PyList_SET_ITEM(blocks, b, item);
    }
    return Py_BuildValue("(OKLNNNN)", ci->code, (unsigned long long)ci->calls,
                         (long long)codeinfo_self_cycles(ci), blocks,
                         nonzero_units(ci, ci->site_hits, NULL),
                         nonzero_units(ci, ci->site_hits_alt, NULL),
                         nonzero_units(ci, ci->insn_hits, ci->insn_cycles));
}

/* [(code, calls, self_cycles, blocks, sites, alt_sites, instructions), ...]
 *   blocks:       [(start_offset, instructions, hits, cycles)]
 *   sites:        [(offset, hits)] per event site (alt: 3.14 BRANCH_RIGHT)
 *   instructions: [(offset, hits, cycles)] precise mode */
static PyObject *collect(PyObject *module, PyObject *unused)
{
    (void)module, (void)unused;
    PyObject *result = PyList_New(0);
    if (!result)
        return NULL;
    for (uint32_t i = 0; i < codeinfo_count; i++) {
        const codeinfo *ci = codeinfo_registry[i];
        if (ci->state != CI_TRACED || ci->is_calibration || !ci->code)
            continue;
        PyObject *item = collect_one(ci);
        if (!item || PyList_Append(result, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(result);
            return NULL;
        }
        Py_DECREF(item);
    }
    return result;
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
    return Py_BuildValue("{s:K,s:K,s:K,s:K,s:K,s:i,s:s,s:O}",
                         "events_written", (unsigned long long)stats.events_written,
                         "events_dropped", (unsigned long long)stats.events_dropped,
                         "bytes_written", (unsigned long long)stats.bytes_written,
                         "block_slices", (unsigned long long)stats.block_slices,
                         "function_slices", (unsigned long long)stats.function_slices,
                         "error_errno", stats.error_errno,
                         "error_message", stats.error_message,
                         "failed", failed ? Py_True : Py_False);
}

/* In a child forked while tracing: stop recording and drop the trace, which
 * belongs to the parent (its writer thread was not copied into the child). */
static PyObject *abandon_after_fork(PyObject *module, PyObject *unused)
{
    (void)module, (void)unused;
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

static PyObject *is_recording(PyObject *module, PyObject *unused)
{
    (void)module, (void)unused;
    return PyBool_FromLong(engine.recording);
}

/* Introspection for tests: frames on the calling thread's shadow stack. */
static PyObject *stack_depth(PyObject *module, PyObject *unused)
{
    (void)module, (void)unused;
    return PyLong_FromLong(tls_run == engine.run_id && tls_thread ? tls_thread->count : 0);
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
    {"set_opcode_table", set_opcode_table, METH_VARARGS, "Hand over opcode facts (at import)."},
    {"callbacks", callbacks, METH_O, "{event name: callable} for a mode (0 adaptive, 1 precise)."},
    {"start", start, METH_VARARGS, "Begin a run (in calibration)."},
    {"end_calibration", end_calibration, METH_NOARGS, "End calibration; returns the event cost."},
    {"stop", stop, METH_NOARGS, "Stop recording; returns the run's totals."},
    {"collect", collect, METH_NOARGS, "Raw per-code counters of the run."},
    {"finish_trace", finish_trace, METH_O, "Close the trace file; returns its statistics."},
    {"reset", reset, METH_NOARGS, "Release everything the run holds."},
    {"abandon_after_fork", abandon_after_fork, METH_NOARGS, "In a forked child: stop, leave the trace."},
    {"is_recording", is_recording, METH_NOARGS, "True while callbacks record."},
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
        PyModule_AddIntConstant(module, "TRACE_MAX_FRAMES", TRACE_MAX_FRAMES) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
