"""Shared test settings: one torch thread (the models here are tiny; extra threads only contend)."""

import torch

torch.set_num_threads(1)
