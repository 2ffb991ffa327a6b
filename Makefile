# The project's entry points. Each target installs what it needs (tools/install_deps.sh),
# configures with a CMake preset, builds and runs.
#
#   make demo    train and evaluate a tiny Milmer on synthetic DEAP-format data
#   make test    build and run every test: host, host-asan (+FMA), and the cuda compile + report
#   make test-gpu on a machine with a GPU: build for it and run the suite, sanitizers, labs,
#                a training run, parity and benchmarks there (tools/gpu_check.sh; --plan: GPU_CHECK_ARGS=--plan)
#   make bench   the benchmarks that can run on this machine
#   make report  the kernel resource report (registers, spills, shared memory)
#   make format  clang-format every C++ file
#   make fuzz    the libFuzzer harnesses of fuzz/ for FUZZ_SECONDS each (default 300)

JOBS ?= $(shell nproc)
PY ?= python3
FUZZ_SECONDS ?= 300
CTEST_ARGS ?=

.PHONY: all deps build test test-gpu test-host test-asan test-cuda test-python test-fuzz fuzz-build fuzz report \
        demo bench format golden swin-t-check clean

all: build

deps:
	@bash tools/install_deps.sh build

build: deps
	cmake --preset host >/dev/null
	cmake --build --preset host -j $(JOBS)

test-host: build
	ctest --preset host -j $(JOBS) $(CTEST_ARGS)
	@./build/host/tests/milmer_tests --count --no-version | sed 's/.*: /doctest test cases in the unit test: /'

test-asan: deps
	cmake --preset host-asan >/dev/null
	cmake --build --preset host-asan -j $(JOBS)
	ctest --preset host-asan $(CTEST_ARGS)

# Compile and link every kernel, the labs, the programs and the unit suite for sm_80 and
# sm_90a (nothing runs: no GPU here; make test-gpu runs them on one); ptxas fails the build
# on any register spill. The log feeds the resource report.
test-cuda: deps
	cmake --preset cuda >/dev/null
	@mkdir -p build/cuda
	@echo "cuda preset: compiling every kernel and the unit suite for sm_80 and sm_90a (log: build/cuda/build.log)"
	@cmake --build --preset cuda -j $(JOBS) >> build/cuda/build.log 2>&1 || { \
	  grep -v -e "^ptxas info" -e "bytes stack frame" build/cuda/build.log | tail -40; exit 1; }

report: test-cuda
	$(PY) tools/resource_report.py build/cuda build/cuda/build.log --markdown docs/resource-report.md

# The DEAP tools' Python tests (synthetic DEAP, preparation, shard writer vs C++ reader).
test-python:
	@bash tools/install_deps.sh demo
	build/venv-data/bin/python -m pytest -q tests/python

# The file readers' libFuzzer harnesses (clang, ASan/UBSan, 2 GB memory limit): the committed
# corpus replayed, then 30 s of fuzzing per harness.
fuzz-build: deps
	cmake --preset fuzz >/dev/null
	cmake --build --preset fuzz -j $(JOBS)

test-fuzz: fuzz-build
	bash tools/fuzz.sh 30

fuzz: fuzz-build
	bash tools/fuzz.sh $(FUZZ_SECONDS)

test: test-host test-asan test-cuda test-python test-fuzz
	$(PY) tools/resource_report.py build/cuda build/cuda/build.log
	@echo "make test: host tests, host-asan tests, the fuzz harnesses and the cuda build with zero spills all passed"

# The cuda target on this machine's GPU (exits 1 without one); writes gpu-check/summary.md.
GPU_CHECK_ARGS ?=
test-gpu: deps
	bash tools/gpu_check.sh $(GPU_CHECK_ARGS)

# demo.sh builds only the programs it runs (cuda when a GPU is usable, else host).
demo: deps
	bash tools/demo.sh

bench: build
	bash tools/bench.sh

format:
	clang-format -i $$(git ls-files '*.hpp' '*.cpp' '*.cu')

golden:
	@bash tools/install_deps.sh torch
	$(PY) tools/make_golden.py

swin-t-check: build
	@bash tools/install_deps.sh torch
	bash tools/swin_t_check.sh build/host/tests/milmer_tests

clean:
	rm -rf build
