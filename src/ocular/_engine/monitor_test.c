/* monitor_test.c - the callbacks again, on the test clock (testclock.h).
 *
 * monitor.c is compiled a second time here with clock_tsc() reading the test
 * clock, so the attribution code the tests exercise is the shipped code, and
 * the real callbacks pay nothing for the test clock's existence. */
#include <Python.h>
#include "codeinfo.h"
#include "engine.h"
#include "frames.h"
#include "monitor.h"
#include "phase.h"
#include "sampler.h"
#include "testclock.h"
#include "tstate.h"

#define clock_tsc() (*clock_test_now())
#define OCULAR_MONITOR_TEST 1
#include "monitor.c"

#define MAX_RULES 256

typedef struct {
    PyObject *code; /* strong reference */
    int kind;       /* EV_*, or -1: any */
    long offset;    /* the event's offset in bytes (an edge's source), or -1: any */
    int64_t ticks;
} work_rule;

static struct {
    int64_t work[EV_KINDS]; /* by kind, where no rule matches */
    int64_t head[EV_KINDS], tail[EV_KINDS];
    int64_t far_head, far_tail;
    work_rule rules[MAX_RULES];
    int n_rules;
} test;

static int64_t work_of(PyObject *code, int kind, long offset)
{
    for (int i = 0; i < test.n_rules; i++) {
        const work_rule *rule = &test.rules[i];
        if (rule->code == code && (rule->kind < 0 || rule->kind == kind) &&
            (rule->offset < 0 || rule->offset == offset))
            return rule->ticks;
    }
    return test.work[kind];
}

static int far_offset(PyObject *offset)
{
    long bytes = PyLong_Check(offset) ? PyLong_AsLong(offset) : 0;
    PyErr_Clear();
    return far_args((int32_t)(bytes / 2));
}

/* Advance the clock to the event's read; returns what it advances after the
 * callback. The engine's rules mirrored: an event of code it does not trace
 * costs nothing if local (it is DISABLEd, nothing is taken off) and its head
 * and tail if global (taken off the frame that runs it). */
static int64_t advance(const callback_object *cb, PyObject *const *args, Py_ssize_t nargs)
{
    if (!engine.recording || nargs < 2)
        return 0;
    codeinfo *ci = code_info(args[0]);
    if (!ci)
        return 0;
    int kind = cb->kind;
    if (ci->state != CI_TRACED) {
        if (cb->local)
            return 0;
        *clock_test_now() += (uint64_t)test.head[kind];
        return test.tail[kind];
    }
    int n_far = far_offset(args[1]) + (kind == EV_EDGE && nargs >= 3 ? far_offset(args[2]) : 0);
    long offset = PyLong_Check(args[1]) ? PyLong_AsLong(args[1]) : -1;
    PyErr_Clear();
    *clock_test_now() += (uint64_t)(work_of(args[0], kind, offset) + test.head[kind] + n_far * test.far_head);
    return test.tail[kind] + n_far * test.far_tail;
}

static PyObject *on_test_clock(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    const callback_object *cb = (const callback_object *)self;
    int64_t after = advance(cb, args, PyVectorcall_NARGS(nargsf));
    PyObject *result = cb->inner(self, args, nargsf, kwnames);
    *clock_test_now() += (uint64_t)after;
    return result;
}

PyObject *monitor_test_callbacks(int mode)
{
    return make_callbacks(mode, on_test_clock);
}

static void clear_rules(void)
{
    for (int i = 0; i < test.n_rules; i++)
        Py_CLEAR(test.rules[i].code);
    test.n_rules = 0;
}

static int ticks_list(PyObject *list, int64_t *out, const char *what)
{
    if (!PyList_Check(list) || PyList_GET_SIZE(list) != EV_KINDS) {
        PyErr_Format(PyExc_ValueError, "test_clock: %s must be a list of %d ints", what, EV_KINDS);
        return -1;
    }
    for (int kind = 0; kind < EV_KINDS; kind++) {
        out[kind] = PyLong_AsLongLong(PyList_GET_ITEM(list, kind));
        if (out[kind] == -1 && PyErr_Occurred())
            return -1;
    }
    return 0;
}

PyObject *testclock_set(PyObject *module, PyObject *args)
{
    (void)module;
    PyObject *work, *heads = NULL, *tails = NULL, *rules = NULL;
    long long far_head = 0, far_tail = 0;
    if (!PyArg_ParseTuple(args, "O|OOLLO", &work, &heads, &tails, &far_head, &far_tail, &rules))
        return NULL;
    if (engine.recording) {
        PyErr_SetString(PyExc_RuntimeError, "test_clock: not while the engine records");
        return NULL;
    }
    clear_rules();
    if (work == Py_None) {
        clock_test.on = 0;
        Py_RETURN_NONE;
    }
    if (!heads || !tails || !rules || !PyList_Check(rules) || PyList_GET_SIZE(rules) > MAX_RULES) {
        PyErr_Format(PyExc_TypeError, "test_clock(work, heads, tails, far_head, far_tail, rules): rules a list "
                     "of at most %d (code, kind, offset, ticks)", MAX_RULES);
        return NULL;
    }
    if (ticks_list(work, test.work, "work") < 0 || ticks_list(heads, test.head, "heads") < 0 ||
        ticks_list(tails, test.tail, "tails") < 0)
        return NULL;
    test.far_head = far_head;
    test.far_tail = far_tail;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(rules); i++) {
        PyObject *code;
        int kind;
        long offset;
        long long ticks;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(rules, i), "O!ilL;test_clock: a rule is (code, kind, offset, ticks)",
                              &PyCode_Type, &code, &kind, &offset, &ticks)) {
            clear_rules();
            return NULL;
        }
        test.rules[test.n_rules++] = (work_rule){Py_NewRef(code), kind, offset, ticks};
    }
    clock_test_thread_now = CLOCK_TEST_ORIGIN;
    clock_test.on = 1;
    Py_RETURN_NONE;
}

PyObject *testclock_now(PyObject *module, PyObject *unused)
{
    (void)module, (void)unused;
    return PyLong_FromUnsignedLongLong(*clock_test_now());
}

PyObject *testclock_advance(PyObject *module, PyObject *arg)
{
    (void)module;
    long long ticks = PyLong_AsLongLong(arg);
    if (ticks == -1 && PyErr_Occurred())
        return NULL;
    if (ticks < 0) {
        PyErr_SetString(PyExc_ValueError, "test_clock_advance: ticks must be >= 0");
        return NULL;
    }
    *clock_test_now() += (uint64_t)ticks;
    Py_RETURN_NONE;
}

PyObject *testclock_switch_window(PyObject *module, PyObject *unused)
{
    (void)module, (void)unused;
    int open = sampler_test_switch();
    if (open < 0) {
        PyErr_SetString(PyExc_RuntimeError, "test_switch_window: only in a sampled run on the test clock");
        return NULL;
    }
    return PyBool_FromLong(open);
}
