"""A training image that follows the original MiniAutoML's training contract to the letter, so
the tests show such images run unchanged (the original's own code is not ours to ship; this is
written here after its contract):

- configuration from the environment only (JOB_ID, METADATA_STORE_SERVER, MINIO_SERVER as
  host:port, MINIO_SERVER_ACCESS_KEY/SECRET_KEY, TRAINING_DATA_BUCKET/PATH, MODEL_NAME, EPOCHS,
  LR, BATCH_SIZE, FC_SIZE, WORLD_SIZE, RANK, MASTER_ADDR, MASTER_PORT);
- reports over grpc.insecure_channel(METADATA_STORE_SERVER) with no token and no retry;
- rank 0 calls LogRunStart and uploads to the bucket and path it answers; every rank reports
  its epochs as "<rank>-<epoch>" with the metric values as strings;
- several ranks train data-parallel (gloo), each on its share of the examples;
- downloads into and saves under its working directory ("<rank>/examples.csv", "<JOB_ID>/");
- rank 0 uploads four files (model.pth, vocab.pth, manifest.json, model.mar), calls
  CreateArtifact and ends with LogRunEnd(True, "test accuracy 0.xyz").

Test hooks (hyperparameters): ALSO_REPORT_TO=<run id> has each rank also try to report an
epoch to that run and print the answer; REPORT_ONLY=1 only calls LogRunStart for JOB_ID, prints
the answer and exits 0 (accepted) or 1 (refused).
"""

import csv
import datetime
import io
import json
import os
import random
import sys
import zipfile

import boto3
import grpc
import torch
import torch.distributed as dist
from botocore.config import Config
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))


def message_classes():
    with open(os.path.join(HERE, "descriptor.bin"), "rb") as f:
        files = descriptor_pb2.FileDescriptorSet.FromString(f.read()).file
    pool = descriptor_pool.DescriptorPool()
    for proto in files:
        pool.Add(proto)
    factory = message_factory.MessageFactory(pool)
    return lambda name: factory.GetPrototype(pool.FindMessageTypeByName(name))


Message = message_classes()


def env_int(name, default):
    value = os.getenv(name)
    return default if value is None else int(value)


EPOCHS = env_int("EPOCHS", 3)
LR = float(os.getenv("LR") or 5)
BATCH_SIZE = env_int("BATCH_SIZE", 64)
FC_SIZE = env_int("FC_SIZE", 128)
JOB_ID = os.getenv("JOB_ID") or "42"
WORLD_SIZE = env_int("WORLD_SIZE", 1)
RANK = env_int("RANK", 0)
MODEL_NAME = os.getenv("MODEL_NAME") or "intent"
print(f"JOB_ID={JOB_ID} RANK={RANK} WORLD_SIZE={WORLD_SIZE} "
      f"METADATA_STORE_SERVER={os.getenv('METADATA_STORE_SERVER')} MINIO_SERVER={os.getenv('MINIO_SERVER')}",
      flush=True)

channel = grpc.insecure_channel(os.getenv("METADATA_STORE_SERVER") or "127.0.0.1:6002")


