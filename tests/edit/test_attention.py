import pytest
import torch

from cfaudit.edit.attention import (
    AttentionController,
    AttentionSettings,
    ScoresWorkspace,
    attention_control,
    attention_layers,
    attention_probabilities,
    token_edit,
)
from cfaudit.edit.tokens import word_positions
from cfaudit.errors import CfauditError
from tests.edit.tiny_parts import build_parts

SOURCE = "chest x-ray of 63-years old white male subject with cardiomegaly"
SWAP = "chest x-ray of 63-years old white female subject with cardiomegaly"


@pytest.fixture(scope="module")
def sd_parts(tmp_path_factory):
    """Stable Diffusion v1.5's UNet block structure (16 transformer blocks) at tiny widths."""
    return build_parts(tmp_path_factory.mktemp("sd-tokenizer"), sd_blocks=True)


def run_unet(parts, prompts, controller=None, step=0, rows=None, latents=None):
    from cfaudit.edit.editor import CounterfactualEditor

    editor = CounterfactualEditor(parts.unet, parts.vae, parts.text_encoder, parts.tokenizer, parts.scheduler)
    embeddings = editor.encode_prompts(prompts)
    if latents is None:
        latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)).expand(
            len(prompts), -1, -1, -1
        )
    if controller is None:
        return parts.unet(latents, 500, encoder_hidden_states=embeddings).sample
    with attention_control(parts.unet, controller):
        controller.begin_step(step, *(rows or (None, None)))
        return parts.unet(latents, 500, encoder_hidden_states=embeddings).sample


def controller_for(parts, targets, settings, steps=10):
    edits = [token_edit(parts.tokenizer, SOURCE, t) for t in targets]
    return AttentionController(edits, settings, steps, (8, 8))


def test_sd15_structure_hooks_16_cross_and_16_self_attention_layers(sd_parts):
    layers = attention_layers(sd_parts.unet)
    assert sum(layers.values()) == 16 and sum(not c for c in layers.values()) == 16
    before = {k: type(v) for k, v in sd_parts.unet.attn_processors.items()}
    with attention_control(sd_parts.unet, None) as hooked:
        assert hooked.counts == (16, 16)
        assert all(k.endswith("attn2.processor") for k in hooked.cross)
        assert all(k.endswith("attn1.processor") for k in hooked.self_)
        assert {type(p).__name__ for p in sd_parts.unet.attn_processors.values()} == {"P2PAttnProcessor"}
    assert {k: type(v) for k, v in sd_parts.unet.attn_processors.items()} == before  # restored


def test_hooked_processors_compute_what_diffusers_computes(sd_parts):
    plain = run_unet(sd_parts, [SOURCE, SWAP])
    idle = controller_for(sd_parts, [SWAP], AttentionSettings())
    hooked = run_unet(sd_parts, [SOURCE, SWAP], idle)  # no rows given: nothing controlled
    assert torch.allclose(hooked, plain, atol=1e-5)
    # explicit probabilities (controller asked, identity edit) give the same numbers as the fused kernel
    same = controller_for(sd_parts, [SOURCE], AttentionSettings(cross_fraction=1.0, self_fraction=1.0))
    explicit = run_unet(sd_parts, [SOURCE, SOURCE], same, rows=([0], [1]))
    assert torch.allclose(explicit, run_unet(sd_parts, [SOURCE, SOURCE]), atol=1e-5)


def test_word_swap_injection_changes_the_target_and_not_the_source(sd_parts):
    plain = run_unet(sd_parts, [SOURCE, SWAP])
    controller = controller_for(sd_parts, [SWAP], AttentionSettings(cross_fraction=0.5, self_fraction=0.0))
    edited = run_unet(sd_parts, [SOURCE, SWAP], controller, step=0, rows=([0], [1]))
    assert torch.allclose(edited[0], plain[0], atol=1e-5)
    assert (edited[1] - plain[1]).abs().max() > 1e-3
    # after the injection fraction the target runs free again
    late = run_unet(sd_parts, [SOURCE, SWAP], controller, step=5, rows=([0], [1]))
    assert torch.allclose(late, plain, atol=1e-5)


def test_self_attention_injection_alone_changes_the_target(sd_parts):
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))  # source and target differ
    plain = run_unet(sd_parts, [SOURCE, SWAP], latents=latents)
    controller = controller_for(sd_parts, [SWAP], AttentionSettings(cross_fraction=0.0, self_fraction=0.5))
    edited = run_unet(sd_parts, [SOURCE, SWAP], controller, step=0, rows=([0], [1]), latents=latents)
    assert torch.allclose(edited[0], plain[0], atol=1e-5)
    assert (edited[1] - plain[1]).abs().max() > 1e-2
    limited = AttentionSettings(cross_fraction=0.0, self_fraction=0.5, self_max_tokens=0)
    untouched = run_unet(
        sd_parts, [SOURCE, SWAP], controller_for(sd_parts, [SWAP], limited), rows=([0], [1]), latents=latents
    )
    assert torch.allclose(untouched, plain, atol=1e-5)


