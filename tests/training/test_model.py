"""The from-scratch network's parts: the bag of n-grams the graph computes is the model scikit-learn fitted."""

from __future__ import annotations

import torch

from rmserve.training.model import BagOfNgrams, response_mask
from rmserve.training.options import ModelConfig
from rmserve.training.vocab import CLS_ID


def random_bag(config: ModelConfig, seed: int = 0) -> BagOfNgrams:
    """A bag with trained-looking parameters: weights, IDF and a character n-gram table drawn at random."""
    generator = torch.Generator().manual_seed(seed)
    bag = BagOfNgrams(config)
    with torch.no_grad():
        bag.weight.copy_(torch.randn(bag.weight.shape, generator=generator))
        bag.idf.uniform_(0.5, 5.0, generator=generator)
        bag.length_weight.fill_(0.3)
        table = torch.randint(config.hash_buckets, bag.unused + 1, bag.char_ngrams.shape, generator=generator)
        bag.char_ngrams.copy_(table.to(torch.int32))
    return bag


def test_the_bags_score_over_positions_equals_the_dense_tfidf_model_it_was_fitted_as() -> None:
    # forward sums over n-gram positions (what the served graph runs); tfidf() builds the dense
    # 262,143-wide feature vector scikit-learn fits the weights on. They must be one model.
    config = ModelConfig(vocab_size=512)
    bag = random_bag(config)
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(4, config.vocab_size, (6, 120), generator=generator)
    input_ids[:, 0], input_ids[:, 40] = CLS_ID, config.sep_id  # [CLS] prompt [SEP] response
    input_ids[1, 50:90] = input_ids[1, 45]  # one token repeated: counts above 1, log-scaled
    input_ids[2, 41:] = input_ids[2, 41:61].repeat(4)[:79]  # a repeated phrase: repeated bigrams too
    input_ids[3, 70:], input_ids[3, 69] = config.pad_id, config.sep_id  # padding, ignored
    input_ids[4, 41], input_ids[4, 42:] = config.sep_id, config.pad_id  # an empty response
    attention_mask = (input_ids != config.pad_id).long()
    in_response = response_mask(input_ids, attention_mask, config.sep_id)
    dense = bag.tfidf(input_ids, in_response) @ bag.weight + bag.length_weight * bag.log_length(in_response)
    served = bag(input_ids, in_response)
    assert torch.allclose(served, dense, rtol=1e-5, atol=1e-5), (served, dense)
    assert len(set(served.tolist())) == len(served)  # and the rows really differ
