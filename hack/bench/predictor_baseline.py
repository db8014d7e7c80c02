"""Benchmark fixture: the original MiniAutoML design's predictor, as a Python gRPC server.

The original MiniAutoML served models from a Python process: grpcio with a thread pool, the
model run in Python. This file rebuilds that design around *our* trained model, so that
a gRPC Predict throughput benchmark can compare the Rust predictor (predictor/) with it on the
same artifacts and the same contract. It is a baseline, not a product: no model store, no
metrics, the request's runId is ignored.

It reads the trainer's artifact directory (`intent-classification train --out DIR`): checks
every file against manifest.json's sha256, parses model.safetensors by hand (u64 LE header
length, JSON header, raw LE f32) and vocab.json, and classifies exactly as
training-code/intent-model does: features.rs' tokenisation (per-character Unicode lowercase,
words = runs of 2+ `char::is_alphanumeric`/`_` characters, word n-grams joined by one space,
character n-grams inside each whitespace token padded with one space), sublinear tf-idf with
each block (words, characters) l2-normalised or mean bags, network.rs' `ngram-nb` or
`embedding-bag` forward pass (f32, entries summed in order like candle's index_add), softmax
and the lowest index on ties.

Serves proto/proto/prediction.proto's `Predictor.PredictorPredict` and
`PredictionService.Predict` (stubs generated at start-up with grpc_tools.protoc into a temp
dir); the response is `{"result": "<label>"}`; an empty or blank document is INVALID_ARGUMENT.

    python hack/bench/predictor_baseline.py --model-dir DIR [--address HOST:PORT] [--workers 16]
        serves on HOST:PORT (default 127.0.0.1:0: a free port) and prints `listening on
        HOST:PORT` once serving; SIGTERM or SIGINT stops it (exit 0).
    python hack/bench/predictor_baseline.py --model-dir DIR --check CSV
        one predicted label per row of a raw CSV (text, label...), no server.
    python hack/bench/predictor_baseline.py --model-dir DIR --score CSV
        `examples`, `accuracy`, `macro-F1` as `intent-classification eval` prints them.

Needs Python 3.11+, grpcio==1.85.1, grpcio-tools==1.85.1, numpy==2.4.6 (the last numpy for
Python 3.11), in a virtualenv as hack/bench-train.sh makes for scikit-learn. Agreement with
Rust is checked row by row by relabelling a CSV with `--check`'s labels and running
`intent-classification eval` on it: it must print accuracy 1.0000.
"""
import argparse
import csv
import hashlib
import json
import re
import signal
import struct
import sys
import tempfile
import threading
from concurrent import futures
from pathlib import Path

import numpy as np

