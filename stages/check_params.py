"""Stage check_params: validate every section of params.yaml before any other stage runs.

It tracks the whole params file, so it reruns (in well under a second) on any change, and every other
stage is downstream of its stamp, whose content never changes: a misspelled section or key stops `dvc repro`
and `dvc exp run` at once, even when no other stage would rerun, and a valid change reruns only the
stages that read it."""
from pathlib import Path

from _stage import params, run

from mlmpipe.outputs import write_text
from mlmpipe.params import SECTIONS, check_across


def main() -> None:
    values = dict(zip(["seed", *SECTIONS], params("seed", *SECTIONS)))
    check_across(values)
    write_text(Path(values["paths"].metrics) / "params_ok", "every section of the params passed check_params\n")


if __name__ == "__main__":
    run(main)
