"""Joining the run's other workers with torch.distributed (imported only when used)."""

import os
import socket
import time
from datetime import timedelta

from .contract import Contract, ContractError

# How long a worker waits for rank 0's name to resolve (its pod may start later than the others).
MASTER_WAIT_SECONDS = 300


def wait_for_master(contract: Contract, limit: float = MASTER_WAIT_SECONDS):
    """Waits until MASTER_ADDR resolves: old torch treats a failed lookup as fatal, and the
    headless Service names rank 0 only once its pod exists."""
    deadline = time.monotonic() + limit
    while True:
        try:
            socket.getaddrinfo(contract.master_addr, contract.master_port)
            return
        except socket.gaierror as error:
            if time.monotonic() > deadline:
                raise ContractError(
                    f"MASTER_ADDR={contract.master_addr!r} did not resolve within {limit:.0f} s: {error}"
                ) from None
            time.sleep(1)


def init(contract: Contract, timeout_seconds: float = 600):
    """Joins the process group (NCCL when CUDA is present, gloo otherwise) and returns the
    backend's name; nothing for a single worker."""
    if contract.world_size == 1:
        return None
    import torch
    import torch.distributed as dist

    wait_for_master(contract)
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    os.environ.setdefault("MASTER_ADDR", contract.master_addr)
    os.environ.setdefault("MASTER_PORT", str(contract.master_port))
    dist.init_process_group(backend, init_method="env://", rank=contract.rank,
                            world_size=contract.world_size, timeout=timedelta(seconds=timeout_seconds))
    return backend
