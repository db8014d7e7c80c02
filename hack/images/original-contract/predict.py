"""A predictor image that follows the original MiniAutoML predictor's contract to the letter,
for the tests (written here after the contract, not the original's code): it serves
`prediction.Predictor/PredictorPredict` and gRPC health on port 51001, and loads the model of
the requested `runId` on first use from MODEL_DIR/<runId>/ (model.pth, vocab.pth and
manifest.json with its `classes` and `fc_size`, as train.py beside it writes them), answering
{"result": "<label>"}. A missing model is NOT_FOUND.
"""

import json
import os
import threading
from concurrent import futures

import grpc
import torch
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL_DIR = os.getenv("MODEL_DIR") or "/models"


def message_classes():
    with open(os.path.join(HERE, "descriptor.bin"), "rb") as f:
        files = descriptor_pb2.FileDescriptorSet.FromString(f.read()).file
    pool = descriptor_pool.DescriptorPool()
    for proto in files:
        pool.Add(proto)
    factory = message_factory.MessageFactory(pool)
    return lambda name: factory.GetPrototype(pool.FindMessageTypeByName(name))


Message = message_classes()


class TextClassifier(nn.Module):
    def __init__(self, vocab_size, embed_dim, fc_size, num_class):
        super().__init__()
        self.embedding = nn.EmbeddingBag(vocab_size, embed_dim, sparse=True)
        self.fc1 = nn.Linear(embed_dim, fc_size)
        self.fc2 = nn.Linear(fc_size, num_class)

    def forward(self, text, offsets):
        return self.fc2(self.fc1(self.embedding(text, offsets)))


models = {}
lock = threading.Lock()


def load(run_id):
    with lock:
        if run_id in models:
            return models[run_id]
        folder = os.path.join(MODEL_DIR, run_id)
        for name in ("vocab.pth", "manifest.json", "model.pth"):
            if not os.path.exists(os.path.join(folder, name)):
                raise FileNotFoundError(f"{run_id}, model file {name} not found")
        vocab = torch.load(os.path.join(folder, "vocab.pth"))
        with open(os.path.join(folder, "manifest.json")) as f:
            manifest = json.load(f)
        classes = manifest["classes"]
        network = TextClassifier(len(vocab), 64, manifest["fc_size"], len(classes))
        network.load_state_dict(torch.load(os.path.join(folder, "model.pth")))
        network.eval()
        models[run_id] = (network, vocab, classes)
        return models[run_id]


def predict(request, context):
    try:
        network, vocab, classes = load(request.runId)
    except FileNotFoundError as error:
        context.abort(grpc.StatusCode.NOT_FOUND, str(error))
    ids = torch.tensor([vocab.get(w, 0) for w in request.document.lower().split()] or [0], dtype=torch.int64)
    with torch.no_grad():
        index = network(ids, torch.tensor([0])).argmax(1).item()
    label = classes[str(index)]
    print(f"label is {index}, {label}", flush=True)
    return Message("prediction.PredictorPredictResponse")(response=json.dumps({"result": label}))


def main():
    request_class = Message("prediction.PredictorPredictRequest")
    handlers = [
        grpc.method_handlers_generic_handler("prediction.Predictor", {
            "PredictorPredict": grpc.unary_unary_rpc_method_handler(
                predict, request_deserializer=request_class.FromString,
                response_serializer=lambda m: m.SerializeToString()),
        }),
        # grpc.health.v1.Health/Check -> SERVING, encoded by hand.
        grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
            "Check": grpc.unary_unary_rpc_method_handler(
                lambda _request, _context: b"\x08\x01",
                request_deserializer=lambda b: b, response_serializer=lambda b: b),
        }),
    ]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=10), handlers=handlers)
    server.add_insecure_port("0.0.0.0:51001")
    server.start()
    print(f"MODEL_DIR={MODEL_DIR}; serving on 51001", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
