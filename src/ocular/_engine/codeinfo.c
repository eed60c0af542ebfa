/* codeinfo.c - basic blocks and counters of a code object, kept in co_extra.
 *
 * Everything here runs on the cold path: once per code object per run, or
 * when an event lands in the middle of a block and splits it. */
#include <string.h>
#include "codeinfo.h"
#include "retired.h"
#include "engine.h"

uint8_t opcode_caches[256];
uint16_t opcode_flags[256];

codeinfo **codeinfo_registry;
uint32_t codeinfo_count;
uint64_t codeinfo_built;
int codeinfo_bases_taken;
uint64_t codeinfo_retired_hits;
static uint32_t registry_capacity;

/* Called by CPython when a code object that has our slot dies, and (3.12+)
 * when SetExtra replaces the value. Every described code object is kept
 * alive by the registry and detached before it is released, so a dying code
 * object only hands us a non-NULL value during interpreter teardown; then the
 * registry must not touch the code object again. */
static void free_extra(void *extra)
{
    if (extra)
        ((codeinfo *)extra)->code = NULL;
}

int codeinfo_init_extra_index(void)
{
    if (engine.extra_index < 0)
        engine.extra_index = (int)PyUnstable_Eval_RequestCodeExtraIndex(free_extra);
    return engine.extra_index;
}

static void codeinfo_free(codeinfo *ci)
{
    PyMem_RawFree(ci->unit_flags);
    PyMem_RawFree(ci->block_of);
    PyMem_RawFree(ci->blocks);
    PyMem_RawFree(ci->site_hits);
    PyMem_RawFree(ci->site_hits_alt);
    PyMem_RawFree(ci->insn_cycles);
    PyMem_RawFree(ci->insn_hits);
    PyMem_RawFree(ci->unit_line);
    PyMem_RawFree(ci->next_unit);
    PyMem_RawFree(ci->jump_unit);
    PyMem_RawFree(ci->opcodes);
    PyMem_RawFree(ci->site_hits_base);
    PyMem_RawFree(ci->site_hits_alt_base);
    PyMem_RawFree(ci->insn_hits_base);
    PyMem_RawFree(ci->insn_cycles_base);
    PyMem_RawFree(ci);
}

static void *copy_of(const void *from, size_t bytes)
{
    if (!from)
        return NULL;
    void *to = PyMem_RawMalloc(bytes ? bytes : 1);
    if (to)
        memcpy(to, from, bytes);
    return to;
}

int codeinfo_registry_snapshot(void)
{
    for (uint32_t i = 0; i < codeinfo_count; i++) {
        codeinfo *ci = codeinfo_registry[i];
        if (!ci || ci->state != CI_TRACED)
            continue;
        size_t n = (size_t)ci->n_units;
        for (int32_t b = 0; b < ci->n_blocks; b++) {
            ci->blocks[b].hits_base = ci->blocks[b].hits;
            ci->blocks[b].cycles_base = ci->blocks[b].cycles;
        }
        ci->unplaced_base = ci->unplaced_self;
        ci->tainted_base = ci->tainted_self;
        PyMem_RawFree(ci->site_hits_base);
        PyMem_RawFree(ci->site_hits_alt_base);
        PyMem_RawFree(ci->insn_hits_base);
        PyMem_RawFree(ci->insn_cycles_base);
        ci->site_hits_base = copy_of(ci->site_hits, n * sizeof(uint64_t));
        ci->site_hits_alt_base = copy_of(ci->site_hits_alt, n * sizeof(uint64_t));
        ci->insn_hits_base = copy_of(ci->insn_hits, n * sizeof(uint64_t));
        ci->insn_cycles_base = copy_of(ci->insn_cycles, n * sizeof(int64_t));
        if ((ci->site_hits && !ci->site_hits_base) || (ci->site_hits_alt && !ci->site_hits_alt_base) ||
            (ci->insn_hits && !ci->insn_hits_base) || (ci->insn_cycles && !ci->insn_cycles_base)) {
            engine_fail("out of memory keeping the warm-up's counters");
            return -1;
        }
    }
    codeinfo_bases_taken = 1;
    return 0;
}

