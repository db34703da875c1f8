import pytest
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler, PNDMScheduler

from cfaudit.edit.ddim import DDIMGrid
from cfaudit.edit.denoiser import Denoiser
from cfaudit.edit.inversion import ddim_trajectory
from cfaudit.errors import CfauditError
from tests.edit.tiny_parts import SD_SCHEDULE


class GaussianDenoiser(torch.nn.Module):
    """The exact noise prediction for data x0 ~ N(m(prompt), s^2): a smooth model whose DDIM ODE is well posed."""

    def __init__(self, alphas: torch.Tensor, shape=(4, 8, 8), spread: float = 0.5) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.alphas, self.spread, self.shape = alphas.float(), spread, shape
        self.proj = torch.nn.Parameter(
            torch.randn(32, shape[0] * shape[1] * shape[2], generator=generator) * 0.3
        )

    def forward(self, z, t, encoder_hidden_states, return_dict=False):
        a = self.alphas[int(t)]
        mean = (encoder_hidden_states.mean(1) @ self.proj).view(-1, *self.shape)
        return ((1 - a).sqrt() * (z - a.sqrt() * mean) / (a * self.spread**2 + 1 - a),)


def test_grid_matches_ddim_scheduler_timesteps_and_levels():
    pndm = {k: v for k, v in SD_SCHEDULE.items() if k != "clip_sample"}  # SD ships a PNDM config
    grid = DDIMGrid.from_scheduler(PNDMScheduler(**pndm, skip_prk_steps=True), 10)
    assert grid.timesteps.tolist() == [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]
    # each step ends where the next starts; the last ends at the scheduler's final level (alphas_cumprod[0])
    assert torch.allclose(grid.alpha_prev[:-1], grid.alpha[1:])
    ddim = DDIMScheduler(**SD_SCHEDULE)
    assert float(grid.alpha_prev[-1]) == pytest.approx(float(ddim.alphas_cumprod[0]))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_denoise_step_equals_diffusers_ddim_step(prediction_type):
    config = {**SD_SCHEDULE, "prediction_type": prediction_type}
    scheduler = DDIMScheduler(**config)
    scheduler.set_timesteps(7)
    grid = DDIMGrid.from_scheduler(scheduler, 7)
    torch.manual_seed(0)
    sample = torch.randn(2, 4, 8, 8)
    for i, t in enumerate(scheduler.timesteps):
        output = torch.randn_like(sample)
        expected = scheduler.step(output, t, sample).prev_sample
        assert torch.allclose(grid.denoise(i, sample, output), expected, atol=1e-5)


def test_invert_step_equals_diffusers_ddim_inverse_scheduler():
    inverse = DDIMInverseScheduler(**SD_SCHEDULE)
    inverse.set_timesteps(8)
    grid = DDIMGrid.from_scheduler(DDIMScheduler(**SD_SCHEDULE), 8)
    torch.manual_seed(1)
    sample = torch.randn(1, 4, 8, 8)
    ours = sample.clone()
    # the inverse scheduler walks the same timesteps upwards; ours is indexed by the sampling step it mirrors
    assert inverse.timesteps.tolist() == grid.timesteps.flip(0).tolist()
    for k, t in enumerate(inverse.timesteps):
        output = torch.randn_like(sample)
        sample = inverse.step(output, t, sample).prev_sample
        ours = grid.invert(grid.steps - 1 - k, ours, output)
        assert torch.allclose(ours, sample, atol=1e-5)


def test_invert_then_denoise_with_the_same_prediction_is_the_identity():
    grid = DDIMGrid.from_scheduler(DDIMScheduler(**SD_SCHEDULE), 5)
    torch.manual_seed(2)
    z, eps = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    for i in range(5):
        assert torch.allclose(grid.denoise(i, grid.invert(i, z, eps), eps), z, atol=1e-5)


@pytest.mark.parametrize("steps", [10, 50])
def test_ddim_inversion_then_sampling_at_guidance_one_reconstructs(steps):
    scheduler = DDIMScheduler(**SD_SCHEDULE)
    model = GaussianDenoiser(scheduler.alphas_cumprod)
    denoiser = Denoiser(model)
    torch.manual_seed(3)
    cond = torch.randn(1, 77, 32)
    z0 = (torch.randn(1, 32) @ model.proj).view(1, 4, 8, 8) + 0.5 * torch.randn(1, 4, 8, 8)
    grid = DDIMGrid.from_scheduler(scheduler, steps)
    levels = ddim_trajectory(denoiser, grid, z0, cond)
    assert levels.shape == (steps + 1, 1, 4, 8, 8) and torch.equal(levels[0], z0)
    assert denoiser.evals == steps
    z = levels[-1]
    for i in range(steps):
        z = grid.denoise(i, z, denoiser(z, grid.timesteps[i], cond))
    error = ((z - z0).norm() / z0.norm()).item()
    assert error < {10: 0.25, 50: 0.05}[steps]
    # the noisiest level is far from the image: the walk back did the work
    assert ((levels[-1] - z0).norm() / z0.norm()).item() > 0.5


def test_grid_rejects_bad_step_counts():
    with pytest.raises(CfauditError, match="at least 1"):
        DDIMGrid.from_scheduler(DDIMScheduler(**SD_SCHEDULE), 0)
    with pytest.raises(CfauditError, match="exceed"):
        DDIMGrid.from_scheduler(DDIMScheduler(**SD_SCHEDULE), 2000)
