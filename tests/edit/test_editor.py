import pytest
import torch

from cfaudit.edit.attention import AttentionSettings
from cfaudit.edit.editor import EditSettings, Target
from cfaudit.edit.inversion import InversionSettings
from cfaudit.errors import CfauditError

SOURCE = "chest x-ray of 63-years old white male subject with cardiomegaly"
TARGETS = [
    "chest x-ray of subject with no cardiomegaly",
    "chest x-ray of 63-years old white female subject with cardiomegaly",
    "chest x-ray of 80-years old subject",
    "chest x-ray of 63-years old black male subject with cardiomegaly",
    "chest x-ray of subject with pleural effusion",
]


@pytest.mark.parametrize("method", ["direct", "nti", "npi", "ddim"])
def test_identity_edit_reproduces_the_reconstruction(editor, tiny_image, method):
    settings = InversionSettings(method=method, steps=6, inner_steps=2)
    (result,) = editor(tiny_image, [SOURCE], [[SOURCE, TARGETS[0]]], settings)
    identity, edited = result.counterfactual_latents
    assert torch.allclose(identity, result.reconstruction_latent, atol=1e-5)
    assert torch.allclose(result.counterfactuals[0], result.reconstruction, atol=1e-4)
    assert (edited - result.reconstruction_latent).abs().mean() > 1e-2  # a real edit does change the image
    assert result.hooked is not None and result.hooked.counts == (4, 4)  # down 1, mid 1, up 2


def test_five_edits_share_one_inversion_and_one_source_branch(editor, tiny_image):
    settings = InversionSettings(method="direct", steps=10)
    editor.denoiser.evals = 0
    (one,) = editor(tiny_image, [SOURCE], [TARGETS[:1]], settings)
    one_total = editor.denoiser.evals
    editor.denoiser.evals = 0
    (five,) = editor(tiny_image, [SOURCE], [TARGETS], settings)
    five_total = editor.denoiser.evals
    # direct, guidance 7.5: inversion N + source 2N + 2N per target
    assert one_total == 10 + 20 + 20 and one.unet_evals == [50.0]
    assert five_total == 10 + 20 + 5 * 20
    assert sum(five.unet_evals) == pytest.approx(five_total)
    assert five_total <= 3 * one_total
    # the first target is the same edit whether it runs alone or beside four others
    assert torch.allclose(five.counterfactual_latents[0], one.counterfactual_latents[0], rtol=1e-3, atol=1e-3)


def test_uncorrected_direct_inversion_runs_the_source_only_while_injecting(editor, tiny_image):
    settings = InversionSettings(method="direct", steps=10)
    attention = AttentionSettings(cross_fraction=0.6, self_fraction=0.3)
    editor.denoiser.evals = 0
    (result,) = editor(
        tiny_image, [SOURCE], [TARGETS[:1]], settings, EditSettings(attention=attention, correct_target=False)
    )
    assert editor.denoiser.evals == 10 + 6 + 20  # inversion, source conditional rows for 6 steps, target
    assert torch.equal(result.reconstruction_latent, result.inversion.levels[0])


def test_images_batched_together_match_images_edited_alone(editor, tiny_image):
    images = torch.cat([tiny_image, -tiny_image])
    prompts = [SOURCE, "chest x-ray of 40-years old female subject with no finding"]
    targets = [[TARGETS[0], TARGETS[1]], []]
    settings = InversionSettings(method="direct", steps=5)
    together = editor(images, prompts, targets, settings)
    alone = [editor(images[b : b + 1], prompts[b : b + 1], targets[b : b + 1], settings)[0] for b in range(2)]
    for a, b in zip(together, alone, strict=True):
        assert torch.allclose(a.reconstruction_latent, b.reconstruction_latent, atol=1e-5)
        assert torch.allclose(a.counterfactual_latents, b.counterfactual_latents, rtol=1e-3, atol=1e-3)
    assert together[1].counterfactuals.shape == (0, 1, 16, 16) and together[1].unet_evals == []
    assert together[0].counterfactuals.shape == (2, 1, 16, 16)


def test_local_blend_keeps_the_source_outside_the_mask(editor, tiny_image, monkeypatch):
    # the random model attends almost uniformly, so its own masks cover everything: pin a mask (the mask itself
    # is tested in test_attention) and check the editor keeps the source exactly outside it
    from cfaudit.edit.attention import AttentionController

    calls = []

    def left_half(self):
        calls.append(self.step)
        mask = torch.zeros(self.count, 1, 8, 8)
        mask[..., :4] = 1.0
        return mask if self.blend_active() else None

    monkeypatch.setattr(AttentionController, "blend_mask", left_half)
    blend = EditSettings(attention=AttentionSettings(local_blend=True, blend_start=0.5))
    target = Target(TARGETS[1], blend_words=("male", "female"))
    (blended,) = editor(tiny_image, [SOURCE], [[target]], InversionSettings(method="direct", steps=6), blend)
    change = (blended.counterfactual_latents[0] - blended.reconstruction_latent).abs()
    assert change[..., 4:].max() == 0 and change[..., :4].mean() > 1e-2
    assert calls == list(range(6))


def test_reweighting_a_word_changes_the_edit(editor, tiny_image):
    settings = InversionSettings(method="direct", steps=5)
    (plain,) = editor(tiny_image, [SOURCE], [[TARGETS[1]]], settings)
    (weighted,) = editor(tiny_image, [SOURCE], [[Target(TARGETS[1], reweight={"female": 3.0})]], settings)
    assert (plain.counterfactual_latents - weighted.counterfactual_latents).abs().max() > 1e-3


