"""evaluate_shard: shard by shard equals one pass over the whole set."""

from __future__ import annotations

import numpy as np

from stress.evaluate.shards import evaluate_shard


def test_sharded_evaluation_equals_one_pass_and_faithfulness_subset(small_results):
    weights, config, images, labels, merged = small_results
    whole = evaluate_shard(weights["baseline"], config, images, labels, 0, 60, faithfulness_every=10, faithfulness_steps=4)
    np.testing.assert_array_equal(merged["baseline"]["predicted"], whole["predicted"])
    np.testing.assert_allclose(merged["baseline"]["centre_share_predicted"], whole["centre_share_predicted"], atol=1e-6)
    np.testing.assert_array_equal(merged["baseline"]["faithful_indices"], np.arange(0, 60, 10))


