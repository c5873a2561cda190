# Offline `dvc plots show` / `dvc plots diff`: include from the main Makefile with
#     include plots/plots.mk
# after setting PLOTS_PY to a python that has vl-convert-python (the project's venv) and
# PLOTS_DEPS to what installs it (the venv's stamp).
#
# plots-setup: build plots/offline_template.html, which .dvc/config's plots.html_template
# points at, from the vega / vega-lite / vega-embed bundle the vl-convert-python wheel
# ships. Python alone: no node, no npm, no network.

# Directory of this fragment, whatever the includer's name for it (must come first).
PLOTS_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
PLOTS_PY ?= python3
PLOTS_DEPS ?=
PLOTS_TEMPLATE := $(PLOTS_DIR)/offline_template.html

.PHONY: plots-setup plots-clean

plots-setup: $(PLOTS_TEMPLATE)

$(PLOTS_TEMPLATE): $(PLOTS_DIR)/build_template.py $(PLOTS_DEPS)
	$(PLOTS_PY) $(PLOTS_DIR)/build_template.py -o $@

plots-clean:
	rm -f $(PLOTS_TEMPLATE) $(PLOTS_TEMPLATE).tmp
