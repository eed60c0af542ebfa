/* collect.c - the run's raw results, handed to the Python layer at stop.
 *
 * C collects, Python shapes: this file walks the per-code and per-thread
 * tables once and returns plain tuples; _profile.py builds the records.
 * Times leave here in whole ticks. Each leaf figure (a block in adaptive
 * mode, an instruction in precise mode, a thread's function total) is
 * rounded once, and everything derived from leaves (lines, a block's
 * instructions, per-function sums) is computed from the rounded leaves, so
 * that the sums the Python layer checks add up exactly. */
#include <math.h>
#include <string.h>
#include "collect.h"
#include "retired.h"
#include "monitor.h"
#include "calltree.h"
#include "codeinfo.h"
#include "engine.h"
#include "tstate.h"

/* Every figure is multiplied by this (1: what was observed). At threshold > 0
 * with sampling windows, the estimate of the whole run is the warm-up's
 * figures (traced whole: the base) plus what the windows saw after it times
 * the scale (the program's time after the warm-up over its time in the
 * windows), before it is rounded: the estimate's sums hold as exactly as the
 * observation's. */
static double scale = 1.0;

/* Subticks to ticks, rounding half up (floor division: C's / truncates). */
static int64_t ticks_of(int64_t sub)
{
    int64_t shifted = sub + SUB_ONE / 2;
    return shifted >= 0 ? shifted / SUB_ONE : -((-shifted + SUB_ONE - 1) / SUB_ONE);
}

/* A time in subticks with its base, as estimated, in ticks: rounded once
 * (half up), from the exact product (rounding it to a subtick first could
 * carry 0.47 of a tick up to a whole one). */
static int64_t ticks_at(int64_t sub, int64_t base)
{
    if (scale != 1.0)
        return (int64_t)floor(((double)base + (double)(sub - base) * scale) / SUB_ONE + 0.5);
    return ticks_of(sub);
}

static uint64_t count_at(uint64_t count, uint64_t base)
{
    if (scale == 1.0 || count < base)
        return count;
    return base + (uint64_t)llround((double)(count - base) * scale);
}

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static int append(PyObject *list, PyObject *item)
{
    if (!item)
        return -1;
    int failed = PyList_Append(list, item);
    Py_DECREF(item);
    return failed;
}

/* Per-line sums of one code object; lines are dense from its first line. */
typedef struct {
    int32_t first;
    int32_t count;
    uint64_t *hits;
    int64_t *cycles;
    uint8_t *shared;     /* got a share of a block that spans several lines */
    uint8_t *seen;
} line_sums;

static int lines_init(line_sums *sums, const codeinfo *ci)
{
    int32_t lo = INT32_MAX, hi = -1;
    for (int32_t unit = 0; unit < ci->n_units; unit++) {
        int32_t line = ci->unit_line[unit];
        if (line > 0) {
            lo = line < lo ? line : lo;
            hi = line > hi ? line : hi;
        }
    }
    sums->first = lo;
    sums->count = hi >= lo ? hi - lo + 1 : 0;
    size_t n = sums->count ? (size_t)sums->count : 1;
    sums->hits = PyMem_RawCalloc(n, sizeof(uint64_t));
    sums->cycles = PyMem_RawCalloc(n, sizeof(int64_t));
    sums->shared = PyMem_RawCalloc(n, 1);
    sums->seen = PyMem_RawCalloc(n, 1);
    return sums->hits && sums->cycles && sums->shared && sums->seen ? 0 : -1;
}

static void lines_free(line_sums *sums)
{
    PyMem_RawFree(sums->hits);
    PyMem_RawFree(sums->cycles);
    PyMem_RawFree(sums->shared);
    PyMem_RawFree(sums->seen);
}

static void lines_add(line_sums *sums, int32_t line, uint64_t hits, int64_t cycles, int shared)
{
    if (line <= 0 || !sums->count)
        return; /* no line (compiler-generated code), or a module's line 0 */
    int32_t i = line - sums->first;
    if (sums->hits[i] < hits)
        sums->hits[i] = hits;
    sums->cycles[i] += cycles;
    sums->shared[i] |= (uint8_t)shared;
    sums->seen[i] = 1;
}

