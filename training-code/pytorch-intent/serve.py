"""The PyTorch example's predictor: serves a pytorch-intent model from local files (the storage
initializer put them, verified, in MODEL_DIR/<RUN_ID>/ and /mnt/models) over

- gRPC `prediction.Predictor/PredictorPredict` (runId, document) -> {"result": label}, as the
  original predictor and ours answer, plus `grpc.health.v1.Health/Check` (SERVING once the
  model is loaded), on PREDICTOR_GRPC_PORT (8081);
- the Open Inference Protocol v2 over HTTP on PREDICTOR_HTTP_PORT (8080): /v2/health/live,
  /v2/health/ready, /v2/models/<name>, /v2/models/<name>/ready and
  POST /v2/models/<name>/infer with one BYTES input of documents -> `label` (BYTES) and
  `probabilities` (FP32, one row per document).

On SIGTERM it reports not ready and keeps serving PREDICTOR_SHUTDOWN_DELAY seconds (the time
endpoints take to drop it), then stops. The model is the files `model.py` writes, so training
and serving share one definition of the network and the tokenisation.
"""

import json
import os
import signal
import sys
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import torch
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

import model

MAX_DOCUMENT_BYTES = 65536
MAX_BATCH = 256


def message_classes():
    """prediction.* message classes from the API's descriptor set (no generated code)."""
    from importlib import resources
    data = resources.files("miniautoml_training").joinpath("descriptor.bin").read_bytes()
    pool = descriptor_pool.DescriptorPool()
    for proto in descriptor_pb2.FileDescriptorSet.FromString(data).file:
        pool.Add(proto)
    get = getattr(message_factory, "GetMessageClass", None)
    if get is None:  # protobuf < 4.21 (Debian 12's 3.21)
        get = message_factory.MessageFactory(pool).GetPrototype
    return lambda name: get(pool.FindMessageTypeByName(name))


Message = message_classes()


class Model:
    """The loaded network, its vocabulary and labels; thread-safe inference."""

    def __init__(self, directory: str, name: str, run_id: str):
        self.network, self.vocabulary, self.labels = model.load(directory)
        self.name, self.run_id = name, run_id
        torch.set_num_threads(int(os.getenv("THREADS") or 1))

    def predict(self, documents):
        for document in documents:
            if not document.strip():
                raise ValueError("document is empty")
            if len(document.encode()) > MAX_DOCUMENT_BYTES:
                raise ValueError(f"document is longer than {MAX_DOCUMENT_BYTES} bytes")
        encoded = [self.vocabulary.encode(d) or [0] for d in documents]
        ids, offsets = model.batch(encoded)
        with torch.no_grad():
            scores = torch.softmax(self.network(ids, offsets), dim=1)
        return [self.labels[i] for i in scores.argmax(1).tolist()], scores.tolist()


class State:
    def __init__(self):
        self.model = None
        self.stopping = False

    def ready(self):
        return self.model is not None and not self.stopping


STATE = State()


