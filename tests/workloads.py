"""Workloads the tests trace. Kept in their own module so results can be
filtered by filename."""

import asyncio


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def make_adder(k):
    def add(x):
        return x + k

    return add


class Shape:
    def __init__(self, size):
        self.size = size

    def area(self):
        return self.size * self.size

    @staticmethod
    def unit():
        return Shape(1)

    @classmethod
    def of(cls, size):
        return cls(size)


def loops(n):
    total = 0
    for i in range(n):
        if i % 3 == 0:
            total += i
        elif i % 3 == 1:
            total -= 1
        else:
            continue
    j = 0
    while j < n:
        j += 2
        if j > 10 * n:
            break
    return total + j


def mixed(n=200):
    """Recursion, closures, methods and loops (no generators: cProfile counts
    every generator resumption as a call)."""
    add = make_adder(3)
    shapes = [Shape.of(i) for i in range(n // 10)] + [Shape.unit()]
    result = fib(12) + sum(add(i) for i in [1, 2, 3])
    result += sum(s.area() for s in shapes)
    result += loops(n)
    return result


def mixed_no_genexpr(n=200):
    add = make_adder(3)
    shapes = [Shape.of(i) for i in range(n // 10)] + [Shape.unit()]
    result = fib(12) + add(1) + add(2)
    for s in shapes:
        result += s.area()
    result += loops(n)
    return result


def gen(n):
    for i in range(n):
        yield i
    return n


def delegating(n):
    total = yield from gen(n)
    yield total


def raises(n):
    if n % 4 == 0:
        raise KeyError(n)
    return n


def exceptions(n):
    caught = 0
    for i in range(n):
        try:
            raises(i)
        except KeyError:
            caught += 1
        finally:
            caught += 0
    try:
        with open(__file__) as handle:
            handle.read(1)
            raise ValueError("inside with")
    except ValueError:
        caught += 1
    return caught


def deep(n):
    return 0 if n == 0 else 1 + deep(n - 1)


def overflow(n):
    return overflow(n + 1)


async def tick(i):
    await asyncio.sleep(0)
    return i


async def gather(n):
    results = await asyncio.gather(*(tick(i) for i in range(n)))
    async_gen_total = 0
    async for value in agen(n):
        async_gen_total += value
        if value > n // 2:
            break
    return sum(results) + async_gen_total


async def agen(n):
    for i in range(n):
        await asyncio.sleep(0)
        yield i


def generators(n=50):
    total = sum(gen(n)) + sum(delegating(n))
    g = gen(n)
    next(g)
    g.close()  # closed while suspended
    h = gen(n)
    next(h)
    del h  # collected while suspended
    try:
        g2 = gen(n)
        next(g2)
        g2.throw(RuntimeError("thrown in"))
    except RuntimeError:
        total += 1
    total += sum(x * x for x in range(n) if x % 2)
    total += len([x for x in range(n) if x % 3])
    return total


def balanced_workload():
    """Everything that stresses stack balance."""
    total = generators()
    total += exceptions(40)
    total += asyncio.run(gather(20))
    total += deep(800)
    try:
        overflow(0)
    except RecursionError:
        total += 1
    return total


def work(n):
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def one_unit():
    return work(2000)


def four_units():
    return work(8000)


def empty():
    pass


def branchy(n):
    """Blocks for the independent block-hit count: branches, loops, while,
    break/continue, a caught exception, with, comprehensions."""
    out = []
    for i in range(n):
        if i & 1:
            out.append(i)
        elif i % 5 == 0:
            continue
        else:
            out.append(-i)
        while i > 3:
            i //= 2
            if i == 7:
                break
        try:
            if i == 2:
                raise ValueError(i)
        except ValueError:
            out.append(0)
    squares = [x * x for x in out if x > 0]
    return len(out) + sum(squares) + sum(gen(5))


def four_units_inline():
    total = 0
    for i in range(80000):
        total += i * i % 7
    return total


def big_multiply(n=300):
    x = 7**2000
    total = 0
    for _ in range(n):
        total = x * x
    return total.bit_length()


def _long_function_source(statements=180):
    """A function whose code is far past 256 bytes, with jumps that need
    EXTENDED_ARG."""
    lines = ["def long_function(n):", "    total = 0", "    for i in range(n):"]
    for k in range(statements):
        lines.append(f"        if i % {k % 7 + 2} == {k % 3}:")
        lines.append(f"            total += {k}")
    lines.append("    return total")
    return "\n".join(lines) + "\n"


exec(compile(_long_function_source(), __file__, "exec"))


def precise_mix():
    total = loops(40) + fib(8) + sum(gen(6)) + exceptions(9)
    total += sum([x * 2 for x in range(12) if x % 3])
    total += long_function(3)  # noqa: F821 (defined by exec above)
    return total


# Sources compiled under file names of their own (include_only selects them).
SAMPLED_SOURCE = """
def phase_a(n):
    total = 0
    for i in range(n):
        total += i * 7 % 3
    return total

def phase_b(n):
    total = 0
    for i in range(n):
        total ^= i * 5 % 11
    return total

def tiny(x):
    return x

def many_calls(n):
    for i in range(n):
        tiny(i)

def one_long_loop(n):
    total = 0
    for i in range(n):
        if i & 1:
            total += i
    return total
"""

FAR_AND_NEAR_SOURCE = """
def near(n):
    total = 0
    for i in range(n):
        total += i
    return total

def far(n):
{pad}
    total = 0
    for i in range(n):
        total += i
    return total
""".format(pad="\n".join(f"    pad{k} = {k}" for k in range(90)))


def run_for(seconds, function, *args):
    import time  # here: test_annotate counts this module's lines from the top

    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        function(*args)