/* The hits of an instruction in precise mode. RESUME has no INSTRUCTION
 * event: its hits are the PY_START/PY_RESUME site's. */
static uint64_t insn_hits_of(const codeinfo *ci, int32_t unit)
{
    if (opcode_flags[ci->opcodes[unit]] & OPF_RESUME)
        return count_at(ci->site_hits[unit], ci->site_hits_base ? ci->site_hits_base[unit] : 0);
    return count_at(ci->insn_hits[unit], ci->insn_hits_base ? ci->insn_hits_base[unit] : 0);
}

static int64_t insn_cycles_of(const codeinfo *ci, int32_t unit)
{
    return ticks_at(ci->insn_cycles[unit], ci->insn_cycles_base ? ci->insn_cycles_base[unit] : 0);
}

/* (code, code_id, blocks, lines, instructions, sites, unplaced, tainted)
 *   blocks:       [(start_offset, end_offset, n_instr, first_line, last_line, hits, cycles)]
 *   lines:        [(line, hits, cycles, shared)]
 *   instructions: [(offset, opcode, line, hits, cycles)]
 *   sites:        [(offset, opcode, hits, kind)]  kind 0: the instruction's event,
 *                 1: 3.14's BRANCH_RIGHT, 2: INSTRUCTION
 * unplaced and tainted are in ticks, for reference: the Python layer takes a
 * function's unattributed time as its total minus its blocks. */
static PyObject *collect_code(const codeinfo *ci)
{
    int precise = ci->insn_cycles != NULL;
    PyObject *blocks = PyList_New(0), *lines = PyList_New(0), *insns = PyList_New(0),
             *sites = PyList_New(0);
    line_sums sums = {0};
    if (!blocks || !lines || !insns || !sites || lines_init(&sums, ci) < 0)
        goto error;
    for (int32_t b = 0; b < ci->n_blocks; b++) {
        const block_info *info = &ci->blocks[b];
        int32_t end = b + 1 < ci->n_blocks ? (int32_t)ci->blocks[b + 1].start : ci->n_units;
        int32_t last_instr = (int32_t)info->start, lo = INT32_MAX, hi = -1;
        uint64_t hits = precise ? 0 : count_at(info->hits, info->hits_base);
        int64_t cycles = 0;
        for (int32_t unit = (int32_t)info->start; unit < end; unit++) {
            if (!(ci->unit_flags[unit] & UNIT_INSTR))
                continue;
            last_instr = unit;
            int32_t line = ci->unit_line[unit];
            if (line > 0) {
                lo = line < lo ? line : lo;
                hi = line > hi ? line : hi;
            }
            if (precise) {
                uint64_t h = insn_hits_of(ci, unit);
                if (h > hits)
                    hits = h;
                cycles += insn_cycles_of(ci, unit);
            }
        }
        if (!precise)
            cycles = ticks_at(info->cycles, info->cycles_base);
        if (!hits && !cycles)
            continue;
        int shared = !precise && hi > lo;
        int64_t share = info->n_instr ? floor_div(cycles, info->n_instr) : 0;
        uint32_t index = 0;
        for (int32_t unit = (int32_t)info->start; unit < end; unit++) {
            if (!(ci->unit_flags[unit] & UNIT_INSTR))
                continue;
            uint64_t h = hits;
            int64_t c;
            if (precise) {
                h = insn_hits_of(ci, unit);
                c = insn_cycles_of(ci, unit);
            }
            else
                c = ++index == info->n_instr ? cycles - share * (int64_t)(info->n_instr - 1) : share;
            lines_add(&sums, ci->unit_line[unit], h, c, shared);
            if ((h || c) &&
                append(insns, Py_BuildValue("(iiiKL)", unit * 2, ci->opcodes[unit], ci->unit_line[unit],
                                            (unsigned long long)h, (long long)c)) < 0)
                goto error;
        }
        if (append(blocks, Py_BuildValue("(iiIiiKL)", (int)info->start * 2, last_instr * 2, info->n_instr,
                                         hi >= 0 ? lo : -1, hi, (unsigned long long)hits,
                                         (long long)cycles)) < 0)
            goto error;
    }
    for (int32_t i = 0; i < sums.count; i++)
        if (sums.seen[i] &&
            append(lines, Py_BuildValue("(iKLi)", sums.first + i, (unsigned long long)sums.hits[i],
                                        (long long)sums.cycles[i], sums.shared[i])) < 0)
            goto error;
    for (int32_t unit = 0; unit < ci->n_units; unit++) {
        const uint64_t *tables[3] = {ci->site_hits, ci->site_hits_alt, ci->insn_hits};
        const uint64_t *bases[3] = {ci->site_hits_base, ci->site_hits_alt_base, ci->insn_hits_base};
        for (int kind = 0; kind < 3; kind++)
            if (tables[kind] && tables[kind][unit] &&
                append(sites, Py_BuildValue("(iiKi)", unit * 2, ci->opcodes[unit],
                                            (unsigned long long)count_at(tables[kind][unit],
                                                                         bases[kind] ? bases[kind][unit] : 0),
                                            kind)) < 0)
                goto error;
    }
    lines_free(&sums);
    return Py_BuildValue("(OINNNNLL)", ci->code, ci->id, blocks, lines, insns, sites,
                         (long long)ticks_at(ci->unplaced_self, ci->unplaced_base),
                         (long long)ticks_at(ci->tainted_self, ci->tainted_base));
error:
    lines_free(&sums);
    Py_XDECREF(blocks);
    Py_XDECREF(lines);
    Py_XDECREF(insns);
    Py_XDECREF(sites);
    return NULL;
}

