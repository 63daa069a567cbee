# ipdbg: `make demo` runs the built-in lab, `make test` runs the tests.
# Both start with `setup`, which is idempotent: it installs what is missing and
# rebuilds only what changed.
SHELL := /bin/bash
# Debian's own interpreter (python3-venv is its venv module). The editable install
# is a plain path entry (compat mode): setuptools' default import hook costs every
# `ipdbg` start ~8 ms (pathlib, importlib.util), half of Python's start-up.
PYTHON ?= /usr/bin/python3
VENV := .venv
PY := $(VENV)/bin/python
# Debian packages and why:
#   iptables nftables       - the backends ipdbg drives (iptables-nft and iptables-legacy)
#   libnftables1 libbpf1    - loaded through ctypes at run time
#   clang llvm libbpf-dev   - build of the CO-RE BPF objects (bpf_helpers.h)
#   bpftool                 - regenerates vmlinux.h; `doctor` cross-checks
#   iproute2 python3-venv   - namespaces/veth for labs and tests; the virtualenv
#   iperf3                  - throughput in bench/
#   ipset                   - tests: rulesets with -m set / -j SET need their sets created
APT_PACKAGES := iptables nftables libnftables1 libbpf1 libbpf-dev clang llvm bpftool \
                iproute2 iputils-ping python3 python3-venv python3-pip make gcc libc6-dev iperf3 kmod ipset

.PHONY: setup apt venv bpf pyc demo lint test test-unit test-root bench clean

setup: apt venv bpf pyc

apt:
	@missing=$$(for p in $(APT_PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "installing: $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade 'pip==24.2'
	$(PY) -m pip install -q -e '.[test]' --config-settings editable_mode=compat
	touch $@

bpf:
	$(MAKE) -s -C ipdbg/bpf

# Bytecode, as an installed tool has it: without it (PYTHONDONTWRITEBYTECODE=1 here)
# every `ipdbg rules` start compiles its modules again (docs/rules.md, "Speed").
pyc: venv
	@$(PY) -m compileall -q ipdbg

demo: setup
	$(VENV)/bin/ipdbg demo

lint: venv
	$(PY) -m pyflakes ipdbg tests bench

test: setup lint
	$(PY) -m pytest -q tests/unit tests/root

test-unit: venv
	$(PY) -m pytest -q tests/unit

test-root: setup
	$(PY) -m pytest -q tests/root

bench: setup
	$(PY) bench/rules.py
	$(PY) bench/events.py --write-results
	$(PY) bench/verdicts.py
	$(PY) bench/why_probe.py

clean:
	$(MAKE) -s -C ipdbg/bpf clean
	rm -rf $(VENV) build *.egg-info
