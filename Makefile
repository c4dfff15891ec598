# kdcli: the whole pipeline as make targets. Every variable can be overridden:
#   make teacher EPOCHS=30 SCHEDULER=onecycle DATA=/path/to/cifar
PYTHON ?= python3
VENV   ?= .venv
KDCLI  := $(VENV)/bin/kdcli
DATA   ?= data
DEVICE ?= auto
EPOCHS ?= 300
SCHEDULER ?= multistep
CACHE_EPOCHS ?= $(EPOCHS)
TEACHER ?= runs/teacher
CACHE  ?= cache/logits.h5
T      ?= 30
TEMPERATURES ?= 1,10,30,50,100
SEEDS  ?= 777,10,20,30
SWEEP  ?= runs/sweep
VAL_SIZE ?= 0
COMMON  = --data-dir $(DATA) --device $(DEVICE)
ARGS   ?=

.PHONY: install test teacher logits student sweep reproduce demo bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed  ## make .venv and install kdcli into it (editable, with pytest)

test: install  ## run the test suite (what CI runs)
	$(VENV)/bin/python -m pytest

teacher: $(TEACHER)/summary.json  ## train the teacher with the reference recipe (resumes if interrupted)
$(TEACHER)/summary.json: | $(VENV)/.installed
	$(KDCLI) train-teacher --epochs $(EPOCHS) --scheduler $(SCHEDULER) --out $(TEACHER) --val-size $(VAL_SIZE) --resume $(COMMON) $(ARGS)

logits: $(CACHE).done  ## teacher logits over CACHE_EPOCHS augmented epochs into the cache (resumes)
# A cache older than the teacher's summary is another teacher's: it is made anew (--force). Any other
# resumes if unfinished, and is kept if complete (--resume): a dump stopped part-way, or stopped after it
# finished but before the touch, goes on from where it is.
$(CACHE).done: $(TEACHER)/summary.json
	rm -f $@
	$(KDCLI) dump-logits --teacher $(TEACHER) --epochs $(CACHE_EPOCHS) --out $(CACHE) --resume \
		$(if $(shell test $(TEACHER)/summary.json -nt $(CACHE) && echo older),--force) $(COMMON) $(ARGS)
	touch $@

student: $(CACHE).done  ## one student from the cache at temperature T
	$(KDCLI) train-student --cache $(CACHE) --temperature $(T) --epochs $(EPOCHS) --scheduler $(SCHEDULER) --out runs/student-T$(T) --val-size $(VAL_SIZE) --resume $(COMMON) $(ARGS)

sweep: $(CACHE).done  ## every temperature x seed, plus baselines, batched; then the report
	$(KDCLI) sweep --cache $(CACHE) --temperatures $(TEMPERATURES) --seeds $(SEEDS) --epochs $(EPOCHS) --scheduler $(SCHEDULER) --out $(SWEEP) --val-size $(VAL_SIZE) $(COMMON) $(ARGS)

reproduce: sweep  ## the reference table: teacher 300 epochs -> cache 300 epochs -> 24 students; rerun to resume

# The same pipeline shrunk to a few minutes on a 2-core CPU: the first thing to run. The teacher is
# resnet8, 50x cheaper than resnet18 (which trains at ~30 images/s on 2 CPU cores).
DEMO_SUBSET ?= 5000
DEMO_EPOCHS ?= 5
demo: install  ## the whole pipeline on a subset, a few minutes on a CPU; prints the table
	$(KDCLI) train-teacher --model resnet8 --epochs $(DEMO_EPOCHS) --scheduler onecycle --subset $(DEMO_SUBSET) \
		--eval-every $(DEMO_EPOCHS) --out runs/demo/teacher --resume --quiet $(COMMON)
	test -f cache/demo.h5.done || ($(KDCLI) dump-logits --teacher runs/demo/teacher --epochs $(DEMO_EPOCHS) \
		--subset $(DEMO_SUBSET) --out cache/demo.h5 --resume --quiet $(COMMON) && touch cache/demo.h5.done)
	$(KDCLI) sweep --cache cache/demo.h5 --temperatures 1,30 --seeds 1,2 --epochs $(DEMO_EPOCHS) --scheduler onecycle \
		--subset $(DEMO_SUBSET) --eval-every $(DEMO_EPOCHS) --out runs/demo/sweep $(COMMON)

bench: install  ## the benchmark table (BENCH_ARGS=--smoke for a quick run)
	$(VENV)/bin/python bench/bench.py $(BENCH_ARGS)

clean:  ## remove the virtual environment
	rm -rf $(VENV)
