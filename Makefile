# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
FLASK  := $(BIN)/flask --app wsgi
STAMP  := $(VENV)/.installed
# Front-end packages: npm installs them from package-lock.json; the pages serve copies from static/vendor.
NPM_STAMP    := node_modules/.installed
VENDOR       := static/vendor
VENDOR_STAMP := $(VENDOR)/.copied
HTTPS_PORT   ?= 5443
HTTPS_CERT   := instance/dev-https-cert.pem
HTTPS_KEY    := instance/dev-https-key.pem

.PHONY: run run-https test install lint bench bench-passes bench-analytics clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-install whenever pyproject.toml changes, so a pulled dependency bump is never missed.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# npm ci installs exactly what package-lock.json pins (and clears node_modules first); again when either changes.
$(NPM_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $(NPM_STAMP)

# Only the files the pages load, each with its licence; the .wasm must be the one of the zxing-wasm version that
# barcode-detector's JavaScript was built against, which the lock file guarantees. qrcode-generator (the card
# page's live code) ships no LICENSE file: its MIT notice is the header of qrcode.mjs itself, copied with it.
$(VENDOR_STAMP): $(NPM_STAMP)
	rm -rf $(VENDOR)
	mkdir -p $(VENDOR)/barcode-detector $(VENDOR)/zxing-wasm $(VENDOR)/jsqr $(VENDOR)/qrcode-generator
	cp node_modules/barcode-detector/dist/es/ponyfill.js node_modules/barcode-detector/dist/es/zxing-exported.js \
	   node_modules/barcode-detector/LICENSE $(VENDOR)/barcode-detector/
	cp node_modules/zxing-wasm/dist/reader/zxing_reader.wasm node_modules/zxing-wasm/LICENSE $(VENDOR)/zxing-wasm/
	cp node_modules/jsqr/dist/jsQR.js node_modules/jsqr/LICENSE $(VENDOR)/jsqr/
	cp node_modules/qrcode-generator/dist/qrcode.mjs $(VENDOR)/qrcode-generator/
	touch $(VENDOR_STAMP)

install: $(STAMP) $(VENDOR_STAMP)

## Set up, migrate, seed the demo program (credentials printed once) and serve on http://127.0.0.1:5000
run: install
	$(FLASK) db upgrade
	$(FLASK) demo
	$(FLASK) run --host 127.0.0.1 --port 5000

## The same over HTTPS on every interface, with a generated self-signed certificate, so a phone on the LAN can
## be the scanner: its camera needs a secure context. HOSTS="192.168.1.20 till.local" adds names to the certificate.
run-https: install
	$(FLASK) db upgrade
	$(FLASK) demo
	HTTPS_PORT=$(HTTPS_PORT) $(BIN)/python -m app.devcert $(HTTPS_CERT) $(HTTPS_KEY) $(HOSTS)
	$(FLASK) run --host 0.0.0.0 --port $(HTTPS_PORT) --cert $(HTTPS_CERT) --key $(HTTPS_KEY)

## Set up, lint and run the whole test suite (SQLite unless DATABASE_URL is set)
test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check --no-cache app passes tests bench migrations wsgi.py
	$(BIN)/mypy app/domain passes

## Benchmark purchases against the reference endpoint under gunicorn, on SQLite and PostgreSQL
bench: install
	$(BIN)/python -m bench

## Build Apple passes: our builder against bare PKCS#7 signing and against the npm package passkit-generator
bench-passes: install
	$(BIN)/python -m bench passes

## The dashboard and the stats API at 1,000,000 members and 10,000,000 purchases, on SQLite and PostgreSQL
## (BENCH_ARGS="--db-dir DIR" keeps the SQLite database for the next run; docs/performance.md)
bench-analytics: install
	$(BIN)/python -m bench analytics $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache node_modules $(VENDOR)
