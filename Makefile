# Switchboard: the two commands a newcomer needs are `make run` and `make test`.
GO      ?= go
LISTEN  ?= :8080
FUZZTIME ?= 20s

.PHONY: run build test vet race fuzz bench idle-chart clean

## run: start the relay on $(LISTEN) with protocol defaults
run:
	$(GO) run ./cmd/switchboard --listen $(LISTEN)

## build: compile the relay into ./bin
build:
	$(GO) build -o bin/switchboard ./cmd/switchboard

## test: vet and every test under the race detector
test: vet
	$(GO) test -race -count=1 -timeout 15m ./...

vet:
	$(GO) vet ./...

## fuzz: a short run of every fuzz target (not part of `make test`)
fuzz:
	$(GO) test -run='^$$' -fuzz='^FuzzParseHeader$$' -fuzztime=$(FUZZTIME) ./wsframe/
	$(GO) test -run='^$$' -fuzz='^FuzzParseRequest$$' -fuzztime=$(FUZZTIME) ./wsframe/
	$(GO) test -run='^$$' -fuzz='^FuzzValid$$' -fuzztime=$(FUZZTIME) ./envelope/
	$(GO) test -run='^$$' -fuzz='^FuzzScan$$' -fuzztime=$(FUZZTIME) ./envelope/
	$(GO) test -run='^$$' -fuzz='^FuzzBuildScanRoundTrip$$' -fuzztime=$(FUZZTIME) ./envelope/
	$(GO) test -run='^$$' -fuzz='^FuzzParseProxyV2$$' -fuzztime=$(FUZZTIME) ./loop/proxyproto/

## bench: every benchmark, as operators run it
bench:
	$(GO) test -run='^$$' -bench=. -benchmem ./bench/ ./envelope/ ./wsframe/ ./registry/

## idle-chart: measure relay RSS at 1,000-16,000 idle connections (3 runs) and redraw docs/idle-memory.svg
idle-chart:
	rm -f bench/idle-curve.tsv
	$(GO) test -run='^$$' -bench=IdleCurve -benchtime=1x -count=3 -timeout=20m ./bench/ -args -curve-out=$(CURDIR)/bench/idle-curve.tsv
	$(GO) run ./bench/idlechart -in bench/idle-curve.tsv -out docs/idle-memory.svg

clean:
	rm -rf bin
