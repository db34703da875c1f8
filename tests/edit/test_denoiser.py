import torch

from cfaudit.edit.denoiser import Denoiser, guide


class Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor(2.0))

    def forward(self, latents, t, encoder_hidden_states, return_dict=False):
        return (self.weight * latents + encoder_hidden_states.mean((1, 2)).view(-1, 1, 1, 1),)


def test_forward_passes_count_one_per_latent_and_backward_two():
    denoiser = Denoiser(Linear())
    latents, cond, uncond = torch.ones(3, 4, 2, 2), torch.ones(3, 5, 6), torch.zeros(3, 5, 6)
    denoiser(latents, 1, cond)
    assert denoiser.evals == 3
    denoiser.count_backward(3)
    assert denoiser.evals == 9
    guided = denoiser.guided(latents, 1, cond, uncond, 7.5)
    assert denoiser.evals == 15  # unconditional + conditional rows
    assert torch.allclose(guided, guide(torch.full_like(latents, 2.0), torch.full_like(latents, 3.0), 7.5))
    assert torch.allclose(guided, torch.full_like(latents, 2.0 + 7.5))
    denoiser.guided(latents, 1, cond, uncond, 1.0)
    assert denoiser.evals == 18  # guidance 1: the conditional rows only
