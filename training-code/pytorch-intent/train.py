"""pytorch-intent: MiniAutoML's PyTorch example algorithm, an intent classifier trained on a
Dataset snapshot, on one worker or data-parallel over several (DDP; gloo on CPU, NCCL on GPU).

Every rank trains on its own share of each epoch's examples with the per-rank batch
BATCH_SIZE / WORLD_SIZE, so the effective batch, the steps and the model are those of one
worker. The contract (environment, reports, model files) is handled by miniautoml_training.
Hyperparameters: EPOCHS (5), BATCH_SIZE (64), LR (0.005), EMBEDDING_DIM (64), HIDDEN (64),
MIN_COUNT (2), SEED (42), VALIDATION_FRACTION (0.1), TEST_FRACTION (0.1), THREADS (torch's
default). To try failures: FAIL_RANK and FAIL_EPOCH make that rank raise at that epoch (only
in attempt FAIL_ATTEMPT when set: MINIAUTOML_ATTEMPT counts the gang's attempts), and
DELAY_RANK with DELAY_SECONDS start that rank late.
"""

import hashlib
import os
import random
import time

import torch
import torch.distributed as dist
from torch import nn

import model
from miniautoml_training import Run


def macro_f1(predicted, truth, labels: int) -> float:
    scores = []
    for c in range(labels):
        tp = sum(1 for p, t in zip(predicted, truth) if p == c and t == c)
        fp = sum(1 for p, t in zip(predicted, truth) if p == c and t != c)
        fn = sum(1 for p, t in zip(predicted, truth) if p != c and t == c)
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores) if scores else 0.0


def evaluate(network, encoded, classes, labels, loss_fn):
    if not encoded:
        return None
    network.eval()
    with torch.no_grad():
        logits = network(*model.batch(encoded))
        loss = loss_fn(logits, torch.tensor(classes)).item()
        predicted = logits.argmax(dim=1).tolist()
    network.train()
    accuracy = sum(1 for p, t in zip(predicted, classes) if p == t) / len(classes)
    return {"accuracy": accuracy, "loss": loss, "macroF1": macro_f1(predicted, classes, labels)}


