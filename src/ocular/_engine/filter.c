/* filter.c - substring filters on filename, module name and qualified name. */
#include <Python.h>
#include <string.h>
#include "filter.h"

static int matches_any(char *const *patterns, size_t count, const char *filename,
                       const char *module, const char *qualname)
{
    for (size_t i = 0; i < count; i++) {
        const char *pattern = patterns[i];
        if (strstr(filename, pattern) || strstr(module, pattern) || strstr(qualname, pattern))
            return 1;
    }
    return 0;
}

int filter_wants(const filter_set *filters, const char *filename, const char *module,
                 const char *qualname)
{
    if (filters->own_dir && strncmp(filename, filters->own_dir, strlen(filters->own_dir)) == 0)
        return 0;
    /* Ocular's own code that has no file of its own: the __init__ and the
     * like that dataclasses compiles at run time ("<string>") in the module
     * that defines the class, which Ocular's refreshes call mid-run. */
    if (strcmp(module, "ocular") == 0 || strncmp(module, "ocular.", 7) == 0)
        return 0;
    if (matches_any(filters->exclude, filters->n_exclude, filename, module, qualname))
        return 0;
    if (filters->include_only)
        return matches_any(filters->include_only, filters->n_include_only, filename, module,
                           qualname);
    return 1;
}

static void free_patterns(char **patterns, size_t count)
{
    for (size_t i = 0; i < count; i++)
        PyMem_RawFree(patterns[i]);
    PyMem_RawFree(patterns);
}

void filter_set_clear(filter_set *filters)
{
    free_patterns(filters->exclude, filters->n_exclude);
    free_patterns(filters->include_only, filters->n_include_only);
    PyMem_RawFree(filters->own_dir);
    memset(filters, 0, sizeof(*filters));
}

static char *copy_utf8(PyObject *text)
{
    Py_ssize_t size;
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, &size);
    if (!utf8)
        return NULL;
    char *copy = PyMem_RawMalloc((size_t)size + 1);
    if (!copy) {
        PyErr_NoMemory();
        return NULL;
    }
    memcpy(copy, utf8, (size_t)size + 1);
    return copy;
}

/* `list_obj` is None or a list of str (the Python layer normalised it). An
 * empty list still allocates, so include_only=[] means "trace nothing". */
static int copy_patterns(PyObject *list_obj, char ***out, size_t *count)
{
    *out = NULL;
    *count = 0;
    if (list_obj == Py_None)
        return 0;
    if (!PyList_Check(list_obj)) {
        PyErr_SetString(PyExc_TypeError, "filter patterns must be a list of str");
        return -1;
    }
    Py_ssize_t n = PyList_GET_SIZE(list_obj);
    char **patterns = PyMem_RawCalloc((size_t)n + 1, sizeof(char *));
    if (!patterns) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(list_obj, i);
        if (!PyUnicode_Check(item)) {
            PyErr_SetString(PyExc_TypeError, "filter patterns must be str");
            free_patterns(patterns, (size_t)i);
            return -1;
        }
        if (!(patterns[i] = copy_utf8(item))) {
            free_patterns(patterns, (size_t)i);
            return -1;
        }
    }
    *out = patterns;
    *count = (size_t)n;
    return 0;
}

int filter_set_from_python(filter_set *filters, void *exclude, void *include_only, void *own_dir)
{
    filter_set fresh = {0};
    if (copy_patterns((PyObject *)exclude, &fresh.exclude, &fresh.n_exclude) < 0)
        return -1;
    if (copy_patterns((PyObject *)include_only, &fresh.include_only, &fresh.n_include_only) < 0) {
        filter_set_clear(&fresh);
        return -1;
    }
    if ((PyObject *)own_dir != Py_None && !(fresh.own_dir = copy_utf8((PyObject *)own_dir))) {
        filter_set_clear(&fresh);
        return -1;
    }
    filter_set_clear(filters);
    *filters = fresh;
    return 0;
}
