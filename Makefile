# The operator's console. `make run` and `make test` are the only two commands a fresh
# machine needs: both create the virtualenv and install what they need themselves.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA_DIR ?= var/dev
CONFIG ?= configs/default.toml
JPKI := $(BIN)/jpki --config $(CONFIG) --data-dir $(DATA_DIR)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# command:Debian package; softhsm2 backs the PKCS#11 key-store tests, postgresql the tests of
# the PostgreSQL registry engine (they start a throwaway cluster of their own).
DEB_PACKAGES := openssl:openssl softhsm2-util:softhsm2 pg_ctlcluster:postgresql

BENCH_OCSP_PACKAGES := wrk golang-cfssl
# every package, held to `mypy --strict` by `make lint` (pyproject.toml: [tool.mypy]); a new
# package joins this list
MYPY_PACKAGES := ocsp httpapi registry jpki ca revocation linkage fees crl demo

.PHONY: help deps venv run init serve signer test fuzz lint audit-verify clean bench-ocsp bench-workers bench-crl \
        bench-crl-urgent bench-scale rotate-keys \
        rotate-ca rotate-ocsp retire-ca ca-status renew-signers crl invoice

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

deps: ## install missing Debian packages (openssl, softhsm2, postgresql) through apt-get
	@missing=""; for pair in $(DEB_PACKAGES); do \
	  command -v $${pair%%:*} >/dev/null || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

$(BIN)/jpki: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

venv: deps $(BIN)/jpki ## create the virtualenv and install the project

init: venv ## create a development data directory (CA keys, passphrase file) if there is none
	$(JPKI) init

run: init ## set up everything and start both processes (signer + serve) on 127.0.0.1
	$(JPKI) run

serve: ## start only the network daemon (no CA keys; no set-up)
	$(JPKI) serve

signer: ## start only the CA signing process (CRLs, responder certificates; no set-up)
	$(JPKI) signer

test: lint ## set up everything and run lint and the tests
	$(BIN)/pytest -q

fuzz: venv ## longer seeded fuzzing of every HTTP surface: CASES=20000 SEED=1 (CI runs a short one)
	JPKI_FUZZ_CASES=$${CASES:-20000} JPKI_FUZZ_SEED=$${SEED:-1} \
	  $(BIN)/pytest -q tests/test_fuzz_ocsp.py tests/test_fuzz_events.py

lint: venv ## ruff, and mypy --strict over MYPY_PACKAGES
	$(BIN)/ruff check .
	$(BIN)/mypy --strict $(MYPY_PACKAGES)

audit-verify: venv ## check the audit log's hash chain
	$(JPKI) audit verify

clean: ## remove the virtualenv and development data
	rm -rf $(VENV) var

bench-ocsp: venv ## benchmark the OCSP responder against openssl ocsp, cfssl and bare aiohttp
	@missing=""; for p in $(BENCH_OCSP_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
	$(BIN)/python bench/ocsp_bench.py

bench-workers: venv ## the cached OCSP path with server.workers = 1 and 2 (wrk shares the cores)
	$(BIN)/python bench/workers_bench.py

OPERATOR ?= $(shell id -un)
KIND ?= all
KEYOP = --operator $(OPERATOR) $(if $(REASON),--reason "$(REASON)")

rotate-ca: init ## next CA generation + link certificates: KIND=signature|authentication|all [OPERATOR= REASON=]
	$(JPKI) ca rotate --kind $(KIND) $(KEYOP)

rotate-ocsp: init ## new OCSP responder key and certificate per live generation [KIND=...] [OPERATOR= REASON=]
	$(JPKI) ocsp rotate --kind $(KIND) $(KEYOP)

rotate-keys: init ## rotate-ca and rotate-ocsp, for KIND (default: both CAs)
	$(JPKI) ca rotate --kind $(KIND) $(KEYOP)
	$(JPKI) ocsp rotate --kind $(KIND) $(KEYOP)

retire-ca: init ## archive an old generation's key: KIND=... GENERATION=N (refused while it covers unexpired certificates)
	$(JPKI) ca retire --kind $(KIND) --generation $(GENERATION) $(KEYOP)

ca-status: init ## every CA generation: key fingerprint, validity, live certificates, responder expiry
	$(JPKI) ca status --format table

renew-signers: init ## issue OCSP responder certificates that are missing or about to expire
	$(JPKI) ocsp renew-signers

crl: init ## generate and publish every CRL now (an urgent revocation)
	$(JPKI) crl generate

invoice: init ## last month's invoices (MONTH=YYYY-MM to choose)
	$(JPKI) fees invoice --month $${MONTH:-$$(date -d "$$(date +%Y-%m-01) -1 day" +%Y-%m)}

bench-crl: venv ## CRL generation vs openssl ca -gencrl, SIZE revoked (default 1,000,000)
	$(BIN)/python bench/crl_bench.py --revoked $${SIZE:-1000000}

bench-crl-urgent: venv ## revocation -> CRL served, through jpki signer + jpki serve (DELAY=60 N=20)
	$(BIN)/python bench/crl_urgent_bench.py --delay $${DELAY:-60} -n $${N:-20}

bench-scale: venv ## SQLite vs PostgreSQL at SIZE certificates (default 10,000,000; not in `make test`)
	@missing=""; for p in wrk; do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
	$(BIN)/python bench/scale_bench.py --size $${SIZE:-10000000}
