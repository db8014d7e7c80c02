"""A client of the operator's metadata store (`metadata_store.MetadataStoreService`).

The message classes come from the API's descriptor set (`descriptor.bin`, written by
`make generate` from proto/), so no generated Python code or protoc is needed.
"""

import time
from datetime import datetime, timezone
from importlib import resources
from typing import Dict, Optional

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from .contract import Contract, store_url

SERVICE = "metadata_store.MetadataStoreService"
# How long a call is tried again while the operator is unreachable (restarting, a new leader).
RETRY_SECONDS = 60


def _messages():
    data = resources.files(__package__).joinpath("descriptor.bin").read_bytes()
    pool = descriptor_pool.DescriptorPool()
    for proto in descriptor_pb2.FileDescriptorSet.FromString(data).file:
        pool.Add(proto)
    get = getattr(message_factory, "GetMessageClass", None)
    if get is None:  # protobuf < 4.21 (Debian 12's 3.21)
        factory = message_factory.MessageFactory(pool)
        get = factory.GetPrototype
    return lambda name: get(pool.FindMessageTypeByName(f"metadata_store.{name}"))


_message = _messages()


def now() -> str:
    """RFC 3339, as the metadata store takes times."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class MetadataStore:
    """Reports one run. With a run token (the operator's images get one) every call carries it;
    without, the calls go as the original images send them (plain text, no token)."""

    def __init__(self, contract: Contract):
        target = store_url(contract.metadata_store)
        if contract.metadata_store.startswith("https://"):
            credentials = grpc.ssl_channel_credentials(
                root_certificates=contract.metadata_store_ca.encode())
            self._channel = grpc.secure_channel(target, credentials)
        else:
            self._channel = grpc.insecure_channel(target)
        self._metadata = [("authorization", f"Bearer {contract.run_token}")] if contract.run_token else []
        self.run_id = contract.job_id

    def close(self):
        self._channel.close()

    def _call(self, method: str, request, response: str, retry_seconds: float = RETRY_SECONDS):
        stub = self._channel.unary_unary(
            f"/{SERVICE}/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=_message(response).FromString,
        )
        deadline = time.monotonic() + retry_seconds
        delay = 0.25
        while True:
            try:
                return stub(request, metadata=self._metadata, timeout=30)
            except grpc.RpcError as error:
                unavailable = error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
                if not unavailable or time.monotonic() + delay > deadline:
                    raise MetadataError(method, error) from None
                time.sleep(delay)
                delay = min(delay * 2, 4)

    def log_run_start(self, dataset_id: str, version_hash: str, code_version: str):
        """Records the start; answers the bucket and key prefix for the run's artifacts."""
        request = _message("LogRunStartRequest")(
            start_time=now(), run_id=self.run_id, run_name=f"training job {self.run_id}")
        request.tracing.dataset_id = dataset_id
        request.tracing.version_hash = version_hash
        request.tracing.code_version = code_version
        answer = self._call("LogRunStart", request, "LogRunStartResponse")
        return answer.bucket, answer.path.strip("/")

    def log_epoch(self, epoch_id: str, started: str, metrics: Dict[str, float]):
        request = _message("LogEpochRequest")()
        info = request.epoch_info
        info.start_time, info.end_time, info.run_id, info.epoch_id = started, now(), self.run_id, epoch_id
        for name, value in metrics.items():
            info.metrics[name] = f"{value:.6f}" if isinstance(value, float) else str(value)
        self._call("LogEpoch", request, "LogEpochResponse")

    def create_artifact(self, name: str, bucket: str, path: str, algorithm: str):
        request = _message("CreateArtifactRequest")(run_id=self.run_id, algorithm=algorithm)
        request.artifact.name, request.artifact.bucket, request.artifact.path = name, bucket, path
        return self._call("CreateArtifact", request, "CreateArtifactResponse").version

    def log_run_end(self, success: bool, message: str, retry_seconds: Optional[float] = None):
        request = _message("LogRunEndRequest")(
            run_id=self.run_id, end_time=now(), success=success, message=message)
        self._call("LogRunEnd", request, "LogRunEndResponse",
                   RETRY_SECONDS if retry_seconds is None else retry_seconds)


class MetadataError(Exception):
    """A metadata store call failed; says which and the gRPC status."""

    def __init__(self, method: str, error: grpc.RpcError):
        self.code = error.code()
        super().__init__(f"{method}: {error.code().name}: {error.details()}")
