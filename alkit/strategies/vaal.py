"""VAAL (Sinha et al. 2019, "Variational Adversarial Active Learning"), as in the authors' code of
Emam et al. (2021).

Method.  A VAE — encoder q(z | x) = N(μ(x), diag σ²(x)), decoder x̂(z) — and a discriminator
D(z) ∈ (0, 1) ("is this latent code from a labelled image?") are trained on the labelled images L
and the eligible unlabelled images U, one step each per labelled batch, paired with an unlabelled
batch:

    VAE:  MSE(x̂, x) + β·KL(q(z|x) ‖ N(0, I))   on L and on U   (MSE a mean, KL a sum, as the authors)
          + λ·[BCE(D(μ_L), 1) + BCE(D(μ_U), 1)]                 (make U look labelled: fool D)
    D:    BCE(D(μ_L), 1) + BCE(D(μ_U), 0)                       (tell L from U)

Each eligible image x is then scored s(x) = D(μ(x)), the discriminator's probability that x is
labelled, and the b smallest scores are picked: the images least like the labelled set.

It trains on pixels, not features: the pool must carry ``images`` (:class:`alkit.data.images.PoolImages`),
which the fine-tuning loop (:mod:`alkit.finetune`) always sets.  Architecture as the authors'
(DCGAN-style VAE with 4 stride-2 convolutions of ``width``·(1, 2, 4, 8) channels, a 512-512 MLP
discriminator); images wider than ``crop`` px (ImageNet) are cut to a ``crop`` × ``crop`` patch.
Defaults are the authors' CIFAR-10 settings (latent 32, λ = 1, Adam 5e-4 / 5e-4); their ImageNet
ones are latent 64, λ = 10, lr_vae 5e-5, lr_discriminator 1e-3.  Differences from their code are
listed in DEVIATIONS.md.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from alkit.checks import ParameterError
from alkit.pool import PoolState
from alkit.scores import take_smallest
from alkit.strategies.registry import register

#: The authors' CIFAR-10 settings (their ImageNet ones: latent_dim 64, adversary_weight 10,
#: lr_vae 5e-5, lr_discriminator 1e-3).
VAAL_DEFAULTS = dict(epochs=100, batch_size=128, latent_dim=32, width=128, adversary_weight=1.0, beta=1.0,
                     lr_vae=5e-4, lr_discriminator=5e-4, crop=64)


# --------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------

class VAE(nn.Module):
    """Encoder: 4 × (conv 4×4 stride 2, BN, ReLU) → μ, log σ²; decoder: linear, 3 transposed convs
    (×2 each) and a 1×1 conv back to 3 channels, for ``size``-px inputs (a multiple of 16)."""

    def __init__(self, size: int, latent_dim: int, width: int) -> None:
        super().__init__()
        channels = [3, width, 2 * width, 4 * width, 8 * width]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
        self.encoder = nn.Sequential(*layers, nn.Flatten())
        flat = 8 * width * (size // 16) ** 2
        self.fc_mu = nn.Linear(flat, latent_dim)
        self.fc_logvar = nn.Linear(flat, latent_dim)
        self.start = (8 * width, size // 8)
        up: list[nn.Module] = []
        for c_in, c_out in zip(channels[:1:-1], channels[-2:0:-1]):
            up += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
        self.decode_fc = nn.Linear(latent_dim, 8 * width * (size // 8) ** 2)
        self.decoder = nn.Sequential(*up, nn.ConvTranspose2d(width, 3, 1))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return self.fc_mu(h), self.fc_logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        c, s = self.start
        return self.decoder(self.decode_fc(z).view(-1, c, s, s))


class Discriminator(nn.Module):
    """D(z) = σ(MLP(z)), 512-512 hidden units: the probability that z encodes a labelled image."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent_dim, 512), nn.ReLU(True), nn.Linear(512, 512), nn.ReLU(True),
                                 nn.Linear(512, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(z)).squeeze(1)