def test_controller_edits_probabilities_as_specified(tiny_tokenizer):
    edit = token_edit(tiny_tokenizer, SOURCE, SWAP, reweight={"cardiomegaly": 2.0})
    assert edit.mode == "replace"
    controller = AttentionController(
        [edit], AttentionSettings(cross_fraction=0.5, self_fraction=0.5), 4, (8, 8)
    )
    probs = torch.softmax(torch.randn(2, 2, 64, 77, generator=torch.Generator().manual_seed(0)), -1)
    given = probs.clone()  # the controller edits the layer's probabilities in place
    controller.begin_step(0, [0], [1])
    out = controller(probs, is_cross=True)
    cardio = word_positions(tiny_tokenizer, SWAP, "cardiomegaly")
    expected = given[0].clone()
    expected[..., cardio] *= 2.0
    assert torch.allclose(out[1], expected, atol=1e-6) and torch.equal(out[0], given[0])
    assert out.data_ptr() == probs.data_ptr()  # no copy without gradients
    self_out = controller(probs[:, :, :, :64].softmax(-1), is_cross=False)
    assert torch.equal(self_out[1], self_out[0])
    controller.begin_step(3, [0], [1])  # past both fractions: not wanted, and nothing changes
    assert not controller.wants(True, 64) and not controller.wants(False, 64)


def test_local_blend_mask_marks_where_the_changed_words_attend(tiny_tokenizer):
    edit = token_edit(tiny_tokenizer, SOURCE, SWAP, blend_words=("male", "female"))
    settings = AttentionSettings(local_blend=True, blend_start=0.0, blend_threshold=0.5)
    controller = AttentionController([edit], settings, 4, (8, 8))
    probs = torch.full((2, 1, 16, 77), 1e-4)
    male = word_positions(tiny_tokenizer, SOURCE, "male")[0]
    female = word_positions(tiny_tokenizer, SWAP, "female")[0]
    probs[0, :, 0, male] = 1.0  # the source attends to "male" at the top-left query of a 4x4 layer
    probs[1, :, 15, female] = 1.0  # the target attends to "female" at the bottom-right query
    controller.begin_step(0, [0], [1])
    controller(probs, is_cross=True)
    mask = controller.blend_mask()
    assert mask is not None and mask.shape == (1, 1, 8, 8)
    assert mask[0, 0, 0, 0] == 1 and mask[0, 0, -1, -1] == 1 and mask[0, 0, 4, 0] == 0
    assert set(mask.unique().tolist()) == {0.0, 1.0}


def test_blend_words_must_occur_and_settings_are_checked(tiny_tokenizer):
    with pytest.raises(CfauditError, match="neither"):
        token_edit(tiny_tokenizer, SOURCE, SWAP, blend_words=("edema",))
    with pytest.raises(CfauditError, match="cross_fraction"):
        AttentionSettings(cross_fraction=1.5)
    with pytest.raises(CfauditError, match="auto, replace, refine"):
        token_edit(tiny_tokenizer, SOURCE, SWAP, mode="swap")


@pytest.mark.parametrize("shape", [(6, 8, 256, 256), (6, 8, 64, 77), (3, 5, 7, 13), (2, 1, 1, 1)])
def test_attention_probabilities_in_place_are_the_out_of_place_values_to_the_bit(shape):
    scores = torch.randn(*shape, generator=torch.Generator().manual_seed(len(shape) + shape[-1])) * 6
    mask = torch.zeros(shape[0], 1, 1, shape[-1])
    mask[..., -1] = -1e4
    for m in (None, mask):
        expected = (scores * 0.125 if m is None else scores * 0.125 + m).softmax(dim=-1)
        given = scores.clone()
        probs = attention_probabilities(given, 0.125, m)
        assert torch.equal(probs, expected)
        if m is None:
            assert probs.data_ptr() == given.data_ptr()  # no new memory: the point of it


def test_attention_probabilities_keep_gradients_and_the_controller_its_input_then(tiny_tokenizer):
    scores = torch.randn(2, 2, 64, 77, generator=torch.Generator().manual_seed(3), requires_grad=True)
    probs = attention_probabilities(scores * 1.0, 0.5)
    assert torch.allclose(probs, (scores * 0.5).softmax(-1))
    edit = token_edit(tiny_tokenizer, SOURCE, SWAP)
    controller = AttentionController(
        [edit], AttentionSettings(cross_fraction=1.0, self_fraction=1.0), 4, (8, 8)
    )
    controller.begin_step(0, [0], [1])
    edited = controller(probs, is_cross=False)  # self-attention injection: target row := source row
    assert edited.data_ptr() != probs.data_ptr() and torch.equal(edited[1], probs[0])
    edited.sum().backward()  # no "modified by an inplace operation" error
    assert scores.grad is not None and torch.isfinite(scores.grad).all()


def test_scores_workspace_reuses_one_tensor_per_shape_with_matmuls_values():
    generator = torch.Generator().manual_seed(5)
    workspace = ScoresWorkspace()
    query, key = torch.randn(4, 2, 16, 8, generator=generator), torch.randn(4, 2, 77, 8, generator=generator)
    first = workspace.scores(query, key)
    assert torch.equal(first, torch.matmul(query, key.transpose(-1, -2)))
    pointer = first.data_ptr()
    again = workspace.scores(query * 2, key)  # the next layer of the same shape: the same memory
    assert again.data_ptr() == pointer and torch.equal(again, torch.matmul(query * 2, key.transpose(-1, -2)))
    other = workspace.scores(query, key[:, :, :16])  # another shape: its own tensor
    assert other.shape == (4, 2, 16, 16) and other.data_ptr() != pointer
    # gradients wanted: a fresh tensor, never the workspace
    tracked = workspace.scores(query.requires_grad_(), key)
    assert tracked.requires_grad and tracked.data_ptr() != pointer