void codeinfo_registry_clear(void)
{
    for (uint32_t i = 0; i < codeinfo_count; i++) {
        codeinfo *ci = codeinfo_registry[i];
        if (!ci)
            continue; /* retired */
        PyObject *code = ci->code;
        if (code) {
            /* SetExtra hands the value it replaces to free_extra first. */
            PyUnstable_Code_SetExtra(code, engine.extra_index, NULL);
            Py_DECREF(code);
        }
        codeinfo_free(ci);
    }
    PyMem_RawFree(codeinfo_registry);
    codeinfo_registry = NULL;
    codeinfo_count = registry_capacity = 0;
    codeinfo_built = codeinfo_retired_hits = 0;
    codeinfo_bases_taken = 0;
}

uint64_t codeinfo_site_hits(const codeinfo *ci)
{
    uint64_t total = 0;
    for (int32_t unit = 0; unit < ci->n_units; unit++) {
        if (ci->site_hits)
            total += ci->site_hits[unit];
        if (ci->site_hits_alt)
            total += ci->site_hits_alt[unit];
        if (ci->insn_hits)
            total += ci->insn_hits[unit];
    }
    return total;
}

void codeinfo_retire(codeinfo *ci)
{
    PyObject *code = ci->code;
    if (!ci->is_calibration)
        codeinfo_retired_hits += codeinfo_site_hits(ci);
    codeinfo_registry[ci->id] = NULL;
    if (code) {
        /* SetExtra hands the value it replaces to free_extra first; after
         * the detach, the dying code object's co_extra holds nothing of ours,
         * and a new code object at its address starts with no data */
        PyUnstable_Code_SetExtra(code, engine.extra_index, NULL);
        ci->code = NULL;
        Py_DECREF(code);
    }
    codeinfo_free(ci);
}

int64_t codeinfo_self_cycles(const codeinfo *ci)
{
    int64_t total = ci->unplaced_self;
    if (ci->insn_cycles)
        for (int32_t unit = 0; unit < ci->n_units; unit++)
            total += ci->insn_cycles[unit];
    else
        for (int32_t b = 0; b < ci->n_blocks; b++)
            total += ci->blocks[b].cycles;
    return total;
}

void codeinfo_registry_zero(void)
{
    for (uint32_t i = 0; i < codeinfo_count; i++) {
        codeinfo *ci = codeinfo_registry[i];
        if (!ci)
            continue;
        ci->unplaced_self = 0;
        ci->edge_thread = NULL;
        for (int32_t b = 0; b < ci->n_blocks; b++)
            ci->blocks[b].hits = 0, ci->blocks[b].cycles = 0;
        if (ci->site_hits)
            memset(ci->site_hits, 0, sizeof(uint64_t) * (size_t)ci->n_units);
        if (ci->site_hits_alt)
            memset(ci->site_hits_alt, 0, sizeof(uint64_t) * (size_t)ci->n_units);
        if (ci->insn_cycles) {
            memset(ci->insn_cycles, 0, sizeof(int64_t) * (size_t)ci->n_units);
            memset(ci->insn_hits, 0, sizeof(uint64_t) * (size_t)ci->n_units);
        }
    }
}

/* Recorded events of local kinds: every site's hits (calibration excluded). */
uint64_t codeinfo_registry_site_hits(void)
{
    uint64_t total = codeinfo_retired_hits;
    for (uint32_t i = 0; i < codeinfo_count; i++) {
        const codeinfo *ci = codeinfo_registry[i];
        if (!ci || ci->is_calibration)
            continue;
        for (int32_t unit = 0; unit < ci->n_units; unit++) {
            if (ci->site_hits)
                total += ci->site_hits[unit];
            if (ci->site_hits_alt)
                total += ci->site_hits_alt[unit];
            if (ci->insn_hits)
                total += ci->insn_hits[unit];
        }
    }
    return total;
}

