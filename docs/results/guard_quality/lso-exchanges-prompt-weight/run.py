"""Leave-source-out on exchanges for a classifier of prompts and exchanges, its exchange scores with and without
its own score of the prompt alone (``prompt_weight``).

One head (frozen encoder, ``linear+mlp``, training's weights) is fitted per held-out exchange family on every
train prompt and the train exchanges (capped at 6,000 per split, the seeded sample of ``--inputs exchanges
--max-per-split 6000``). Prompts whose text (normalised) occurs among the held-out family's exchanges are left out
of that fold too, so the prompt alone is never a record the head has seen. Each variant scores the same held-out
exchanges: the pair alone (w = 0), the prompt alone (w = 1), and P(pair)^(1 − w) · P(prompt)^w. Thresholds,
folds and the report are those of ``cguard classifier leave-source-out``.

    python run.py CORPUS minilm-l6 results.json
"""

from __future__ import annotations

import json
import re
import sys

import numpy as np

from constitutional_guard.classifiers.embedding import SentenceEncoder, classifier_features, weigh_prompt
from constitutional_guard.classifiers.embedding_training import (
    DEFAULT_CONSTITUTION_SHARE,
    feature_caches,
    fit_head,
    sample_weights,
    save_caches,
)
from constitutional_guard.classifiers.input_format import record_prompt
from constitutional_guard.evaluation.leave_source_out import (
    corpus_splits,
    embedding_features,
    family_of,
    leave_source_out,
)
from constitutional_guard.models.loading import resolve_model

WEIGHTS = {"pair": 0.0, "w=0.3": 0.3, "w=0.5 (default)": 0.5, "w=0.7": 0.7, "prompt alone": 1.0}


def kept(records: list, mask: np.ndarray) -> list:
    return [r for r, k in zip(records, mask, strict=True) if k]


def norm(text: str) -> str:
    return re.sub(r"\W+", " ", text.lower()).strip()


def main(corpus: str, encoder_name: str, out: str) -> None:
    ex = corpus_splits(corpus, "exchanges", 6000, 0)
    pr = corpus_splits(corpus, "prompts", None, 0)
    pair, prompts = embedding_features(ex, encoder_name), embedding_features(pr, encoder_name)
    encoder = SentenceEncoder.from_pretrained(resolve_model(encoder_name))
    caches = feature_caches(encoder_name, encoder, None)
    alone = {
        n: classifier_features(encoder, None, [(record_prompt(r), None) for r in rs], caches) for n, rs in ex.items()
    }
    save_caches(caches)
    width = pair["train"].shape[1]
    rows = {n: np.hstack([pair[n], alone[n]]) for n in ex}
    fam = {n: np.array([family_of(r) for r in rs]) for n, rs in ex.items()}
    pfam = {n: np.array([family_of(r) for r in rs]) for n, rs in pr.items()}
    texts = np.array([norm(record_prompt(r)) for r in pr["train"]])
    fits = {}

    def head(excluded: str | None):
        if excluded not in fits:
            held = {norm(record_prompt(r)) for n, rs in ex.items() for r in kept(rs, fam[n] == excluded)}
            kp = ~np.isin(texts, list(held)) & (pfam["train"] != excluded)
            ke = fam["train"] != excluded
            records = kept(pr["train"], kp) + kept(ex["train"], ke)
            kpv, kv = pfam["validation"] != excluded, fam["validation"] != excluded
            val = kept(pr["validation"], kpv) + kept(ex["validation"], kv)
            fitted, _ = fit_head(
                np.vstack([prompts["train"][kp], pair["train"][ke]]), np.array([r.label_id for r in records]),
                sample_weights(records, True, constitution_share=DEFAULT_CONSTITUTION_SHARE),
                np.vstack([prompts["validation"][kpv], pair["validation"][kv]]),
                np.array([int(r.is_unsafe) for r in val]), [1], None, 0, "linear+mlp",
            )
            fits[excluded] = fitted
        return fits[excluded]

    def fit_for(weight: float):
        def fit(excluded: str | None):
            fitted = head(excluded)

            def score(x: np.ndarray) -> np.ndarray:
                if not len(x):
                    return np.zeros(0)
                if weight == 1.0:
                    return fitted.probabilities(x[:, width:])[:, 1]
                return weigh_prompt(fitted.probabilities(x[:, :width]), fitted.probabilities(x[:, width:]),
                                    weight, [1])[:, 1]
            return score
        return fit

    results = {}
    for name, weight in WEIGHTS.items():
        report = leave_source_out(ex, rows, fit_for(weight), "source", 50, 0.05, 0.01).report
        lso = report["leave_source_out"]
        cross = lso["outcomes_cross_source"]["exchanges"]
        results[name] = {
            "prompt_weight": weight,
            "in_distribution_auroc": report["in_distribution"]["auroc"]["exchanges"],
            "leave_source_out_auroc": lso["auroc"]["exchanges"],
            "cross_source": cross,
            "families": {f: d["cross_source"]["exchanges"] for f, d in report["families"].items()},
        }
        print(f"{name}: in-distribution {results[name]['in_distribution_auroc']:.3f}, leave-source-out "
              f"{results[name]['leave_source_out_auroc']:.3f}, harmful blocked {cross['unsafe_blocked']:.3f}, "
              f"benign blocked {cross['safe_blocked']:.3f}, held {cross['safe_held']:.3f}", flush=True)
        with open(out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:4])