def kaiming_init_(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """The authors' initialisation (Kaiming-normal weights, zero biases, BN γ = 1), drawn from
    ``generator`` so that the networks are the same for the same seed."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            fan_in = m.weight[0].numel() if not isinstance(m, nn.ConvTranspose2d) else m.weight[:, 0].numel()
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=generator) * math.sqrt(2.0 / fan_in))
                if m.bias is not None:
                    m.bias.zero_()
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return module


# --------------------------------------------------------------------------------------------
# Training and scoring
# --------------------------------------------------------------------------------------------

def _check_size(size: int, crop: int) -> int:
    size = min(int(size), int(crop))
    if size < 16 or size % 16:
        raise ParameterError(f"vaal: images must be at least 16 px and a multiple of 16 after the {crop}-px crop, got "
                             f"{size} px; resize the pool's images (PoolImages resolution) or change crop=", param="images")
    return size


def _crop(x: torch.Tensor, size: int, generator: torch.Generator | None) -> torch.Tensor:
    """A ``size`` × ``size`` patch of the batch: at one random offset (training, as the authors'
    per-batch crop) or in the centre (``generator`` None: scoring)."""
    h, w = x.shape[2], x.shape[3]
    if h == size and w == size:
        return x
    if generator is None:
        top, left = (h - size) // 2, (w - size) // 2
    else:
        top = int(torch.randint(0, h - size + 1, (1,), generator=generator))
        left = int(torch.randint(0, w - size + 1, (1,), generator=generator))
    return x[:, :, top:top + size, left:left + size]


def _vae_loss(x: torch.Tensor, recon: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, beta: float) -> torch.Tensor:
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return nn.functional.mse_loss(recon, x) + beta * kld


def _device_of(pool: PoolState, device) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device(getattr(pool.images, "device", "cpu"))


def train_vaal(pool: PoolState, rng: np.random.Generator, *, epochs: int, batch_size: int, latent_dim: int,
               width: int, adversary_weight: float, beta: float, lr_vae: float, lr_discriminator: float, crop: int,
               device=None) -> tuple[VAE, Discriminator]:
    """Train the VAE and the discriminator on the pool's labelled vs eligible images; return both
    (in eval mode).  Every draw (initialisation, batches, crops, noise) comes from ``rng``."""
    labelled, unlabelled = pool.labeled_indices(), pool.eligible_indices()
    if labelled.size == 0:
        raise ParameterError("vaal needs labelled images to train its discriminator on; label a few points first",
                             param="labels")
    dev = _device_of(pool, device)
    probe = pool.images(labelled[:1])
    size = _check_size(min(probe.shape[2], probe.shape[3]), crop)
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    noise = torch.Generator(device=dev).manual_seed(int(rng.integers(2**62)))
    vae = kaiming_init_(VAE(size, latent_dim, width), generator).to(dev)
    disc = kaiming_init_(Discriminator(latent_dim), generator).to(dev)
    opt_vae = torch.optim.Adam(vae.parameters(), lr=lr_vae)
    opt_disc = torch.optim.Adam(disc.parameters(), lr=lr_discriminator)
    bce = nn.functional.binary_cross_entropy
    unlabelled_order, u_at = rng.permutation(unlabelled), 0
    vae.train()
    disc.train()
    for _ in range(int(epochs)):
        order = rng.permutation(labelled)
        for start in range(0, order.size, batch_size):
            rows_l = np.sort(order[start:start + batch_size])
            if u_at + rows_l.size > unlabelled_order.size:   # cycle through U, as the authors' iterator
                unlabelled_order, u_at = rng.permutation(unlabelled), 0
            rows_u = np.sort(unlabelled_order[u_at:u_at + rows_l.size])
            u_at += rows_l.size
            if min(rows_l.size, rows_u.size) < 2:   # BatchNorm needs two images
                continue
            x_l = _crop(pool.images(rows_l).to(dev), size, generator)
            x_u = _crop(pool.images(rows_u).to(dev), size, generator)
            ones_l = torch.ones(x_l.shape[0], device=dev)
            ones_u, zeros_u = torch.ones(x_u.shape[0], device=dev), torch.zeros(x_u.shape[0], device=dev)

            losses = []
            mus = []
            for x in (x_l, x_u):   # VAE step: reconstruct both, and make both look labelled to D
                mu, logvar = vae.encode(x)
                z = mu + torch.randn(mu.shape, generator=noise, device=dev) * (0.5 * logvar).exp()
                losses.append(_vae_loss(x, vae.decode(z), mu, logvar, beta))
                mus.append(mu)
            fool = bce(disc(mus[0]), ones_l) + bce(disc(mus[1]), ones_u)
            opt_vae.zero_grad(set_to_none=True)
            (losses[0] + losses[1] + adversary_weight * fool).backward()
            opt_vae.step()

            with torch.no_grad():   # discriminator step on the updated encoder's means
                mu_l, _ = vae.encode(x_l)
                mu_u, _ = vae.encode(x_u)
            d_loss = bce(disc(mu_l), ones_l) + bce(disc(mu_u), zeros_u)
            opt_disc.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_disc.step()
    return vae.eval(), disc.eval()


@torch.no_grad()
def discriminator_scores(vae: VAE, disc: Discriminator, pool: PoolState, rows: np.ndarray, *,
                         crop: int = VAAL_DEFAULTS["crop"], batch_size: int = 512, device=None) -> np.ndarray:
    """s(x) = D(μ(x)) for ``rows``: the discriminator's probability that each image is labelled."""
    dev = _device_of(pool, device)
    out = np.empty(rows.size, np.float64)
    for start in range(0, rows.size, batch_size):
        x = pool.images(rows[start:start + batch_size]).to(dev)
        x = _crop(x, _check_size(min(x.shape[2], x.shape[3]), crop), None)
        mu, _ = vae.encode(x)
        out[start:start + x.shape[0]] = disc(mu).double().cpu().numpy()
    return out


def vaal_scores(pool: PoolState, rng: np.random.Generator, **options) -> tuple[np.ndarray, np.ndarray]:
    """``(eligible indices, D(μ(x)) for each)`` after training VAAL's networks on this pool."""
    pool.require_images("vaal")
    settings = {**VAAL_DEFAULTS, "device": None, **options}
    unknown = set(settings) - set(VAAL_DEFAULTS) - {"device"}
    if unknown:
        raise ParameterError(f"vaal: unknown option(s) {sorted(unknown)}; choose among {sorted(VAAL_DEFAULTS)}, device",
                             param="options")
    for key in ("epochs", "batch_size", "latent_dim", "width"):
        if int(settings[key]) < 1:
            raise ParameterError(f"vaal: {key} must be a positive integer, got {settings[key]!r}", param=key)
    vae, disc = train_vaal(pool, rng, **settings)
    idx = pool.eligible_indices()
    return idx, discriminator_scores(vae, disc, pool, idx, crop=settings["crop"], device=settings["device"])


@register("vaal", needs=("images",), reference="Sinha, Ebrahimi, Darrell 2019 (ICCV); Emam et al. 2021 code")
def vaal(pool: PoolState, budget: int, rng: np.random.Generator, **options) -> np.ndarray:
    """VAAL: the images a labelled-vs-unlabelled discriminator on a VAE's codes finds least likely labelled.

    A VAE and the discriminator D are trained on the pool's images; the b images with the smallest
    D(μ(x)) are picked.

    Needs ``pool.images``.  ``options``: epochs, batch_size, latent_dim, width, adversary_weight (λ),
    beta, lr_vae, lr_discriminator, crop, device (see :data:`VAAL_DEFAULTS`).
    """
    idx, scores = vaal_scores(pool, rng, **options)
    return np.sort(idx[take_smallest(scores, budget, rng)])
