/* filter.h - which code objects are traced, decided once per code object. */
#ifndef OCULAR_FILTER_H
#define OCULAR_FILTER_H

#include <stddef.h>

typedef struct {
    char **exclude;        /* UTF-8 substrings; a match excludes the code object */
    size_t n_exclude;
    char **include_only;   /* if non-NULL, only code matching one of these is traced */
    size_t n_include_only;
    char *own_dir;         /* Ocular's package directory: its code is never traced */
} filter_set;

/* 1 if code with this filename, module and qualified name is traced (never
 * Ocular's own: a file under own_dir, or code of a module of the ocular package). */
int filter_wants(const filter_set *filters, const char *filename, const char *module,
                 const char *qualname);

/* Replace the patterns (lists of str, or None). Returns -1 with a Python
 * exception set on bad input; the old set is kept then. */
int filter_set_from_python(filter_set *filters, void *exclude, void *include_only,
                           void *own_dir);
void filter_set_clear(filter_set *filters);

#endif