# --- Unicode as Rust 1.95 sees it --------------------------------------------------------------
# Characters that Rust's char::is_alphanumeric accepts and Python 3.11's str.isalnum (so re's
# \w) does not: Other_Alphabetic marks and symbols (e.g. U+0650, U+0EB4, U+1F17F) and letters
# newer than Python's Unicode 14. Hex code points and ranges; a range may span \w characters.
# These tables were generated from Rust 1.95's char methods and checked against them on every
# code point (with re's \w, str.lower and this file's WORD, WHITESPACE and lowercase).
_RUST_EXTRA_WORD = """
345 363-36f 5b0-5bd 5bf 5c1-5c2 5c4-5c5 5c7 610-61a 64b-657 659-65f 670 6d6-6dc 6e1-6e8 6ed
711-73f 7a6-7b0 816-817 81b-82c 88f 897 8d4-8df 8e3-8e9 8f0-93b 93e-94c 94e-94f 955-963 981-983
9be-9c4 9c7-9c8 9cb-9cc 9d7 9e2-9e3 a01-a03 a3e-a42 a47-a48 a4b-a4c a51 a70-a75 a81-a83 abe-ac5
ac7-ac9 acb-acc ae2-ae3 afa-afc b01-b03 b3e-b44 b47-b48 b4b-b4c b56-b57 b62-b63 b82 bbe-bc2
bc6-bc8 bca-bcc bd7 c00-c04 c3e-c44 c46-c48 c4a-c4c c55-c56 c5c c62-c63 c81-c83 cbe-cc4 cc6-cc8
cca-ccc cd5-cd6 cdc ce2-ce3 cf3 d00-d03 d3e-d44 d46-d48 d4a-d4c d57-d63 d81-d83 dcf-dd4 dd6
dd8-ddf df2-df3 e31-e3a e4d eb1-eb9 ebb-ebc ecd f71-f83 f8d-f97 f99-fbc 102b-1036 1038 103b-103e
1056-109d 1712-1713 1732-1733 1752-1753 1772-1773 17b6-17c8 1885-18a9 1920-192b 1930-1938
1a17-1a1b 1a55-1a5e 1a61-1a74 1abf-1ac0 1acc-1ace 1b00-1b04 1b35-1b43 1b80-1ba9 1bac-1bad
1be7-1bf1 1c24-1c36 1c89-1c8a 1dd3-1df4 24b6-24e9 2de0-2dff a674-a67b a69e-a69f a7cb-a7dc
a7f1-a802 a80b-a827 a880-a8c3 a8c5 a8ff-a92a a947-a952 a980-a983 a9b4-a9bf a9e5 aa29-aa36
aa43-aa4d aa7b-aabe aaeb-aaef aaf5 abe3-abea fb1e 10376-1037a 105c0-105f3 10940-10959
10a01-10a03 10a05-10a06 10a0c-10a0f 10d24-10d27 10d40-10d65 10d69 10d6f-10d85 10eab-10eac
10ec2-10ec7 10efa-10efc 11000-11045 11073-11074 11080-110b8 110c2 11100-11132 11145-11146
11180-111bf 111ce-111cf 1122c-11234 11237 1123e-11241 112df-112e8 11300-11303 1133e-11344
11347-11348 1134b-1134c 11357 11362-11363 11380-11389 1138b 1138e 11390-113b5 113b7-113c0 113c2
113c5 113c7-113ca 113cc-113cd 113d1 113d3 11435-11441 11443-11445 114b0-114c1 115af-115b5
115b8-115be 115dc-115dd 11630-1163e 11640 116ab-116b5 116d0-116e3 1171d-1172a 1182c-11838
11930-11935 11937-11938 1193b-1193c 11940-11942 119d1-119d7 119da-119df 119e4 11a01-11a0a
11a35-11a3e 11a51-11a97 11b60-11b67 11bc0-11be0 11bf0-11bf9 11c2f-11c36 11c38-11c3e 11c92-11ca7
11ca9-11cb6 11d31-11d36 11d3a 11d3c-11d3d 11d3f-11d41 11d43 11d47 11d8a-11d8e 11d90-11d91
11d93-11d96 11db0-11ddb 11de0-11de9 11ef3-11ef6 11f00-11f10 11f12-11f3a 11f3e-11f40 11f50-11f59
1342f 13441-13446 13460-143fa 16100-1612e 16130-16139 16d40-16d6c 16d70-16d79 16ea0-16eb8
16ebb-16ed3 16f4f-16f87 16f8f-16f92 16ff0-16ff6 187f8-187ff 18cff-18d1e 18d80-18df2 1b132 1b155
1bc9e 1ccf0-1ccf9 1d2c0-1d2d3 1df25-1df2a 1e000-1e006 1e008-1e018 1e01b-1e021 1e023-1e024
1e026-1e02a 1e030-1e06d 1e08f 1e4d0-1e4eb 1e4f0-1e4f9 1e5d0-1e5ed 1e5f0-1e5fa 1e6c0-1e6de
1e6e0-1e6f5 1e6fe-1e6ff 1e947 1f130-1f149 1f150-1f169 1f170-1f189 2b739-2b73f 2cea2-2cead
2ebf0-2ee5d 31350-33479
"""
# Rust's White_Space (str::split_whitespace, str::trim); Python's also has U+001C..U+001F.
_RUST_WHITESPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# Lowercase mappings Rust has and Python 3.11 lacks (newer letters): (first, last, offset).
_RUST_NEW_LOWERCASE = [(0x1C89, 0x1C89, 1), (0xA7CB, 0xA7CB, -42343), (0xA7CC, 0xA7CC, 1),
                       (0xA7CE, 0xA7CE, 1), (0xA7D2, 0xA7D2, 1), (0xA7D4, 0xA7D4, 1),
                       (0xA7DA, 0xA7DA, 1), (0xA7DC, 0xA7DC, -42561), (0x10D50, 0x10D65, 32),
                       (0x16EA0, 0x16EB8, 27)]


