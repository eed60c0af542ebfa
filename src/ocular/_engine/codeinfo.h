/* codeinfo.h - what Ocular knows about one code object, kept in co_extra.
 *
 * Built once, on the first event a code object delivers (a cold path that
 * may allocate); afterwards the callbacks only index into it. The registry
 * holds a strong reference to every code object it describes until the run's
 * results are collected, so a code object cannot die and have its address
 * reused while its data is live. */
#ifndef OCULAR_CODEINFO_H
#define OCULAR_CODEINFO_H

#include <Python.h>
#include <stdint.h>

/* What the callbacks do with a code object's events. */
enum {
    CI_TRACED = 0,
    CI_EXCLUDED = 1,     /* filtered out or Ocular's own code: DISABLE everything */
};

/* Per code unit flags. */
enum {
    UNIT_INSTR = 1 << 0,      /* an instruction starts here (not a cache entry) */
    UNIT_LEADER = 1 << 1,     /* a basic block starts here */
    UNIT_HANDLER = 1 << 2,    /* an exception handler's entry */
};

/* Per block flags: how control leaves the block's last instruction. */
enum {
    BLOCK_ENDS_EDGE = 1 << 0,   /* an instrumented jump/branch, return, yield or raise:
                                   execution never silently continues past it */
    BLOCK_SILENT_JUMP = 1 << 1, /* ends in a jump CPython never reports (JUMP_BACKWARD_NO_INTERRUPT) */
    BLOCK_SILENT_COND = 1 << 2, /* ends in a conditional jump CPython never reports (SEND) */
    BLOCK_ENTERED_BY_EXCEPTION = 1 << 3,
};

typedef struct {
    uint32_t start;        /* first code unit */
    uint32_t n_instr;      /* instructions (EXTENDED_ARG included, caches not) */
    int32_t silent_target; /* block index of a silent jump's target, -1 if none */
    uint32_t flags;
    int32_t first_line;    /* for trace records; -1 when the compiler gave none */
    uint64_t hits;
    int64_t cycles;        /* subticks */
    uint64_t hits_base;    /* at the end of a sampled run's warm-up (0 before it): */
    int64_t cycles_base;   /*   what the windows' estimate adds to, unscaled */
} block_info;

typedef struct codeinfo {
    PyObject *code;            /* strong reference, released by codeinfo_registry_clear */
    uint32_t id;               /* index in the registry; the trace's code id */
    uint8_t state;
    uint8_t is_calibration;    /* a calibration kernel (calibrate.c): traced, never reported */
    uint64_t limit;            /* hits per site before DISABLE; UINT64_MAX = never */
    int32_t n_units;
    int32_t n_blocks;
    uint8_t *unit_flags;       /* [n_units] */
    uint8_t *opcodes;          /* [n_units] base opcode of each instruction, 0 on caches */
    int32_t *jump_unit;        /* [n_units] jump target of an instruction, -1 if none */
    int32_t *unit_line;        /* [n_units] line number, -1 where the compiler gave none */
    uint32_t *block_of;        /* [n_units] block of every code unit, caches included */
    block_info *blocks;        /* [n_blocks] */
    uint64_t *site_hits;       /* [n_units] hits per event site: (code, event, offset) */
    uint64_t *site_hits_alt;   /* [n_units] 3.14's BRANCH_RIGHT shares BRANCH_LEFT's offset */
    int64_t *insn_cycles;      /* [n_units] subticks, precise mode only, else NULL */
    uint64_t *insn_hits;       /* [n_units] INSTRUCTION site hits, precise mode only */
    int32_t *next_unit;        /* [n_units] precise: fall-through successor of an instruction */
    int64_t unplaced_self;     /* self subticks no block or instruction got (the rest is theirs) */
    int64_t tainted_self;      /* of those, the subticks that include frames Ocular did not see */
    /* The last (thread, caller) -> edge lookup of calls into this code: most
     * calls of a function come from the caller that called it last. */
    const void *edge_thread;
    uint32_t edge_caller;
    uint32_t edge_index;
    uint32_t pinned;           /* retire pass that found it on a shadow stack */
    /* At the end of a sampled run's warm-up (traced whole), the counters as
     * they stood (codeinfo_registry_snapshot); NULL/0 for code first seen later. */
    uint64_t *site_hits_base, *site_hits_alt_base, *insn_hits_base;
    int64_t *insn_cycles_base;
    int64_t unplaced_base, tainted_base;
} codeinfo;

/* Opcode facts handed over from Python at import (they move between versions). */
enum {
    OPF_JUMP_FORWARD = 1 << 0,  /* relative forward jump (target = next + arg) */
    OPF_JUMP_BACKWARD = 1 << 1, /* relative backward jump */
    OPF_CONDITIONAL = 1 << 2,   /* may fall through */
    OPF_TERMINATOR = 1 << 3,    /* return, raise, reraise, yield */
    OPF_SILENT = 1 << 4,        /* a jump sys.monitoring never reports */
    OPF_EXTENDED_ARG = 1 << 5,
    OPF_RESUME = 1 << 6,
    OPF_END_FOR = 1 << 7,       /* skipped by an exhausted FOR_ITER's reported destination */
};
extern uint8_t opcode_caches[256];
extern uint16_t opcode_flags[256];

/* Look up (building it on first use) the data of a code object. Returns NULL
 * if `code` is not a real code object or the build failed (engine failure set). */
codeinfo *codeinfo_build(PyObject *code);

/* Ocular's own code: its package's, or a calibration kernel or twin. */
int codeinfo_is_ocular(PyObject *code);

/* Make `unit` start a basic block (an event landed mid-block). Accumulated
 * block data is carried over. Returns 0, or -1 on allocation failure. */
int codeinfo_split(codeinfo *ci, int32_t unit);

/* Precise mode's per-instruction arrays, allocated on first use. */
int codeinfo_enable_insns(codeinfo *ci);

/* A str's UTF-8 text, or "" for anything else (or text that has none, such as
 * lone surrogates; the error is cleared). */
const char *utf8_or_empty(PyObject *text);

/* Registry: every codeinfo of the current run (its index is the code id);
 * NULL where a dead code object's data was retired, until a code object of
 * the same key takes the id over (retired.c). */
extern codeinfo **codeinfo_registry;
extern uint32_t codeinfo_count;
extern uint64_t codeinfo_built; /* code objects described so far, ids taken over included */
/* The warm-up's figures were kept as every code's base (sampled runs): a code
 * object that dies before that was traced whole, all of it base. */
extern int codeinfo_bases_taken;
extern uint64_t codeinfo_retired_hits; /* site hits of retired code objects */

/* Release the code object and its data (its results were taken first). */
void codeinfo_retire(codeinfo *ci);

/* Sum of a code object's site hits. */
uint64_t codeinfo_site_hits(const codeinfo *ci);

/* Detach from co_extra, release the code objects, free everything. */
void codeinfo_registry_clear(void);

/* A function's self subticks: its blocks' or instructions' plus unplaced_self. */
int64_t codeinfo_self_cycles(const codeinfo *ci);

/* Sum of every site's hits. */
uint64_t codeinfo_registry_site_hits(void);

/* Zero every counter (after calibration) but keep the tables. */
void codeinfo_registry_zero(void);

/* Keep every counter's present value as its base (the end of a warm-up).
 * Returns -1 on allocation failure (engine failure set). */
int codeinfo_registry_snapshot(void);

int codeinfo_init_extra_index(void);

#endif
