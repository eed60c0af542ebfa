"""A small mixed workload for the Ocular demo: parsing, a numeric kernel,
recursion, a generator pipeline and some object-oriented code."""

import json


def tokenize(text):
    tokens = []
    word = []
    for char in text:
        if char.isalnum():
            word.append(char)
        elif word:
            tokens.append("".join(word))
            word = []
    if word:
        tokens.append("".join(word))
    return tokens


def word_counts(tokens):
    counts = {}
    for token in tokens:
        counts[token] = counts.get(token, 0) + 1
    return counts


def mandelbrot_row(y, width, max_iter=40):
    row = []
    for x in range(width):
        c = complex(-2.0 + 2.5 * x / width, -1.25 + 2.5 * y / width)
        z = 0j
        n = 0
        while abs(z) <= 2 and n < max_iter:
            z = z * z + c
            n += 1
        row.append(n)
    return row


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def squares(limit):
    for i in range(limit):
        if i % 7:
            yield i * i


class Account:
    def __init__(self, owner):
        self.owner = owner
        self.balance = 0

    def deposit(self, amount):
        if amount <= 0:
            raise ValueError("deposit must be positive")
        self.balance += amount


def bank(n):
    accounts = [Account(f"user{i}") for i in range(10)]
    rejected = 0
    for i in range(n):
        try:
            accounts[i % 10].deposit(i % 5)
        except ValueError:
            rejected += 1
    return sum(a.balance for a in accounts), rejected


def main():
    text = json.dumps({"items": [{"name": f"item {i}", "tags": ["a", "b", str(i)]} for i in range(400)]})
    counts = word_counts(tokenize(text * 3))
    image = [mandelbrot_row(y, 48) for y in range(48)]
    total = sum(squares(20000))
    balance = bank(20000)
    print(f"{len(counts)} distinct words, {sum(map(sum, image))} iterations, "
          f"fib(20)={fib(20)}, sum of squares {total}, bank {balance}")


if __name__ == "__main__":
    main()