def _char_class(ranges):
    parts = []
    for item in ranges.split():
        first, _, last = item.partition("-")
        parts.append(re.escape(chr(int(first, 16))))
        if last:
            parts.append("-" + re.escape(chr(int(last, 16))))
    return "".join(parts)


WORD = re.compile(r"[\w" + _char_class(_RUST_EXTRA_WORD) + "]{2,}")
WHITESPACE = re.compile(f"[{_RUST_WHITESPACE}]+")
LOWERCASE = {c: c + d for first, last, d in _RUST_NEW_LOWERCASE for c in range(first, last + 1)}


def lowercase(text):
    """`text.chars().flat_map(char::to_lowercase)`: per character, so Σ is always σ (str.lower
    would make a word-final one ς)."""
    return text.replace("Σ", "σ").lower().translate(LOWERCASE)


def is_blank(text):
    """`text.trim().is_empty()`, the Rust predictor's test for an empty document."""
    return not text or WHITESPACE.fullmatch(text) is not None


# --- The model -------------------------------------------------------------------------------
F32 = np.float32


def sequential_sum(rows):
    """Sums along axis 0 one entry after the other in f32, as candle's index_add and a plain
    loop do (numpy's own reductions sum pairwise)."""
    return np.cumsum(rows, axis=0, dtype=F32)[-1]


class Vocabulary:
    """vocab.json (format miniautoml.intent-vocabulary/v1) and its transform."""

    def __init__(self, doc):
        if doc.get("format") != "miniautoml.intent-vocabulary/v1":
            raise ValueError(f"vocab.json: format {doc.get('format')!r}")
        self.word_ngrams = doc["tokenizer"].get("wordNgrams")
        self.char_ngrams = doc["tokenizer"].get("charNgrams")
        self.mean = {"sublinearTfIdf": False, "mean": True}[doc["weighting"]]
        self.words = {term: i for i, term in enumerate(doc["wordTerms"])}
        self.chars = {term: len(self.words) + i for i, term in enumerate(doc["charTerms"])}
        self.idf = np.asarray(doc["idf"], dtype=F32)
        self.len = len(self.words) + len(self.chars)

    def features(self, text):
        """(feature ids, values) of one text, sorted by id."""
        lower = lowercase(text)
        word_ids, char_ids = [], []
        if self.word_ngrams:
            grams = word_grams(lower, *self.word_ngrams)
            if self.mean:
                word_ids = [self.words.get(term, 0) for term in grams]  # 0: <unk>
            else:
                word_ids = [i for i in map(self.words.get, grams) if i is not None]
        if self.char_ngrams:
            grams = char_grams(lower, *self.char_ngrams)
            char_ids = [i for i in map(self.chars.get, grams) if i is not None]
        if self.mean:
            ids, counts = np.unique(np.asarray(word_ids, dtype=np.int64), return_counts=True)
            return ids, counts.astype(F32) / F32(len(word_ids))
        (words, word_values), (chars, char_values) = self._tfidf(word_ids), self._tfidf(char_ids)
        return np.concatenate([words, chars]), np.concatenate([word_values, char_values])

    def _tfidf(self, ids):
        ids, counts = np.unique(np.asarray(ids, dtype=np.int64), return_counts=True)
        # (1 + ln tf) · idf in f32; ln in f64 rounded to f32, as libm's logf gives it.
        values = (F32(1) + np.log(counts.astype(np.float64)).astype(F32)) * self.idf[ids]
        norm = sequential_sum(values * values) if len(ids) else F32(0)
        return ids, (values / np.sqrt(norm) if norm > 0 else values)


