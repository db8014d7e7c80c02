"""The training-image contract: what the operator puts in a training pod's environment."""

import os
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional
from urllib.parse import urlsplit

# Read by the operator's own images: the run's token for the metadata store, and the CA of a
# metadata store served over TLS.
RUN_TOKEN = "MINIAUTOML_RUN_TOKEN"
CA = "METADATA_STORE_CA"

class ContractError(Exception):
    """The environment does not hold what the contract needs; the message names the variable."""


@dataclass
class Contract:
    job_id: str
    algorithm: str
    metadata_store: str
    metadata_store_ca: Optional[str]
    run_token: Optional[str]
    dataset_id: str
    version_hash: str
    data_bucket: str
    data_path: str
    model_bucket: Optional[str]
    model_name: str
    s3_endpoint: str
    s3_region: str
    access_key: str
    secret_key: str
    session_token: Optional[str]
    world_size: int = 1
    rank: int = 0
    master_addr: str = "localhost"
    master_port: int = 23456
    # The whole environment: hyperparameters are read from it by name (`parameter`).
    env: Dict[str, str] = field(default_factory=dict, repr=False)
    # Every hyperparameter read, with the value used (defaults included), for the manifest.
    used: Dict[str, str] = field(default_factory=dict)

    @staticmethod
    def from_env(environ: Optional[Dict[str, str]] = None) -> "Contract":
        env = dict(os.environ if environ is None else environ)
        return Contract.from_lookup(lambda name: env.get(name) or None, env)

    @staticmethod
    def from_lookup(get: Callable[[str], Optional[str]], env: Dict[str, str]) -> "Contract":
        def required(name: str) -> str:
            value = get(name)
            if value is None:
                raise ContractError(f"{name} is not set")
            return value

        def either(first: str, second: str) -> str:
            value = get(first) or get(second)
            if value is None:
                raise ContractError(f"{first} (or {second}) is not set")
            return value

        def whole(name: str, default: int, least: int) -> int:
            value = get(name)
            if value is None:
                return default
            try:
                number = int(value)
            except ValueError:
                raise ContractError(f"{name}={value!r} is not a whole number") from None
            if number < least:
                raise ContractError(f"{name}={value!r} is below {least}")
            return number

        metadata_store = required("METADATA_STORE_SERVER")
        store_url(metadata_store)
        ca = get(CA)
        if metadata_store.startswith("https://") and ca is None:
            raise ContractError(f"METADATA_STORE_SERVER is https but {CA} is not set")
        endpoint = get("AWS_ENDPOINT_URL") or either("MINIO_SERVER", "AWS_ENDPOINT_URL")
        world_size = whole("WORLD_SIZE", 1, 1)
        rank = whole("RANK", 0, 0)
        if rank >= world_size:
            raise ContractError(f"RANK={rank} is not below WORLD_SIZE={world_size}")
        return Contract(
            job_id=required("JOB_ID"),
            algorithm=get("ALGORITHM_NAME") or "custom",
            metadata_store=metadata_store,
            metadata_store_ca=ca,
            run_token=get(RUN_TOKEN),
            dataset_id=get("TRAINING_DATASET_ID") or "",
            version_hash=get("TRAINING_DATASET_VERSION_HASH") or "",
            data_bucket=required("TRAINING_DATA_BUCKET"),
            data_path=required("TRAINING_DATA_PATH").strip("/"),
            model_bucket=get("MODEL_BUCKET"),
            model_name=get("MODEL_NAME") or "model",
            s3_endpoint=endpoint_url(endpoint),
            s3_region=get("AWS_REGION") or "us-east-1",
            access_key=either("MINIO_SERVER_ACCESS_KEY", "AWS_ACCESS_KEY_ID"),
            secret_key=either("MINIO_SERVER_SECRET_KEY", "AWS_SECRET_ACCESS_KEY"),
            session_token=get("AWS_SESSION_TOKEN"),
            world_size=world_size,
            rank=rank,
            master_addr=get("MASTER_ADDR") or "localhost",
            master_port=whole("MASTER_PORT", 23456, 1),
            env=env,
        )

    def parameter(self, name: str, default, kind=str):
        """A hyperparameter converted by `kind`, `default` when unset; a clear error when malformed."""
        value = self.env.get(name)
        if value is None:
            self.used[name] = str(default)
            return default
        try:
            converted = kind(value)
        except ValueError:
            raise ContractError(f"{name}={value!r} is not a valid {kind.__name__}") from None
        self.used[name] = value
        return converted


def store_url(value: str) -> str:
    """The metadata store as gRPC's target (`host:port`)."""
    if "://" in value:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.port is None:
            raise ContractError(f"METADATA_STORE_SERVER={value!r}: expected host:port or http(s)://host:port")
        return parts.netloc
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise ContractError(f"METADATA_STORE_SERVER={value!r}: expected host:port or http(s)://host:port")
    return value


def endpoint_url(value: str) -> str:
    """The S3 endpoint as a URL: the original's `host:port` is plain http."""
    if "://" not in value:
        return f"http://{value}"
    scheme = value.split("://", 1)[0]
    if scheme not in ("http", "https"):
        raise ContractError(f"S3 endpoint {value!r}: expected http(s)://host[:port] or host:port")
    return value