static int reported(uint32_t id)
{
    if (id >= codeinfo_count)
        return 0;
    const codeinfo *ci = codeinfo_registry[id];
    if (!ci)
        return retired_key(id) != NULL; /* died during the run (retired.c) */
    return ci->state == CI_TRACED && !ci->is_calibration && ci->code;
}

static int reported(uint32_t id);

/* The thread's time in calibration kernels (Ocular's own), in subticks. */
static int64_t calibration_sub_of(const thread_data *td)
{
    int64_t total = 0;
    for (uint32_t id = 0; id < td->calls.n_funcs; id++)
        if (!reported(id))
            total += td->calls.funcs[id].self;
    return total;
}

/* (native_id, covered, outside, removed, own, lost, functions, edges)
 *   functions: [(code_id, calls, self, inclusive, windows)]
 *   edges:     [(caller_id or -1, callee_id, calls, self, inclusive)]
 * removed is what is left of `covered` once everything else is counted: the
 * rounding of the other figures is absorbed there, so the thread's account
 * adds up exactly in ticks as it does in subticks. */
static PyObject *collect_thread(const thread_data *td)
{
    PyObject *funcs = PyList_New(0), *edges = PyList_New(0);
    if (!funcs || !edges)
        goto error;
    int64_t own = ticks_of(td->own), outside = ticks_at(td->outside, td->outside_base);
    int64_t lost = ticks_at(td->lost, td->lost_base);
    int64_t attributed = 0, calibration = 0;
    /* A function's self time is the sum of its edges' (each rounded once),
     * so that a caller/callee breakdown adds up to it exactly. */
    int64_t *edge_self = PyMem_RawCalloc(td->calls.n_funcs ? td->calls.n_funcs : 1, sizeof(int64_t));
    uint8_t *has_edge = PyMem_RawCalloc(td->calls.n_funcs ? td->calls.n_funcs : 1, 1);
    if (!edge_self || !has_edge) {
        PyMem_RawFree(edge_self);
        PyMem_RawFree(has_edge);
        goto error;
    }
    /* has_edge: bit 1, the callee of an edge (its self is the edges' sum);
     * bit 2, an end of a reported edge. Such a function is listed even with
     * nothing counted (a frame found on the stack at start whose thread's
     * clock never passed in it): every edge's ends are in the list. */
    for (uint32_t i = 0; i < td->calls.n_edges; i++) {
        const edge_stat *edge = &td->calls.edges[i];
        if (edge->callee < td->calls.n_funcs) {
            edge_self[edge->callee] += ticks_at(edge->self, edge->self_base);
            has_edge[edge->callee] |= 1;
        }
        if (!reported(edge->callee) || (edge->caller != CALLER_ROOT && !reported(edge->caller)))
            continue;
        has_edge[edge->callee] |= 2;
        if (edge->caller != CALLER_ROOT && edge->caller < td->calls.n_funcs)
            has_edge[edge->caller] |= 2;
    }
    for (uint32_t id = 0; id < td->calls.n_funcs; id++) {
        const func_stat *fs = &td->calls.funcs[id];
        if (!fs->calls && !fs->self && !fs->inclusive && !(has_edge[id] & 2))
            continue;
        int64_t self = (has_edge[id] & 1) ? edge_self[id] : ticks_at(fs->self, fs->self_base);
        if (!reported(id)) {
            calibration += ticks_of(fs->self); /* Ocular's own: never scaled */
            continue;
        }
        attributed += self;
        if (append(funcs, Py_BuildValue("(IKLLI)", id, (unsigned long long)count_at(fs->calls, fs->calls_base),
                                        (long long)self, (long long)ticks_at(fs->inclusive, fs->inclusive_base),
                                        fs->windows)) < 0) {
            PyMem_RawFree(edge_self);
            PyMem_RawFree(has_edge);
            goto error;
        }
    }
    PyMem_RawFree(edge_self);
    PyMem_RawFree(has_edge);
    for (uint32_t i = 0; i < td->calls.n_edges; i++) {
        const edge_stat *edge = &td->calls.edges[i];
        if (!reported(edge->callee) || (edge->caller != CALLER_ROOT && !reported(edge->caller)))
            continue;
        long caller = edge->caller == CALLER_ROOT ? -1 : (long)edge->caller;
        if (append(edges, Py_BuildValue("(lIKLL)", caller, edge->callee,
                                        (unsigned long long)count_at(edge->calls, edge->calls_base),
                                        (long long)ticks_at(edge->self, edge->self_base),
                                        (long long)ticks_at(edge->inclusive, edge->inclusive_base))) < 0)
            goto error;
    }
    int64_t covered, removed;
    if (scale == 1.0) {
        own += calibration;
        covered = ticks_of((int64_t)td->covered);
        removed = covered - attributed - outside - own - lost;
    }
    else {
        /* An estimate: the program's time is scaled, Ocular's overhead and
         * own time are what they were (they happened where Ocular traced). */
        own += ticks_of(calibration_sub_of(td));
        removed = ticks_of(td->removed);
        covered = attributed + outside + own + lost + removed;
    }
    return Py_BuildValue("(KLLLLLNN)", (unsigned long long)td->native_tid, (long long)covered,
                         (long long)outside, (long long)removed, (long long)own, (long long)lost,
                         funcs, edges);
error:
    Py_XDECREF(funcs);
    Py_XDECREF(edges);
    return NULL;
}

