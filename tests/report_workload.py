"""The HTML report's workload (its own file, so results can be picked out by
filename). Every function counts its own calls in CALLS, a count kept apart
from Ocular's."""

CALLS = {}


def _count(name):
    CALLS[name] = CALLS.get(name, 0) + 1


def fib(n):
    _count("fib")
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def spin(n):
    total = 0
    for i in range(n):
        total += i
    return total


def ping(n):
    """ping <-> pong: mutual recursion."""
    _count("ping")
    return pong(n - 1) + spin(200) if n > 0 else 0


def pong(n):
    _count("pong")
    return ping(n - 1) + spin(200) if n > 0 else 0


def hot(n):
    _count("hot")
    total = 0
    for i in range(n):
        total = total + i * i
    return total


def leaf(n):
    _count("leaf")
    return hot(n)


def chain(n):
    """chain -> leaf -> hot: one caller each, so the call tree is exact."""
    _count("chain")
    return leaf(n)


def run(n=20000):
    CALLS.clear()
    return chain(n) + fib(12) + ping(30)
