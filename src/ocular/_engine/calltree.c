/* calltree.c - growing the per-thread function and edge tables (cold path). */
#include <Python.h>
#include <string.h>
#include "calltree.h"

int calltree_reserve_func(call_tables *tables, uint32_t id)
{
    if (id < tables->n_funcs)
        return 0;
    uint32_t count = tables->n_funcs ? tables->n_funcs : 64;
    while (count <= id)
        count *= 2;
    func_stat *grown = PyMem_RawRealloc(tables->funcs, sizeof(func_stat) * count);
    if (!grown)
        return -1;
    memset(grown + tables->n_funcs, 0, sizeof(func_stat) * (count - tables->n_funcs));
    tables->funcs = grown;
    tables->n_funcs = count;
    return 0;
}

static inline uint32_t slot_of(uint32_t caller, uint32_t callee, uint32_t mask)
{
    uint64_t key = ((uint64_t)caller << 32) | callee;
    key *= 0x9E3779B97F4A7C15ull;
    return (uint32_t)(key >> 32) & mask;
}

static int rehash(call_tables *tables, uint32_t n_slots)
{
    uint32_t *slots = PyMem_RawCalloc(n_slots, sizeof(uint32_t));
    if (!slots)
        return -1;
    for (uint32_t i = 0; i < tables->n_edges; i++) {
        const edge_stat *edge = &tables->edges[i];
        uint32_t slot = slot_of(edge->caller, edge->callee, n_slots - 1);
        while (slots[slot])
            slot = (slot + 1) & (n_slots - 1);
        slots[slot] = i + 1;
    }
    PyMem_RawFree(tables->slots);
    tables->slots = slots;
    tables->n_slots = n_slots;
    return 0;
}

uint32_t calltree_edge(call_tables *tables, uint32_t caller, uint32_t callee)
{
    if (tables->n_slots) {
        uint32_t mask = tables->n_slots - 1;
        for (uint32_t slot = slot_of(caller, callee, mask);; slot = (slot + 1) & mask) {
            uint32_t index = tables->slots[slot];
            if (!index)
                break;
            const edge_stat *edge = &tables->edges[index - 1];
            if (edge->caller == caller && edge->callee == callee)
                return index - 1;
        }
    }
    if (tables->n_edges == tables->cap_edges) {
        uint32_t cap = tables->cap_edges ? tables->cap_edges * 2 : 64;
        edge_stat *grown = PyMem_RawRealloc(tables->edges, sizeof(edge_stat) * cap);
        if (!grown)
            return NO_EDGE;
        tables->edges = grown;
        tables->cap_edges = cap;
    }
    if ((tables->n_edges + 1) * 2 > tables->n_slots &&
        rehash(tables, tables->n_slots ? tables->n_slots * 2 : 128) < 0)
        return NO_EDGE;
    uint32_t index = tables->n_edges++;
    edge_stat *edge = &tables->edges[index];
    memset(edge, 0, sizeof(*edge));
    edge->caller = caller;
    edge->callee = callee;
    uint32_t mask = tables->n_slots - 1;
    uint32_t slot = slot_of(caller, callee, mask);
    while (tables->slots[slot])
        slot = (slot + 1) & mask;
    tables->slots[slot] = index + 1;
    return index;
}

void calltree_free(call_tables *tables)
{
    PyMem_RawFree(tables->funcs);
    PyMem_RawFree(tables->edges);
    PyMem_RawFree(tables->slots);
    memset(tables, 0, sizeof(*tables));
}