PyObject *collect_results(double factor)
{
    scale = factor > 0 ? factor : 1.0;
    PyObject *codes = PyList_New(0), *threads = PyList_New(0);
    if (!codes || !threads)
        goto error;
    for (uint32_t i = 0; i < codeinfo_count; i++)
        if (codeinfo_registry[i] && reported(i) && append(codes, collect_code(codeinfo_registry[i])) < 0)
            goto error;
    for (const thread_data *td = all_threads; td; td = td->next)
        if (td->covered && append(threads, collect_thread(td)) < 0)
            goto error;
    PyObject *retired = retired_dict();
    if (!retired)
        goto error;
    scale = 1.0;
    return Py_BuildValue("{s:N,s:N,s:N}", "codes", codes, "threads", threads, "retired", retired);
error:
    scale = 1.0;
    Py_XDECREF(codes);
    Py_XDECREF(threads);
    return NULL;
}

/* The account of every thread in subticks, from its separately kept parts:
 * [(native_id, covered - (functions + outside + removed + own + lost))].
 * Zero for every thread, or something was counted twice or not at all. */
PyObject *collect_balance(void)
{
    PyObject *result = PyList_New(0);
    if (!result)
        return NULL;
    for (const thread_data *td = all_threads; td; td = td->next) {
        int64_t functions = 0;
        for (uint32_t id = 0; id < td->calls.n_funcs; id++)
            functions += td->calls.funcs[id].self;
        int64_t rest = (int64_t)td->covered - functions - td->outside - td->removed - td->own - td->lost;
        if (append(result, Py_BuildValue("(KL)", (unsigned long long)td->native_tid, (long long)rest)) < 0) {
            Py_DECREF(result);
            return NULL;
        }
    }
    return result;
}

