"""MiniLM reference model: the wrapper matches sentence-transformers; topics cluster."""

from __future__ import annotations

import numpy as np
import pytest

from edgeq import zoo
from edgeq.zoo import minilm

pytestmark = pytest.mark.realmodel


def test_sentences_split_and_tokens():
    rows = minilm.sentences()
    assert len(rows) == 200 and len({t for t, _ in rows}) == 8 and len({s for _, s in rows}) == 200
    calib, evals = minilm.split("calibration"), minilm.split("evaluation")
    assert len(calib) + len(evals) == 200 and not {s for _, s in calib} & {s for _, s in evals}
    feed = zoo.get("minilm").eval_data(1)[0]
    assert feed["input_ids"].shape == (1, minilm.SEQ_LEN) and feed["input_ids"][0, 0] == 101  # [CLS]
    assert 5 < feed["attention_mask"].sum() < minilm.SEQ_LEN  # real tokens, then padding


@pytest.mark.slow
def test_embeddings_match_sentence_transformers_and_cluster_by_topic():
    import torch
    from sentence_transformers import SentenceTransformer

    spec = zoo.get("minilm")
    model = spec.build()

    def embed(feeds):
        ids = np.concatenate([f["input_ids"] for f in feeds])
        mask = np.concatenate([f["attention_mask"] for f in feeds])
        with torch.no_grad():
            return model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()

    evals, topics = embed(spec.eval_data(200)), minilm.eval_topics(200)
    reference = SentenceTransformer(minilm.model_dir(), device="cpu")
    order = np.random.default_rng(1).permutation(len(minilm.split("evaluation")))
    texts = [minilm.split("evaluation")[i][1] for i in order]
    want = reference.encode(texts[:16], convert_to_numpy=True, normalize_embeddings=True)
    np.testing.assert_allclose(evals[:16], want, atol=2e-5)

    calib_rows = minilm.split("calibration")
    calib = embed([minilm.tokenize([s]) for _, s in calib_rows])
    nearest = (evals @ calib.T).argmax(1)
    agreement = np.mean([calib_rows[j][0] == t for j, t in zip(nearest, topics)])
    assert agreement >= 0.8  # nearest calibration sentence shares the topic (86% measured; chance 12.5%)
