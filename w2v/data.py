"""The data stages alone, through to the cached index tensors, then a summary.

    python -m w2v.data data=local data.path=corpus.txt

The stages, in the order the text flows: sources.py (where the text comes from: local files
or the Hub, through `datasets`; textlines.py reads plain text in bounded blocks), tokens.py
(rows -> token chunks and document ends), vocab.py (counts -> vocabulary) and corpus.py (the
cached index tensors). This module is only the command that runs them with the training
run's config, so it sits after corpus.py in the import order.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from w2v.cli import CONF_DIR, Usage, report_errors, run_hydra, to_config
from w2v.corpus import build_corpus, summary

USAGE = Usage(
    module="w2v.data",
    synopsis="[data=option] [data.key=value ...]",
    about="""
        Load the corpus, tokenize it, build the vocabulary and cache the index tensors
        exactly as a training run with the same overrides would (a later run finds the
        cache); print the vocabulary size, token and document counts and the top words.
        Takes the same overrides as python -m w2v.train; only data.* and
        trainer.progress matter here.
    """,
    examples=(
        "data=local data.path=corpus.txt",
        "data.path='corpora/*.txt.gz' data.min_count=10",
        "data=wikitext2",
        "+experiment=text8_prefix_bench",
    ),
)


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base=None)
@report_errors
def _hydra_main(dict_cfg: DictConfig) -> None:
    cfg = to_config(dict_cfg)
    corpus = build_corpus(cfg.data, progress=cfg.trainer.progress)
    print(summary(corpus))


# The command writes only the corpus cache: no Hydra run folder (outputs/<date>/<time>/.hydra)
# and no log file in the current directory. Given first, so the user's overrides still win.
NO_RUN_DIR = ["hydra.run.dir=.", "hydra.output_subdir=null",
              "hydra.job_logging.root.handlers=[console]"]


@report_errors
def main() -> None:
    run_hydra(_hydra_main, USAGE, hydra_args=lambda argv: NO_RUN_DIR + argv)


if __name__ == "__main__":
    main()