def test_null_text_embeddings_need_their_own_guidance(editor, tiny_image):
    (inversion,) = editor.invert(
        tiny_image, [SOURCE], InversionSettings(method="nti", steps=3, inner_steps=1)
    )
    with pytest.raises(CfauditError, match=r"fitted at guidance 7\.5"):
        editor.edit([inversion], [SOURCE], [[TARGETS[0]]], EditSettings(guidance_scale=3.0))
    (wrong_steps,) = editor.invert(tiny_image, [SOURCE], InversionSettings(method="ddim", steps=3))
    with pytest.raises(CfauditError, match="share"):
        editor.edit([inversion, wrong_steps], [SOURCE, SOURCE], [[], []])


@pytest.mark.parametrize("method", ["direct", "nti", "npi", "ddim"])
def test_an_anchor_equal_to_the_target_leaves_the_image_as_reconstructed(editor, tiny_image, method):
    settings = InversionSettings(method=method, steps=6, inner_steps=2)
    partial = "chest x-ray of subject with no cardiomegaly"
    (result,) = editor(
        tiny_image,
        [SOURCE],
        [
            [
                Target(partial, anchor=partial),
                Target(partial, anchor="chest x-ray of subject with cardiomegaly"),
            ]
        ],
        settings,
    )
    unchanged, edited = result.counterfactual_latents
    assert torch.allclose(unchanged, result.reconstruction_latent, atol=1e-5)
    assert (edited - result.reconstruction_latent).abs().mean() > 1e-3  # the two prompts differ: an edit


def test_an_anchor_equal_to_the_source_prompt_is_the_plain_edit(editor, tiny_image):
    settings = InversionSettings(method="direct", steps=8)
    (plain,) = editor(tiny_image, [SOURCE], [[Target(TARGETS[0])]], settings)
    (anchored,) = editor(tiny_image, [SOURCE], [[Target(TARGETS[0], anchor=SOURCE)]], settings)
    assert torch.allclose(anchored.counterfactual_latents, plain.counterfactual_latents, atol=1e-4)


def test_anchored_edits_differ_from_plain_ones_and_share_their_anchor_rows(editor, tiny_image):
    settings = InversionSettings(method="direct", steps=10)
    anchor = "chest x-ray of subject with cardiomegaly"
    targets = [Target(TARGETS[0], anchor=anchor), Target(TARGETS[4], anchor=anchor)]
    editor.denoiser.evals = 0
    (anchored,) = editor(tiny_image, [SOURCE], [targets], settings)
    # inversion N, the source's unconditional row N, one shared anchor row N, two rows per target per step
    assert editor.denoiser.evals == 10 + 10 + 10 + 2 * 20
    assert sum(anchored.unet_evals) == pytest.approx(editor.denoiser.evals)
    (plain,) = editor(tiny_image, [SOURCE], [[Target(t.prompt) for t in targets]], settings)
    assert (anchored.counterfactual_latents - plain.counterfactual_latents).abs().mean() > 1e-3


@pytest.mark.parametrize("method", ["direct", "npi"])
@pytest.mark.parametrize("anchor", [None, "chest x-ray of subject with cardiomegaly"])
def test_a_targets_own_guidance_is_the_edit_made_at_that_guidance(editor, tiny_image, method, anchor):
    # direct: the source branch is the stored trajectory; npi: guidance cancels on it. (With ddim the source
    # branch walks back under the settings' guidance, so a target's own guidance changes the target alone.)
    settings = InversionSettings(method=method, steps=6)
    weak = EditSettings(guidance_scale=3.0)
    strong = Target(TARGETS[0], anchor=anchor)
    (alone_weak,) = editor(tiny_image, [SOURCE], [[strong]], settings, weak)
    (alone_strong,) = editor(tiny_image, [SOURCE], [[strong, Target(TARGETS[1], anchor=anchor)]], settings)
    editor.denoiser.evals = 0
    (mixed,) = editor(
        tiny_image, [SOURCE], [[Target(TARGETS[0], anchor=anchor, guidance_scale=3.0),
                                Target(TARGETS[1], anchor=anchor)]], settings,
    )  # fmt: skip
    mixed_evals = editor.denoiser.evals
    assert torch.allclose(mixed.counterfactual_latents[0], alone_weak.counterfactual_latents[0], atol=1e-4)
    assert torch.allclose(mixed.counterfactual_latents[1], alone_strong.counterfactual_latents[1], atol=1e-4)
    assert (alone_weak.counterfactual_latents[0] - alone_strong.counterfactual_latents[0]).abs().mean() > 1e-3
    editor.denoiser.evals = 0
    editor(
        tiny_image,
        [SOURCE],
        [[Target(TARGETS[0], anchor=anchor), Target(TARGETS[1], anchor=anchor)]],
        settings,
    )
    assert mixed_evals == editor.denoiser.evals  # guidance only weighs rows computed anyway


def test_guidance_below_one_and_mixed_guidance_on_null_text_embeddings_are_refused(editor, tiny_image):
    (direct,) = editor.invert(tiny_image, [SOURCE], InversionSettings(method="direct", steps=3))
    with pytest.raises(CfauditError, match=">= 1"):
        editor.edit([direct], [SOURCE], [[Target(TARGETS[0], guidance_scale=0.5)]])
    (nti,) = editor.invert(tiny_image, [SOURCE], InversionSettings(method="nti", steps=3, inner_steps=1))
    with pytest.raises(CfauditError, match=r"fitted at guidance 7\.5.*got 4, 7\.5"):
        editor.edit([nti], [SOURCE], [[Target(TARGETS[0], guidance_scale=4.0), TARGETS[1]]])
