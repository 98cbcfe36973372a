# DACA Gateway — see README.md. Everything here installs what it needs itself
# (the Dapr binaries are built from the Go module proxy; redis-server and
# rabbitmq-server come from apt when missing and we run as root).
GO        ?= go
DAPR_VER  := 1.18.2
DAPR_DIR  := .bin/dapr-$(DAPR_VER)
DACA      := .bin/daca
TEST_TIMEOUT ?= 20m

.PHONY: run cluster cluster-faults test unit vet check-generate dapr daca bench stress faults images k8s-secrets clean help

help:
	@echo "make run    run the whole system (Redis, Dapr, apps with sidecars); BROKER=rabbitmq for RabbitMQ pub/sub"
	@echo "make test   gofmt, go vet, layout checks, unit tests, end-to-end tests on the real stack"
	@echo "make unit   unit tests only (go test -short)"
	@echo "make dapr   build the Dapr $(DAPR_VER) binaries once (about 5 minutes)"
	@echo "make bench  measure chat turns, reads through the gateway and fan-out; prints a table"
	@echo "make stress several rounds of 300 concurrent chat turns; every one must complete"
	@echo "make faults every process killed mid-load and restarted; prints what was lost (nothing)"
	@echo "make cluster the system on three hosts of this machine (network namespaces; root): HA control plane, mTLS"
	@echo "make cluster-faults  a host lost or cut off, a placement server and a scheduler lost, approvals after a host loss, a rolling restart, a stuck sidecar restarted"

## run: the whole system on this machine; Ctrl-C stops everything.
## BROKER=rabbitmq runs pub/sub on RabbitMQ instead of Redis Streams.
run: daca
	@exec $(DACA) up $(ARGS)

## cluster: the system on hosts of this machine (Linux network namespaces, as root):
## every app on each of three hosts, Dapr's HA control plane, Redis and sentry on a
## fourth, mTLS; prints a status table. Ctrl-C removes every process and host.
cluster: dapr
	@$(GO) run ./cmd/daca cluster $(ARGS)

## cluster-faults: the cluster's fault rows, counted from outside: a whole host lost
## (every process SIGKILLed at once), a host cut off for 30 s, a placement server and
## a scheduler lost, and a rolling restart of every app under a steady load; approvals
## decided after their host was lost; a sidecar stuck without its workflow actor types
## restarted by chat-service's way out; another app's workflows refused. make test runs
## the host row and the workflow refusal.
cluster-faults: dapr
	@DACA_CLUSTER_FAULTS=1 $(GO) test -count=1 -timeout 20m -run 'TestHostLost|TestHostCutOff|TestControlPlaneMemberLost|TestApprovalOutlivesItsHost|TestRollingRestart|TestStuckSidecarIsRestarted|TestAnotherAppStartsNoWorkflow' -v ./test/cluster/ | grep -E 'lost|cut off|outlive|rolling|rolled|stuck sidecar|^(---|    ---) (PASS|FAIL|SKIP)|^(--- FAIL|FAIL|ok)'

## test: vet, generated code up to date, unit tests and the end-to-end tests on the real stack.
# Packages run one at a time (-p 1): each end-to-end package starts a whole
# stack, and two cores are shared by all of its processes.
# With cgo available (a C compiler), tests and the apps they start run with
# the race detector; a race stops the app that has it (GORACE halt_on_error),
# which fails the test and prints the report with the app's log.
RACE := $(shell [ "$$($(GO) env CGO_ENABLED)" = 1 ] && echo -race)
# The services' and gateway's end-to-end tests run a second time with pub/sub
# on RabbitMQ (components/brokers/rabbitmq): the broker is swapped by
# component files alone.
# BROKER_FREE are the gateway's tests that no event crosses (authorization,
# input checks, the turn limit, persisted queries): the RabbitMQ round skips
# them, they ran with Redis just before.
BROKER_FREE := TestAuthorizationMatrix|TestAGUIAuthorization|TestBadInputKeepsServing|TestTurnLimitIsSharedByReplicas|TestSessionBelongsToItsStarter|TestPersistedQueriesAcrossReplicas|TestStopClosesWebsockets
test: dapr vet check-generate
	DACA_RACE=$(RACE) GORACE=halt_on_error=1 $(GO) test $(RACE) -p 1 -count=1 -timeout $(TEST_TIMEOUT) ./...
	DACA_BROKER=rabbitmq DACA_RACE=$(RACE) GORACE=halt_on_error=1 $(GO) test $(RACE) -p 1 -count=1 -timeout $(TEST_TIMEOUT) -skip '$(BROKER_FREE)' ./test/services/ ./test/gateway/
	cd deploy && $(GO) vet ./... && $(GO) test -count=1 ./...
	cd tools/dapr && $(GO) vet ./acl/ && $(GO) test -count=1 ./acl/

