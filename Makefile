# MiniAutoML — every entry point a developer or CI uses.
SHELL := /usr/bin/env bash
CARGO ?= cargo

.PHONY: help generate test e2e kind-e2e lint demo plugin images tools cluster-up cluster-down run bench-ingest bench-train bench-training bench-kueue bench-console bench-console-cluster bench-predict bench-distributed fuzz chaos

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

generate: ## Regenerate crds/*.yaml, the chart's CRDs, docs/api.md, the gRPC code in proto/src/generated, the Python helper's descriptor set and docs/security.md's methods table
	$(CARGO) run --quiet --locked -p miniautoml-api --bin crdgen
	$(CARGO) run --quiet --locked -p miniautoml-proto --features codegen --bin protogen
	cp proto/src/generated/descriptor.bin training-code/miniautoml-training/miniautoml_training/descriptor.bin
	MINIAUTOML_WRITE_DOCS=1 $(CARGO) test --quiet --locked -p miniautoml-operator --lib grpc::methods::tests::docs_security_md_shows_this_table

test: ## Run every test: unit and integration tests (the local cluster started on demand and reused), then the e2e suite through helm install
	@hack/tools.sh cluster >/dev/null
	@hack/images.sh >/dev/null
	@if hack/cluster.sh status | grep -q '^containerd: running'; then hack/cluster.sh load; fi
	hack/python-tests.sh
	$(CARGO) test --workspace --locked --no-fail-fast --exclude miniautoml-e2e
	E2E_IMAGES_BUILT=1 hack/e2e.sh local

e2e: ## The e2e suite through helm install on the local cluster (images imported into its node)
	hack/e2e.sh local

kind-e2e: ## The same e2e suite on a kind cluster from kind-config.yaml (needs Docker)
	hack/e2e.sh kind

# Generated cases per property in `make fuzz`.
FUZZ_CASES ?= 100000

fuzz: ## Property tests of the TextIntent encoder, snapshot merger, version hash, hyperparameters, OIP v2 body and model artifacts, 100,000 generated cases each
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --locked --test properties \
		-p miniautoml-data -p miniautoml-intent-classification -p miniautoml-intent-model -p miniautoml-predictor

# The soak's length in seconds (make chaos).
SOAK_SECONDS ?= 600

chaos: ## The lab while the operator is SIGKILLed 20+ times and S3 and the API server fail, then a 10-minute soak with RSS sampled (local cluster)
	@hack/tools.sh cluster >/dev/null
	@hack/images.sh >/dev/null
	@if hack/cluster.sh status | grep -q '^containerd: running'; then hack/cluster.sh load; fi
	SOAK_SECONDS=$(SOAK_SECONDS) $(CARGO) test --locked -p miniautoml-operator --test chaos -- --ignored --nocapture --test-threads=1

plugin: ## Build kubectl-miniautoml (target/release); put it on PATH and run `kubectl miniautoml`
	$(CARGO) build --release --locked -p miniautoml-kubectl-plugin

images: ## Build the OCI image archives (operator, predictor, trainer, pause, test images) into target/images
	@hack/tools.sh cluster >/dev/null
	hack/images.sh

lint: ## rustfmt and clippy, warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

demo: ## Run the dataset -> training -> serving -> prediction flow on the local cluster (or KUBECONFIG)
	hack/demo.sh

# Where `make run` serves gRPC: the local node's IP once its env file is sourced (training pods
# call the operator there), else loopback.
GRPC_HOST ?= $(or $(MINIAUTOML_NODE_IP),127.0.0.1)

# `make run` is a local lab: the gRPC API open to whoever reaches it, as in the original system
# (GRPC_AUTH=kubernetes checks callers' tokens as the chart does).
GRPC_AUTH ?= none

run: ## Run the operator as a local process against the current kubeconfig
	$(CARGO) run --locked -p miniautoml-operator --bin miniautoml-operator -- \
		--admin-addr 127.0.0.1:8080 --console-addr 127.0.0.1:8090 --grpc-addr $(GRPC_HOST):51001 --metadata-store-address $(GRPC_HOST):51001 \
		--grpc-auth $(GRPC_AUTH) --dataset-source '*=mini-automl-dm/upload/'

bench-ingest: ## Benchmark Dataset ingestion (100 MB and 1 GB) beside a raw S3 copy through the same store: MB/s, operator peak RSS, a store restart halfway
	hack/bench-ingest.sh

bench-train: ## Benchmark the trainer against the scikit-learn baseline on tweet_emotion and 150 generated labels (quality and time)
	hack/bench-train.sh

bench-distributed: ## Benchmark pytorch-intent TrainingJobs with 1, 2 and 4 workers (DDP) and the Rust trainer on the same snapshot: wall time, examples/s, test accuracy and macro-F1
	hack/bench-distributed.sh

bench-console: ## The console's answer with 500 runs and a 1500-epoch run page (router over an in-memory backend)
	$(CARGO) bench --locked -p miniautoml-console --bench runs_page

bench-console-cluster: ## The runs table with 500 finished runs in chromium, through the operator's console on the local cluster
	@hack/tools.sh cluster >/dev/null
	$(CARGO) bench --locked -p miniautoml-operator --bench console

bench-predict: ## Benchmark the predictor over gRPC and OIP v2 REST, closed and open loop, beside the Python grpcio baseline and a no-model server (the framework's ceiling): req/s, p50/p99, RSS
	hack/bench-predict.sh

bench-training: ## Benchmark 1,000 then 10,000 TrainingJobs on 100 simulated GPU nodes through the run queue: Job creation time, operator RSS, API requests, queue cost, store CPU
	@hack/tools.sh cluster >/dev/null
	$(CARGO) bench --locked -p miniautoml-operator --bench training_jobs

bench-kueue: ## Benchmark 500 single-GPU TrainingJobs through Kueue (quota 100 GPUs) beside the operator's own queue: time, most at once, RSS
	@hack/tools.sh cluster >/dev/null
	@hack/images.sh >/dev/null
	@if hack/cluster.sh status | grep -q '^containerd: running'; then hack/cluster.sh load; fi
	$(CARGO) bench --locked -p miniautoml-operator --bench kueue

tools: ## Build the pinned Kubernetes tools (hack/versions.env) into ~/.cache/miniautoml/tools
	@hack/tools.sh >/dev/null

cluster-up: ## Start the local cluster (control plane, a real kubelet + containerd node, kwok nodes, SeaweedFS S3)
	@hack/tools.sh cluster >/dev/null
	@hack/images.sh >/dev/null
	@hack/cluster.sh up

cluster-down: ## Stop the local cluster and delete its state
	@hack/cluster.sh down
