# The browser app (web/): Svelte 5 + TypeScript + Vite, built into
# src/loupe/web_dist and served by FastAPI at `/`. Included by the Makefile.
#
#   make web-build    npm ci (when the lock file changed), API types (when the API
#                     changed), the bundle (when a source changed)
#   make web-check    type-check the app (svelte-check)
#   make web-dev      Vite dev server on :5173, proxying /api to LOUPE_API
#                     (default http://127.0.0.1:8000, e.g. `make demo` in another shell)
#   make test-e2e     the browser tests only
#   make screenshots  run them and rewrite docs/screenshots/*.png

NPM ?= npm
WEB_DIST := src/loupe/web_dist
OPENAPI_JSON := $(STAMP)/openapi.json
WEB_SOURCES := $(shell find web/src web/public -type f 2>/dev/null) \
	web/index.html web/vite.config.ts web/svelte.config.js web/tsconfig.json
# The OpenAPI schema is made from the Python sources (routes, schemas, enums).
API_SOURCES := $(shell find src/loupe -name '*.py' -not -path '*/web_dist/*' 2>/dev/null)

.PHONY: web-build web-check web-dev test-e2e screenshots

web-build: $(WEB_DIST)/index.html

$(STAMP)/web-deps: web/package-lock.json
	@mkdir -p $(STAMP)
	cd web && $(NPM) ci --no-audit --no-fund
	@touch $@

# Regenerate the schema whenever a Python file changed, but replace the file only
# when its content changed, so the types and the bundle rebuild only when the API did.
$(STAMP)/openapi.stamp: $(API_SOURCES) | $(STAMP)/deps
	@mkdir -p $(STAMP)
	$(PY) -m loupe.cli openapi > $(OPENAPI_JSON).tmp
	@if cmp -s $(OPENAPI_JSON).tmp $(OPENAPI_JSON); then rm $(OPENAPI_JSON).tmp; \
	else mv $(OPENAPI_JSON).tmp $(OPENAPI_JSON); echo "API schema changed"; fi
	@touch $@
$(OPENAPI_JSON): $(STAMP)/openapi.stamp ;

web/src/lib/api-types.ts: $(OPENAPI_JSON) $(STAMP)/web-deps
	cd web && OPENAPI_JSON=../$(OPENAPI_JSON) $(NPM) run --silent gen:api
	@touch $@

$(WEB_DIST)/index.html: $(STAMP)/web-deps web/src/lib/api-types.ts $(WEB_SOURCES)
	cd web && $(NPM) run --silent build

web-check: $(STAMP)/web-deps web/src/lib/api-types.ts
	cd web && $(NPM) run --silent check

web-dev: $(STAMP)/web-deps web/src/lib/api-types.ts
	cd web && $(NPM) run dev

test-e2e: setup
	$(PY) -m pytest -q -p no:cacheprovider -m e2e tests/e2e

screenshots: setup
	LOUPE_SCREENSHOTS=1 $(PY) -m pytest -q -p no:cacheprovider -m e2e tests/e2e
	@ls docs/screenshots/*.png
