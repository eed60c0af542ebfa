/* The floors for one event, built by run.py in the same run:
 *  - make():       a callable of the same kind as Ocular's (a type with
 *                  tp_vectorcall) that does nothing;
 *  - make_timed(): the same, but it reads the time-stamp counter and stores
 *                  it (and counts the call), which is the least any profiler
 *                  that times events must do. */
#include <Python.h>
#include <stddef.h>

#if defined(__x86_64__)
#include <x86intrin.h>
#define READ_TSC() __rdtsc()
#else
#include <time.h>
static inline unsigned long long read_clock(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (unsigned long long)now.tv_sec * 1000000000ull + (unsigned long long)now.tv_nsec;
}
#define READ_TSC() read_clock()
#endif

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    /* Written by the timed callback; volatile so the store is not elided. */
    volatile unsigned long long last_tsc;
    unsigned long long calls;
} empty_callback;

static PyObject *call_nothing(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    (void)self, (void)args, (void)nargsf, (void)kwnames;
    return Py_None;
}

static PyObject *call_timed(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    (void)args, (void)nargsf, (void)kwnames;
    empty_callback *callback = (empty_callback *)self;
    callback->last_tsc = READ_TSC();
    callback->calls++;
    return Py_None;
}

static PyObject *get_calls(PyObject *self, void *unused)
{
    (void)unused;
    return PyLong_FromUnsignedLongLong(((empty_callback *)self)->calls);
}

static PyGetSetDef getset[] = {{"calls", get_calls, NULL, "events seen by a timed callback", NULL},
                               {NULL, NULL, NULL, NULL, NULL}};

static PyTypeObject empty_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "empty_callback.Empty",
    .tp_basicsize = sizeof(empty_callback),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(empty_callback, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_getset = getset,
};

static PyObject *new_callback(vectorcallfunc function)
{
    empty_callback *callback = PyObject_New(empty_callback, &empty_type);
    if (callback) {
        callback->vectorcall = function;
        callback->last_tsc = 0;
        callback->calls = 0;
    }
    return (PyObject *)callback;
}

static PyObject *make(PyObject *module, PyObject *unused)
{
    (void)module, (void)unused;
    return new_callback(call_nothing);
}

static PyObject *make_timed(PyObject *module, PyObject *unused)
{
    (void)module, (void)unused;
    return new_callback(call_timed);
}

/* What one time-stamp read costs here: Ocular pays it once per event. */
static PyObject *rdtsc_ns(PyObject *module, PyObject *unused)
{
    (void)module, (void)unused;
#if defined(__x86_64__)
    struct timespec start, end;
    unsigned long long sink = 0;
    const int reads = 20000000;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (int i = 0; i < reads; i++)
        sink += __rdtsc();
    clock_gettime(CLOCK_MONOTONIC, &end);
    double ns = (end.tv_sec - start.tv_sec) * 1e9 + (end.tv_nsec - start.tv_nsec);
    return PyFloat_FromDouble(ns / reads + (double)(sink & 0));
#else
    return PyFloat_FromDouble(0.0);
#endif
}

static PyMethodDef methods[] = {{"make", make, METH_NOARGS, NULL},
                                {"make_timed", make_timed, METH_NOARGS, NULL},
                                {"rdtsc_ns", rdtsc_ns, METH_NOARGS, NULL},
                                {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "empty_callback", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit_empty_callback(void)
{
    if (PyType_Ready(&empty_type) < 0)
        return NULL;
    return PyModule_Create(&module);
}
