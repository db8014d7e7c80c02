"""The PyTorch intent classifier shared by training (train.py) and serving (serve.py):
the tokenisation, the vocabulary and the network, and the model's files."""

import json
import re
from collections import Counter
from typing import Dict, List, Sequence

import torch
from torch import nn

TOKEN = re.compile(r"[\w']+|[^\w\s]", re.UNICODE)
UNKNOWN = "<unk>"
MODEL_FILE, VOCABULARY_FILE, LABELS_FILE = "model.pt", "vocab.json", "labels.json"


def tokens(text: str) -> List[str]:
    """Lowercased words and punctuation, then each pair of neighbours as a bigram."""
    words = TOKEN.findall(text.lower())
    return words + [f"{a} {b}" for a, b in zip(words, words[1:])]


class Vocabulary:
    """Token → index; index 0 stands for every token not seen `min_count` times in training."""

    def __init__(self, itos: List[str]):
        self.itos = itos
        self.stoi = {t: i for i, t in enumerate(itos)}

    @staticmethod
    def fit(texts: Sequence[str], min_count: int) -> "Vocabulary":
        counts = Counter(t for text in texts for t in set(tokens(text)))
        kept = sorted((t for t, n in counts.items() if n >= min_count), key=lambda t: (-counts[t], t))
        return Vocabulary([UNKNOWN] + kept)

    def encode(self, text: str) -> List[int]:
        return [self.stoi.get(t, 0) for t in tokens(text)]

    def to_json(self) -> bytes:
        return json.dumps({"tokens": self.itos}, ensure_ascii=False).encode()

    @staticmethod
    def from_json(data: bytes) -> "Vocabulary":
        return Vocabulary(json.loads(data)["tokens"])


class Network(nn.Module):
    """A bag of token embeddings (mean), a hidden layer, and one logit per label."""

    def __init__(self, vocabulary_size: int, embedding_dim: int, hidden: int, labels: int):
        super().__init__()
        self.config = {"vocabularySize": vocabulary_size, "embeddingDim": embedding_dim,
                       "hidden": hidden, "labels": labels}
        self.embedding = nn.EmbeddingBag(vocabulary_size, embedding_dim, mode="mean")
        self.hidden = nn.Linear(embedding_dim, hidden)
        self.out = nn.Linear(hidden, labels)

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(self.embedding(ids, offsets))))


def batch(encoded: Sequence[List[int]]):
    """Token ids of several texts as EmbeddingBag's flat ids and offsets."""
    offsets, flat = [], []
    for ids in encoded:
        offsets.append(len(flat))
        flat.extend(ids)
    return torch.tensor(flat, dtype=torch.long), torch.tensor(offsets, dtype=torch.long)


def files(network: Network, vocabulary: Vocabulary, labels: List[str]) -> Dict[str, bytes]:
    """The model as the files the predictor loads (manifest.json is added by the helper)."""
    import io
    buffer = io.BytesIO()
    torch.save({"config": network.config, "state": network.state_dict()}, buffer)
    return {MODEL_FILE: buffer.getvalue(), VOCABULARY_FILE: vocabulary.to_json(),
            LABELS_FILE: json.dumps(labels, ensure_ascii=False).encode()}


def load(directory: str):
    """The network (eval mode), vocabulary and labels from a model directory."""
    import os
    with open(os.path.join(directory, MODEL_FILE), "rb") as f:
        saved = torch.load(f, map_location="cpu")
    c = saved["config"]
    network = Network(c["vocabularySize"], c["embeddingDim"], c["hidden"], c["labels"])
    network.load_state_dict(saved["state"])
    network.eval()
    with open(os.path.join(directory, VOCABULARY_FILE), "rb") as f:
        vocabulary = Vocabulary.from_json(f.read())
    with open(os.path.join(directory, LABELS_FILE), "rb") as f:
        labels = json.load(f)
    return network, vocabulary, labels
