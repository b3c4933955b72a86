# Two set-up commands on a fresh Linux machine with Python 3.11:
#   make run    build .venv, start the local model server and the gateway on :5000
#   make test   install what tests need and run them
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# tensorflow-serving-api asks for the full `tensorflow` wheel; tensorflow-cpu (in
# requirements/server.txt) is the same code without CUDA, so the API goes in with --no-deps.
SERVING_API := tensorflow-serving-api==2.21.0
# Likewise keras-hub (tests only): it asks for tensorflow-text and so for `tensorflow`; the modules it
# imports are pinned in requirements/test.txt.
KERAS_HUB := keras-hub==0.32.0
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export TF_CPP_MIN_LOG_LEVEL := 2
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test test-label-studio venv test-venv system-test-deps lint protos bench soak demo-model demo-classifier clean

run: venv
	$(PY) -m tools.run_stack

test: test-venv system-test-deps
	$(PY) -m ruff check .
	$(PY) -m pytest

# The gateway as a real Label Studio's ML backend (tests/integrations/test_label_studio_live.py): Label
# Studio's PyPI package goes into its own .venv-label-studio/ (about a minute, once), then ~40 s.
test-label-studio: test-venv
	$(PY) -m pytest -m label_studio tests/integrations

venv: $(VENV)/.installed
test-venv: $(VENV)/.installed-test

$(VENV)/.installed: requirements/web.txt requirements/server.txt
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements/server.txt
	$(PY) -m pip install --quiet --no-deps $(SERVING_API)
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements/test.txt
	$(PY) -m pip install --quiet -r requirements/test.txt
	$(PY) -m pip install --quiet --no-deps $(KERAS_HUB)
	touch $@

# Debian's Chromium for the browser tests, docker-compose for the static checks of the stack, nginx
# to run the stack's proxy config in front of the gateway in the tests, redis-server for the job
# queue's distributed mode (the tests start their own on a loopback port).
system-test-deps:
	@command -v chromium >/dev/null && command -v docker-compose >/dev/null && test -x /usr/sbin/nginx && \
	  command -v redis-server >/dev/null || \
	  ($(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    chromium docker-compose nginx redis-server)

lint: test-venv
	$(PY) -m ruff check .

# Re-copy TF Serving's generated messages into web/serving/protos after changing SERVING_API.
protos: venv
	$(PY) tools/vendor_serving_protos.py

# Gateway against direct gRPC, a minimal forwarder and the hand-written tutorial pattern, in shared and
# pinned CPU modes, cross-checked with wrk (Debian's, installed when missing); writes
# bench/results/latest.{json,md}. BENCH_ARGS="--quick" for a smoke run. Then a predict job's
# throughput against direct gRPC and a worker's memory over 2,000 pictures (bench/results/jobs-*), and
# the same for a video job: frames/s against direct gRPC, RSS over 2,000 frames (bench/results/video-*).
bench: venv
	@command -v wrk >/dev/null || ($(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk)
	$(PY) -m bench $(BENCH_ARGS)
	$(PY) -m bench.jobs --mode shared
	$(PY) -m bench.jobs --mode pinned --memory-pictures 0
	$(PY) -m bench.video --mode pinned
	$(PY) -m bench.video --mode shared --memory-frames 0

# A minute of mixed good and bad uploads (errors, worker RSS), then model-server restarts (recovery
# time); writes bench/results/soak.{json,md}. SOAK_ARGS="--duration 600" for a longer one.
soak: venv
	$(PY) -m bench.soak $(SOAK_ARGS)

# Regenerate the demo data sets, train, export and evaluate both demo detectors and the classifier.
demo-model: venv
	$(PY) -m demo all

# Only the digit classifier (about 8 minutes on 2 cores).
demo-classifier: venv
	$(PY) -m demo classifier

clean:
	rm -rf $(VENV) build .pytest_cache
