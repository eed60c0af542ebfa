/* retired.c - the ids of code objects that died during the run.
 *
 * collect_retire_dead hands a dead code object's results over and frees its
 * data, but its id lives on in the threads' function and edge tables (they
 * are indexed by code id), so its key, (filename, qualname, firstlineno),
 * stays here for the results. A later code object of the same key (the same
 * template compiled again, a function redefined by exec in a loop) takes the
 * id over: its calls add to that function's totals, which is what the profile
 * reports for the key anyway, and the trace, which names an id by its key,
 * names the same function. So a program that keeps compiling code grows by
 * its distinct functions, not by its code objects.
 *
 * Each key keeps a list of its free ids (retired, not taken over since): a
 * code object takes one, and gives it back when it retires in turn. Two live
 * code objects of one key never share an id, so a key holds as many ids as
 * were alive at once (at most about RETIRE_EVERY between two passes). The
 * index of keys is an open addressing table over a hash of the key's UTF-8
 * text; lookups compare the text itself, so a collision cannot merge two
 * functions. */
#include <string.h>
#include "codeinfo.h"
#include "retired.h"

static PyObject **keys;             /* [capacity]: key tuple of a retired id, or NULL */
static uint32_t *next_free;         /* [capacity]: the next free id of the same key */
static uint32_t capacity;

typedef struct {
    uint64_t hash;
    uint32_t key_id_plus_one;       /* an id of this key (its text), 0: empty slot */
    uint32_t free_head;             /* the key's free ids, RETIRED_NONE: none */
} slot;
static slot *index_slots;
static uint32_t n_slots, n_keys;    /* n_slots a power of two, above twice n_keys */

static uint64_t fnv(uint64_t hash, const char *text)
{
    for (const unsigned char *p = (const unsigned char *)text; *p; p++)
        hash = (hash ^ *p) * 0x100000001b3ull;
    return (hash ^ 0xFF) * 0x100000001b3ull; /* a separator: ("ab","c") != ("a","bc") */
}

static uint64_t key_hash(const char *filename, const char *qualname, long firstlineno)
{
    uint64_t hash = fnv(fnv(0xcbf29ce484222325ull, filename), qualname);
    return (hash ^ (uint64_t)firstlineno) * 0x100000001b3ull;
}

/* The slot of the key (filename, qualname, firstlineno) of hash `hash`: the
 * one holding it, or the empty one where it would go. */
static slot *find(uint64_t hash, const char *filename, const char *qualname, long firstlineno)
{
    for (uint32_t i = (uint32_t)hash & (n_slots - 1);; i = (i + 1) & (n_slots - 1)) {
        slot *s = &index_slots[i];
        if (!s->key_id_plus_one)
            return s;
        PyObject *key = keys[s->key_id_plus_one - 1];
        if (s->hash == hash && PyLong_AsLong(PyTuple_GET_ITEM(key, 2)) == firstlineno &&
            strcmp(utf8_or_empty(PyTuple_GET_ITEM(key, 0)), filename) == 0 &&
            strcmp(utf8_or_empty(PyTuple_GET_ITEM(key, 1)), qualname) == 0)
            return s;
    }
}


int retired_reserve(uint32_t id)
{
    if (id >= capacity) {
        uint32_t grown = capacity ? capacity : 1024;
        while (grown <= id)
            grown *= 2;
        PyObject **more_keys = PyMem_RawRealloc(keys, sizeof(PyObject *) * grown);
        if (!more_keys)
            return -1;
        keys = more_keys;
        uint32_t *more_next = PyMem_RawRealloc(next_free, sizeof(uint32_t) * grown);
        if (!more_next)
            return -1; /* keys is larger than capacity says: harmless */
        next_free = more_next;
        memset(keys + capacity, 0, sizeof(PyObject *) * (grown - capacity));
        capacity = grown;
    }
    if (2 * (n_keys + 1) < n_slots)
        return 0;
    uint32_t grown = n_slots ? n_slots * 2 : 1024, old_n = n_slots;
    slot *old = index_slots, *fresh = PyMem_RawCalloc(grown, sizeof(slot));
    if (!fresh)
        return -1;
    for (uint32_t i = 0; i < old_n; i++) {
        if (!old[i].key_id_plus_one)
            continue;
        uint32_t j = (uint32_t)old[i].hash & (grown - 1);
        while (fresh[j].key_id_plus_one)
            j = (j + 1) & (grown - 1);
        fresh[j] = old[i];
    }
    index_slots = fresh;
    n_slots = grown;
    PyMem_RawFree(old);
    return 0;
}

void retired_keep(uint32_t id, PyObject *key)
{
    if (!keys[id])
        keys[id] = Py_NewRef(key);
    const char *filename = utf8_or_empty(PyTuple_GET_ITEM(keys[id], 0));
    const char *qualname = utf8_or_empty(PyTuple_GET_ITEM(keys[id], 1));
    long firstlineno = PyLong_AsLong(PyTuple_GET_ITEM(keys[id], 2));
    uint64_t hash = key_hash(filename, qualname, firstlineno);
    slot *s = find(hash, filename, qualname, firstlineno);
    if (!s->key_id_plus_one) {
        s->hash = hash;
        s->key_id_plus_one = id + 1;
        s->free_head = RETIRED_NONE;
        n_keys++;
    }
    next_free[id] = s->free_head;
    s->free_head = id;
}

void retired_put_back(uint32_t id)
{
    retired_keep(id, keys[id]);
}

PyObject *retired_key(uint32_t id)
{
    return id < capacity ? keys[id] : NULL;
}

uint32_t retired_take(PyCodeObject *co)
{
    if (!n_keys)
        return RETIRED_NONE;
    const char *filename = utf8_or_empty(co->co_filename), *qualname = utf8_or_empty(co->co_qualname);
    slot *s = find(key_hash(filename, qualname, co->co_firstlineno), filename, qualname,
                   co->co_firstlineno);
    if (!s->key_id_plus_one || s->free_head == RETIRED_NONE)
        return RETIRED_NONE;
    uint32_t id = s->free_head;
    s->free_head = next_free[id];
    return id;
}

PyObject *retired_dict(void)
{
    PyObject *result = PyDict_New();
    for (uint32_t id = 0; result && id < capacity; id++) {
        if (!keys[id])
            continue;
        PyObject *number = PyLong_FromUnsignedLong(id);
        if (!number || PyDict_SetItem(result, number, keys[id]) < 0)
            Py_CLEAR(result);
        Py_XDECREF(number);
    }
    return result;
}

void retired_release(void)
{
    for (uint32_t id = 0; id < capacity; id++)
        Py_XDECREF(keys[id]);
    PyMem_RawFree(keys);
    PyMem_RawFree(next_free);
    PyMem_RawFree(index_slots);
    keys = NULL;
    next_free = NULL;
    index_slots = NULL;
    capacity = n_slots = n_keys = 0;
}
