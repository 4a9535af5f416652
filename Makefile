# The README's two commands. Both work on a fresh Debian machine with nothing but Python:
# they install Debian packages (as root, or with sudo), the virtual environment and the
# Python packages themselves.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# ffmpeg: test media and format checks; GStreamer RTSP server (system Python) for live tests;
# promtool (Debian's prometheus package) to check /metrics.
DEBIAN_PACKAGES := python3-venv ffmpeg python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base \
	gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly gstreamer1.0-plugins-bad gstreamer1.0-libav prometheus systemd

.PHONY: demo test debian-deps venv clean-demo

demo: $(VENV)/.train-installed
	$(BIN)/ad-detector demo

# Two workers, whole test files each (module fixtures are built once), the wall-clock-paced
# files as one group, queued longest first; the session's trained bundle is shared between
# them (tests/conftest.py, tests/README.md).
test: debian-deps $(VENV)/.test-installed
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=25 tests

debian-deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV) || { $(MAKE) debian-deps && $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.train-installed: $(VENV)/bin/python pyproject.toml
	$(BIN)/python -m pip install -q -e '.[train]'
	touch $@

$(VENV)/.test-installed: $(VENV)/bin/python pyproject.toml
	$(BIN)/python -m pip install -q -e '.[train,test,cluster]'
	touch $@ $(VENV)/.train-installed

clean-demo:
	rm -rf demo