/* Give ci an id: the retired one of its key when that is free (retired.c),
 * else a new one. */
static int registry_add(codeinfo *ci, PyCodeObject *co)
{
    uint32_t reused = ci->state == CI_TRACED && !ci->is_calibration ? retired_take(co) : RETIRED_NONE;
    if (reused != RETIRED_NONE) {
        ci->id = reused;
        codeinfo_registry[reused] = ci;
        codeinfo_built++;
        return 0;
    }
    if (codeinfo_count == registry_capacity) {
        uint32_t capacity = registry_capacity ? registry_capacity * 2 : 256;
        codeinfo **grown = PyMem_RawRealloc(codeinfo_registry, capacity * sizeof(codeinfo *));
        if (!grown)
            return -1;
        codeinfo_registry = grown;
        registry_capacity = capacity;
    }
    ci->id = codeinfo_count;
    codeinfo_registry[codeinfo_count++] = ci;
    codeinfo_built++;
    return 0;
}

/* co_exceptiontable: entries of four varints (start, length, target,
 * depth<<1|lasti) in code units; 6 value bits per byte, 0x40 = more follows,
 * 0x80 marks the first byte of an entry. */
static const uint8_t *read_varint(const uint8_t *p, const uint8_t *end, uint32_t *value)
{
    if (p >= end)
        return NULL;
    uint32_t result = *p & 63;
    while (*p & 64) {
        if (++p >= end)
            return NULL;
        result = (result << 6) | (*p & 63);
    }
    *value = result;
    return p + 1;
}

static void mark_handlers(codeinfo *ci, PyObject *table)
{
    const uint8_t *p = (const uint8_t *)PyBytes_AS_STRING(table);
    const uint8_t *end = p + PyBytes_GET_SIZE(table);
    while (p && p < end) {
        uint32_t start, length, target, depth;
        if (!(p = read_varint(p, end, &start)) || !(p = read_varint(p, end, &length)) ||
            !(p = read_varint(p, end, &target)) || !(p = read_varint(p, end, &depth)))
            break;
        if (target < (uint32_t)ci->n_units)
            ci->unit_flags[target] |= UNIT_LEADER | UNIT_HANDLER;
    }
}

static inline void mark_leader(codeinfo *ci, int32_t unit)
{
    if (unit >= 0 && unit < ci->n_units)
        ci->unit_flags[unit] |= UNIT_LEADER;
}

/* Decode the (de-specialised, de-instrumented) bytecode: instruction starts,
 * jump targets, and the leaders of basic blocks. */
static void decode(codeinfo *ci, const uint8_t *bytecode)
{
    uint32_t extended = 0;
    /* cache entries have no jump: the second pass below reads every unit */
    for (int32_t unit = 0; unit < ci->n_units; unit++)
        ci->jump_unit[unit] = -1;
    for (int32_t unit = 0; unit < ci->n_units;) {
        uint8_t op = bytecode[2 * unit];
        uint32_t arg = extended | bytecode[2 * unit + 1];
        uint16_t flags = opcode_flags[op];
        int32_t next = unit + 1 + opcode_caches[op];
        ci->unit_flags[unit] |= UNIT_INSTR;
        ci->opcodes[unit] = op;
        ci->jump_unit[unit] = -1;
        for (int32_t cache = unit + 1; cache < next && cache < ci->n_units; cache++)
            ci->opcodes[cache] = 0;
        extended = (flags & OPF_EXTENDED_ARG) ? arg << 8 : 0;
        if (flags & OPF_JUMP_FORWARD)
            ci->jump_unit[unit] = next + (int32_t)arg;
        else if (flags & OPF_JUMP_BACKWARD)
            ci->jump_unit[unit] = next - (int32_t)arg;
        if (ci->jump_unit[unit] >= 0) {
            mark_leader(ci, ci->jump_unit[unit]);
            mark_leader(ci, next);
        }
        if (flags & OPF_TERMINATOR)
            mark_leader(ci, next);
        if (flags & OPF_RESUME)
            mark_leader(ci, unit);
        unit = next;
    }
    /* An exhausted FOR_ITER reports a destination past the END_FOR its
     * target names (3.12: END_FOR; 3.13: END_FOR, POP_TOP); the first case is
     * static, any other lands in codeinfo_split. */
    for (int32_t unit = 0; unit < ci->n_units; unit++) {
        int32_t target = ci->jump_unit[unit];
        if (target >= 0 && target < ci->n_units && (opcode_flags[ci->opcodes[target]] & OPF_END_FOR))
            mark_leader(ci, target + 1 + opcode_caches[ci->opcodes[target]]);
    }
    ci->unit_flags[0] |= UNIT_LEADER;
}

