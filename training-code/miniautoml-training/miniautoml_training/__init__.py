"""MiniAutoML's training contract for Python training code (docs/training.md).

    from miniautoml_training import Run

    with Run() as run:
        texts, classes, labels = run.snapshot()
        ...
        run.log_epoch(epoch, {"accuracy": accuracy, "loss": loss})
        run.save_model({"model.pt": weights}, framework=f"torch {torch.__version__}")
"""

from .contract import Contract, ContractError
from .metadata import MetadataError, MetadataStore
from .run import Run
from .storage import Storage, StorageError, parse_snapshot

__all__ = ["Contract", "ContractError", "MetadataError", "MetadataStore", "Run", "Storage",
           "StorageError", "parse_snapshot"]
