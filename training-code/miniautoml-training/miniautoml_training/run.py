"""One training run, as a context manager: the few lines a training script needs."""

import os
import sys
import traceback
from typing import Dict, Optional

from . import distributed
from .contract import Contract, ContractError
from .metadata import MetadataStore, now
from .storage import Storage, StorageError, parse_snapshot


class Run:
    """Reads the contract, joins the other workers, reports the run to the metadata store.

        with Run("my-algorithm 1.0") as run:
            texts, classes, labels = run.snapshot()
            for epoch in range(1, epochs + 1):
                ...
                run.log_epoch(epoch, {"accuracy": acc, "loss": loss})
            run.save_model({"model.pt": data}, metrics={"testAccuracy": acc})
            run.message = f"test accuracy {acc:.3f}"

    Rank 0 starts the run (`LogRunStart`), stores the model and ends it (`LogRunEnd`); every
    rank reports its own epochs (`<rank>-<epoch>`). Leaving the block by an exception reports
    the run failed with the exception's last line, on any rank, and exits non-zero.
    """

    def __init__(self, code_version: Optional[str] = None, environ: Optional[Dict[str, str]] = None):
        self.code_version = code_version or os.environ.get("MINIAUTOML_CODE_VERSION", "unknown")
        self._environ = environ
        self.contract: Optional[Contract] = None
        self.metadata: Optional[MetadataStore] = None
        self.storage: Optional[Storage] = None
        self.backend: Optional[str] = None
        self.model_bucket: Optional[str] = None
        self.model_path: Optional[str] = None
        self.artifact_version: Optional[str] = None
        # What rank 0 reports as the run's outcome when the block ends without an exception.
        self.message = "trained"
        self._epoch_started = now()

    @property
    def rank(self) -> int:
        return self.contract.rank

    @property
    def world_size(self) -> int:
        return self.contract.world_size

    def parameter(self, name: str, default, kind=str):
        """A hyperparameter (`kind(value)`, `default` when unset), recorded for the manifest."""
        return self.contract.parameter(name, default, kind)

    def __enter__(self) -> "Run":
        try:
            self.contract = Contract.from_env(self._environ)
        except ContractError as error:
            _report_early_failure(self._environ, str(error))
            raise
        self.metadata = MetadataStore(self.contract)
        try:
            self.storage = Storage(self.contract)
            self.backend = distributed.init(self.contract)
            print(f"run {self.contract.job_id} rank {self.rank}/{self.world_size}"
                  + (f" ({self.backend})" if self.backend else ""), flush=True)
            if self.rank == 0:
                bucket, path = self.metadata.log_run_start(
                    self.contract.dataset_id, self.contract.version_hash, self.code_version)
                self.model_bucket = bucket or self.contract.model_bucket
                self.model_path = path
                if not self.model_bucket:
                    raise ContractError("LogRunStart named no artifact bucket and MODEL_BUCKET is not set")
        except BaseException as error:
            self._fail(error)
            raise
        self._epoch_started = now()
        return self

    def __exit__(self, kind, error, tb):
        try:
            if error is not None:
                self._fail(error)
                return False
            if self.rank == 0:
                self.metadata.log_run_end(True, self.message)
            print(f"run {self.contract.job_id} rank {self.rank} done: {self.message}", flush=True)
            return False
        finally:
            if self.backend:
                import torch.distributed as dist
                if dist.is_initialized():
                    dist.destroy_process_group()
            self.metadata.close()

    def snapshot(self):
        """The training snapshot: texts, classes (0-based) and label names."""
        read = lambda name: self.storage.read(self.contract.data_bucket, f"{self.contract.data_path}/{name}")
        return parse_snapshot(read("examples.csv"), read("labels.csv"))

    def log_epoch(self, epoch: int, metrics: Dict[str, float]):
        """Reports epoch `epoch` (1-based) of this rank, timed from the previous report."""
        self.metadata.log_epoch(f"{self.rank}-{epoch}", self._epoch_started, metrics)
        shown = " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
        print(f"rank {self.rank} epoch {epoch}: {shown}", flush=True)
        self._epoch_started = now()

    def save_model(self, files: Dict[str, bytes], *, framework: str, architecture=None,
                   metrics: Optional[Dict[str, float]] = None, data: Optional[Dict[str, str]] = None):
        """Rank 0: uploads `files` and their manifest, then registers the artifact. Other ranks:
        nothing (their weights are rank 0's)."""
        if self.rank != 0:
            return None
        provenance = {"datasetId": self.contract.dataset_id, "versionHash": self.contract.version_hash,
                      "source": f"s3://{self.contract.data_bucket}/{self.contract.data_path}"}
        manifest = {
            "algorithm": self.contract.algorithm,
            "architecture": architecture,
            "framework": framework,
            "codeVersion": self.code_version,
            "hyperparameters": dict(sorted(self.contract.used.items())),
            "metrics": metrics or {},
            "data": dict(provenance, **(data or {})),
        }
        written = self.storage.upload_model(self.model_bucket, self.model_path, files, manifest)
        self.artifact_version = self.metadata.create_artifact(
            self.contract.model_name, self.model_bucket, self.model_path, self.contract.algorithm)
        return written

    def _fail(self, error: BaseException):
        reason = last_line(error)
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
        print(reason, file=sys.stderr, flush=True)
        try:
            self.metadata.log_run_end(False, f"rank {self.rank}: {reason}" if self.world_size > 1 else reason,
                                      retry_seconds=10)
        except Exception as report:  # the exit status still tells the operator
            print(f"reporting the failure: {report}", file=sys.stderr, flush=True)


def last_line(error: BaseException) -> str:
    text = "".join(traceback.format_exception_only(type(error), error)).strip().splitlines()
    return text[-1] if text else type(error).__name__


def _report_early_failure(environ, reason: str):
    env = os.environ if environ is None else environ
    if not env.get("JOB_ID") or not env.get("METADATA_STORE_SERVER"):
        return
    try:
        contract = Contract(job_id=env["JOB_ID"], algorithm="", metadata_store=env["METADATA_STORE_SERVER"],
                            metadata_store_ca=env.get("METADATA_STORE_CA"),
                            run_token=env.get("MINIAUTOML_RUN_TOKEN"), dataset_id="", version_hash="",
                            data_bucket="", data_path="", model_bucket=None, model_name="", s3_endpoint="",
                            s3_region="", access_key="", secret_key="", session_token=None)
        store = MetadataStore(contract)
        store.log_run_end(False, reason, retry_seconds=5)
        store.close()
    except Exception:
        pass