def call(method, request, response):
    stub = channel.unary_unary(
        f"/metadata_store.MetadataStoreService/{method}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=Message(f"metadata_store.{response}").FromString)
    return stub(request, timeout=30)


def now():
    return datetime.datetime.now().isoformat()


def log_run_start(run_id):
    request = Message("metadata_store.LogRunStartRequest")(
        start_time=now(), run_id=run_id, run_name=f"training job {run_id}")
    request.tracing.dataset_id = os.getenv("TRAINING_DATASET_ID") or ""
    request.tracing.version_hash = os.getenv("TRAINING_DATASET_VERSION_HASH") or ""
    request.tracing.code_version = "original-contract-test"
    return call("LogRunStart", request, "LogRunStartResponse")


def log_epoch(run_id, started, epoch, metrics):
    request = Message("metadata_store.LogEpochRequest")()
    info = request.epoch_info
    info.start_time, info.end_time, info.run_id = started, now(), run_id
    info.epoch_id = f"{RANK}-{epoch}"
    for name, value in metrics.items():
        info.metrics[name] = str(value)
    return call("LogEpoch", request, "LogEpochResponse")


if os.getenv("REPORT_ONLY"):
    try:
        answer = log_run_start(JOB_ID)
        print(f"LogRunStart for run {JOB_ID} accepted: s3://{answer.bucket}/{answer.path}", flush=True)
        sys.exit(0)
    except grpc.RpcError as error:
        print(f"LogRunStart for run {JOB_ID} refused: {error.code().name}: {error.details()}", flush=True)
        sys.exit(1)

model_bucket, model_path = None, None
if RANK == 0:
    started = log_run_start(JOB_ID)
    model_bucket, model_path = started.bucket, started.path
    print(f"artifacts go to s3://{model_bucket}/{model_path}", flush=True)

if WORLD_SIZE > 1:
    print(f"Using distributed PyTorch with gloo backend, world size={WORLD_SIZE}, rank={RANK}", flush=True)
    dist.init_process_group("gloo", rank=RANK, world_size=WORLD_SIZE)

# MINIO_SERVER is host:port (Minio(MINIO_SERVER, secure=False) takes it so): plain http.
s3 = boto3.client(
    "s3", endpoint_url=f"http://{os.getenv('MINIO_SERVER')}", region_name="us-east-1",
    aws_access_key_id=os.getenv("MINIO_SERVER_ACCESS_KEY"),
    aws_secret_access_key=os.getenv("MINIO_SERVER_SECRET_KEY"),
    config=Config(s3={"addressing_style": "path"}))
os.makedirs(str(RANK), exist_ok=True)
examples_path, labels_path = f"{RANK}/examples.csv", f"{RANK}/labels.csv"
bucket, data_path = os.getenv("TRAINING_DATA_BUCKET"), os.getenv("TRAINING_DATA_PATH")
s3.download_file(bucket, os.path.join(data_path, "examples.csv"), examples_path)
s3.download_file(bucket, os.path.join(data_path, "labels.csv"), labels_path)

with open(labels_path, encoding="utf8") as f:
    classes = {int(row[0]) - 1: row[1] for row in csv.reader(f)}
with open(examples_path, encoding="utf8") as f:
    rows = [(row[0], int(row[1].split(";")[0]) - 1) for row in csv.reader(f)]


def words(text):
    return text.lower().split()


vocab = {"<unk>": 0}
for text, _ in rows:
    for word in words(text):
        vocab.setdefault(word, len(vocab))


class TextClassifier(nn.Module):
    def __init__(self, vocab_size, embed_dim, fc_size, num_class):
        super().__init__()
        self.embedding = nn.EmbeddingBag(vocab_size, embed_dim, sparse=True)
        self.fc1 = nn.Linear(embed_dim, fc_size)
        self.fc2 = nn.Linear(fc_size, num_class)

    def forward(self, text, offsets):
        return self.fc2(self.fc1(self.embedding(text, offsets)))


def batch(items):
    labels = torch.tensor([label for _, label in items], dtype=torch.int64)
    ids = [torch.tensor([vocab.get(w, 0) for w in words(text)] or [0], dtype=torch.int64) for text, _ in items]
    offsets = torch.tensor([0] + [len(i) for i in ids[:-1]]).cumsum(dim=0)
    return labels, torch.cat(ids), offsets


torch.manual_seed(42)
shuffled = rows[:]
random.Random(42).shuffle(shuffled)
test_count = max(1, len(shuffled) // 10)
test, train = shuffled[:test_count], shuffled[test_count:]
mine = train[RANK::WORLD_SIZE]
model = TextClassifier(len(vocab), 64, FC_SIZE, len(classes))
if WORLD_SIZE > 1:
    model = nn.parallel.DistributedDataParallel(model)
optimizer = torch.optim.SGD(model.parameters(), lr=LR)
loss_fn = nn.CrossEntropyLoss()


def accuracy(items):
    model.eval()
    with torch.no_grad():
        labels, ids, offsets = batch(items)
        return (model(ids, offsets).argmax(1) == labels).float().mean().item()


for epoch in range(1, EPOCHS + 1):
    started = now()
    model.train()
    order = mine[:]
    random.Random(epoch).shuffle(order)
    for start in range(0, len(order), BATCH_SIZE):
        labels, ids, offsets = batch(order[start:start + BATCH_SIZE])
        optimizer.zero_grad()
        loss_fn(model(ids, offsets), labels).backward()
        optimizer.step()
    value = accuracy(mine)
    print(f"| end of epoch {epoch:3d} | accuracy {value:8.3f}", flush=True)
    log_epoch(JOB_ID, started, epoch, {"accuracy": value})
    other = os.getenv("ALSO_REPORT_TO")
    if other and epoch == 1:
        try:
            log_epoch(other, started, epoch, {"accuracy": value})
            print(f"report to run {other} accepted", flush=True)
        except grpc.RpcError as error:
            print(f"report to run {other} refused: {error.code().name}: {error.details()}", flush=True)

if RANK == 0:
    accu_test = accuracy(test)
    print(f"test accuracy {accu_test:8.3f}", flush=True)
    os.makedirs(JOB_ID, exist_ok=True)
    state = model.module.state_dict() if WORLD_SIZE > 1 else model.state_dict()
    files = {
        "model.pth": os.path.join(JOB_ID, "model.pth"),
        "vocab.pth": os.path.join(JOB_ID, "vocab.pth"),
        "manifest.json": os.path.join(JOB_ID, "manifest.json"),
        "model.mar": os.path.join(JOB_ID, "model.mar"),
    }
    torch.save(state, files["model.pth"])
    torch.save(vocab, files["vocab.pth"])
    with open(files["manifest.json"], "w") as f:
        json.dump({"Algorithm": os.getenv("ALGORITHM_NAME"), "Framework": "Pytorch",
                   "FrameworkVersion": torch.__version__, "ModelName": MODEL_NAME,
                   "CodeVersion": "original-contract-test", "ModelVersion": "1.0",
                   "classes": {str(i): name for i, name in classes.items()}, "fc_size": FC_SIZE}, f)
    # A model archive as TorchServe reads it: the weights, the vocabulary and the manifest in a zip.
    with zipfile.ZipFile(files["model.mar"], "w") as archive:
        archive.writestr("MAR-INF/MANIFEST.json", json.dumps({"model": {"modelName": MODEL_NAME}}))
        for name in ("model.pth", "vocab.pth", "manifest.json"):
            archive.write(files[name], name)
    for name, local in files.items():
        s3.upload_file(local, model_bucket, os.path.join(model_path, name))
    request = Message("metadata_store.CreateArtifactRequest")(
        run_id=JOB_ID, algorithm=os.getenv("ALGORITHM_NAME") or "")
    request.artifact.name, request.artifact.bucket, request.artifact.path = MODEL_NAME, model_bucket, model_path
    artifact = call("CreateArtifact", request, "CreateArtifactResponse")
    print(f"saved model files as artifact {artifact.artifact.name} version {artifact.version} "
          f"at {model_bucket}/{model_path}", flush=True)
    request = Message("metadata_store.LogRunEndRequest")(
        run_id=JOB_ID, end_time=now(), success=True, message=f"test accuracy {accu_test:8.3f}")
    call("LogRunEnd", request, "LogRunEndResponse")
if WORLD_SIZE > 1:
    dist.barrier()
    dist.destroy_process_group()