/* (Re)compute the blocks from the leader flags, carrying counters over from
 * the previous blocks: a block that is split keeps its hits in both halves
 * (every recorded pass ran through both) and shares its cycles by size. */
static int build_blocks(codeinfo *ci)
{
    int32_t n_blocks = 0;
    for (int32_t unit = 0; unit < ci->n_units; unit++)
        n_blocks += (ci->unit_flags[unit] & UNIT_LEADER) != 0;
    block_info *blocks = PyMem_RawCalloc((size_t)n_blocks, sizeof(block_info));
    uint32_t *block_of = PyMem_RawMalloc(sizeof(uint32_t) * (size_t)ci->n_units);
    int32_t *last_instr = PyMem_RawMalloc(sizeof(int32_t) * (size_t)n_blocks);
    if (!blocks || !block_of || !last_instr) {
        PyMem_RawFree(blocks);
        PyMem_RawFree(block_of);
        PyMem_RawFree(last_instr);
        return -1;
    }
    int32_t block = -1;
    for (int32_t unit = 0; unit < ci->n_units; unit++) {
        if (ci->unit_flags[unit] & UNIT_LEADER) {
            blocks[++block].start = (uint32_t)unit;
            last_instr[block] = unit;
        }
        block_of[unit] = (uint32_t)block;
        if (ci->unit_flags[unit] & UNIT_INSTR) {
            blocks[block].n_instr++;
            last_instr[block] = unit;
        }
    }
    for (block = 0; block < n_blocks; block++) {
        block_info *info = &blocks[block];
        int32_t last = last_instr[block];
        uint16_t flags = opcode_flags[ci->opcodes[last]];
        int32_t target = ci->jump_unit[last];
        info->silent_target = -1;
        if ((flags & OPF_SILENT) && target >= 0 && target < ci->n_units) {
            info->flags |= (flags & OPF_CONDITIONAL) ? BLOCK_SILENT_COND : BLOCK_SILENT_JUMP;
            info->silent_target = (int32_t)block_of[target];
        }
        else if (flags & (OPF_JUMP_FORWARD | OPF_JUMP_BACKWARD | OPF_TERMINATOR))
            info->flags |= BLOCK_ENDS_EDGE;
        if (ci->unit_flags[info->start] & UNIT_HANDLER)
            info->flags |= BLOCK_ENTERED_BY_EXCEPTION;
        info->first_line = ci->unit_line[info->start];
        if (ci->blocks) {
            block_info *old = &ci->blocks[ci->block_of[info->start]];
            info->hits = old->hits;
            info->cycles = old->n_instr ? old->cycles * info->n_instr / old->n_instr : 0;
            info->hits_base = old->hits_base;
            info->cycles_base = old->n_instr ? old->cycles_base * info->n_instr / old->n_instr : 0;
        }
    }
    PyMem_RawFree(last_instr);
    PyMem_RawFree(ci->blocks);
    PyMem_RawFree(ci->block_of);
    ci->blocks = blocks;
    ci->block_of = block_of;
    ci->n_blocks = n_blocks;
    return 0;
}