def word_grams(lower, low, high):
    """Word n-grams: runs of 2+ word characters, joined by one space."""
    words = WORD.findall(lower)
    grams = list(words) if low <= 1 <= high else []
    for n in range(max(low, 2), high + 1):
        grams += [" ".join(words[i:i + n]) for i in range(len(words) - n + 1)]
    return grams


def char_grams(lower, low, high):
    """Character n-grams inside each whitespace-separated token padded with one space."""
    grams = []
    for token in WHITESPACE.split(lower):
        if token:
            padded = f" {token} "
            for n in range(max(low, 1), min(high, len(padded)) + 1):
                grams += [padded[start:start + n] for start in range(len(padded) - n + 1)]
    return grams


def read_safetensors(data):
    """name → f32 array, from the bytes of a .safetensors file."""
    (header_len,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(data[8:8 + header_len])
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise ValueError(f"model.safetensors: {name} is {info['dtype']}, expected F32")
        start, end = info["data_offsets"]
        offset = 8 + header_len + start
        raw = np.frombuffer(data, dtype="<f4", count=(end - start) // 4, offset=offset)
        tensors[name] = raw.reshape(info["shape"]).astype(F32)
    return tensors


class Classifier:
    """A verified artifact directory (artifacts.rs' Classifier)."""

    def __init__(self, model_dir):
        model_dir = Path(model_dir)
        manifest = json.loads((model_dir / "manifest.json").read_bytes())
        if manifest.get("format") != "miniautoml.model/v1":
            raise ValueError(f"manifest.json: format {manifest.get('format')!r}")
        files = {}
        for name in ("model.safetensors", "vocab.json", "labels.json"):
            if name not in manifest["files"]:
                raise ValueError(f"manifest.json does not list {name}")
        for name, digest in manifest["files"].items():
            files[name] = (model_dir / name).read_bytes()
            actual = hashlib.sha256(files[name]).hexdigest(), len(files[name])
            if actual != (digest["sha256"], digest["bytes"]):
                raise ValueError(f"artifact {name} is corrupt")
        self.architecture = manifest["architecture"]
        self.vocabulary = Vocabulary(json.loads(files["vocab.json"]))
        self.labels = json.loads(files["labels.json"])
        tensors = read_safetensors(files["model.safetensors"])
        if self.architecture == "ngram-nb":
            self.table, self.bias = tensors["ngram.weight"], tensors["ngram.bias"]
            self.layers = []
        elif self.architecture == "embedding-bag":
            self.table, self.bias = tensors["embedding.weight"], None
            self.layers = [(tensors[f"fc{i}.weight"], tensors[f"fc{i}.bias"]) for i in (1, 2, 3)]
        else:
            raise ValueError(f"unknown architecture {self.architecture!r}")
        classes = len(self.bias) if self.bias is not None else len(self.layers[-1][1])
        if self.table.shape[0] != self.vocabulary.len or not 0 < classes == len(self.labels):
            raise ValueError("model.safetensors, vocab.json and labels.json do not fit together")

    def classify(self, text):
        """Index of the most probable label (the lowest on a tie)."""
        ids, values = self.vocabulary.features(text)
        if len(ids):
            hidden = sequential_sum(self.table[ids] * values[:, None])
        else:
            hidden = np.zeros(self.table.shape[1], dtype=F32)
        if self.bias is not None:
            hidden = hidden + self.bias
        for weight, bias in self.layers:
            hidden = hidden @ weight.T + bias
        exp = np.exp((hidden - hidden.max()).astype(np.float64)).astype(F32)  # ≈ libm expf
        return int(np.argmax(exp / sequential_sum(exp)))


# --- Commands --------------------------------------------------------------------------------
def read_csv(path):
    """(text, first label) per row of a raw TextIntent CSV."""
    with open(path, encoding="utf-8", newline="") as f:
        return [(row[0], row[1].split(";")[0] if len(row) > 1 else "") for row in csv.reader(f)]


def check(classifier, path):
    for text, _ in read_csv(path):
        print(classifier.labels[classifier.classify(text)])


def score(classifier, path):
    """Accuracy and macro-F1 as intent-classification's metrics.rs defines them."""
    rows = read_csv(path)
    truth = [classifier.labels.index(label) for _, label in rows]
    predicted = [classifier.classify(text) for text, _ in rows]
    classes = max(truth + predicted) + 1
    tp, fp, fn = [0] * classes, [0] * classes, [0] * classes
    for t, p in zip(truth, predicted):
        if t == p:
            tp[t] += 1
        else:
            fp[p] += 1
            fn[t] += 1
    f1 = [2 * tp[c] / (2 * tp[c] + fp[c] + fn[c]) for c in range(classes) if tp[c] + fp[c] + fn[c]]
    print(f"examples {len(rows)}")
    print(f"accuracy {sum(tp) / len(rows):.4f}")
    print(f"macro-F1 {sum(f1) / len(f1):.4f}")


def generate_stubs(proto):
    """prediction_pb2 and prediction_pb2_grpc, compiled from the .proto in a temp dir."""
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory(prefix="predictor-baseline-") as out:
        argv = ["grpc_tools.protoc", f"-I{proto.parent}", f"--python_out={out}",
                f"--grpc_python_out={out}", str(proto)]
        if protoc.main(argv) != 0:
            sys.exit(f"predictor_baseline: protoc failed on {proto}")
        sys.path.insert(0, out)
        import prediction_pb2
        import prediction_pb2_grpc

        sys.path.remove(out)
    return prediction_pb2, prediction_pb2_grpc


def serve(classifier, address, workers, proto):
    import grpc

    pb2, pb2_grpc = generate_stubs(proto)
    responses = [json.dumps({"result": label}, ensure_ascii=False) for label in classifier.labels]

    def respond(document, context):
        if is_blank(document):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "document is empty")
        return responses[classifier.classify(document)]

    class Predictor(pb2_grpc.PredictorServicer):
        def PredictorPredict(self, request, context):
            return pb2.PredictorPredictResponse(response=respond(request.document, context))

    class PredictionService(pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            return pb2.PredictResponse(response=respond(request.document, context))

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    pb2_grpc.add_PredictorServicer_to_server(Predictor(), server)
    pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(), server)
    port = server.add_insecure_port(address)
    if not port:
        sys.exit(f"predictor_baseline: cannot listen on {address}")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.start()
    print(f"listening on {address.rpartition(':')[0]}:{port}", flush=True)
    stop.wait()
    server.stop(grace=1).wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", required=True, help="the trainer's artifact directory")
    parser.add_argument("--address", default="127.0.0.1:0", help="HOST:PORT (port 0: a free one)")
    parser.add_argument("--workers", type=int, default=16, help="gRPC thread-pool size")
    repo = Path(__file__).resolve().parents[2]
    parser.add_argument("--proto", type=Path, default=repo / "proto/proto/prediction.proto")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", metavar="CSV", help="print the label of every row; no server")
    mode.add_argument("--score", metavar="CSV", help="print accuracy and macro-F1; no server")
    args = parser.parse_args()
    classifier = Classifier(args.model_dir)
    if args.check:
        check(classifier, args.check)
    elif args.score:
        score(classifier, args.score)
    else:
        serve(classifier, args.address, args.workers, args.proto)


if __name__ == "__main__":
    main()
