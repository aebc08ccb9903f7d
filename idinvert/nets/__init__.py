"""Networks: StyleGAN generator/encoder (official idinvert layouts), discriminator, classifier, perceptual models."""
