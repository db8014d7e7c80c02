"""A generated many-label intent dataset for `make bench-train` (not tweet_emotion): 150 intents
in 15 domains, short requests built from templates, like CLINC150's. Seeded, so every run writes
the same files.

Each intent has two key words of its own and a few domain words it shares with its nine
siblings; requests mix them with filler words, other intents' domain words, an occasional typo
and, in a fifth of them, a key word of a sibling intent, so that a good model is right about
nine times in ten and a bag of words is not enough alone.

    python3 many_labels.py OUT_DIR [TRAIN_PER_LABEL] [TEST_PER_LABEL]

writes OUT_DIR/train.csv and OUT_DIR/test.csv (text, label; the TextIntent CSV format).
"""
import csv
import os
import random
import sys

LABELS, DOMAINS = 150, 15
SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"] + ["ch" + v for v in "aeiou"]
FILLERS = (
    "please can you i would like to my the a for me now today again help need want "
    "could tell about is it this that what how when where do we our with on at"
).split()
TEMPLATES = [
    "{f1} {k1} {d1} {f2}",
    "{f1} {f2} {k1} the {d1} {k2}",
    "{k2} {d2} {f1} {k1}",
    "can you {k1} my {d1} {d2}",
    "i need to {k1} {k2} {f1}",
    "{d1} {k1} {f1} {f2} {d2}",
    "how do i {k1} the {k2}",
    "{f1} {k2} {k1} {d1} please",
]


def word(rng, used):
    while True:
        w = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3)))
        if w not in used:
            used.add(w)
            return w


def typo(rng, w):
    if len(w) < 4:
        return w
    i = rng.randrange(len(w) - 1)
    return w[:i] + w[i + 1] + w[i] + w[i + 2 :]


def main():
    out = sys.argv[1]
    train_n = int(sys.argv[2]) if len(sys.argv) > 2 else 70
    test_n = int(sys.argv[3]) if len(sys.argv) > 3 else 30
    rng = random.Random(150)
    used = set(FILLERS)
    domains = [[word(rng, used) for _ in range(4)] for _ in range(DOMAINS)]
    intents = []
    for i in range(LABELS):
        domain = i % DOMAINS
        keys = [word(rng, used) for _ in range(2)]
        intents.append((f"{domain_name(domain)}_{keys[0]}", domain, keys))

    def request(i):
        name, domain, keys = intents[i]
        keys = list(keys)
        if rng.random() < 0.2:  # a sibling intent's key word in place of one of ours
            sibling = rng.choice([j for j in range(LABELS) if intents[j][1] == domain and j != i])
            keys[rng.randrange(2)] = intents[sibling][2][rng.randrange(2)]
        d = domains[domain] if rng.random() < 0.85 else domains[rng.randrange(DOMAINS)]
        words = rng.choice(TEMPLATES).format(
            k1=keys[0], k2=keys[1], d1=rng.choice(d), d2=rng.choice(d),
            f1=rng.choice(FILLERS), f2=rng.choice(FILLERS),
        ).split()
        words = [typo(rng, w) if rng.random() < 0.05 else w for w in words]
        if rng.random() < 0.3:
            words.insert(rng.randrange(len(words) + 1), rng.choice(FILLERS))
        return " ".join(words), name

    os.makedirs(out, exist_ok=True)
    for file, per_label in (("train.csv", train_n), ("test.csv", test_n)):
        rows = [request(i) for i in range(LABELS) for _ in range(per_label)]
        rng.shuffle(rows)
        with open(os.path.join(out, file), "w", newline="", encoding="utf-8") as f:
            csv.writer(f, quoting=csv.QUOTE_ALL).writerows(rows)


def domain_name(i):
    return "domain" + chr(ord("a") + i)


if __name__ == "__main__":
    main()
