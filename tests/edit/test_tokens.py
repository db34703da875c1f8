import pytest
import torch

from cfaudit.edit.tokens import changed_words, token_ids, token_mapping, token_spans, word_positions
from cfaudit.errors import CfauditError

SOURCE = "Chest X-ray of 63-years old white male subject with cardiomegaly, and pneumothorax."


def pieces(tokenizer, prompt, positions):
    ids = token_ids(tokenizer, prompt)
    return [tokenizer.convert_ids_to_tokens(ids[p]).replace("</w>", "") for p in positions]


def test_token_ids_are_padded_to_the_encoder_length(tiny_tokenizer):
    ids = token_ids(tiny_tokenizer, SOURCE)
    assert len(ids) == 77
    assert ids[0] == tiny_tokenizer.bos_token_id and ids[-1] == tiny_tokenizer.pad_token_id
    spans = token_spans(tiny_tokenizer, SOURCE)
    assert spans[0] is None and spans[-1] is None and len(spans) == 77
    assert SOURCE[slice(*spans[1])].lower() == "chest"


def test_a_number_split_into_digits_is_found_whole(tiny_tokenizer):
    positions = word_positions(tiny_tokenizer, SOURCE, "63")
    assert pieces(tiny_tokenizer, SOURCE, positions) == ["6", "3"]
    hyphenated = word_positions(tiny_tokenizer, SOURCE, "63-years")
    assert pieces(tiny_tokenizer, SOURCE, hyphenated) == ["6", "3", "-", "years"]


def test_punctuation_next_to_a_word_is_not_part_of_it(tiny_tokenizer):
    positions = word_positions(tiny_tokenizer, SOURCE, "Cardiomegaly")
    assert pieces(tiny_tokenizer, SOURCE, positions) == ["cardiomegaly"]
    # a word the vocabulary does not hold is many byte tokens, all of them found, the full stop not
    many = word_positions(tiny_tokenizer, SOURCE, "pneumothorax")
    assert "".join(pieces(tiny_tokenizer, SOURCE, many)) == "pneumothorax" and len(many) > 1


def test_whole_words_only_male_is_not_inside_female(tiny_tokenizer):
    prompt = "chest x-ray of female subject and male subject"
    positions = word_positions(tiny_tokenizer, prompt, "male")
    assert pieces(tiny_tokenizer, prompt, positions) == ["male"]
    assert len(word_positions(tiny_tokenizer, prompt, "subject")) == 2


def test_missing_word_lists_the_prompts_words(tiny_tokenizer):
    with pytest.raises(CfauditError, match=r"'edema' is not in the prompt.*cardiomegaly"):
        word_positions(tiny_tokenizer, SOURCE, "edema")


def test_refine_maps_shared_tokens_and_leaves_new_ones_to_the_target(tiny_tokenizer):
    source = "chest x-ray of 63-years old male subject with cardiomegaly"
    target = "chest x-ray of subject with no cardiomegaly"
    s, t = token_ids(tiny_tokenizer, source), token_ids(tiny_tokenizer, target)
    mapper, alpha = token_mapping(s, t, "refine")
    no = word_positions(tiny_tokenizer, target, "no")[0]
    cardio_t = word_positions(tiny_tokenizer, target, "cardiomegaly")[0]
    cardio_s = word_positions(tiny_tokenizer, source, "cardiomegaly")[0]
    assert alpha[no] == 0 and mapper[:, no].sum() == 0
    assert alpha[cardio_t] == 1 and mapper[cardio_s, cardio_t] == 1
    assert alpha[0] == 1 and mapper[0, 0] == 1  # start token
    assert set(mapper.sum(1).tolist()) <= {0.0, 1.0}


def test_replace_carries_attention_mass_across_swapped_words(tiny_tokenizer):
    source = "chest x-ray of 63-years old male subject"
    target = "chest x-ray of 8-years old female subject"  # one digit for two, female for male
    s, t = token_ids(tiny_tokenizer, source), token_ids(tiny_tokenizer, target)
    mapper, alpha = token_mapping(s, t, "replace")
    six, three = word_positions(tiny_tokenizer, source, "63")
    (eight,) = word_positions(tiny_tokenizer, target, "8")
    assert mapper[six, eight] == 1 and mapper[three, eight] == 1  # both digits' attention goes to the one
    (male,), (female,) = (
        word_positions(tiny_tokenizer, source, "male"),
        word_positions(tiny_tokenizer, target, "female"),
    )
    assert mapper[male, female] == 1 and alpha[female] == 1
    # attention mass is preserved: every text token of the source maps somewhere with total weight 1
    attention = torch.softmax(torch.randn(5, 77), -1)
    assert torch.allclose((attention @ mapper).sum(-1), attention.sum(-1), atol=1e-5)


def test_changed_words_are_the_unaligned_tokens(tiny_tokenizer):
    changed_source, changed_target = changed_words(
        tiny_tokenizer, "chest x-ray of male subject", "chest x-ray of female subject"
    )
    assert pieces(tiny_tokenizer, "chest x-ray of male subject", changed_source) == ["male"]
    assert pieces(tiny_tokenizer, "chest x-ray of female subject", changed_target) == ["female"]


def test_unknown_mapping_mode_is_an_error():
    with pytest.raises(CfauditError, match="refine, replace"):
        token_mapping([1, 2], [1, 2], "swap")


class NoOffsets:
    """A tokenizer without an offset mapping (like the slow Python tokenizers)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.model_max_length = tokenizer.model_max_length
        self.all_special_ids = tokenizer.all_special_ids

    def __call__(self, text, **kwargs):
        if kwargs.get("return_offsets_mapping"):
            raise NotImplementedError("return_offset_mapping is not available")
        return self.tokenizer(text, **kwargs)

    def decode(self, ids):
        return self.tokenizer.decode(ids)


@pytest.mark.parametrize("word", ["63", "63-years", "cardiomegaly", "pneumothorax", "male"])
def test_tokenizers_without_offsets_find_the_same_tokens(tiny_tokenizer, word):
    assert word_positions(NoOffsets(tiny_tokenizer), SOURCE, word) == word_positions(
        tiny_tokenizer, SOURCE, word
    )
