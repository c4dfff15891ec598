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
COMMON  = --data-dir $(DATA) --device $(DEVICE)

.PHONY: install test teacher logits student sweep reproduce demo bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed  ## make .venv and install kdcli into it (editable, with pytest)

test: install  ## run the test suite (what CI runs)
	$(VENV)/bin/python -m pytest

teacher: install  ## train the teacher with the reference recipe (resumes if interrupted)
	$(KDCLI) train-teacher --epochs $(EPOCHS) --scheduler $(SCHEDULER) --out $(TEACHER) --resume $(COMMON)

logits: install  ## teacher logits over CACHE_EPOCHS augmented epochs into the cache (resumes)
	$(KDCLI) dump-logits --teacher $(TEACHER) --epochs $(CACHE_EPOCHS) --out $(CACHE) $(COMMON)

student: install  ## one student from the cache at temperature T
	$(KDCLI) train-student --cache $(CACHE) --temperature $(T) --epochs $(EPOCHS) --scheduler $(SCHEDULER) --out runs/student-T$(T) --resume $(COMMON)

clean:  ## remove the virtual environment
	rm -rf $(VENV)
