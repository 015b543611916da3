# FedCoord — the commands a newcomer and CI need. `make test` and `make demo` install what they need.
SHELL := /bin/bash
SWIFT ?= swift
PROTOS := $(wildcard proto/*.proto)
DEV_CERTS := certs/dev

.PHONY: all deps build release test test-venv bench bench-venv certs proto demo fuzz chaos sanitize clean

all: build

## deps: install the system libraries the build links against (only when missing).
deps:
	@bash .ci/install-deps.sh

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release

## test: the whole suite (unit, real loopback TLS, real processes, the outside hostile client).
test: deps test-venv
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build --parallel --num-workers 2

## test-venv: Google's protobuf runtime for the hostile client, in the git-ignored .test/venv.
test-venv:
	@test -x .test/venv/bin/python && .test/venv/bin/python -c "import grpc_tools, google.protobuf" 2>/dev/null || \
		(python3 -m venv .test/venv && .test/venv/bin/pip install --quiet protobuf grpcio-tools)

## bench: release build, then the transport, round and local-training benchmarks (figures, not pass/fail).
## scikit-learn, the local-training peer, goes into the git-ignored .bench/venv on first use.
bench: release bench-venv
	.build/release/fedbench wire
	.build/release/fedbench rounds
	for s in median trimmed_mean krum; do .build/release/fedbench rounds --parameters 10000000 --agents 8 --strategy $$s || exit 1; done
	.build/release/fedbench train
	.build/release/fedbench secagg

bench-venv:
	@test -x .bench/venv/bin/python && .bench/venv/bin/python -c "import sklearn" 2>/dev/null || \
		(python3 -m venv .bench/venv && .bench/venv/bin/pip install --quiet scikit-learn)
	@.bench/venv/bin/python -c "import sklearn; print(sklearn.__version__)" > .bench/venv/sklearn-version

## certs: a development federation (CA, coordinator, hospital-a … hospital-e, empty CRL) in certs/dev.
certs: release
	.build/release/fedcoord certs dev --out $(DEV_CERTS)

## proto: regenerate Sources/FedProtoC from proto/*.proto (installs protobuf-c-compiler when missing).
proto: $(PROTOS)
	@command -v protoc-c >/dev/null || bash .ci/install-deps.sh protobuf-c-compiler
	@mkdir -p Sources/FedProtoC/include
	protoc-c --c_out=Sources/FedProtoC -Iproto $(PROTOS)
	mv Sources/FedProtoC/*.pb-c.h Sources/FedProtoC/include/

## demo: a coordinator and five hospitals on loopback (one straggler), then the round table.
demo: release
	@test -f $(DEV_CERTS)/ca.crt || .build/release/fedcoord certs dev --out $(DEV_CERTS)
	bash .ci/demo.sh

## fuzz: libFuzzer on the frame reader, envelopes, tensor streams, safetensors, CSV, configuration and
## round log, FUZZ_SECONDS each (default 60), from the seeds in Tests/Fuzz/corpus.
fuzz: deps
	bash .ci/fuzz.sh

## sanitize: the whole suite under ThreadSanitizer, then AddressSanitizer (each ≈ 5 min here).
sanitize: deps test-venv
	bash .ci/sanitize.sh

## chaos: 50 rounds (CHAOS_ROUNDS) while the coordinator and agents are SIGKILLed at random and their
## loopback, in a network namespace of its own, drops packets; then the log and the model are checked. Root only.
chaos: release
	bash .ci/chaos.sh

clean:
	rm -rf .build
