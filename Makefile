# kdcli: the whole pipeline as make targets. Every variable can be overridden:
#   make teacher EPOCHS=30 SCHEDULER=onecycle DATA=/path/to/cifar
PYTHON ?= python3
VENV   ?= .venv
# -m: this checkout's kdcli, which python finds first in the folder make runs in. VENV's bin/kdcli runs the
# checkout its editable install points at, another one where VENV is shared.
KDCLI  := $(VENV)/bin/python -m kdcli
# DATA and SUBSET empty: the teacher gets kdcli's defaults, and the later stages read the teacher's back
DATA   ?=
DEVICE ?= auto
EPOCHS ?= 300
SCHEDULER ?= multistep
EVAL_EVERY ?= 1
SUBSET ?=
TEACHER_MODEL ?= resnet18
CACHE_EPOCHS ?= $(EPOCHS)
TEACHER ?= runs/teacher
CACHE  ?= cache/logits.h5
T      ?= 30
STUDENT ?= runs/student-T$(T)
TEMPERATURES ?= 1,10,30,50,100
SEEDS  ?= 777,10,20,30
SWEEP  ?= runs/sweep
VAL_SIZE ?= 0
COMMON  = $(if $(DATA),--data-dir $(DATA)) --device $(DEVICE) $(if $(SUBSET),--subset $(SUBSET))
ARGS   ?=
BENCH_ARGS ?=
# make splits a value at whitespace: VENV="/my venvs/k" would make a venv in /my, and `make clean` delete it.
# And a colon in a target's name reads as a rule's (TEACHER=runs/12:00: "target pattern contains no '%'").
$(foreach v,VENV DATA TEACHER CACHE STUDENT SWEEP DEMO DEMO_CACHE,$(if $(word 2,$($(v))),\
	$(error $(v)="$($(v))": make cannot take a path with whitespace; give it a link without one, or run kdcli itself)))
$(foreach v,VENV TEACHER CACHE DEMO DEMO_CACHE,$(if $(findstring :,$($(v))),\
	$(error $(v)="$($(v))": make cannot take a path with a colon; give it a link without one, or run kdcli itself)))

.PHONY: help install test teacher logits student sweep reproduce demo bench clean FORCE
.DEFAULT_GOAL := help

help:  ## list the targets and the variables that change them (this)
	@awk -F ':.*## ' '/^[a-z]+:.*## /{printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "variables, with their defaults (make TARGET NAME=value):"
	@awk '/^[A-Z_]+ *\?=/{sub(/ *\?= */, "="); row = row "  " $$0; if (++n % 5 == 0) {print row; row = ""}} END {if (row) print row}' $(MAKEFILE_LIST)

# The venv is made once. Made again by another python (PYTHON, or python3 upgraded since), it would get that
# python's pip and site-packages beside the first's, while $(VENV)/bin/python stays the first: pip would
# fill the folder make's python does not read. `make clean install PYTHON=...` changes the python. A venv stopped
# before its pip (venv links bin/python, then runs ensurepip for seconds) gets it as venv would, from its own python.
$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	test -x $(VENV)/bin/pip || $(VENV)/bin/python -m ensurepip --upgrade --default-pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed  ## make .venv and install kdcli into it (editable, with pytest)

test: install  ## run the test suite (what CI runs)
	$(VENV)/bin/python -m pytest

teacher: $(TEACHER)/summary.json  ## train the teacher with the reference recipe (resumes if interrupted)
$(TEACHER)/summary.json: | $(VENV)/.installed
	$(KDCLI) train-teacher --model $(TEACHER_MODEL) --epochs $(EPOCHS) --scheduler $(SCHEDULER) --eval-every $(EVAL_EVERY) --out $(TEACHER) \
		--val-size $(VAL_SIZE) --resume $(COMMON) $(ARGS)

logits: $(CACHE).done  ## teacher logits over CACHE_EPOCHS augmented epochs into the cache (resumes)
# A cache older than the teacher's summary is another teacher's: it is made anew (--force). Any other
# resumes if unfinished, and is kept if complete (--resume): a dump stopped part-way, or stopped after it
# finished but before its .done was written, goes on from where it is. A cache deleted since its .done is made again (FORCE).
# The .done names its teacher (links resolved): another TEACHER into the same CACHE, trained before that cache was
# made, is not newer than it, and its students would learn from the other teacher's logits without a word (FORCE:
# the dump then refuses that cache as another teacher's). An empty .done, of a kdcli before it named one, is trusted.
DONE_TEACHER := $(shell cat $(CACHE).done 2>/dev/null)
$(CACHE).done: $(TEACHER)/summary.json $(if $(wildcard $(CACHE)),,FORCE) \
		$(if $(DONE_TEACHER),$(if $(filter $(realpath $(TEACHER)),$(DONE_TEACHER)),,FORCE))
	rm -f $@
	$(KDCLI) dump-logits --teacher $(TEACHER) --epochs $(CACHE_EPOCHS) --out $(CACHE) --resume \
		$(if $(shell test $(TEACHER)/summary.json -nt $(CACHE) && echo older),--force) $(COMMON) $(ARGS)
	echo $(realpath $(TEACHER)) > $@

FORCE:

student: $(CACHE).done  ## one student from the cache at temperature T, into STUDENT (default runs/student-T<T>)
	$(KDCLI) train-student --cache $(CACHE) --temperature $(T) --epochs $(EPOCHS) --scheduler $(SCHEDULER) --eval-every $(EVAL_EVERY) \
		--out $(STUDENT) --val-size $(VAL_SIZE) --resume $(COMMON) $(ARGS)

# Quoted: a list written as in prose (SEEDS="777, 10") is one argument, which kdcli reads.
sweep: $(CACHE).done  ## every temperature x seed, plus baselines, batched; then the report
	$(KDCLI) sweep --cache $(CACHE) --temperatures '$(TEMPERATURES)' --seeds '$(SEEDS)' --epochs $(EPOCHS) --scheduler $(SCHEDULER) \
		--eval-every $(EVAL_EVERY) --out $(SWEEP) --val-size $(VAL_SIZE) $(COMMON) $(ARGS)

reproduce: sweep  ## the reference table: teacher 300 epochs -> cache 300 epochs -> 24 students; rerun to resume

# The same pipeline, through the same targets, shrunk to a minute on a 2-core CPU: the first thing to run.
# The teacher is resnet8, 44x fewer FLOPs than resnet18 (which trains at ~94 images/s on 2 CPU cores: bench/README run 5).
DEMO_SUBSET ?= 5000
DEMO_EPOCHS ?= 5
DEMO ?= runs/demo
DEMO_CACHE ?= cache/demo.h5
demo: install  ## the whole pipeline on a subset, a minute on a CPU; prints the table
	$(MAKE) --no-print-directory sweep TEACHER=$(DEMO)/teacher CACHE=$(DEMO_CACHE) SWEEP=$(DEMO)/sweep TEACHER_MODEL=resnet8 \
		SUBSET=$(DEMO_SUBSET) EPOCHS=$(DEMO_EPOCHS) CACHE_EPOCHS=$(DEMO_EPOCHS) SCHEDULER=onecycle EVAL_EVERY=$(DEMO_EPOCHS) \
		TEMPERATURES=1,30 SEEDS=1,2 VAL_SIZE=0

bench: install  ## the benchmark table (BENCH_ARGS=--smoke: a quick check that it runs, not timings)
	$(VENV)/bin/python bench/bench.py $(BENCH_ARGS)

clean:  ## remove the virtual environment
	rm -rf $(VENV)
