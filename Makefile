# The two commands a newcomer needs: `make run` and `make test`.
BUILD ?= build
CONF ?= etc/dev.conf
JOBS ?= $(shell nproc)

.PHONY: all deps test-deps build run test clean deb

all: build

deps:
	@./scripts/install-deps.sh

test-deps:
	@./scripts/install-deps.sh --test

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD)

PROGRAMS = mxferryd smtpd router deliverd bouncer workerd apid mxferryctl

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS) --target $(PROGRAMS)

run: build
	./scripts/dev-run.sh $(CONF)

test: test-deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)
	cd $(BUILD) && ctest --output-on-failure

# The Debian package (mxferry and mxferry-dbgsym), built out of the tree.
DEBDIR ?= $(BUILD)/deb
deb:
	@./scripts/install-deps.sh --pkg
	./scripts/build-deb.sh $(DEBDIR)

clean:
	rm -rf $(BUILD)
