"""The tests' one generator of synthetic text: seeded, distinct, made here (nothing is downloaded).

Three topics:
- ``python``: documents of template sentences about the language (``make_docs``), the unit tests' corpus;
- ``everyday``: simple English sentences, one phrase from each list, the tiny pipeline's corpus
  (``corpus_text("everyday")``, written as paragraphs for ``txt_mode: paragraph``);
- ``cooking``: a second domain for domain adaptation, written with only characters of ``everyday`` so that a
  WordPiece vocabulary trained on one covers the other without [UNK] words.
"""
from __future__ import annotations

import random
from typing import Callable, Sequence

KEYWORDS = ["break", "continue", "return", "yield", "pass", "raise", "import", "global", "assert", "del",
            "lambda", "while", "for", "with", "try", "class", "def", "if", "else", "elif"]
NOUNS = ["loop", "function", "statement", "module", "object", "value", "list", "string", "exception",
         "iterator", "generator", "variable", "argument", "class", "dictionary", "attribute", "method",
         "expression", "block", "name"]
VERBS = ["returns", "creates", "evaluates", "binds", "raises", "defines", "terminates", "yields",
         "calls", "imports", "compares", "assigns", "deletes", "updates", "checks"]
ADJS = ["nearest", "enclosing", "current", "new", "empty", "local", "global", "optional", "first",
        "last", "mutable", "immutable", "default", "builtin", "simple"]
TEMPLATES = [
    'The "{kw}" statement {verb} the {adj} {noun}.',
    "The {kw} statement {verb} the {adj} {noun} of the {noun2}.",
    "A {noun} {verb} a {adj} {noun2} when the {kw} keyword is used.",
    "If the {noun} is {adj}, the interpreter {verb} a {noun2}.",
    "Calling the {noun} {verb} the {adj} {noun2} and returns a {noun3}.",
    "Each {noun} has a {adj} {noun2}; the {kw} statement {verb} it.",
    "In Python, the {noun} {verb} every {noun2} in the {adj} {noun3}.",
    "When a {noun} is {adj}, {kw} {verb} the {noun2} immediately.",
]

# topic -> phrase lists; a sentence is one phrase of each, in order
PHRASES: dict[str, tuple[Sequence[str], ...]] = {
    "everyday": (
        ["The old librarian", "A young engineer", "My neighbour", "The quiet student", "Our teacher",
         "The tired baker", "A curious child", "The ship's captain", "Her brother", "The village doctor",
         "A patient gardener", "The night guard", "His grandmother", "The new manager", "A travelling musician"],
        ["opened", "carried", "repaired", "painted", "found", "borrowed", "cleaned", "described", "measured",
         "sold", "wrapped", "forgot", "noticed", "returned", "built"],
        ["a wooden box", "the heavy door", "an old map", "the broken clock", "a small boat", "the red bicycle",
         "a letter from home", "the kitchen window", "a basket of apples", "the garden fence",
         "a book about birds", "the long table", "a warm coat", "the stone bridge", "a jar of honey"],
        ["in the morning", "before the rain started", "after lunch", "near the river", "at the market",
         "during the storm", "on a cold evening", "behind the station", "under the bright lamp",
         "at the edge of town", "while the bells rang", "before anyone woke up"],
        ["and then went home.", "because it was needed.", "without saying a word.", "with great care.",
         "as the sun went down.", "and smiled at everyone.", "for the first time.", "once again.",
         "while humming a song.", "and told nobody about it."],
    ),
    "cooking": (
        ["The chef", "A hungry cook", "My aunt", "The head waiter", "Our kitchen helper", "The pastry cook",
         "A hotel chef", "His uncle", "The young cook", "Her mother", "The farmer", "Our host"],
        ["boiled", "fried", "tasted", "chopped", "roasted", "stirred", "baked", "seasoned", "peeled",
         "grilled", "poured", "mixed"],
        ["the onions", "a pot of rice", "the fresh fish", "some garlic", "the tomato sauce", "a bowl of soup",
         "the chicken", "the carrots", "a loaf of bread", "the mushrooms", "some butter", "the lemon cake"],
        ["with olive oil", "in a hot pan", "over a low flame", "with black pepper", "for ten minutes",
         "until it was golden", "with a pinch of salt", "in the big oven", "on the iron grill",
         "with fresh herbs"],
        ["for the evening meal.", "before the guests arrived.", "and served it hot.", "and let it cool.",
         "for the family dinner.", "as the recipe said.", "and cleaned the kitchen.", "for the Monday lunch."],
    ),
}
SEEDS = {"everyday": 7, "cooking": 11}  # each topic's usual seed


def distinct(n: int, seed: int, one: Callable[[random.Random], str]) -> list[str]:
    """``n`` distinct texts drawn by ``one`` from a ``random.Random(seed)``, in the order first drawn."""
    rng = random.Random(seed)
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        text = one(rng)
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def make_docs(n: int, seed: int = 0, sentences: tuple[int, int] = (2, 5)) -> list[str]:
    """``n`` distinct ``python`` documents of a few template sentences each."""
    def doc(rng: random.Random) -> str:
        return " ".join(rng.choice(TEMPLATES).format(
            kw=rng.choice(KEYWORDS), noun=rng.choice(NOUNS), noun2=rng.choice(NOUNS), noun3=rng.choice(NOUNS),
            verb=rng.choice(VERBS), adj=rng.choice(ADJS)) for _ in range(rng.randint(*sentences)))
    return distinct(n, seed, doc)


def sentences(topic: str, n: int = 360, seed: int | None = None) -> list[str]:
    """``n`` distinct sentences of ``topic`` (``everyday`` or ``cooking``)."""
    return distinct(n, SEEDS[topic] if seed is None else seed,
                    lambda rng: " ".join(rng.choice(part) for part in PHRASES[topic]))


def corpus_text(topic: str = "everyday", n_sentences: int = 360, per_paragraph: int = 3,
                seed: int | None = None) -> str:
    """Paragraphs of ``per_paragraph`` sentences separated by blank lines (``txt_mode: paragraph``)."""
    s = sentences(topic, n_sentences, seed)
    return "\n\n".join(" ".join(s[i:i + per_paragraph]) for i in range(0, len(s), per_paragraph)) + "\n"