## stress: the workflow engine under load — STRESS_RUNS rounds of DACA_STRESS_TURNS (300)
## concurrent chat turns on one real stack; every turn must complete.
STRESS_RUNS ?= 5
stress: dapr
	DACA_TEST_VERBOSE= $(GO) test -count=$(STRESS_RUNS) -timeout 30m -run 'TestManyConcurrentTurns$$' -v ./test/services/ | grep -E 'concurrent turns|^(---|ok|FAIL|PASS)'

## faults: the fault suite, longer than in make test (FAULTS_TURNS turns per client and row):
## each process of the stack killed (SIGKILL) mid-load and restarted; prints one table.
FAULTS_TURNS ?= 10
faults: dapr
	@DACA_FAULTS_TURNS=$(FAULTS_TURNS) $(GO) test -count=1 -timeout 30m -run 'TestFaults$$|TestKillsWhileWaitingForApproval|TestQueuedTurnsSurviveKills' -v ./test/faults/ | grep -E 'faults\||^(---|    ---) (PASS|FAIL)|^(--- FAIL|FAIL|ok)' | sed 's/^ *faults| \?/| /'

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
	@out=$$(gofmt -l . 2>&1); if [ -n "$$out" ]; then echo "gofmt -l (run gofmt -w on these):"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

## dapr: daprd, placement and scheduler from the Go module proxy, built once.
dapr: $(DAPR_DIR)/.stamp

$(DAPR_DIR)/.stamp: tools/dapr/go.mod tools/dapr/go.sum tools/dapr/cmd/daprd/main.go
	$(GO) run ./cmd/daca dapr

daca: dapr
	@$(GO) build -o $(DACA) ./cmd/daca

## bench: chat turns and memory reads end to end on a private stack; prints a table.
## BENCH_BASELINE is the revision measured beside today's code in the same run: its
## gateway, and its apps on its own Dapr release (1.16.5 with the patched engine, built
## once into .bin/baseline-<rev>, several minutes) and on today's. BENCH_BASELINE= skips it.
BENCH_BASELINE ?= bedd00a
bench: daca
	@$(DACA) bench $(if $(BENCH_BASELINE),-baseline $(BENCH_BASELINE))

## images: the four container images (needs a Docker engine). Image names
## and the tag are set here; docker-compose.yml and deploy/k8s use the same
## names (daca/<app id>), the overlays set the tag.
IMAGE_PREFIX ?= daca
IMAGE_TAG    ?= dev
images:
	docker build --build-arg APP=gateway         -t $(IMAGE_PREFIX)/gateway:$(IMAGE_TAG) .
	docker build --build-arg APP=services/chat   -t $(IMAGE_PREFIX)/chat-service:$(IMAGE_TAG) .
	docker build --build-arg APP=services/memory -t $(IMAGE_PREFIX)/agent-memory-service:$(IMAGE_TAG) .
	docker build --build-arg APP=services/tools  -t $(IMAGE_PREFIX)/tool-server:$(IMAGE_TAG) .

## k8s-secrets: the secret files of the local Kubernetes overlay (random tokens,
## empty Gemini key = offline model). Never committed.
K8S_SECRETS := deploy/k8s/overlays/local/secrets
k8s-secrets:
	@mkdir -p $(K8S_SECRETS)
	@[ -f $(K8S_SECRETS)/dapr-api-token.env ] || echo "token=$$(openssl rand -hex 24)" > $(K8S_SECRETS)/dapr-api-token.env
	@[ -f $(K8S_SECRETS)/app-api-token.env ] || echo "token=$$(openssl rand -hex 24)" > $(K8S_SECRETS)/app-api-token.env
	@[ -f $(K8S_SECRETS)/gemini-api-key.env ] || echo "gemini-api-key=" > $(K8S_SECRETS)/gemini-api-key.env
	@[ -f $(K8S_SECRETS)/gateway-jwt-secret.env ] || echo "gateway-jwt-secret=$$(openssl rand -hex 32)" > $(K8S_SECRETS)/gateway-jwt-secret.env
	@[ -f $(K8S_SECRETS)/tool-server-token.env ] || echo "tool-server-token=$$(openssl rand -hex 24)" > $(K8S_SECRETS)/tool-server-token.env
	@chmod 600 $(K8S_SECRETS)/*.env
	@echo "wrote $(K8S_SECRETS)/*.env (put a real key in gemini-api-key.env to use Gemini)"

clean:
	rm -rf .run/bin $(DACA)