def grpc_server(port: int):
    request_class = Message("prediction.PredictorPredictRequest")
    response_class = Message("prediction.PredictorPredictResponse")

    def predict(request, context):
        current = STATE.model
        if current is None:
            context.abort(grpc.StatusCode.UNAVAILABLE, "the model is not loaded yet")
        if request.runId and request.runId != current.run_id:
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f"this predictor serves run {current.run_id}, not run {request.runId}")
        try:
            labels, _ = current.predict([request.document])
        except ValueError as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        return response_class(response=json.dumps({"result": labels[0]}))

    def health(_request, _context):
        # HealthCheckResponse{status: SERVING (1) | NOT_SERVING (2)}, encoded by hand.
        return b"\x08\x01" if STATE.ready() else b"\x08\x02"

    handlers = [
        grpc.method_handlers_generic_handler("prediction.Predictor", {
            "PredictorPredict": grpc.unary_unary_rpc_method_handler(
                predict, request_deserializer=request_class.FromString,
                response_serializer=lambda m: m.SerializeToString()),
        }),
        grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
            "Check": grpc.unary_unary_rpc_method_handler(
                health, request_deserializer=lambda b: b, response_serializer=lambda b: b),
        }),
    ]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), handlers=handlers)
    server.add_insecure_port(f"0.0.0.0:{port}")
    return server


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *_):
        pass

    def reply(self, status: int, body: dict):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def model_path(self):
        current = STATE.model
        parts = self.path.split("?")[0].strip("/").split("/")
        if len(parts) >= 3 and parts[:2] == ["v2", "models"]:
            if current is None or parts[2] != current.name:
                return None, parts
            return current, parts
        return current, parts

    def do_GET(self):
        current, parts = self.model_path()
        path = "/" + "/".join(parts)
        if path == "/v2/health/live":
            return self.reply(200, {"live": True})
        if len(parts) >= 3 and parts[:2] == ["v2", "models"] and current is None and STATE.model is not None:
            return self.reply(404, {"error": f"no model named {parts[2]}"})
        if path == "/v2/health/ready" or (len(parts) == 4 and parts[3] == "ready"):
            ready = STATE.ready()
            return self.reply(200 if ready else 503, {"ready": ready})
        if len(parts) == 3 and parts[:2] == ["v2", "models"] and current is not None:
            return self.reply(200, {
                "name": current.name, "versions": [current.run_id], "platform": f"pytorch_{torch.__version__}",
                "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
                "outputs": [{"name": "label", "datatype": "BYTES", "shape": [-1]},
                            {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(current.labels)]}],
                "parameters": {"labels": current.labels}})
        return self.reply(404, {"error": f"no such resource: {self.path}"})

    def do_POST(self):
        current, parts = self.model_path()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if not (len(parts) == 4 and parts[3] == "infer"):
            return self.reply(404, {"error": f"no such resource: {self.path}"})
        if current is None:
            return self.reply(404 if STATE.model else 503, {"error": "no such model, or not loaded yet"})
        try:
            request = json.loads(body or b"{}")
            inputs = request.get("inputs") or []
            if len(inputs) != 1 or inputs[0].get("datatype") != "BYTES":
                raise ValueError("one BYTES input of documents is expected")
            documents = inputs[0].get("data") or []
            if not documents or len(documents) > MAX_BATCH or not all(isinstance(d, str) for d in documents):
                raise ValueError(f"1 to {MAX_BATCH} documents (strings) are expected")
            labels, scores = current.predict(documents)
        except (ValueError, AttributeError, json.JSONDecodeError) as error:
            return self.reply(400, {"error": str(error)})
        answer = {"model_name": current.name, "model_version": current.run_id, "outputs": [
            {"name": "label", "datatype": "BYTES", "shape": [len(labels)], "data": labels},
            {"name": "probabilities", "datatype": "FP32", "shape": [len(labels), len(current.labels)],
             "data": [p for row in scores for p in row]}]}
        if "id" in request:
            answer["id"] = request["id"]
        return self.reply(200, answer)


def main():
    run_id = os.getenv("RUN_ID") or ""
    directory = os.path.join(os.getenv("MODEL_DIR") or "/mnt/models", run_id) if run_id else "/mnt/models"
    if not os.path.isdir(directory):
        directory = "/mnt/models"
    name = os.getenv("MODEL_NAME") or "model"
    grpc_port = int(os.getenv("PREDICTOR_GRPC_PORT") or 8081)
    http_port = int(os.getenv("PREDICTOR_HTTP_PORT") or 8080)
    delay = float(os.getenv("PREDICTOR_SHUTDOWN_DELAY") or 0)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server = grpc_server(grpc_port)
    server.start()
    http = ThreadingHTTPServer(("0.0.0.0", http_port), Handler)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    try:
        STATE.model = Model(directory, name, run_id)
    except Exception as error:  # the reason goes to the pod's status (FallbackToLogsOnError)
        print(f"cannot load the model from {directory}: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        sys.exit(1)
    print(f"serving {name} (run {run_id}, {len(STATE.model.labels)} labels) from {directory}: "
          f"gRPC :{grpc_port}, HTTP :{http_port}", flush=True)
    stop.wait()
    STATE.stopping = True
    print(f"stopping: not ready, serving {delay:g} s more", flush=True)
    time.sleep(delay)
    http.shutdown()
    server.stop(grace=2).wait()


if __name__ == "__main__":
    main()