def weights_digest(network) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(network.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def main():
    delay_rank = os.environ.get("DELAY_RANK")
    if delay_rank is not None and delay_rank == os.environ.get("RANK", "0"):
        seconds = float(os.environ.get("DELAY_SECONDS", "30"))
        print(f"rank {delay_rank}: starting {seconds:.0f} s late (DELAY_RANK)", flush=True)
        time.sleep(seconds)
    with Run() as run:
        epochs = run.parameter("EPOCHS", 5, int)
        batch_size = run.parameter("BATCH_SIZE", 64, int)
        lr = run.parameter("LR", 0.005, float)
        embedding_dim = run.parameter("EMBEDDING_DIM", 64, int)
        hidden = run.parameter("HIDDEN", 64, int)
        min_count = run.parameter("MIN_COUNT", 2, int)
        seed = run.parameter("SEED", 42, int)
        validation_fraction = run.parameter("VALIDATION_FRACTION", 0.1, float)
        test_fraction = run.parameter("TEST_FRACTION", 0.1, float)
        threads = run.parameter("THREADS", 0, int)
        fail_rank = run.parameter("FAIL_RANK", -1, int)
        fail_epoch = run.parameter("FAIL_EPOCH", 0, int)
        fail_attempt = run.parameter("FAIL_ATTEMPT", 0, int)
        if fail_attempt and fail_attempt != int(os.environ.get("MINIAUTOML_ATTEMPT", "1")):
            fail_rank = -1
        if threads > 0:
            torch.set_num_threads(threads)
        if batch_size < run.world_size:
            raise ValueError(f"BATCH_SIZE={batch_size} is below WORLD_SIZE={run.world_size}")

        texts, classes, labels = run.snapshot()
        order = list(range(len(texts)))
        random.Random(seed).shuffle(order)
        n_test, n_validation = int(len(order) * test_fraction), int(len(order) * validation_fraction)
        test, validation, train = (order[:n_test], order[n_test:n_test + n_validation],
                                   order[n_test + n_validation:])
        if not train:
            raise ValueError(f"no training examples left of {len(texts)} after the holdouts")
        vocabulary = model.Vocabulary.fit([texts[i] for i in train], min_count)
        encoded = [vocabulary.encode(t) for t in texts]
        print(f"{len(texts)} examples ({len(train)} train, {len(validation)} validation, {len(test)} test), "
              f"{len(labels)} labels, {len(vocabulary.itos)} tokens", flush=True)

        torch.manual_seed(seed)  # the same initial weights on every rank
        network = model.Network(len(vocabulary.itos), embedding_dim, hidden, len(labels))
        trained = network
        if run.world_size > 1:
            trained = nn.parallel.DistributedDataParallel(network)
        counts = torch.bincount(torch.tensor([classes[i] for i in train]), minlength=len(labels)).float()
        weights = (counts.sum() / (len(labels) * counts.clamp(min=1)))
        loss_fn = nn.CrossEntropyLoss(weight=weights)
        optimizer = torch.optim.Adam(trained.parameters(), lr=lr)
        per_rank = -(-batch_size // run.world_size)
        seen = 0
        started = time.monotonic()
        scores = None
        for epoch in range(1, epochs + 1):
            if run.rank == fail_rank and epoch == fail_epoch:
                raise RuntimeError(f"FAIL_RANK={fail_rank} FAIL_EPOCH={fail_epoch}: failing on purpose")
            shuffled = list(train)
            random.Random(seed * 1000 + epoch).shuffle(shuffled)
            # Every rank takes the same number of steps: the tail that does not divide is left out.
            usable = len(shuffled) - len(shuffled) % run.world_size
            mine = shuffled[run.rank:usable:run.world_size]
            total = 0.0
            for start in range(0, len(mine), per_rank):
                chunk = mine[start:start + per_rank]
                optimizer.zero_grad()
                loss = loss_fn(trained(*model.batch([encoded[i] for i in chunk])),
                               torch.tensor([classes[i] for i in chunk]))
                loss.backward()
                optimizer.step()
                total += loss.item() * len(chunk)
            seen += len(mine)
            metrics = {"trainLoss": total / max(len(mine), 1)}
            scores = evaluate(network, [encoded[i] for i in validation], [classes[i] for i in validation],
                              len(labels), loss_fn)
            metrics.update(scores or {})
            run.log_epoch(epoch, metrics)
        elapsed = time.monotonic() - started

        digest = weights_digest(network)
        if run.world_size > 1:
            digests = [None] * run.world_size
            dist.all_gather_object(digests, digest)
            if len(set(digests)) != 1:
                raise RuntimeError(f"the ranks' weights differ after training: {digests}")
        test_scores = evaluate(network, [encoded[i] for i in test], [classes[i] for i in test], len(labels),
                               loss_fn)
        final = {f"test{k[0].upper()}{k[1:]}": v for k, v in (test_scores or {}).items()}
        final["examplesPerSecond"] = seen * run.world_size / elapsed if elapsed > 0 else 0.0
        run.save_model(model.files(network, vocabulary, labels), framework=f"torch {torch.__version__}",
                       architecture="embedding-bag-mlp", metrics=final,
                       data={"train": str(len(train)), "validation": str(len(validation)), "test": str(len(test)),
                             "workers": str(run.world_size), "weightsSha256": digest})
        summary = (f"test accuracy {test_scores['accuracy']:.3f}, macro-F1 {test_scores['macroF1']:.3f}"
                   if test_scores else f"validation accuracy {scores['accuracy']:.3f}" if scores
                   else f"trained {epochs} epochs")
        if run.world_size > 1:
            summary += f"; weights identical on {run.world_size} ranks (sha256 {digest[:12]})"
        run.message = summary


if __name__ == "__main__":
    main()
