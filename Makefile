# Thin entry points over CMake. `make demo` and `make test` work on a fresh Debian 12 machine.
BUILD_DIR ?= build
BUILD_TYPE ?= Release
JOBS ?= $(shell nproc)
CMAKE_ARGS ?=
DEMO_OUT ?= demo_out
STREAMRECON := $(BUILD_DIR)/app/streamrecon

.PHONY: all setup configure build test sanitize fuzz demo clean

all: build

setup:
	@bash scripts/setup.sh

$(BUILD_DIR)/build.ninja:
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_ARGS)

configure: setup $(BUILD_DIR)/build.ninja

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

test: build
	ctest --test-dir $(BUILD_DIR) --output-on-failure -j $(JOBS)
	$(MAKE) --no-print-directory sanitize
	$(MAKE) --no-print-directory fuzz

# AddressSanitizer + UndefinedBehaviorSanitizer over the tests of the parsers, the KV cache, the
# pipeline, the exporters and the frame sources; ThreadSanitizer over the threaded pipeline.
SANITIZE_TESTS := test_core test_pipeline test_datasets test_models
sanitize: setup
	@bash scripts/sanitize.sh $(JOBS) $(SANITIZE_TESTS)

# libFuzzer (clang) over the weight readers (safetensors, .pth), the config JSON, the dataset text
# formats and the size parsers: 20,000 inputs per target from the committed seeds with a fixed
# mutation seed (bounded by work, not time); any finding fails. `make fuzz FUZZ=300` explores for
# 300 s per target instead.
FUZZ ?= runs:20000
fuzz: setup
	@bash scripts/fuzz.sh $(FUZZ)

# The shipped default model (models/recon_small.safetensors) on a 24-frame synthetic room whose
# scene seed (0) training never used; then the same sequence against its exact ground truth.
demo: build
	$(STREAMRECON) run --synthetic 24 --out $(DEMO_OUT)
	$(STREAMRECON) eval --dataset synthetic --frames 24 --out $(DEMO_OUT)/eval

clean:
	rm -rf $(BUILD_DIR) build-asan build-tsan build-fuzz $(DEMO_OUT)
