"""The run's object storage: the training snapshot in, the model's files out."""

import csv
import hashlib
import io
import json
from typing import Dict, List, Tuple

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from .contract import Contract

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "miniautoml.model/v1"


class StorageError(Exception):
    """A storage call failed or found what it must not; the message says which object."""


class Storage:
    def __init__(self, contract: Contract):
        self._client = boto3.session.Session().client(
            "s3",
            endpoint_url=contract.s3_endpoint,
            region_name=contract.s3_region,
            aws_access_key_id=contract.access_key,
            aws_secret_access_key=contract.secret_key,
            aws_session_token=contract.session_token,
            config=Config(s3={"addressing_style": "path"},
                          retries={"max_attempts": 8, "mode": "standard"}),
        )

    def read(self, bucket: str, key: str) -> bytes:
        try:
            return self._client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except (ClientError, BotoCoreError) as error:
            raise StorageError(f"reading s3://{bucket}/{key}: {error}") from None

    def write(self, bucket: str, key: str, body: bytes, content_type: str):
        try:
            self._client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)
        except (ClientError, BotoCoreError) as error:
            raise StorageError(f"writing s3://{bucket}/{key}: {error}") from None

    def list(self, bucket: str, prefix: str) -> List[str]:
        try:
            answer = self._client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=10)
        except (ClientError, BotoCoreError) as error:
            raise StorageError(f"listing s3://{bucket}/{prefix}: {error}") from None
        return [o["Key"] for o in answer.get("Contents", [])]

    def upload_model(self, bucket: str, path: str, files: Dict[str, bytes], manifest: dict) -> dict:
        """Writes `files` under `path`, then `manifest.json` (the given fields, the format and each
        file's sha256 and size) last. Refuses a folder that already holds objects: a run's
        artifacts are never overwritten. Returns the manifest written."""
        if MANIFEST in files:
            raise StorageError(f"{MANIFEST} is written by the helper, from the other files")
        prefix = f"{path.strip('/')}/"
        existing = self.list(bucket, prefix)
        if existing:
            raise StorageError(
                f"s3://{bucket}/{prefix} already holds objects (e.g. {existing[0]}); "
                "a run's artifacts are never overwritten")
        manifest = dict(manifest, format=MANIFEST_FORMAT, files={
            name: {"sha256": hashlib.sha256(body).hexdigest(), "bytes": len(body)}
            for name, body in sorted(files.items())
        })
        for name, body in sorted(files.items()):
            kind = "application/json" if name.endswith(".json") else "application/octet-stream"
            self.write(bucket, prefix + name, body, kind)
        self.write(bucket, prefix + MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode(),
                   "application/json")
        return manifest


def parse_snapshot(examples_csv: bytes, labels_csv: bytes) -> Tuple[List[str], List[int], List[str]]:
    """A text-intent snapshot: texts, each text's class (0-based: its first label) and the label
    names. Every malformed row is an error naming its file and line."""
    labels = []
    for line, row in enumerate(csv.reader(io.StringIO(labels_csv.decode("utf-8"))), start=1):
        if not row or not row[0].isdigit() or int(row[0]) != line:
            raise StorageError(f"labels.csv line {line}: expected id {line}, found {row[:1]}")
        labels.append(row[1] if len(row) > 1 else "")
    texts, classes = [], []
    for line, row in enumerate(csv.reader(io.StringIO(examples_csv.decode("utf-8"))), start=1):
        if len(row) != 2:
            raise StorageError(f"examples.csv line {line}: expected 2 columns, found {len(row)}")
        first = row[1].split(";")[0]
        if not first.isdigit() or not 1 <= int(first) <= len(labels):
            raise StorageError(
                f"examples.csv line {line}: label id {first!r} is not in labels.csv (1..={len(labels)})")
        texts.append(row[0])
        classes.append(int(first) - 1)
    if not texts:
        raise StorageError("examples.csv has no rows")
    return texts, classes, labels
