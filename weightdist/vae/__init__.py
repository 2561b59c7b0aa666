"""The latent-prior half: VAEs with Gaussian, von Mises–Fisher, Power Spherical, mixture,
VampPrior and plain-autoencoder latents, trained and measured the same way."""
from .latents import LATENTS, Latent, register_latent
from .model import VAE
from .spherical import HypersphericalUniform, PowerSpherical, VonMisesFisher
from .train import TrainConfig, load_checkpoint, save_checkpoint, train_vae

__all__ = ["LATENTS", "Latent", "register_latent", "VAE", "TrainConfig", "train_vae", "save_checkpoint", "load_checkpoint",
           "VonMisesFisher", "PowerSpherical", "HypersphericalUniform"]