int codeinfo_split(codeinfo *ci, int32_t unit)
{
    ci->unit_flags[unit] |= UNIT_LEADER;
    if (build_blocks(ci) < 0) {
        engine_fail("out of memory while splitting a basic block");
        return -1;
    }
    return 0;
}

int codeinfo_enable_insns(codeinfo *ci)
{
    if (ci->insn_cycles)
        return 0;
    size_t n = (size_t)ci->n_units + 1;
    ci->insn_cycles = PyMem_RawCalloc(n, sizeof(int64_t));
    ci->insn_hits = PyMem_RawCalloc(n, sizeof(uint64_t));
    ci->next_unit = PyMem_RawMalloc(n * sizeof(int32_t));
    if (!ci->insn_cycles || !ci->insn_hits || !ci->next_unit)
        return -1;
    for (int32_t unit = 0; unit < ci->n_units; unit++)
        ci->next_unit[unit] = unit + 1 + opcode_caches[ci->opcodes[unit]];
    return 0;
}

const char *utf8_or_empty(PyObject *text)
{
    const char *utf8 = text && PyUnicode_Check(text) ? PyUnicode_AsUTF8(text) : NULL;
    if (!utf8)
        PyErr_Clear();
    return utf8 ? utf8 : "";
}

/* The module a code object belongs to: __name__ of the globals of the frame
 * delivering the event (for every event we register, that frame runs this
 * code object). */
static const char *current_module_name(void)
{
    PyObject *globals = PyEval_GetGlobals();
    PyObject *name = globals ? PyDict_GetItemString(globals, "__name__") : NULL;
    return utf8_or_empty(name);
}

/* Line numbers of every code unit, from co_lines() (one pass; the C API's
 * PyCode_Addr2Line rescans the table from the start on every call). */
static int fill_lines(codeinfo *ci)
{
    for (int32_t unit = 0; unit < ci->n_units; unit++)
        ci->unit_line[unit] = -1;
    PyObject *ranges = PyObject_CallMethod(ci->code, "co_lines", NULL);
    if (!ranges)
        return -1;
    PyObject *iterator = PyObject_GetIter(ranges);
    Py_DECREF(ranges);
    if (!iterator)
        return -1;
    PyObject *item;
    while ((item = PyIter_Next(iterator))) {
        long start, end, line = -1;
        PyObject *line_obj = PyTuple_Check(item) && PyTuple_GET_SIZE(item) == 3
                                 ? PyTuple_GET_ITEM(item, 2) : NULL;
        if (!line_obj) {
            Py_DECREF(item);
            continue;
        }
        start = PyLong_AsLong(PyTuple_GET_ITEM(item, 0));
        end = PyLong_AsLong(PyTuple_GET_ITEM(item, 1));
        if (line_obj != Py_None)
            line = PyLong_AsLong(line_obj);
        Py_DECREF(item);
        if (PyErr_Occurred())
            break;
        for (long unit = start / 2; unit < end / 2 && unit < ci->n_units; unit++)
            ci->unit_line[unit] = (int32_t)line;
    }
    Py_DECREF(iterator);
    return PyErr_Occurred() ? -1 : 0;
}