/* retire_dead() -> [(key, code_bytes, raw code tuple, base code tuple)]: the
 * results of every traced code object that only Ocular still holds (the
 * program dropped it: exec'd code, lambdas, templates), then its data is
 * released. key is (filename, qualname, firstlineno); the tuples are
 * collect_code's, as observed and, for a sampled run's estimate, the part
 * observed in the warm-up (all of it for code that died in the warm-up).
 * Called at a safe point (the refresh), never in a callback. */
PyObject *collect_retire_dead(void)
{
    PyObject *result = PyList_New(0);
    if (!result)
        return NULL;
    int retired_any = 0;
    /* a frame on a shadow stack may outlive its code object's last reference
     * for a while (a generator closed unseen): its data stays */
    static uint32_t pass;
    pass++;
    for (const thread_data *td = all_threads; td; td = td->next)
        for (int32_t i = 1; i < td->count; i++)
            if (td->frames[i].ci)
                td->frames[i].ci->pinned = pass;
    for (uint32_t id = 0; id < codeinfo_count; id++) {
        codeinfo *ci = codeinfo_registry[id];
        if (!ci || !ci->code || ci->is_calibration || ci->pinned == pass || Py_REFCNT(ci->code) != 1)
            continue;
        if (ci->state == CI_TRACED) {
            PyCodeObject *co = (PyCodeObject *)ci->code;
            PyObject *key = NULL;
            if (retired_reserve(id) == 0)
                key = retired_key(id) ? Py_NewRef(retired_key(id))
                                      : Py_BuildValue("(OOi)", co->co_filename, co->co_qualname,
                                                      co->co_firstlineno);
            PyObject *bytecode = key ? PyCode_GetCode(co) : NULL;
            PyObject *raw = bytecode ? collect_code(ci) : NULL;
            /* and the warm-up's part, which an estimate does not scale (at
             * scale 0 every figure is its base): all of it before the
             * warm-up's figures were kept */
            PyObject *base = NULL;
            if (raw && codeinfo_bases_taken) {
                scale = 0.0;
                base = collect_code(ci);
                scale = 1.0;
            } else if (raw)
                base = Py_NewRef(raw);
            PyObject *item = base ? Py_BuildValue("(OOOO)", key, bytecode, raw, base) : NULL;
            Py_XDECREF(raw);
            Py_XDECREF(base);
            Py_XDECREF(bytecode);
            if (!item || PyList_Append(result, item) < 0) {
                Py_XDECREF(item);
                Py_XDECREF(key);
                PyErr_Clear();
                break; /* keep the rest for another pass */
            }
            Py_DECREF(item);
            retired_keep(id, key); /* after the hand-over: the id may now be taken over */
            Py_DECREF(key);
        }
        codeinfo_retire(ci);
        retired_any = 1;
    }
    if (retired_any)
        monitor_forget_code(); /* the code cache may name a retired code object */
    return result;
}

/* sampling_scale(run_ticks, warmup_ticks, window_ticks) -> the factor the
 * windows' figures are multiplied by (see `scale`): after the warm-up, the
 * program ran untraced at full speed between windows, and in the windows it
 * also paid Ocular's overhead. So the program's time after the warm-up is its
 * threads' share of it (the share of the windows they were seen in) less the
 * overhead and own time the windows added; the scale is that over the
 * program's time the windows recorded. */
double collect_sampling_scale(double run_ticks, double warmup_ticks, double window_ticks)
{
    double after = run_ticks - warmup_ticks, in_run = 0, in_windows = 0;
    if (window_ticks <= 0 || after <= 0)
        return 1.0;
    for (const thread_data *td = all_threads; td; td = td->next) {
        double covered = (double)(td->covered - td->covered_base) / SUB_ONE;
        double added = (double)(td->removed - td->removed_base + td->own - td->own_base) / SUB_ONE;
        for (uint32_t id = 0; id < td->calls.n_funcs; id++)
            if (!reported(id))
                added += (double)(td->calls.funcs[id].self - td->calls.funcs[id].self_base) / SUB_ONE;
        in_run += covered * after / window_ticks - added;
        in_windows += covered - added;
    }
    if (in_windows <= 0 || in_run <= 0)
        return after / window_ticks;
    return in_run / in_windows;
}
