import pytest
import torch

from cfaudit.edit.editor import EditSettings
from cfaudit.edit.inversion import Inversion, InversionSettings
from cfaudit.errors import CfauditError

SOURCE = "chest x-ray of 63-years old white male subject with cardiomegaly"


def reconstruct(editor, image, method, steps=8, guidance=7.5, **kwargs):
    settings = InversionSettings(method=method, steps=steps, guidance_scale=guidance, **kwargs)
    (result,) = editor(image, [SOURCE], [[]], settings, EditSettings(guidance_scale=guidance))
    return result


def latent_error(editor, image, result):
    return (result.reconstruction_latent - editor.encode_images(image)[0]).abs().mean().item()


def test_direct_inversion_reconstructs_exactly(editor, tiny_image):
    result = reconstruct(editor, tiny_image, "direct")
    assert torch.equal(result.reconstruction_latent, editor.encode_images(tiny_image)[0])
    assert torch.allclose(result.reconstruction, editor.decode_latents(editor.encode_images(tiny_image))[0])
    assert result.inversion.unet_evals == 8  # the DDIM pass only: no optimisation


def test_null_text_reconstruction_beats_plain_ddim_at_guidance_7_5(editor, tiny_image):
    ddim = latent_error(editor, tiny_image, reconstruct(editor, tiny_image, "ddim"))
    nti = reconstruct(editor, tiny_image, "nti", inner_steps=10)
    assert latent_error(editor, tiny_image, nti) < 0.8 * ddim
    assert nti.inversion.uncond.shape[0] == 8  # one optimised null embedding per step
    # cost: 8 DDIM steps + per step one conditional pass, 1..10 Adam steps (forward + backward = 3), one final pass
    assert 8 + 8 * (1 + 3 + 1) <= nti.inversion.unet_evals <= 8 + 8 * (1 + 30 + 1)


def test_negative_prompt_inversion_needs_no_guidance_on_the_source(editor, tiny_image):
    npi = reconstruct(editor, tiny_image, "npi", guidance=7.5)
    ddim_unguided = reconstruct(editor, tiny_image, "ddim", guidance=1.0)
    assert torch.allclose(npi.reconstruction_latent, ddim_unguided.reconstruction_latent, atol=1e-6)
    ddim_guided = reconstruct(editor, tiny_image, "ddim", guidance=7.5)
    assert latent_error(editor, tiny_image, npi) < latent_error(editor, tiny_image, ddim_guided)


def test_inversion_round_trips_through_safetensors(editor, tiny_image, tmp_path):
    (inversion,) = editor.invert(
        tiny_image, [SOURCE], InversionSettings(method="nti", steps=3, inner_steps=2)
    )
    inversion.save(tmp_path / "inv.safetensors", meta={"image_id": "a"})
    loaded, meta = Inversion.load(tmp_path / "inv.safetensors")
    assert meta == {"image_id": "a"} and loaded.settings == inversion.settings
    for name in ("timesteps", "levels", "source_embedding", "uncond"):
        assert torch.equal(getattr(loaded, name), getattr(inversion, name))
    assert loaded.unet_evals == inversion.unet_evals and loaded.seconds == inversion.seconds
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CfauditError, match="not a readable inversion file"):
        Inversion.load(tmp_path / "bad.safetensors")


def test_settings_are_checked_and_cache_keys_hold_only_what_matters():
    with pytest.raises(CfauditError, match="direct, nti, npi, ddim"):
        InversionSettings(method="edict")
    with pytest.raises(CfauditError, match="at least 1"):
        InversionSettings(steps=0)
    assert (
        InversionSettings(method="direct", guidance_scale=3).key() == InversionSettings(method="direct").key()
    )
    assert InversionSettings(method="nti", guidance_scale=3).key() != InversionSettings(method="nti").key()