static int fill_tables(codeinfo *ci)
{
    PyObject *bytecode = PyCode_GetCode((PyCodeObject *)ci->code);
    if (!bytecode)
        return -1;
    size_t n = (size_t)PyBytes_GET_SIZE(bytecode) / 2;
    ci->n_units = (int32_t)n;
    ci->unit_flags = PyMem_RawCalloc(n ? n : 1, 1);
    ci->opcodes = PyMem_RawCalloc(n ? n : 1, 1);
    ci->jump_unit = PyMem_RawMalloc((n ? n : 1) * sizeof(int32_t));
    ci->unit_line = PyMem_RawMalloc((n ? n : 1) * sizeof(int32_t));
    ci->site_hits = PyMem_RawCalloc(n ? n : 1, sizeof(uint64_t));
#if PY_VERSION_HEX >= 0x030E0000
    ci->site_hits_alt = PyMem_RawCalloc(n ? n : 1, sizeof(uint64_t));
    if (!ci->site_hits_alt) {
        Py_DECREF(bytecode);
        return -1;
    }
#endif
    if (!ci->unit_flags || !ci->opcodes || !ci->jump_unit || !ci->unit_line || !ci->site_hits) {
        Py_DECREF(bytecode);
        return -1;
    }
    decode(ci, (const uint8_t *)PyBytes_AS_STRING(bytecode));
    Py_DECREF(bytecode);
    mark_handlers(ci, ((PyCodeObject *)ci->code)->co_exceptiontable);
    if (fill_lines(ci) < 0 || build_blocks(ci) < 0)
        return -1;
    if (engine.mode == MODE_PRECISE && codeinfo_enable_insns(ci) < 0)
        return -1;
    return 0;
}

static int in_tuple(PyObject *tuple, PyObject *item)
{
    if (!tuple)
        return 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(tuple); i++)
        if (PyTuple_GET_ITEM(tuple, i) == item)
            return 1;
    return 0;
}

int codeinfo_is_ocular(PyObject *code)
{
    const char *filename = utf8_or_empty(((PyCodeObject *)code)->co_filename);
    const char *own_dir = engine.filters.own_dir;
    return (own_dir && strncmp(filename, own_dir, strlen(own_dir)) == 0) ||
           in_tuple(engine.calibration, code) || in_tuple(engine.twins, code);
}

static codeinfo *build(PyObject *code)
{
    PyCodeObject *co = (PyCodeObject *)code;
    codeinfo *ci = PyMem_RawCalloc(1, sizeof(codeinfo));
    if (!ci)
        return NULL;
    ci->code = Py_NewRef(code);
    /* Calibration kernels are traced like any code (that is what they time)
     * but never reported; their twins run untraced, as the reference. */
    ci->is_calibration = in_tuple(engine.calibration, code);
    ci->limit = ci->is_calibration || engine.threshold == 0 ? UINT64_MAX : engine.threshold;
    if (in_tuple(engine.twins, code))
        ci->state = CI_EXCLUDED;
    else if (!ci->is_calibration &&
             !filter_wants(&engine.filters, utf8_or_empty(co->co_filename), current_module_name(),
                           utf8_or_empty(co->co_qualname)))
        ci->state = CI_EXCLUDED;
    else if (fill_tables(ci) < 0) {
        Py_DECREF(ci->code);
        codeinfo_free(ci);
        return NULL;
    }
    if (registry_add(ci, co) < 0 || PyUnstable_Code_SetExtra(code, engine.extra_index, ci) < 0) {
        if (ci->id < codeinfo_count && codeinfo_registry[ci->id] == ci) {
            codeinfo_registry[ci->id] = NULL;
            if (retired_key(ci->id))
                retired_put_back(ci->id); /* a taken-over id: free again */
            else if (ci->id == codeinfo_count - 1)
                codeinfo_count--;
        }
        Py_DECREF(ci->code);
        codeinfo_free(ci);
        return NULL;
    }
    if (ci->state == CI_TRACED && engine.exporting && !ci->is_calibration)
        trace_define_code(ci->id, utf8_or_empty(co->co_qualname), utf8_or_empty(co->co_filename),
                            co->co_firstlineno);
    return ci;
}

codeinfo *codeinfo_build(PyObject *code)
{
    if (!PyCode_Check(code))
        return NULL;
    /* Exception events run us with their exception stashed, other events with
     * none; either way nothing we do here may leak an exception to the program. */
    PyObject *in_flight = PyErr_GetRaisedException();
    codeinfo *ci = build(code);
    if (!ci) {
        PyErr_Clear();
        engine_fail("could not build per-code data (out of memory?)");
    }
    PyErr_SetRaisedException(in_flight);
    return ci;
}
