/* calltree.h - per-thread function totals and caller -> callee edges.
 *
 * Every frame's times are flushed here when it ends (or when tracing stops
 * with it still open). Tables grow on the cold path only: a thread's function
 * table when it first meets a code id, its edge table when it first sees a
 * caller/callee pair. All times are in subticks (engine.h). */
#ifndef OCULAR_CALLTREE_H
#define OCULAR_CALLTREE_H

#include <stdint.h>

/* The caller of a frame whose caller Ocular does not know (the bottom of
 * what it saw on that thread). */
#define CALLER_ROOT UINT32_MAX
#define NO_EDGE UINT32_MAX

typedef struct {
    int64_t self;          /* time in the function's own code, callees excluded */
    int64_t inclusive;     /* self + callees, counted for the outermost activation only
                              (a recursive call's time is already in its caller's) */
    uint64_t calls;        /* PY_START events */
    uint32_t active;       /* activations open on this thread's stack */
    uint32_t windows;      /* sampling windows in which an activation ended */
    uint64_t last_window;
    int64_t self_base, inclusive_base;  /* at the end of a sampled run's warm-up */
    uint64_t calls_base;
} func_stat;

typedef struct {
    uint32_t caller;       /* code id, or CALLER_ROOT */
    uint32_t callee;
    int64_t self;          /* the callee's self time under this caller */
    int64_t inclusive;     /* outermost activations of this pair only, as pstats counts */
    uint64_t calls;        /* PY_START events of the callee under this caller */
    uint32_t active;
    int64_t self_base, inclusive_base;  /* at the end of a sampled run's warm-up */
    uint64_t calls_base;
} edge_stat;

typedef struct {
    func_stat *funcs;      /* [n_funcs], indexed by code id */
    uint32_t n_funcs;
    edge_stat *edges;      /* [n_edges] in creation order */
    uint32_t n_edges, cap_edges;
    uint32_t *slots;       /* open addressing over edges: index + 1, 0 = empty */
    uint32_t n_slots;      /* a power of two, at least twice n_edges */
} call_tables;

/* Make funcs[id] exist. Returns 0, or -1 on allocation failure. */
int calltree_reserve_func(call_tables *tables, uint32_t id);

/* The edge (caller, callee), created if new. NO_EDGE on allocation failure. */
uint32_t calltree_edge(call_tables *tables, uint32_t caller, uint32_t callee);

void calltree_free(call_tables *tables);

#endif
