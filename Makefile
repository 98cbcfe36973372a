# DACA Gateway — see README.md. Everything here installs what it needs itself
# (the Dapr binaries are built from the Go module proxy; redis-server comes
# from apt when it is missing and we run as root).
GO        ?= go
DAPR_VER  := 1.16.5
DAPR_DIR  := .bin/dapr-$(DAPR_VER)
DACA      := .bin/daca
TEST_TIMEOUT ?= 20m

.PHONY: run test unit vet check-generate dapr daca bench clean help

help:
	@echo "make run    run the whole system (Redis, Dapr, apps with sidecars)"
	@echo "make test   go vet + unit tests + end-to-end tests on the real stack"
	@echo "make unit   unit tests only (go test -short)"
	@echo "make dapr   build the Dapr $(DAPR_VER) binaries once (about 5 minutes)"

## run: the whole system on this machine; Ctrl-C stops everything.
run: daca
	@exec $(DACA) up $(ARGS)

## test: vet, generated code up to date, unit tests and the end-to-end tests on the real stack.
# Packages run one at a time (-p 1): each end-to-end package starts a whole
# stack, and two cores are shared by all of its processes.
test: dapr vet check-generate
	$(GO) test -p 1 -count=1 -timeout $(TEST_TIMEOUT) ./...

## check-generate: go generate ./... must leave the tree unchanged.
check-generate:
	$(GO) generate ./...
	@if command -v git >/dev/null 2>&1 && git rev-parse --git-dir >/dev/null 2>&1; then \
	  git diff --exit-code --stat -- graph gqlgen.yml go.mod go.sum || \
	  { echo "go generate changed the files above: run it and commit the result"; exit 1; }; \
	fi

unit:
	$(GO) test -short -count=1 ./...

vet:
	$(GO) vet ./...

## dapr: daprd, placement and scheduler from the Go module proxy, built once.
dapr: $(DAPR_DIR)/.stamp

$(DAPR_DIR)/.stamp: tools/dapr/go.mod tools/dapr/go.sum tools/dapr/cmd/daprd/main.go
	$(GO) run ./cmd/daca dapr

daca: dapr
	@$(GO) build -o $(DACA) ./cmd/daca

## bench: chat turns and memory reads end to end on a private stack; prints a table.
bench: daca
	@$(DACA) bench

clean:
	rm -rf .bin/apps $(DACA)
