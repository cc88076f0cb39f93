"""Stellar label emulator: one Transformer over (name, value) tokens with a denoising-diffusion head, giving full
posteriors for any label from any subset of measurements (Leung, Bovy & Speagle 2024, arXiv:2407.15703)."""
