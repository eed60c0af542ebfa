/* The floor for one event: a callable of the same kind as Ocular's (a type
 * with tp_vectorcall) that does nothing. Built by run.py in the same run. */
#include <Python.h>
#include <stddef.h>

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
} empty_callback;

static PyObject *call_nothing(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    (void)self, (void)args, (void)nargsf, (void)kwnames;
    return Py_None;
}

static PyTypeObject empty_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "empty_callback.Empty",
    .tp_basicsize = sizeof(empty_callback),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(empty_callback, vectorcall),
    .tp_call = PyVectorcall_Call,
};

static PyObject *make(PyObject *module, PyObject *unused)
{
    (void)module, (void)unused;
    empty_callback *callback = PyObject_New(empty_callback, &empty_type);
    if (callback)
        callback->vectorcall = call_nothing;
    return (PyObject *)callback;
}

#if defined(__x86_64__)
#include <x86intrin.h>
#include <time.h>
/* What one time-stamp read costs here: Ocular pays it once per event. */
static PyObject *rdtsc_ns(PyObject *module, PyObject *unused)
{
    (void)module, (void)unused;
    struct timespec start, end;
    unsigned long long sink = 0;
    const int reads = 20000000;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (int i = 0; i < reads; i++)
        sink += __rdtsc();
    clock_gettime(CLOCK_MONOTONIC, &end);
    double ns = (end.tv_sec - start.tv_sec) * 1e9 + (end.tv_nsec - start.tv_nsec);
    return PyFloat_FromDouble(ns / reads + (double)(sink & 0));
}
#else
static PyObject *rdtsc_ns(PyObject *module, PyObject *unused)
{
    (void)module, (void)unused;
    return PyFloat_FromDouble(0.0);
}
#endif

static PyMethodDef methods[] = {{"make", make, METH_NOARGS, NULL},
                                {"rdtsc_ns", rdtsc_ns, METH_NOARGS, NULL},
                                {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "empty_callback", NULL, -1, methods};

PyMODINIT_FUNC PyInit_empty_callback(void)
{
    if (PyType_Ready(&empty_type) < 0)
        return NULL;
    return PyModule_Create(&module);
}
