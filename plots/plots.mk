# Offline `dvc plots show` / `dvc plots diff`: include from the main Makefile with
#     include plots/plots.mk
# (also works standalone: make -f plots/plots.mk plots-setup)
#
# plots-setup: `npm ci` the pinned vega / vega-lite / vega-embed into plots/node_modules
# (only when package.json / package-lock.json changed since the last install), then
# build plots/offline_template.html, which .dvc/config's plots.html_template points at.
# Needs node + npm and the npm registry once; afterwards everything works offline.

# Directory of this fragment, whatever the includer's name for it (must come first).
PLOTS_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
PLOTS_PY ?= python3
PLOTS_NPM ?= npm
PLOTS_NODE_MODULES := $(PLOTS_DIR)/node_modules
# Written after a successful `npm ci`; npm ci wipes node_modules first, so a failed or
# interrupted install leaves no stamp and is redone next time.
PLOTS_NPM_STAMP := $(PLOTS_NODE_MODULES)/.npm-ci.stamp
PLOTS_TEMPLATE := $(PLOTS_DIR)/offline_template.html

.PHONY: plots-setup plots-clean

plots-setup: $(PLOTS_TEMPLATE)

$(PLOTS_NPM_STAMP): $(PLOTS_DIR)/package.json $(PLOTS_DIR)/package-lock.json
	@command -v $(PLOTS_NPM) >/dev/null || { echo "plots-setup: '$(PLOTS_NPM)' not found; install node + npm" >&2; exit 1; }
	cd $(PLOTS_DIR) && $(PLOTS_NPM) ci --ignore-scripts --omit=optional --no-audit --no-fund
	touch $@

$(PLOTS_TEMPLATE): $(PLOTS_NPM_STAMP) $(PLOTS_DIR)/build_template.py
	$(PLOTS_PY) $(PLOTS_DIR)/build_template.py --node-modules $(PLOTS_NODE_MODULES) -o $@

plots-clean:
	rm -rf $(PLOTS_NODE_MODULES) $(PLOTS_TEMPLATE) $(PLOTS_TEMPLATE).tmp
